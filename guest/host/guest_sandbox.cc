// guest_sandbox.cc — GuestChannel's file, process and context calls: guest.capnp putFile/getFile
// (whole files in one frame) and the sandbox operations writeChunk, readRange, fileOp,
// listProcesses, signal, resetContext.
#include <capnp/message.h>
#include <nv/schema/guest.capnp.h>

#include <algorithm>

#include "guest/host/guest_channel.h"

namespace nv::guest {

namespace {

using schema::GuestMessage;
using schema::HostMessage;

// Data per writeChunk frame (guest.capnp: at most 4 MiB; the agent's frame cap is 64 MiB).
constexpr size_t kWriteChunkBytes = 4u << 20;
// The agent answers reads in fileChunk frames of at most this much data (guest.capnp).
constexpr size_t kReadChunkBytes = 512u << 10;

ChannelError protocol(std::string m) {
  return ChannelError{ChannelErrc::protocol, "guest sent " + std::move(m)};
}
ChannelError bad_argument(std::string m) {
  return ChannelError{ChannelErrc::bad_argument, std::move(m)};
}

HostMessage::Builder start(capnp::MallocMessageBuilder& mb) {
  auto m = mb.initRoot<HostMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  return m;
}

FileEntryInfo entry_of(schema::FileEntry::Reader e) {
  FileEntryInfo out;
  out.path = e.getPath();
  out.type = e.getType();
  out.size = e.getSize();
  out.mode = e.getMode();
  out.mtime_unix_ms = e.getMtimeUnixMs();
  out.link_target = e.getLinkTarget();
  return out;
}

// Checks an answer's kind: anything else is a protocol error.
bool expect(GuestMessage::Reader msg, GuestMessage::Which want, const char* name,
            ChannelError& error) {
  if (msg.which() == want) return true;
  error = protocol("answer kind " + std::to_string(static_cast<int>(msg.which())) +
                   " while the host waited for " + name);
  return false;
}

}  // namespace

// ---- whole files in one frame (PutFile / GetFile, one-shot execs) ------------------------------

ChannelError GuestChannel::put_file(const std::string& path, std::string_view data, uint32_t mode,
                                    Deadline deadline) {
  {
    capnp::MallocMessageBuilder mb;
    auto p = start(mb).initPutFile();
    p.setPath(path);
    p.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
    p.setMode(mode);
    if (auto e = send_request(mb, deadline)) return e;
  }
  auto r = await_file_data("write", path, deadline);
  return r.ok() ? ChannelError{} : r.error();
}

Result<std::string> GuestChannel::get_file(const std::string& path, Deadline deadline) {
  {
    capnp::MallocMessageBuilder mb;
    start(mb).setGetFile(path);
    if (auto e = send_request(mb, deadline)) return e;
  }
  return await_file_data("read", path, deadline);
}

Result<std::string> GuestChannel::await_file_data(const char* verb, const std::string& path,
                                                  Deadline deadline) {
  std::string content;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (!expect(msg, GuestMessage::FILE_DATA, "fileData", error)) return false;
        auto f = msg.getFileData();
        if (!f.getFound()) {
          error = ChannelError{ChannelErrc::guest_error,
                               std::string("guest could not ") + verb + " " + path + ": " +
                                   std::string(f.getError()).substr(0, 500)};
          return true;
        }
        auto d = f.getData();
        content.assign(reinterpret_cast<const char*>(d.begin()), d.size());
        return true;
      },
      deadline);
  if (e) return e;
  return content;
}

// ---- sandbox files ---------------------------------------------------------------------------

Result<FileEntryInfo> GuestChannel::write_file(const std::string& path, std::string_view data,
                                               uint32_t mode, bool append, Deadline deadline) {
  if (mode > 07777) return bad_argument("mode " + std::to_string(mode) + " is not a permission");
  // All chunks go out at once; the agent answers once: ack after the last, or an error at the
  // first chunk that failed (it then drops the rest of this write).
  size_t off = 0;
  do {
    const size_t n = std::min(kWriteChunkBytes, data.size() - off);
    capnp::MallocMessageBuilder mb;
    auto w = start(mb).initWriteChunk();
    w.setPath(path);
    w.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data() + off), n));
    w.setMode(mode);
    w.setFirst(off == 0);
    w.setLast(off + n == data.size());
    w.setAppend(append);
    if (auto e = send_request(mb, deadline)) return e;
    off += n;
  } while (off < data.size());
  return await_ack("the write's ack", deadline);
}

