// sandbox_service.cc — the request path: validation, routing to a sandbox under its lock,
// create/get/list/keepalive/destroy, the registry and the events. The guest calls are in
// sandbox_ops.cc, fork/snapshot/pause/resume in sandbox_lifecycle.cc, the reaper and the restart
// in sandbox_reaper.cc.
#include <random>

#include "common/log.h"
#include "sandbox_call.h"
#include "sandbox_validate.h"

namespace nv::exec {

namespace {

int64_t system_now_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using R = schema::SandboxRequest;

bool has_labels(const std::vector<sandbox::Label>& have, const std::vector<sandbox::Label>& want) {
  for (const auto& w : want) {
    bool found = false;
    for (const auto& h : have) found = found || h == w;
    if (!found) return false;
  }
  return true;
}

}  // namespace

ChannelConnect channel_connect(const guest::ChannelLimits& limits) {
  return [limits](const VmLease& lease, guest::Deadline deadline) {
    auto kind = lease.channel_kind == "hybridVsock" ? guest::ChannelKind::hybrid_vsock
                                                    : guest::ChannelKind::unix_stream;
    return guest::GuestChannel::connect(lease.channel_path, kind, lease.vsock_port, deadline,
                                        limits);
  };
}

SandboxService::SandboxService(SandboxOptions options, std::unique_ptr<SandboxPool> pool,
                               ChannelConnect connect, EventPublisher& events,
                               std::unique_ptr<SandboxRegistry> registry)
    : opt_(std::move(options)),
      pool_(std::move(pool)),
      connect_(std::move(connect)),
      events_(events),
      registry_(std::move(registry)) {
  if (!opt_.now_ms) opt_.now_ms = system_now_ms;
}

SandboxService::~SandboxService() { stop_reaper(); }

void SandboxService::handle(const std::shared_ptr<Request>& req) {
  auto body = req->read<R>();
  if (!body) {
    req->fail(body.error());
    return;
  }
  Call c;
  c.req = req;
  c.r = body.value();
  c.trace_id = req->header().trace_id.empty() ? std::string(c.r.getTraceId().cStr())
                                              : req->header().trace_id;
  log::TraceScope trace(c.trace_id);
  SandboxLimits limits;
  limits.exec = opt_.limits;
  limits.max_file_bytes = opt_.max_file_bytes;
  limits.max_path_bytes = opt_.max_path_bytes;
  limits.max_lifetime_ms = static_cast<uint32_t>(opt_.max_lifetime.count());
  if (auto st = validate(c.r, limits); !st) {
    log::info("sandbox request refused", {{"error", st.error().message}});
    req->fail(st.error());
    return;
  }
  c.owner = c.r.getOwner();
  c.id = c.r.getSandboxId();
  auto remaining = req->remaining();
  if (remaining != milliseconds::max()) c.end = c.start + remaining;
  try {
    dispatch(c);
  } catch (const std::exception& e) {
    log::error("sandbox request failed", {{"error", e.what()}});
    if (!req->answered()) req->fail(make_error(ErrorCode::INTERNAL, e.what()));
  }
}

void SandboxService::dispatch(Call& c) {
  switch (c.r.which()) {
    case R::CREATE:
      return do_create(c);
    case R::LIST:
      return do_list(c);
    case R::SNAPSHOTS:
      return do_snapshots(c);
    case R::DELETE_SNAPSHOT:
      return do_delete_snapshot(c);
    case R::GET:
      return do_get(c);
    default:
      break;
  }
  auto s = find(c.owner, c.id);
  if (!s) return c.fail(unknown_sandbox(c.id));
  // One operation at a time per sandbox: wait for the one running, within the caller's time.
  std::unique_lock lock(s->op, std::defer_lock);
  auto wait = c.end == Call::Clock::time_point::max()
                  ? milliseconds(600000)
                  : std::chrono::duration_cast<milliseconds>(c.end - Call::Clock::now());
  if (!lock.try_lock_for(wait)) {
    return c.fail(make_error(ErrorCode::TIMED_OUT,
                             "sandbox " + c.id + " was busy with another call until the deadline",
                             true));
  }
  schema::SandboxState state;
  std::string end_reason;
  {
    std::lock_guard g(mu_);
    state = s->rec.info.state;
    end_reason = s->rec.info.end_reason;
  }
  auto need = [&](schema::SandboxState want) {
    if (state == want) return true;
    std::string why = state == schema::SandboxState::DESTROYED ? "destroyed (" + end_reason + ")"
                      : state == schema::SandboxState::PAUSED  ? "paused (resume it first)"
                                                               : "not running";
    c.fail(make_error(ErrorCode::SANDBOX_STATE, "sandbox " + c.id + " is " + why));
    return false;
  };
  switch (c.r.which()) {
    case R::DESTROY:
      if (state == schema::SandboxState::DESTROYED)
        return (void)need(schema::SandboxState::RUNNING);
      return do_destroy(c, *s);
    case R::RESUME:
      if (!need(schema::SandboxState::PAUSED)) return;
      return do_resume(c, *s);
    case R::KEEPALIVE:
      if (state != schema::SandboxState::PAUSED && !need(schema::SandboxState::RUNNING)) return;
      return do_keepalive(c, *s);
    default:
      break;
  }
  if (!need(schema::SandboxState::RUNNING)) return;
  touch(*s);
  switch (c.r.which()) {
    case R::EXEC:
      do_exec(c, *s);
      break;
    case R::SNAPSHOT:
      do_snapshot(c, *s);
      break;
    case R::FORK:
      do_fork(c, *s);
      break;
    case R::PAUSE:
      do_pause(c, *s);
      break;
    case R::SYNC:
      do_sync(c, *s);
      break;
    default:
      do_guest_call(c, *s);
      break;
  }
  touch(*s);
}

std::shared_ptr<Sandbox> SandboxService::find(const std::string& owner, const std::string& id) {
  std::lock_guard g(mu_);
  auto it = sandboxes_.find(id);
  // Another owner's sandbox answers exactly like a missing one.
  if (it == sandboxes_.end() || it->second->rec.info.owner != owner) return nullptr;
  return it->second;
}

std::string SandboxService::new_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(rng()));
  return "sbx-" + opt_.executor + "-" + hex;
}

