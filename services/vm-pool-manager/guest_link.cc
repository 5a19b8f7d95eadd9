#include "guest_link.h"

#include <chrono>

#include "guest/host/guest_channel.h"

namespace nv::vm {
namespace {

guest::ChannelKind kind_of(const VmInfo& vm) {
  return vm.channel_kind == ChannelKind::hybridVsock ? guest::ChannelKind::hybrid_vsock
                                                     : guest::ChannelKind::unix_stream;
}

Error channel_error(const std::string& what, const guest::ChannelError& e) {
  ErrorCode code = ErrorCode::VM_FAILED;
  if (e.code == guest::ChannelErrc::timeout) code = ErrorCode::TIMED_OUT;
  if (e.code == guest::ChannelErrc::protocol || e.code == guest::ChannelErrc::rate_limited) {
    code = ErrorCode::GUEST_PROTOCOL;
  }
  return make_error(code, what + ": " + guest::to_string(e.code) + ": " + e.message);
}

}  // namespace

Status ChannelGuestLink::wait_ready(const VmInfo& vm, Deadline deadline) {
  auto ch = guest::GuestChannel::connect(vm.channel_path, kind_of(vm), vm.vsock_port, deadline);
  if (!ch.ok()) return channel_error("guest channel " + vm.channel_path, ch.error());
  return {};
}

Status ChannelGuestLink::reseed(const VmInfo& vm, const std::string& entropy,
                                const std::string& vm_id, Deadline deadline) {
  auto ch = guest::GuestChannel::connect(vm.channel_path, kind_of(vm), vm.vsock_port, deadline);
  if (!ch.ok()) return channel_error("guest channel " + vm.channel_path, ch.error());
  auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  auto id = ch.value()->reseed(entropy, vm_id, now_ns, deadline);
  if (!id.ok()) return channel_error("reseed", id.error());
  if (id.value().vm_id != vm_id) {
    return make_error(ErrorCode::GUEST_PROTOCOL,
                      "reseed: guest reports id '" + id.value().vm_id + "', expected " + vm_id);
  }
  return {};
}

}  // namespace nv::vm