Result<FileRange> GuestChannel::read_file(const std::string& path, uint64_t offset, uint64_t length,
                                          uint64_t max_bytes, Deadline deadline) {
  if (length == 0 && max_bytes == 0) return bad_argument("read_file needs max_bytes > 0");
  if (length > max_bytes) {
    return bad_argument("read of " + std::to_string(length) + " bytes asked, at most " +
                        std::to_string(max_bytes) + " allowed");
  }
  {
    capnp::MallocMessageBuilder mb;
    auto r = start(mb).initReadRange();
    r.setPath(path);
    r.setOffset(offset);
    // To the end, but never more than max_bytes: the agent stops there.
    r.setLength(length == 0 ? max_bytes : length);
    if (auto e = send_request(mb, deadline)) return e;
  }
  FileRange out;
  out.offset = offset;
  bool first = true;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (!expect(msg, GuestMessage::FILE_CHUNK, "fileChunk", error)) return false;
        auto c = msg.getFileChunk();
        auto d = c.getData();
        credit_solicited_bytes(d.size());
        if (d.size() > kReadChunkBytes || c.getOffset() != offset + out.data.size() ||
            out.data.size() + d.size() > max_bytes || (!first && c.getSize() != out.size)) {
          error =
              protocol("a fileChunk out of order or beyond the range (offset " +
                       std::to_string(c.getOffset()) + ", " + std::to_string(d.size()) + " bytes)");
          return false;
        }
        first = false;
        out.size = c.getSize();
        out.data.append(reinterpret_cast<const char*>(d.begin()), d.size());
        return c.getDone();
      },
      deadline);
  if (e) return e;
  out.eof = out.offset + out.data.size() >= out.size;
  return out;
}

ChannelError GuestChannel::send_file_op(uint16_t kind, const std::string& path, bool recursive,
                                        Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  auto op = start(mb).initFileOp();
  op.setKind(static_cast<schema::FileOpKind>(kind));
  op.setPath(path);
  op.setRecursive(recursive);
  return send_request(mb, deadline);
}

Result<FileEntryInfo> GuestChannel::await_ack(const char* what, Deadline deadline) {
  FileEntryInfo out;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (!expect(msg, GuestMessage::ACK, what, error)) return false;
        if (msg.getAck().hasEntry()) out = entry_of(msg.getAck().getEntry());
        return true;
      },
      deadline);
  if (e) return e;
  return out;
}

Result<std::vector<FileEntryInfo>> GuestChannel::await_entries(Deadline deadline) {
  std::vector<FileEntryInfo> out;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (!expect(msg, GuestMessage::ENTRIES, "entries", error)) return false;
        auto list = msg.getEntries();
        if (list.size() > 10000) {
          error = protocol(std::to_string(list.size()) + " entries (at most 10,000)");
          return false;
        }
        for (auto en : list) out.push_back(entry_of(en));
        return true;
      },
      deadline);
  if (e) return e;
  return out;
}

Result<FileEntryInfo> GuestChannel::stat(const std::string& path, Deadline deadline) {
  if (auto e =
          send_file_op(static_cast<uint16_t>(schema::FileOpKind::STAT), path, false, deadline)) {
    return e;
  }
  auto entries = await_entries(deadline);
  if (!entries.ok()) return entries.error();
  if (entries->size() != 1) {
    close();  // the stream cannot be trusted after a wrong answer
    return protocol(std::to_string(entries->size()) + " entries for one stat");
  }
  return entries->front();
}

Result<std::vector<FileEntryInfo>> GuestChannel::list_dir(const std::string& path, bool recursive,
                                                          Deadline deadline) {
  if (auto e = send_file_op(static_cast<uint16_t>(schema::FileOpKind::LIST), path, recursive,
                            deadline)) {
    return e;
  }
  return await_entries(deadline);
}