void SandboxService::touch(Sandbox& s) {
  std::lock_guard g(mu_);
  auto now = opt_.now_ms();
  s.rec.info.last_active_unix_ms = now;
  s.rec.info.idle_deadline_unix_ms = now + s.rec.idle_timeout_ms;
}

Status SandboxService::check_limits(const std::string& owner, uint32_t more, uint32_t more_mib) {
  std::lock_guard g(mu_);
  uint32_t live = 0, mib = 0;
  for (const auto& [id, s] : sandboxes_) {
    const auto& info = s->rec.info;
    if (info.owner != owner || info.state == schema::SandboxState::DESTROYED) continue;
    ++live;
    if (info.state != schema::SandboxState::PAUSED) mib += info.memory_mib;
  }
  if (live + more > opt_.max_per_owner) {
    return make_error(ErrorCode::SANDBOX_LIMIT,
                      "owner has " + std::to_string(live) + " sandboxes; " + std::to_string(more) +
                          " more would pass the limit of " + std::to_string(opt_.max_per_owner) +
                          " (destroy some first)");
  }
  if (mib + more_mib > opt_.max_memory_mib_per_owner) {
    return make_error(ErrorCode::SANDBOX_LIMIT,
                      "owner's running sandboxes use " + std::to_string(mib) + " MiB; " +
                          std::to_string(more_mib) + " MiB more would pass the limit of " +
                          std::to_string(opt_.max_memory_mib_per_owner) +
                          " MiB (pause or destroy some first)");
  }
  return {};
}

milliseconds SandboxService::lease_lifetime(const SandboxRecord& rec) const {
  auto left = rec.info.deadline_unix_ms - opt_.now_ms();
  return milliseconds(std::max<int64_t>(left, 0)) + opt_.lease_margin;
}

void SandboxService::save(Sandbox& s) {
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    copy = s.rec;
  }
  if (!s.mounts.empty()) copy.mount_state = encode_state(s.mounts);
  if (!registry_) return;
  if (auto st = registry_->put(copy); !st) {
    log::error("sandbox registry write failed",
               {{"sandbox_id", copy.info.sandbox_id}, {"error", st.error().message}});
  }
}

void SandboxService::publish(const std::string& topic, const SandboxRecord& rec,
                             const std::string& reason, const std::string& trace_id,
                             double duration_ms, const std::string& parent) {
  events_.publish(
      topic,
      [&](schema::Event::Builder e) {
        auto s = e.initSandbox();
        s.setSandboxId(rec.info.sandbox_id);
        s.setOwner(rec.info.owner);
        s.setVmId(rec.lease_vm_id);
        s.setReason(reason);
        s.setParentId(parent);
        s.setDurationMs(duration_ms);
        s.setTier(rec.info.tier);
      },
      trace_id);
  log::info(topic, {{"sandbox_id", rec.info.sandbox_id},
                    {"owner", rec.info.owner},
                    {"vm_id", rec.lease_vm_id},
                    {"reason", reason}});
}

