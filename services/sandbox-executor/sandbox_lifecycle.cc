// sandbox_lifecycle.cc — the sandbox calls the pool manager does the work of: snapshot,
// snapshots, deleteSnapshot, fork, pause, resume (vm.capnp through SandboxPool).
#include "common/log.h"
#include "sandbox_call.h"

namespace nv::exec {

namespace {

sandbox::Snapshot to_info(const SnapshotRecord& r) {
  return sandbox::Snapshot{
      r.name,         r.owner,      r.tier, r.source_sandbox_id, r.created_unix_ms,
      r.memory_bytes, r.state_bytes};
}

// The pool's unknownSnapshot/unknownLease words are its own; an owner sees only "no such".
Error snapshot_error(const Error& e, const std::string& name) {
  if (e.code == ErrorCode::UNKNOWN_SNAPSHOT) {
    return make_error(ErrorCode::UNKNOWN_SNAPSHOT,
                      "no snapshot '" + name + "' for this owner (snapshots lists yours)");
  }
  return e;
}

}  // namespace

void SandboxService::do_snapshot(Call& c, Sandbox& s) {
  std::string name = c.r.getSnapshot().getName();
  auto r = pool_->snapshot(c.trace_id, s.lease.vm_id, name, c.owner);
  if (!r) return c.fail(snapshot_error(r.error(), name));
  auto info = to_info(r.value());
  info.source_sandbox_id = c.id;
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    copy = s.rec;
  }
  publish("sandbox.snapshot", copy, name, c.trace_id, c.elapsed_ms());
  sandbox::to_capnp(info, c.reply().initSnapshot());
  c.send();
}

void SandboxService::do_snapshots(Call& c) {
  auto r = pool_->snapshots(c.owner);
  if (!r) return c.fail(r.error());
  std::vector<sandbox::Snapshot> mine;
  for (const auto& s : r.value()) {
    if (s.owner == c.owner) mine.push_back(to_info(s));
  }
  auto list = c.reply().initSnapshots(static_cast<unsigned>(mine.size()));
  for (unsigned i = 0; i < mine.size(); ++i) sandbox::to_capnp(mine[i], list[i]);
  c.send();
}

void SandboxService::do_delete_snapshot(Call& c) {
  std::string name = c.r.getDeleteSnapshot().getName();
  auto r = pool_->delete_snapshot(c.trace_id, name, c.owner);
  if (!r) return c.fail(snapshot_error(r.error(), name));
  c.reply_done();
}

