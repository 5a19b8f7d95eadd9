// pool_templates.cc — the Pool's snapshot templates (see pool.h, "Snapshot mode"): making one
// per tier, recording and reporting a tier whose template failed (the refill threads retry it
// with backoff), and the in-flight registry that lets stop() cut a template or a boot short.
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "common/log.h"
#include "pool.h"

namespace nv::vm {

Status Pool::make_snapshot(TierState& t) {
  VmSpec spec;
  spec.vm_id = "tpl-" + std::string(tier_name(t.cfg.tier)) + "-" + random_hex(4);
  spec.vcpus = t.cfg.vcpus;
  spec.memory_mib = t.cfg.memory_mib;
  spec.kernel = opt_.kernel;
  spec.rootfs = opt_.rootfs;
  if (backend_.template_memory()) {
    auto mem = TemplateMemory::create("nv-template-" + std::string(tier_name(t.cfg.tier)),
                                      uint64_t{t.cfg.memory_mib} << 20);
    if (!mem.ok()) return mem.error();
    t.memory = std::move(mem.value());
    spec.memory_fd = t.memory.fd();
    spec.memory_shared = true;
  }
  const std::string tier = tier_name(t.cfg.tier);
  // Every failure names the tier and the step; a template VM that exists is destroyed.
  auto fail = [&](std::shared_ptr<RunningVm> vm, const std::string& step, Error e) -> Error {
    if (vm) (void)vm->destroy(Clock::now() + opt_.destroy_grace);
    e.message = "snapshot template for " + tier + ": " + step + e.message;
    return e;
  };
  auto start = opt_.clock();
  auto deadline = Clock::now() + opt_.boot_timeout;
  auto vm = backend_.boot(spec, deadline);
  if (!vm.ok()) return fail(nullptr, "", vm.error());
  std::shared_ptr<RunningVm> v = std::move(vm.value());
  InFlight guard(*this, v);  // stop() kills it: every wait below then ends at once
  if (is_stopping()) return fail(v, "", make_error(ErrorCode::SHUTTING_DOWN, "pool stopping"));
  if (Status s = guest_.wait_ready(v->info(), deadline); !s.ok()) {
    return fail(v, "no Hello: ", s.error());
  }
  SnapshotStats st;
  st.tier = t.cfg.tier;
  st.cold_boot_ms = ms_since(start);
  if (opt_.snapshot_warm_up) {
    auto warm_start = opt_.clock();
    if (Status w = guest_.warm_up(v->info(), deadline); !w.ok()) {
      return fail(v, "warm-up: ", w.error());
    }
    st.warm_up_ms = ms_since(warm_start);
  }
  // Let the agent see the host hang up before the state is frozen, so every restored clone
  // starts out waiting for a new host connection.
  std::this_thread::sleep_for(opt_.snapshot_settle);
  if (is_stopping()) return fail(v, "", make_error(ErrorCode::SHUTTING_DOWN, "pool stopping"));
  st.path = opt_.snapshot_dir + "/" + tier + ".vmstate";
  auto snap_start = opt_.clock();
  Status s = v->snapshot(st.path, Clock::now() + opt_.boot_timeout);
  st.snapshot_ms = ms_since(snap_start);
  Status gone = v->destroy(Clock::now() + opt_.destroy_grace);
  guard.release();
  v.reset();
  // The template VMM has exited: nothing maps the RAM shared any more, so it can be sealed
  // against writes before any clone maps it (template_memory.h says why).
  if (s.ok() && t.memory.valid()) s = gone.ok() ? t.memory.seal() : gone;
  if (!s.ok()) {
    ::unlink(st.path.c_str());  // a partial file is no template
    return fail(nullptr, "snapshot: ", s.error());
  }
  struct stat sb {};
  if (::stat(st.path.c_str(), &sb) == 0) st.bytes = static_cast<uint64_t>(sb.st_size);
  log::info("vm snapshot made", {{"tier", tier},
                                 {"path", st.path},
                                 {"cold_boot_ms", st.cold_boot_ms},
                                 {"warm_up_ms", st.warm_up_ms},
                                 {"snapshot_ms", st.snapshot_ms},
                                 {"bytes", st.bytes}});
  {
    std::lock_guard lock(mu_);
    t.snapshot_path = st.path;
    t.template_error.clear();
    t.template_failures = 0;
    snapshots_.push_back(st);
  }
  prepare_fork_kit(t.cfg.tier);
  return {};
}

void Pool::template_failed(TierState& t, const Error& e) {
  std::chrono::milliseconds delay;
  uint32_t attempt;
  {
    std::lock_guard lock(mu_);
    attempt = ++t.template_failures;
    delay = std::min<std::chrono::milliseconds>(
        opt_.max_backoff,
        opt_.template_retry * (1 << std::min<uint32_t>(t.template_failures - 1, 10u)));
    t.template_retry_after = Clock::now() + delay;
    t.template_error = e.message;
    t.memory = TemplateMemory();  // a fresh memfd for the next attempt
    publish_status();
  }
  if (is_stopping()) return;  // a template cut short by stop() is no failure to report
  const std::string tier = tier_name(t.cfg.tier);
  std::string why = e.message + " (attempt " + std::to_string(attempt) +
                    "; the tier serves no "
                    "leases until it succeeds; next attempt in " +
                    std::to_string(delay.count()) + " ms)";
  log::warn("snapshot template failed", {{"tier", tier}, {"reason", why}});
  events_.on_failed("tpl-" + tier, t.cfg.tier, why, 0);
}

bool Pool::is_stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

Pool::InFlight::InFlight(Pool& pool, std::shared_ptr<RunningVm> vm) : pool_(pool), vm_(vm) {
  if (!vm_) return;
  std::lock_guard lock(pool_.mu_);
  pool_.inflight_.insert(vm_);
}

void Pool::InFlight::release() {
  if (!vm_) return;
  std::lock_guard lock(pool_.mu_);
  pool_.inflight_.erase(vm_);
  vm_.reset();
}

}  // namespace nv::vm
