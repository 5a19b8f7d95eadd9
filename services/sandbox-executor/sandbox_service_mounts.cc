// sandbox_service_mounts.cc — the sandbox service's host directories (issue 15): copy-in at
// create, `sync`, and the copy-out before a sandbox ends (sandbox_mounts.h has the semantics).
#include "common/log.h"
#include "sandbox_call.h"

namespace nv::exec {

Status SandboxService::mount_in(Call& c, Sandbox& s, const std::vector<sandbox::Mount>& mounts) {
  guest::ChannelError ce;
  // Copy-in is file traffic: the file timeout per mount, within the caller's deadline.
  auto deadline = c.bounded(opt_.file_timeout * static_cast<int>(mounts.size() + 1));
  auto in = copy_in(*s.channel, mounts, opt_.mounts, deadline, ce);
  if (in.ok()) {
    s.mounts = std::move(in.value());
    return {};
  }
  Error e = ce ? guest_failed(c, s, ce, "mount copy-in") : in.error();
  log::warn("sandbox mount copy-in failed",
            {{"sandbox_id", s.rec.info.sandbox_id}, {"error", e.message}});
  // The half-made sandbox is not kept: its VM goes back to the pool.
  bool ended;
  {
    std::lock_guard g(mu_);
    ended = s.rec.info.state == schema::SandboxState::DESTROYED;
  }
  if (!ended) end(s, "sandbox.destroyed", "mount copy-in failed: " + e.message, c.trace_id);
  return e;
}

Result<std::vector<sandbox::MountSync>> SandboxService::mount_out(Sandbox& s,
                                                                  const std::string& trace_id,
                                                                  guest::Deadline deadline,
                                                                  Call* c) {
  if (!has_rw_mounts(s.mounts)) return std::vector<sandbox::MountSync>{};
  if (c) {
    if (auto st = ensure_channel(*c, s); !st) return st.error();
  } else if (!s.channel || !s.channel->is_open()) {
    auto ch = connect_(s.lease, deadline);
    if (!ch.ok())
      return make_error(ErrorCode::VM_FAILED, "guest unreachable: " + ch.error().message);
    s.channel = std::move(ch.value());
  }
  guest::ChannelError ce;
  auto out = sync_out(*s.channel, s.mounts, opt_.mounts, deadline, ce);
  // Files written before a failure are the new baseline all the same.
  save(s);
  if (!out.ok() && ce) {
    if (c) return guest_failed(*c, s, ce, "sync");
    s.channel.reset();
  }
  if (out.ok()) {
    for (const auto& m : out.value()) {
      log::info("sandbox mount synced", {{"sandbox_id", s.rec.info.sandbox_id},
                                         {"mount", m.guest_path},
                                         {"files_written", std::to_string(m.files_written)},
                                         {"files_removed", std::to_string(m.files_removed)},
                                         {"skipped", std::to_string(m.skipped.size())},
                                         {"trace_id", trace_id}});
    }
  }
  return out;
}

void SandboxService::do_sync(Call& c, Sandbox& s) {
  auto out = mount_out(s, c.trace_id, c.bounded(opt_.file_timeout * 8), &c);
  if (!out.ok()) return c.fail(out.error());
  auto list = c.reply().initSynced(static_cast<unsigned>(out.value().size()));
  for (unsigned i = 0; i < list.size(); ++i) sandbox::to_capnp(out.value()[i], list[i]);
  c.send();
}

std::string SandboxService::sync_before_end(Sandbox& s, const std::string& trace_id) {
  if (!has_rw_mounts(s.mounts)) return "";
  schema::SandboxState state;
  {
    std::lock_guard g(mu_);
    state = s.rec.info.state;
  }
  if (state != schema::SandboxState::RUNNING) {
    return "its read-write mounts were not synced (the sandbox was not running)";
  }
  auto out =
      mount_out(s, trace_id, std::chrono::steady_clock::now() + opt_.file_timeout * 8, nullptr);
  if (!out.ok()) return "its read-write mounts were not synced: " + out.error().message;
  return "";
}

}  // namespace nv::exec