ChannelError GuestChannel::remove(const std::string& path, bool recursive, Deadline deadline) {
  if (auto e = send_file_op(static_cast<uint16_t>(schema::FileOpKind::REMOVE), path, recursive,
                            deadline)) {
    return e;
  }
  auto r = await_ack("the remove's ack", deadline);
  return r.ok() ? ChannelError{} : r.error();
}

Result<FileEntryInfo> GuestChannel::make_dir(const std::string& path, bool parents,
                                             Deadline deadline) {
  if (auto e =
          send_file_op(static_cast<uint16_t>(schema::FileOpKind::MKDIR), path, parents, deadline)) {
    return e;
  }
  return await_ack("the mkdir's ack", deadline);
}

Result<std::vector<ProcessEntry>> GuestChannel::processes(Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  start(mb).setListProcesses();
  if (auto e = send_request(mb, deadline)) return e;
  std::vector<ProcessEntry> out;
  auto e = await_answers(
      [&](ParsedMessage& pm, ChannelError& error) {
        auto msg = pm.root<GuestMessage>();
        if (!expect(msg, GuestMessage::PROCESSES, "processes", error)) return false;
        for (auto p : msg.getProcesses()) {
          ProcessEntry pe;
          pe.pid = p.getPid();
          pe.ppid = p.getPpid();
          pe.command = p.getCommand();
          if (pe.command.size() > 4096) pe.command.resize(4096);
          pe.state = p.getState();
          pe.rss_bytes = p.getRssBytes();
          pe.started_unix_ms = p.getStartedUnixMs();
          pe.context = p.getContext();
          out.push_back(std::move(pe));
        }
        return true;
      },
      deadline);
  if (e) return e;
  return out;
}

ChannelError GuestChannel::signal(int32_t pid, int32_t signo, Deadline deadline) {
  if (pid <= 0) return bad_argument("pid " + std::to_string(pid) + " is not a process");
  if (signo < 1 || signo > 64)
    return bad_argument("signal " + std::to_string(signo) + " not in 1..64");
  capnp::MallocMessageBuilder mb;
  auto s = start(mb).initSignal();
  s.setPid(pid);
  s.setSignal(signo);
  if (auto e = send_request(mb, deadline)) return e;
  auto r = await_ack("the signal's ack", deadline);
  return r.ok() ? ChannelError{} : r.error();
}

ChannelError GuestChannel::reset_context(const std::string& name, schema::Language language,
                                         Deadline deadline) {
  if (name.empty()) return bad_argument("reset_context needs a context name");
  capnp::MallocMessageBuilder mb;
  auto r = start(mb).initResetContext();
  r.setContext(name);
  r.setLanguage(language);
  if (auto e = send_request(mb, deadline)) return e;
  auto a = await_ack("the reset's ack", deadline);
  return a.ok() ? ChannelError{} : a.error();
}

ChannelError GuestChannel::start_inference(Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  start(mb).setStartInference();
  if (auto e = send_request(mb, deadline)) return e;
  auto a = await_ack("the inference listener's ack", deadline);
  return a.ok() ? ChannelError{} : a.error();
}

ChannelError GuestChannel::stop_inference(Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  start(mb).setStopInference();
  if (auto e = send_request(mb, deadline)) return e;
  auto a = await_ack("the inference listener's stop ack", deadline);
  return a.ok() ? ChannelError{} : a.error();
}

}  // namespace nv::guest

namespace nv::guest {

// ---- host directories (issue 15) ----------------------------------------------------------------

ChannelError GuestChannel::mount_setup(const std::string& path, uint64_t size_bytes,
                                       uint64_t inodes, Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  auto m = start(mb).initMountSetup();
  m.setPath(path);
  m.setSizeBytes(size_bytes);
  m.setInodes(inodes);
  if (auto e = send_request(mb, deadline)) return e;
  auto a = await_ack("the mountSetup's ack", deadline);
  return a.ok() ? ChannelError{} : a.error();
}

ChannelError GuestChannel::mount_seal(const std::string& path, Deadline deadline) {
  capnp::MallocMessageBuilder mb;
  start(mb).setMountSeal(path);
  if (auto e = send_request(mb, deadline)) return e;
  auto a = await_ack("the mountSeal's ack", deadline);
  return a.ok() ? ChannelError{} : a.error();
}

}  // namespace nv::guest