std::shared_ptr<Sandbox> SandboxService::adopt(SandboxRecord rec, VmLease lease) {
  auto s = std::make_shared<Sandbox>();
  rec.lease_vm_id = lease.vm_id;
  rec.info.vm_id = lease.vm_id;
  rec.info.vcpus = lease.vcpus;
  rec.info.memory_mib = lease.memory_mib;
  rec.info.state = schema::SandboxState::RUNNING;
  rec.info.network.allow = lease.network.allow;  // the pool's NetworkInfo (forks: their own)
  rec.info.network.entries = lease.network.entries;
  rec.info.network.mac = lease.network.mac;
  rec.info.network.ipv4 = lease.network.ipv4;
  rec.info.network.gateway = lease.network.gateway;
  s->rec = std::move(rec);
  s->lease = std::move(lease);
  std::lock_guard g(mu_);
  if (s->rec.info.memory_mib > 0) tier_mib_[s->rec.info.tier] = s->rec.info.memory_mib;
  sandboxes_[s->rec.info.sandbox_id] = s;
  return s;
}

void SandboxService::do_create(Call& c) {
  auto spec = sandbox::from_capnp(c.r.getCreate());
  // Host directories are checked before anything is leased (mountRefused touches no VM).
  if (auto st = validate_mounts(spec.mounts, opt_.mounts); !st) {
    log::info("sandbox mounts refused", {{"error", st.error().message}});
    return c.fail(st.error());
  }
  Problems p;
  auto tier = check_tier(spec.tier, p);
  uint32_t known_mib = 0;
  {
    std::lock_guard g(mu_);
    if (auto it = tier_mib_.find(tier); it != tier_mib_.end()) known_mib = it->second;
  }
  if (auto st = check_limits(c.owner, 1, known_mib); !st) return c.fail(st.error());

  SandboxRecord rec;
  auto& info = rec.info;
  info.sandbox_id = new_id();
  info.owner = c.owner;
  info.state = schema::SandboxState::STARTING;
  info.tier = tier;
  const auto now = opt_.now_ms();
  info.created_unix_ms = now;
  auto lifetime = spec.lifetime_ms ? milliseconds(spec.lifetime_ms) : opt_.default_lifetime;
  if (lifetime > opt_.max_lifetime) {
    return c.fail(
        make_error(ErrorCode::BAD_REQUEST, "lifetimeMs " + std::to_string(lifetime.count()) +
                                               " is above --max-sandbox-lifetime-ms " +
                                               std::to_string(opt_.max_lifetime.count())));
  }
  info.deadline_unix_ms = now + lifetime.count();
  rec.max_deadline_unix_ms = now + opt_.max_lifetime.count();
  rec.idle_timeout_ms = static_cast<uint32_t>(spec.idle_timeout_ms ? spec.idle_timeout_ms
                                                                   : opt_.default_idle.count());
  info.last_active_unix_ms = now;
  info.idle_deadline_unix_ms = now + rec.idle_timeout_ms;
  info.labels = spec.labels;
  info.from_snapshot = spec.from_snapshot;
  info.cwd = spec.cwd.empty() ? "/home/agent" : spec.cwd;
  info.env = spec.env;
  info.mounts = spec.mounts;
  info.inference = spec.inference;
  if (info.inference.enabled) {
    if (!opt_.llm) {
      return c.fail(make_error(ErrorCode::BAD_REQUEST,
                               "inference is not available: this executor has no llm service"));
    }
    if (info.inference.token_budget == 0) info.inference.token_budget = opt_.inference_token_budget;
  } else {
    info.inference = {};
  }

  SandboxLeaseSpec ls;
  ls.sandbox_id = info.sandbox_id;
  ls.owner = c.owner;
  ls.from_snapshot = spec.from_snapshot;
  ls.tier = tier;
  ls.wait = std::min(opt_.lease_wait, std::chrono::duration_cast<milliseconds>(
                                          c.bounded(opt_.lease_wait) - Call::Clock::now()));
  ls.lifetime = lifetime + opt_.lease_margin;
  ls.network.allow = spec.network.allow;
  ls.network.entries = spec.network.entries;
  ls.network.max_connections = spec.network.max_connections;
  ls.network.bandwidth = spec.network.bandwidth;
  auto lease = pool_->lease(c.trace_id, ls);
  if (!lease) {
    log::warn("sandbox lease failed", {{"error", lease.error().to_string()}});
    return c.fail(lease.error());
  }
  // The memory limit with the VM's real size (the first lease of a tier teaches it).
  if (known_mib == 0) {
    if (auto st = check_limits(c.owner, 1, lease->memory_mib); !st) {
      (void)pool_->release(c.trace_id, lease->vm_id, "owner's memory limit reached");
      return c.fail(st.error());
    }
  }
  auto s = adopt(std::move(rec), std::move(lease.value()));
  std::lock_guard op(s->op);
  auto ch = connect_(s->lease, c.bounded(opt_.connect_timeout));
  if (!ch.ok()) {
    end(*s, "sandbox.reaped", "vm lost: its agent did not answer: " + ch.error().message,
        c.trace_id);
    return c.fail(make_error(ErrorCode::VM_FAILED, "cannot reach the guest agent of VM " +
                                                       s->lease.vm_id + ": " + ch.error().message));
  }
  s->channel = std::move(ch.value());
  if (!spec.mounts.empty()) {
    if (auto st = mount_in(c, *s, spec.mounts); !st) return c.fail(st.error());
  }
  s->trace_id = c.trace_id;
  if (auto st = start_inference(*s, c.bounded(opt_.connect_timeout)); !st) {
    end(*s, "sandbox.reaped", "inference bridge failed: " + st.error().message, c.trace_id);
    return c.fail(st.error());
  }
  save(*s);
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    copy = s->rec;
  }
  publish("sandbox.created", copy, spec.from_snapshot.empty() ? "" : spec.from_snapshot, c.trace_id,
          c.elapsed_ms());
  c.reply_info(copy.info);
}

