// guest_sandbox.cc — GuestChannel's sandbox operations (file, process and context calls).
//
// CONTRACT ONLY: the bodies answer bad_argument "not implemented" until the guest agent serves
// the messages (branch guestsbx replaces this file).
#include "guest/host/guest_channel.h"

namespace nv::guest {

namespace {
ChannelError not_implemented(const char* what) {
  return ChannelError{ChannelErrc::bad_argument,
                      std::string(what) + ": not implemented by this build",
                      schema::Error::Code::UNSET};
}
}  // namespace

Result<FileEntryInfo> GuestChannel::write_file(const std::string&, std::string_view, uint32_t, bool,
                                               Deadline) {
  return not_implemented("write_file");
}
Result<FileRange> GuestChannel::read_file(const std::string&, uint64_t, uint64_t, uint64_t,
                                          Deadline) {
  return not_implemented("read_file");
}
Result<FileEntryInfo> GuestChannel::stat(const std::string&, Deadline) {
  return not_implemented("stat");
}
Result<std::vector<FileEntryInfo>> GuestChannel::list_dir(const std::string&, bool, Deadline) {
  return not_implemented("list_dir");
}
ChannelError GuestChannel::remove(const std::string&, bool, Deadline) {
  return not_implemented("remove");
}
Result<FileEntryInfo> GuestChannel::make_dir(const std::string&, bool, Deadline) {
  return not_implemented("make_dir");
}
Result<std::vector<ProcessEntry>> GuestChannel::processes(Deadline) {
  return not_implemented("processes");
}
ChannelError GuestChannel::signal(int32_t, int32_t, Deadline) { return not_implemented("signal"); }
ChannelError GuestChannel::reset_context(const std::string&, schema::Language, Deadline) {
  return not_implemented("reset_context");
}

}  // namespace nv::guest