void SandboxService::do_fork(Call& c, Sandbox& parent) {
  auto f = c.r.getFork();
  const uint32_t count = f.getCount();
  SandboxRecord prec;
  {
    std::lock_guard g(mu_);
    prec = parent.rec;
  }
  if (auto st = check_limits(c.owner, count, count * prec.info.memory_mib); !st) {
    return c.fail(st.error());
  }
  const auto now = opt_.now_ms();
  // Each fork lives as long as its parent was given to live, from now.
  auto lifetime = milliseconds(std::min<int64_t>(
      prec.info.deadline_unix_ms - prec.info.created_unix_ms, opt_.max_lifetime.count()));
  std::vector<std::string> ids;
  for (uint32_t i = 0; i < count; ++i) ids.push_back(new_id());
  auto r = pool_->fork(c.trace_id, parent.lease.vm_id, count, lifetime + opt_.lease_margin, ids);
  if (!r) return c.fail(r.error());
  auto labels = sandbox::labels_from_capnp(f.getLabels());
  std::vector<sandbox::Info> out;
  for (size_t i = 0; i < r->leases.size(); ++i) {
    SandboxRecord rec;
    auto& info = rec.info;
    info.sandbox_id =
        i < ids.size() && (r->leases[i].sandbox_id.empty() || r->leases[i].sandbox_id == ids[i])
            ? ids[i]
            : r->leases[i].sandbox_id;
    info.owner = c.owner;
    info.tier = prec.info.tier;
    info.created_unix_ms = now;
    info.deadline_unix_ms = now + lifetime.count();
    rec.max_deadline_unix_ms = now + opt_.max_lifetime.count();
    rec.idle_timeout_ms = prec.idle_timeout_ms;
    info.last_active_unix_ms = now;
    info.idle_deadline_unix_ms = now + rec.idle_timeout_ms;
    info.labels = labels;
    info.parent_id = c.id;
    info.cwd = prec.info.cwd;
    info.env = prec.info.env;
    info.inference = prec.info.inference;  // the policy, and what the parent had spent
    info.inference_tokens_used = prec.info.inference_tokens_used;
    auto s = adopt(std::move(rec), r->leases[i]);
    std::lock_guard op(s->op);
    auto ch = connect_(s->lease, c.bounded(opt_.connect_timeout));
    if (!ch.ok()) {
      end(*s, "sandbox.reaped", "vm lost: the fork's agent did not answer: " + ch.error().message,
          c.trace_id);
      continue;
    }
    s->channel = std::move(ch.value());
    s->trace_id = c.trace_id;
    if (auto st = start_inference(*s, c.bounded(opt_.connect_timeout)); !st) {
      log::warn("fork: inference bridge failed",
                {{"sandbox_id", s->rec.info.sandbox_id}, {"error", st.error().message}});
    }
    save(*s);
    SandboxRecord copy;
    {
      std::lock_guard g(mu_);
      copy = s->rec;
    }
    publish("sandbox.forked", copy, "", c.trace_id, c.elapsed_ms(), c.id);
    out.push_back(copy.info);
  }
  if (out.empty()) {
    return c.fail(make_error(ErrorCode::VM_FAILED, "no fork of " + c.id + " could be reached"));
  }
  auto list = c.reply().initInfos(static_cast<unsigned>(out.size()));
  for (unsigned i = 0; i < out.size(); ++i) sandbox::to_capnp(out[i], list[i]);
  c.send();
}

void SandboxService::do_pause(Call& c, Sandbox& s) {
  auto r = pool_->pause(c.trace_id, s.lease.vm_id);
  if (!r) return c.fail(r.error());
  s.inference.reset();
  s.channel.reset();
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    s.rec.info.state = schema::SandboxState::PAUSED;
    s.rec.info.vm_id.clear();
    copy = s.rec;
  }
  save(s);
  publish("sandbox.paused", copy, "", c.trace_id, c.elapsed_ms());
  c.reply_info(copy.info);
}

void SandboxService::do_resume(Call& c, Sandbox& s) {
  SandboxRecord rec;
  {
    std::lock_guard g(mu_);
    rec = s.rec;
  }
  // The owner's memory limit counts running sandboxes: resuming adds this one back.
  if (auto st = check_limits(c.owner, 0, rec.info.memory_mib); !st) return c.fail(st.error());
  auto r = pool_->resume(c.trace_id, rec.lease_vm_id, lease_lifetime(rec));
  if (!r) return c.fail(r.error());
  s.lease = r.value();
  {
    std::lock_guard g(mu_);
    s.rec.info.state = schema::SandboxState::RUNNING;
    if (!s.lease.vm_id.empty()) s.rec.lease_vm_id = s.lease.vm_id;
    s.rec.info.vm_id = s.rec.lease_vm_id;
    s.lease.vm_id = s.rec.lease_vm_id;
  }
  s.channel.reset();
  if (auto st = ensure_channel(c, s); !st) return c.fail(st.error());
  if (auto st = start_inference(s, c.bounded(opt_.connect_timeout)); !st) {
    log::warn("resume: inference bridge failed",
              {{"sandbox_id", c.id}, {"error", st.error().message}});
  }
  touch(s);
  save(s);
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    copy = s.rec;
  }
  publish("sandbox.resumed", copy, "", c.trace_id, c.elapsed_ms());
  c.reply_info(copy.info);
}

}  // namespace nv::exec