void SandboxService::do_get(Call& c) {
  auto s = find(c.owner, c.id);
  if (!s) return c.fail(unknown_sandbox(c.id));
  sandbox::Info info;
  {
    std::lock_guard g(mu_);
    info = s->rec.info;
  }
  c.reply_info(info);
}

void SandboxService::do_list(Call& c) {
  auto want = sandbox::labels_from_capnp(c.r.getList().getLabels());
  bool destroyed = c.r.getList().getIncludeDestroyed();
  std::vector<sandbox::Info> out;
  {
    std::lock_guard g(mu_);
    for (const auto& [id, s] : sandboxes_) {
      const auto& info = s->rec.info;
      if (info.owner != c.owner) continue;
      if (!destroyed && info.state == schema::SandboxState::DESTROYED) continue;
      if (!has_labels(info.labels, want)) continue;
      out.push_back(info);
    }
  }
  auto list = c.reply().initInfos(static_cast<unsigned>(out.size()));
  for (unsigned i = 0; i < out.size(); ++i) sandbox::to_capnp(out[i], list[i]);
  c.send();
}

void SandboxService::do_keepalive(Call& c, Sandbox& s) {
  auto extend = milliseconds(c.r.getKeepalive().getExtendMs());
  touch(s);
  if (extend.count() > 0) {
    SandboxRecord rec;
    {
      std::lock_guard g(mu_);
      auto& info = s.rec.info;
      info.deadline_unix_ms = std::min(opt_.now_ms() + extend.count(), s.rec.max_deadline_unix_ms);
      rec = s.rec;
    }
    if (rec.info.state == schema::SandboxState::RUNNING) {
      auto r = pool_->extend(c.trace_id, rec.lease_vm_id, lease_lifetime(rec));
      if (!r) {
        log::warn("vm.extend failed", {{"sandbox_id", c.id}, {"error", r.error().to_string()}});
        return c.fail(r.error());
      }
    }
  }
  save(s);
  sandbox::Info info;
  {
    std::lock_guard g(mu_);
    info = s.rec.info;
  }
  c.reply_info(info);
}

void SandboxService::end(Sandbox& s, const std::string& topic, const std::string& reason,
                         const std::string& trace_id) {
  s.inference.reset();
  s.channel.reset();
  std::string vm;
  {
    std::lock_guard g(mu_);
    vm = s.rec.lease_vm_id;
  }
  if (!vm.empty()) {
    auto st = pool_->release(trace_id, vm, reason);
    if (!st) {
      log::warn("vm.release failed", {{"vm_id", vm}, {"error", st.error().to_string()}});
    }
  }
  SandboxRecord copy;
  {
    std::lock_guard g(mu_);
    s.rec.info.state = schema::SandboxState::DESTROYED;
    s.rec.info.end_reason = reason;
    s.rec.info.vm_id.clear();
    s.rec.ended_unix_ms = opt_.now_ms();
    copy = s.rec;
  }
  save(s);
  publish(topic, copy, reason, trace_id);
}

void SandboxService::do_destroy(Call& c, Sandbox& s) {
  std::string reason = "destroyed by owner";
  if (auto why = sync_before_end(s, c.trace_id); !why.empty()) reason += "; " + why;
  end(s, "sandbox.destroyed", reason, c.trace_id);
  sandbox::Info info;
  {
    std::lock_guard g(mu_);
    info = s.rec.info;
  }
  c.reply_info(info);
}

std::vector<sandbox::Info> SandboxService::snapshot_infos() {
  std::lock_guard g(mu_);
  std::vector<sandbox::Info> out;
  for (const auto& [id, s] : sandboxes_) out.push_back(s->rec.info);
  return out;
}

}  // namespace nv::exec
