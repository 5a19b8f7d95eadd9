// agent_sandbox.cc — a task's sandbox: made lazily, calls routed to it, destroyed at the end.
#include "agent_sandbox.h"

#include <algorithm>

#include "common/log.h"

namespace nv::agent {

namespace s = nv::schema;
using std::chrono::milliseconds;

namespace {

kj::ArrayPtr<const kj::byte> bytes(const std::string& v) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(v.data()), v.size());
}

}  // namespace

TaskSandbox::TaskSandbox(Client& client, Options options)
    : client_(client, options.owner,
              sandbox::ClientCallOptions{milliseconds(60000), options.trace}),
      options_(std::move(options)) {}

bool TaskSandbox::is_lost(const Error& e) {
  return e.code == ErrorCode::VM_FAILED || e.code == ErrorCode::UNKNOWN_SANDBOX;
}

Error TaskSandbox::checked(Error e) {
  if (!id_.empty() && is_lost(e)) {
    log::warn("the task's sandbox is gone", {{"sandbox", id_}, {"error", e.message}});
    e.message += " — sandbox " + id_ +
                 " is gone with its files and variables; the next tool call starts a new one";
    id_.clear();
  }
  return e;
}

Result<std::string> TaskSandbox::ensure(milliseconds budget, bool* created) {
  *created = false;
  if (!id_.empty()) return id_;
  sandbox::Spec spec;
  spec.tier = options_.tier;
  // The lifetime is bounded by the executor's --max-sandbox-lifetime-ms (24 h by default).
  spec.lifetime_ms =
      static_cast<uint32_t>(std::clamp<int64_t>(options_.lifetime.count(), 0, int64_t{86'400'000}));
  spec.labels.push_back({"task", options_.trace.substr(0, 255)});
  spec.mounts = options_.mounts;
  spec.network = options_.network;
  client_.set_timeout(budget);
  auto info = client_.create(spec);
  if (!info) return info.error();
  id_ = info->sandbox_id;
  ++made_;
  *created = true;
  log::info("task sandbox created", {{"sandbox", id_}, {"vm", info->vm_id}});
  return id_;
}

Result<sandbox::ExecResult> TaskSandbox::exec(const sandbox::ExecSpec& spec,
                                              const sandbox::SandboxClient::ChunkFn& on_chunk,
                                              milliseconds budget) {
  client_.set_timeout(budget);
  auto r = client_.exec(id_, spec, on_chunk);
  if (!r) return checked(r.error());
  return r;
}

Result<sandbox::FileEntry> TaskSandbox::write(const std::string& path, std::string_view content,
                                              milliseconds budget) {
  client_.set_timeout(budget);
  auto r = client_.write_file(id_, path, content);
  if (!r) return checked(r.error());
  return r;
}

Result<sandbox::FileData> TaskSandbox::read(const std::string& path, uint64_t offset,
                                            uint64_t length, milliseconds budget) {
  client_.set_timeout(budget);
  auto r = client_.read_file(id_, path, offset, length);
  if (!r) return checked(r.error());
  return r;
}

Result<std::vector<sandbox::MountSync>> TaskSandbox::sync(milliseconds budget) {
  if (id_.empty()) return make_error(ErrorCode::UNKNOWN_SANDBOX, "the task has no sandbox");
  client_.set_timeout(budget);
  auto r = client_.sync(id_);
  if (!r) return checked(r.error());
  return r;
}

Status TaskSandbox::close(milliseconds budget) {
  if (id_.empty()) return {};
  client_.set_timeout(budget);
  auto r = client_.destroy(id_);
  std::string id = std::move(id_);
  id_.clear();
  if (!r && r.error().code != ErrorCode::UNKNOWN_SANDBOX) {
    log::warn(
        "the task's sandbox could not be destroyed; the executor reaps it at its "
        "lifetime's end",
        {{"sandbox", id}, {"error", r.error().message}});
    return r.error();
  }
  log::info("task sandbox destroyed", {{"sandbox", id}});
  return {};
}

void to_capnp(const sandbox::ExecResult& r, const std::string& trace, s::ExecResult::Builder b) {
  b.setTraceId(trace);
  b.setExitCode(r.exit_code);
  b.setSignal(r.signal);
  b.setDurationMs(r.duration_ms);
  b.setWallMs(r.wall_ms);
  b.setTimedOut(r.timed_out);
  b.setTruncated(r.truncated);
  b.setStdout(bytes(r.stdout_data));
  b.setStderr(bytes(r.stderr_data));
  b.setStdoutBytes(r.stdout_bytes);
  b.setStderrBytes(r.stderr_bytes);
  b.setVmId(r.vm_id);
  b.setHostKilled(r.host_killed);
  b.setNote(r.note);
  b.setStdoutTail(bytes(r.stdout_tail));
  b.setStderrTail(bytes(r.stderr_tail));
}

}  // namespace nv::agent
