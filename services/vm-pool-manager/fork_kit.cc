// fork_kit.cc — the Pool's fork kits (pool.h, PoolOptions::fork_kits): per tier, the memory
// and the VMM of the next fork made ahead, so vm.fork does neither while its caller waits.
//
// A fork is a capture in place of the parent (capture.h) plus clones restored on the captured
// memory. Two of its steps do not depend on the parent: the copy of the tier's template that
// becomes the capture's memory (tens of ms: the template's allocated pages) and the start of a
// VMM that will map it (tens of ms: jail, QEMU). A kit holds both, made on a sandbox thread after
// the tier's template and again after each fork that used one. The kit's VMM waits with
// -incoming for a device state that does not exist yet; it maps the copy before the copy is
// sealed, but no guest runs on it before the fork's capture sealed it (restore_clones checks),
// and QEMU writes no guest RAM while it waits for an incoming state. A kit of a template that
// was remade, or of a tier whose parent maps another template (a fork of a fork), is not used.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "pool.h"

namespace nv::vm {

bool Pool::post_sandbox_task(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !registry_) return false;
    tasks_.push_back(std::move(task));
  }
  tasks_cv_.notify_one();
  return true;
}

void Pool::prepare_fork_kit(SizeTier tier) {
  if (!opt_.fork_kits || !backend_.capture() || !backend_.template_memory()) return;
  if (capture_in_place_refused()) return;
  {
    std::lock_guard lock(mu_);
    TierState* t = find_tier(tier);
    if (!t || !registry_ || t->fork_kit || t->fork_kit_starting) return;
    t->fork_kit_starting = true;
  }
  if (!post_sandbox_task([this, tier] { make_fork_kit(tier); })) {
    std::lock_guard lock(mu_);
    tiers_[tier].fork_kit_starting = false;
  }
}

std::optional<Pool::ForkKit> Pool::take_fork_kit(SizeTier tier) {
  std::optional<ForkKit> kit;
  {
    std::lock_guard lock(mu_);
    TierState* t = find_tier(tier);
    if (!t || !t->fork_kit) return std::nullopt;
    kit = std::move(t->fork_kit);
    t->fork_kit.reset();
    publish_status();
  }
  // Nothing watches a kit's VMM while it waits: one that died is dropped here (the fork then
  // starts its VMMs itself, and the next kit is made after it).
  if (!kit->vmm->alive()) {
    log::warn("fork kit's VMM is gone, not used", {{"tier", tier_name(tier)},
                                                   {"vm_id", kit->vmm->info().vm_id},
                                                   {"reason", kit->vmm->exit_reason()}});
    (void)kit->vmm->destroy(Clock::now() + opt_.destroy_grace);
    ::unlink(kit->state_path.c_str());
    return std::nullopt;
  }
  return kit;
}

void Pool::make_fork_kit(SizeTier tier) {
  auto done = [&](const std::string& failure) {
    std::lock_guard lock(mu_);
    tiers_[tier].fork_kit_starting = false;
    if (!failure.empty()) {
      log::warn("fork kit not made", {{"tier", tier_name(tier)}, {"error", failure}});
    }
  };
  UniqueFd base;
  uint64_t bytes = 0;
  VmSpec spec;
  {
    std::lock_guard lock(mu_);
    const TierState& t = tiers_[tier];
    if (stopping_ || !t.memory.valid() || !t.memory.sealed() || t.snapshot_path.empty()) {
      tiers_[tier].fork_kit_starting = false;
      return;
    }
    base = UniqueFd(::fcntl(t.memory.fd(), F_DUPFD_CLOEXEC, 0));
    bytes = t.memory.bytes();
  }
  if (!base.valid()) return done(std::string("dup(template memfd): ") + std::strerror(errno));
  const auto start = Clock::now();
  const std::string id = "vm-" + random_hex(8);
  auto copy = copy_template(base.get(), bytes, "nv-capture-" + id);  // the capture-to-be
  if (!copy.ok()) return done(copy.error().message);
  const double copy_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  ForkKit kit;
  kit.spare = std::move(copy.value());
  kit.state_path = opt_.state_dir + "/captures/" + id + ".state";
  {
    // Empty until a fork writes its device state: a VMM start checks the file is there.
    UniqueFd f(::open(kit.state_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!f.valid()) return done("open(" + kit.state_path + "): " + std::strerror(errno));
  }
  spec = restore_spec(tier);
  spec.vm_id = id;
  spec.restore_from = kit.state_path;
  spec.memory_fd = kit.spare.memory.fd();
  auto vm = backend_.start(spec, Clock::now() + opt_.boot_timeout);
  if (!vm.ok()) {
    ::unlink(kit.state_path.c_str());
    return done(vm.error().message);
  }
  kit.vmm = std::move(vm.value());
  std::shared_ptr<RunningVm> doomed;
  {
    std::lock_guard lock(mu_);
    TierState& t = tiers_[tier];
    t.fork_kit_starting = false;
    struct stat st {};
    const bool current =
        t.memory.valid() && ::fstat(t.memory.fd(), &st) == 0 && st.st_ino == kit.spare.base_ino;
    if (stopping_ || t.fork_kit || !current) {
      doomed = std::move(kit.vmm);
    } else {
      t.fork_kit = std::move(kit);
      publish_status();
    }
  }
  if (doomed) {
    (void)doomed->destroy(Clock::now() + opt_.destroy_grace);
    ::unlink(kit.state_path.c_str());
    return;
  }
  log::info("fork kit ready",
            {{"tier", tier_name(tier)},
             {"copy_ms", copy_ms},
             {"kit_ms", std::chrono::duration<double, std::milli>(Clock::now() - start).count()}});
}

}  // namespace nv::vm
