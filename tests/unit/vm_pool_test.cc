// Pool logic against a fake backend and guest link: warm/max bounds, refill, lease deadlines,
// typed errors, death and hang detection, boot-failure back-off, snapshot mode with reseeding,
// lease lifetimes (expiry on an injected clock, the default, the maximum).
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "pool.h"
#include "vm_pool_fakes.h"

namespace nv::vm {
namespace {

using namespace std::chrono_literals;

struct Fixture : ::testing::Test {
  FakeState st;
  FakeBackend backend{st};
  FakeGuest guest;
  RecordingEvents events;
};

TierStatusInfo small_status(Pool& p) { return p.status().tiers.at(0); }

TEST_F(Fixture, FillsToWarmAndNoFurther) {
  Pool pool(small_only(2, 4), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  std::this_thread::sleep_for(100ms);
  auto s = small_status(pool);
  EXPECT_EQ(s.warm, 2u);
  EXPECT_EQ(s.active, 0u);
  EXPECT_EQ(s.booting, 0u);
  EXPECT_EQ(st.booted.size(), 2u);
  EXPECT_GT(events.statuses.load(), 0);
}

TEST_F(Fixture, LeaseHandsOutWarmVmAndRefills) {
  Pool pool(small_only(1, 3), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto l = pool.lease(SizeTier::UNSET, 1s);  // unset = small
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->tier.tier, SizeTier::SMALL);
  EXPECT_EQ(l->tier.memory_mib, 256u);
  EXPECT_EQ(l->vm.vm_id.rfind("vm-", 0), 0u);
  EXPECT_LT(l->wait_ms, 100.0);
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto s = small_status(pool);
  EXPECT_EQ(s.warm, 1u);
  EXPECT_EQ(s.active, 1u);
  EXPECT_EQ(events.acquired.size(), 1u);
}

TEST_F(Fixture, ReleaseDestroysAndNeverReuses) {
  Pool pool(small_only(1, 2), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(pool.release(a->vm.vm_id, "done").ok());
  EXPECT_TRUE(st.destroyed.count(a->vm.vm_id));
  auto b = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->vm.vm_id, b->vm.vm_id);
  ASSERT_EQ(events.released.size(), 1u);
  EXPECT_EQ(events.released[0], a->vm.vm_id + ":done");
}

TEST_F(Fixture, DoubleAndUnknownReleaseAreTypedErrors) {
  Pool pool(small_only(1, 2), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(pool.release(a->vm.vm_id, "done").ok());
  Status again = pool.release(a->vm.vm_id, "done");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::UNKNOWN_LEASE);
  EXPECT_NE(again.error().message.find("already released"), std::string::npos);
  Status unknown = pool.release("vm-nope", "x");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::UNKNOWN_LEASE);
  // A warm (never leased) VM cannot be released either.
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  std::string warm_id;
  for (auto& v : pool.live_vms()) warm_id = v.vm_id;
  Status warm = pool.release(warm_id, "x");
  ASSERT_FALSE(warm.ok());
  EXPECT_EQ(warm.error().code, ErrorCode::UNKNOWN_LEASE);
}

TEST_F(Fixture, UnknownTierIsTyped) {
  Pool pool(small_only(1, 1), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto l = pool.lease(SizeTier::LARGE, 100ms);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code, ErrorCode::UNKNOWN_TIER);
  EXPECT_NE(l.error().message.find("large"), std::string::npos);
}

TEST_F(Fixture, FullPoolFailsAfterDeadline) {
  Pool pool(small_only(1, 1), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(a.ok());
  auto t0 = Clock::now();
  auto b = pool.lease(SizeTier::SMALL, 150ms);
  auto waited = Clock::now() - t0;
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, ErrorCode::POOL_EXHAUSTED);
  EXPECT_TRUE(b.error().retryable);
  EXPECT_GE(waited, 150ms);
  EXPECT_LT(waited, 1s);
  EXPECT_EQ(small_status(pool).waiting, 0u);
}

TEST_F(Fixture, WaitingLeaseGetsTheNextVm) {
  Pool pool(small_only(1, 1), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(a.ok());
  Result<LeaseInfo> b = make_error(ErrorCode::INTERNAL, "not run");
  std::thread waiter([&] { b = pool.lease(SizeTier::SMALL, 3s); });
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(small_status(pool).waiting, 1u);
  ASSERT_TRUE(pool.release(a->vm.vm_id, "done").ok());
  waiter.join();
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_NE(b->vm.vm_id, a->vm.vm_id);
  EXPECT_GE(b->wait_ms, 90.0);
}

TEST_F(Fixture, DeadVmmIsNoticedReportedAndReplaced) {
  Pool pool(small_only(2, 3), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto leased = pool.lease(SizeTier::SMALL, 1s);
  ASSERT_TRUE(leased.ok());
  auto t0 = Clock::now();
  backend.vm(leased->vm.vm_id)->kill();
  ASSERT_TRUE(events.wait_failed(1, 2s));
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_EQ(events.failed[0].first, leased->vm.vm_id);
  EXPECT_NE(events.failed[0].second.find("vmm exited: killed by signal 9"), std::string::npos);
  EXPECT_TRUE(st.destroyed.count(leased->vm.vm_id));  // cleanup ran
  // The dead lease is gone: releasing it is an unknown lease, and the pool refills.
  EXPECT_EQ(pool.release(leased->vm.vm_id, "x").error().code, ErrorCode::UNKNOWN_LEASE);
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  EXPECT_EQ(small_status(pool).active, 0u);
}

TEST_F(Fixture, HungVmmIsNoticed) {
  Pool pool(small_only(1, 2), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  std::string id = pool.live_vms().at(0).vm_id;
  backend.vm(id)->hang();
  ASSERT_TRUE(events.wait_failed(1, 2s));
  EXPECT_EQ(events.failed[0].first, id);
  EXPECT_NE(events.failed[0].second.find("unresponsive"), std::string::npos);
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
}

TEST_F(Fixture, BootFailuresAreReportedThenRecover) {
  st.fail_next_boots = 2;
  Pool pool(small_only(1, 1), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 3s));
  ASSERT_GE(events.failed.size(), 2u);
  EXPECT_NE(events.failed[0].second.find("boot failed: fake boot failure"), std::string::npos);
}

TEST_F(Fixture, SnapshotModeRestoresAndReseedsEveryVm) {
  PoolOptions o = small_only(2, 3);
  o.snapshot = true;
  o.snapshot_dir = ::testing::TempDir() + "/vm-pool-snap-" + std::to_string(::getpid());
  Pool pool(o, backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  ASSERT_EQ(st.snapshots.size(), 1u);  // one template per tier
  EXPECT_EQ(st.snapshots[0], o.snapshot_dir + "/small.vmstate");
  auto a = pool.lease(SizeTier::SMALL, 1s);
  auto b = pool.lease(SizeTier::SMALL, 1s);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->vm.restored);
  EXPECT_TRUE(b->vm.restored);
  pool.stop();  // first: a refill reseeding meanwhile needs guest.mu
  std::lock_guard lock(guest.mu);
  ASSERT_GE(guest.reseeds.size(), 2u);
  std::set<std::string> entropies, ids;
  for (auto& r : guest.reseeds) {
    EXPECT_EQ(r.entropy.size(), 64u);
    EXPECT_EQ(r.id, r.vm);  // the guest learns the id the pool hands out
    entropies.insert(r.entropy);
    ids.insert(r.id);
  }
  EXPECT_EQ(entropies.size(), guest.reseeds.size());
  EXPECT_EQ(ids.size(), guest.reseeds.size());
  EXPECT_EQ(pool.snapshot_stats().size(), 1u);
  ::rmdir(o.snapshot_dir.c_str());
}

TEST_F(Fixture, InjectedClockMeasuresBoot) {
  std::atomic<int64_t> offset{0};
  st.clock_offset_ms = &offset;
  PoolOptions o = small_only(1, 1);
  auto base = Clock::now();
  o.clock = [&] { return base + std::chrono::milliseconds(offset.load()); };
  Pool pool(o, backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  std::lock_guard lock(events.mu);
  ASSERT_EQ(events.boot_ms.size(), 1u);
  EXPECT_DOUBLE_EQ(events.boot_ms[0], 1234.0);
}

// Lease lifetimes: the fake clock moves, the monitor (health_interval 100 ms) notices.
struct FakeClockPool {
  std::atomic<int64_t> offset_ms{0};
  Clock::time_point base = Clock::now();
  PoolOptions options(uint32_t warm, uint32_t max) {
    PoolOptions o = small_only(warm, max);
    o.clock = [this] { return base + std::chrono::milliseconds(offset_ms.load()); };
    o.default_lease_ttl = 2s;
    o.max_lease_ttl = 60s;
    return o;
  }
};

TEST_F(Fixture, ExpiredLeaseIsDestroyedRefilledAndItsReleaseSaysSo) {
  FakeClockPool fc;
  Pool pool(fc.options(1, 1), backend, guest, events);  // max 1: the lease blocks the tier
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s, 5s);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->lifetime, 5s);
  std::this_thread::sleep_for(200ms);
  auto before = small_status(pool);
  EXPECT_EQ(before.active, 1u);
  EXPECT_EQ(before.warm + before.booting, 0u);  // counts against --max until it ends
  fc.offset_ms = 5001;                          // the lessee never released it (it died)
  ASSERT_TRUE(events.wait_failed(1, 2s));
  {
    std::lock_guard lock(events.mu);
    EXPECT_EQ(events.failed[0].first, a->vm.vm_id);
    EXPECT_NE(events.failed[0].second.find("lease expired"), std::string::npos);
    EXPECT_NE(events.failed[0].second.find("5000 ms"), std::string::npos);
    EXPECT_TRUE(events.released.empty());
  }
  EXPECT_TRUE(st.destroyed.count(a->vm.vm_id));
  EXPECT_EQ(small_status(pool).active, 0u);
  // Refilled: a fresh VM is warm and can be leased; the expired id is never handed out again.
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  EXPECT_EQ(pool.live_vms().size(), 1u);
  auto b = pool.lease(SizeTier::SMALL, 2s, 5s);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->vm.vm_id, a->vm.vm_id);
  // A lessee that comes back late learns why its VM is gone.
  Status late = pool.release(a->vm.vm_id, "done");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, ErrorCode::UNKNOWN_LEASE);
  EXPECT_NE(late.error().message.find("lease expired"), std::string::npos) << late.error().message;
  EXPECT_TRUE(pool.release(b->vm.vm_id, "done").ok());
}

TEST_F(Fixture, LeaseWithinItsLifetimeIsUntouchedAndZeroMeansTheDefault) {
  FakeClockPool fc;
  Pool pool(fc.options(2, 3), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto longer = pool.lease(SizeTier::SMALL, 2s, 10s);
  auto deflt = pool.lease(SizeTier::SMALL, 2s, 0ms);
  ASSERT_TRUE(longer.ok() && deflt.ok());
  EXPECT_EQ(deflt->lifetime, 2s);  // default_lease_ttl
  fc.offset_ms = 1999;
  std::this_thread::sleep_for(400ms);  // four monitor rounds
  {
    std::lock_guard lock(events.mu);
    EXPECT_TRUE(events.failed.empty());
  }
  EXPECT_EQ(small_status(pool).active, 2u);
  fc.offset_ms = 2000;  // the default lease ends; the 10 s one does not
  ASSERT_TRUE(events.wait_failed(1, 2s));
  std::this_thread::sleep_for(300ms);
  {
    std::lock_guard lock(events.mu);
    ASSERT_EQ(events.failed.size(), 1u);
    EXPECT_EQ(events.failed[0].first, deflt->vm.vm_id);
  }
  EXPECT_EQ(small_status(pool).active, 1u);
  EXPECT_FALSE(st.destroyed.count(longer->vm.vm_id));
  ASSERT_TRUE(pool.release(longer->vm.vm_id, "done").ok());
  std::lock_guard lock(events.mu);
  ASSERT_EQ(events.released.size(), 1u);
  EXPECT_EQ(events.released[0], longer->vm.vm_id + ":done");
}

TEST_F(Fixture, LeaseLifetimeAboveTheMaximumIsRefusedNotShortened) {
  FakeClockPool fc;
  Pool pool(fc.options(1, 2), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto over = pool.lease(SizeTier::SMALL, 1s, 60001ms);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, ErrorCode::BAD_REQUEST);
  EXPECT_FALSE(over.error().retryable);
  EXPECT_NE(over.error().message.find("60001"), std::string::npos) << over.error().message;
  EXPECT_NE(over.error().message.find("--max-lease-ttl-ms"), std::string::npos);
  auto s = small_status(pool);  // nothing was taken or queued
  EXPECT_EQ(s.warm, 1u);
  EXPECT_EQ(s.active, 0u);
  EXPECT_EQ(s.waiting, 0u);
  auto at_max = pool.lease(SizeTier::SMALL, 1s, 60s);
  ASSERT_TRUE(at_max.ok()) << at_max.error().message;
  EXPECT_EQ(at_max->lifetime, 60s);
}

TEST_F(Fixture, LeaseExpiresOnTheRealClockToo) {
  Pool pool(small_only(1, 2), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto a = pool.lease(SizeTier::SMALL, 2s, 300ms);
  ASSERT_TRUE(a.ok());
  auto t0 = Clock::now();
  ASSERT_TRUE(events.wait_failed(1, 3s));
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 250ms);  // the lease started a moment before t0
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ(events.failed[0].first, a->vm.vm_id);
  EXPECT_EQ(small_status(pool).active, 0u);
}

TEST_F(Fixture, BadLeaseLifetimeOptionsAreConfigProblems) {
  PoolOptions o = small_only(1, 1);
  o.default_lease_ttl = 10s;
  o.max_lease_ttl = 5s;
  Pool pool(o, backend, guest, events);
  Status s = pool.start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::BAD_REQUEST);
  EXPECT_NE(s.error().message.find("maximum lease lifetime (5000 ms) below the default"),
            std::string::npos)
      << s.error().message;
}

TEST_F(Fixture, ConfigProblemsAreReportedTogether) {
  PoolOptions o = small_only(3, 1);
  o.tiers.push_back({SizeTier::SMALL, 1, 256, 0, 1});
  Pool pool(o, backend, guest, events);
  Status s = pool.start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::BAD_REQUEST);
  EXPECT_NE(s.error().message.find("warm (3) > max (1)"), std::string::npos);
  EXPECT_NE(s.error().message.find("configured twice"), std::string::npos);
}

TEST_F(Fixture, StopDestroysEverythingAndRefusesLeases) {
  Pool pool(small_only(2, 3), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto a = pool.lease(SizeTier::SMALL, 1s);
  ASSERT_TRUE(a.ok());
  pool.stop();
  std::lock_guard lock(st.mu);
  for (auto& id : st.booted) EXPECT_TRUE(st.destroyed.count(id)) << id;
  auto l = pool.lease(SizeTier::SMALL, 10ms);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code, ErrorCode::SHUTTING_DOWN);
}

// Issue 11 finding 3: one tier's template failing (here: twice) must not take the pool down. The
// other tiers serve at once; the failing tier's leases get tierUnavailable (typed, retryable,
// saying why); it is reported (on_failed "tpl-large", the status' templateError) and retried
// with backoff until it works, then serves too.
TEST_F(Fixture, FailingTierTemplateIsRetriedWhileOtherTiersServe) {
  PoolOptions o = small_only(1, 2);
  o.tiers.push_back({SizeTier::LARGE, 4, 1024, 1, 2});
  o.snapshot = true;
  o.snapshot_dir = ::testing::TempDir() + "/vm-pool-tier-" + std::to_string(::getpid());
  o.template_retry = 50ms;
  st.fail_template_prefix = "tpl-large-";
  st.fail_templates = 2;
  Pool pool(o, backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  auto small = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(small.ok()) << small.error().message;
  EXPECT_TRUE(small->vm.restored);
  // The large tier: unavailable at first (the first failure is known right after start()).
  auto large = pool.lease(SizeTier::LARGE, 2s);
  ASSERT_FALSE(large.ok());
  EXPECT_EQ(large.error().code, ErrorCode::TIER_UNAVAILABLE);
  EXPECT_TRUE(large.error().retryable);
  EXPECT_NE(large.error().message.find("fake template failure"), std::string::npos)
      << large.error().message;
  {
    auto tiers = pool.status().tiers;
    ASSERT_EQ(tiers.size(), 2u);
    const auto& l = tiers[0].tier == SizeTier::LARGE ? tiers[0] : tiers[1];
    EXPECT_GE(l.template_failures, 1u);
    EXPECT_NE(l.template_error.find("fake template failure"), std::string::npos);
  }
  // Recovers after the retries: the large tier fills and leases.
  Result<LeaseInfo> later = make_error(ErrorCode::INTERNAL, "not tried");
  for (auto until = Clock::now() + 5s; Clock::now() < until;) {
    later = pool.lease(SizeTier::LARGE, 500ms);
    if (later.ok()) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(later.ok()) << later.error().message;
  EXPECT_TRUE(later->vm.restored);
  std::vector<std::string> tpl_failures;
  {
    std::lock_guard lock(events.mu);
    for (auto& [id, why] : events.failed) {
      if (id == "tpl-large") tpl_failures.push_back(why);
    }
  }
  ASSERT_EQ(tpl_failures.size(), 2u);
  EXPECT_NE(tpl_failures[0].find("attempt 1"), std::string::npos) << tpl_failures[0];
  EXPECT_NE(tpl_failures[1].find("attempt 2"), std::string::npos) << tpl_failures[1];
  for (const auto& t : pool.status().tiers) EXPECT_EQ(t.template_error, "");
  pool.stop();
  ::rmdir(o.snapshot_dir.c_str());
}

// Issue 12: SIGTERM during template creation. start() is busy in a template whose guest has not
// answered; interrupt() from another thread kills that VM, start() returns shuttingDown within
// moments (not at the 60 s boot deadline), and every VM made is destroyed.
TEST_F(Fixture, StopDuringTemplateCreationEndsAtOnceAndLeavesNothing) {
  PoolOptions o = small_only(1, 2);
  o.snapshot = true;
  o.snapshot_dir = ::testing::TempDir() + "/vm-pool-stop-" + std::to_string(::getpid());
  o.boot_timeout = 60s;
  guest.block_until_dead = [&](const std::string& id) { return backend.vm(id)->alive(); };
  Pool pool(o, backend, guest, events);
  Status started;
  std::thread starter([&] { started = pool.start(); });
  for (auto until = Clock::now() + 2s; Clock::now() < until;) {
    std::lock_guard lock(st.mu);
    if (!st.booted.empty()) break;
  }
  std::this_thread::sleep_for(50ms);
  auto t0 = Clock::now();
  pool.interrupt();  // what the service does on SIGTERM while start() runs
  starter.join();
  auto took = Clock::now() - t0;
  pool.stop();
  EXPECT_LT(took, 2s);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code, ErrorCode::SHUTTING_DOWN) << started.error().message;
  std::lock_guard lock(st.mu);
  ASSERT_EQ(st.booted.size(), 1u);
  for (auto& id : st.booted) EXPECT_TRUE(st.destroyed.count(id)) << id;
  EXPECT_TRUE(st.snapshots.empty());
  events.failed.clear();  // a template cut short by stop() is not reported as a failure
  ::rmdir(o.snapshot_dir.c_str());
}

// Issue 11 finding 4, the pool's half: with a lease check (the service's: egress programs
// attached to the VM's cgroup), a VM that fails it is never leased; the lease gets
// egressUnenforced once enforcement_wait passes, and succeeds again once the check passes.
TEST_F(Fixture, FailClosedLeaseCheckRefusesUnenforcedVms) {
  std::atomic<bool> enforced{false};
  PoolOptions o = small_only(1, 2);
  o.enforcement_wait = 200ms;
  o.lease_check = [&](const VmInfo& vm) -> Status {
    if (enforced) return {};
    return make_error(ErrorCode::EGRESS_UNENFORCED, "no connect4 program on " + vm.vm_id);
  };
  Pool pool(o, backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  auto t0 = Clock::now();
  auto refused = pool.lease(SizeTier::SMALL, 5s);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::EGRESS_UNENFORCED);
  EXPECT_TRUE(refused.error().retryable);
  EXPECT_NE(refused.error().message.find("no connect4 program"), std::string::npos)
      << refused.error().message;
  EXPECT_LT(Clock::now() - t0, 3s);  // enforcement_wait, not the 5 s deadline
  // Refused at once now: every warm VM has failed the check for longer than the grace.
  auto t1 = Clock::now();
  auto again = pool.lease(SizeTier::SMALL, 5s);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::EGRESS_UNENFORCED);
  EXPECT_LT(Clock::now() - t1, 1s);
  EXPECT_GE(small_status(pool).warm, 1u);  // the VMs stay; they are just not handed out
  enforced = true;
  auto ok = pool.lease(SizeTier::SMALL, 2s);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
}

// The sentinel attaches a moment after a VM becomes warm (later under load): a lease that comes
// first waits for it (up to its deadline) instead of failing.
TEST_F(Fixture, LeaseWaitsForEnforcementOfAFreshVm) {
  std::atomic<bool> enforced{false};
  PoolOptions o = small_only(1, 2);
  o.enforcement_wait = 5s;
  o.lease_check = [&](const VmInfo&) -> Status {
    if (enforced) return {};
    return make_error(ErrorCode::EGRESS_UNENFORCED, "not yet");
  };
  Pool pool(o, backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  ASSERT_TRUE(pool.wait_warm(Clock::now() + 2s));
  std::thread attach([&] {
    std::this_thread::sleep_for(300ms);
    enforced = true;
  });
  auto l = pool.lease(SizeTier::SMALL, 4s);
  attach.join();
  ASSERT_TRUE(l.ok()) << l.error().message;
}

// Sandbox leases (sandbox_leases.cc) on the fake backend: the registry in a temp dir, lifetimes
// up to max_sandbox_ttl, extend, the leases list, and what a restart makes of them. The fake
// backend cannot capture: fork, snapshot and pause answer badRequest.
struct SandboxPool {
  FakeClockPool fc;
  std::atomic<int64_t> unix_offset_ms{0};
  std::string dir;
  SandboxPool() {
    char tmpl[] = "/tmp/nv-sbxpool-XXXXXX";
    dir = ::mkdtemp(tmpl) ? tmpl : "";
  }
  ~SandboxPool() { (void)remove_tree(dir); }
  PoolOptions options() {
    PoolOptions o = fc.options(1, 3);
    o.state_dir = dir;
    o.max_sandbox_ttl = 24h;
    o.unix_ms = [this] { return int64_t{1700000000000} + unix_offset_ms.load(); };
    return o;
  }
  static SandboxLeaseRequest request(std::chrono::milliseconds lifetime) {
    SandboxLeaseRequest r;
    r.owner = "alice";
    r.sandbox_id = "sbx-1";
    r.deadline = 2s;
    r.lifetime = lifetime;
    return r;
  }
};

TEST_F(Fixture, SandboxLeasesAreRegisteredExtendedAndReportedLostAfterARestart) {
  SandboxPool sp;
  ASSERT_FALSE(sp.dir.empty());
  std::string id;
  {
    Pool pool(sp.options(), backend, guest, events);
    ASSERT_TRUE(pool.start().ok());
    // 2 h: above max_lease_ttl (60 s), within max_sandbox_ttl.
    auto plain = pool.lease(SizeTier::SMALL, 2s, 2h);
    ASSERT_FALSE(plain.ok());
    EXPECT_EQ(plain.error().code, ErrorCode::BAD_REQUEST);
    auto l = pool.lease_sandbox(SandboxPool::request(2h));
    ASSERT_TRUE(l.ok()) << l.error().message;
    id = l->vm.vm_id;
    EXPECT_EQ(l->lifetime, 2h);
    EXPECT_EQ(l->expires_unix_ms, int64_t{1700000000000} + 7200000);
    EXPECT_EQ(l->sandbox_id, "sbx-1");
    auto mine = pool.sandbox_leases("alice");
    ASSERT_TRUE(mine.ok());
    ASSERT_EQ(mine->size(), 1u);
    EXPECT_EQ((*mine)[0].state, schema::LeaseState::RUNNING);
    EXPECT_TRUE(pool.sandbox_leases("bob")->empty());
    auto ext = pool.extend(id, 3h);
    ASSERT_TRUE(ext.ok()) << ext.error().message;
    EXPECT_EQ(ext->expires_unix_ms, int64_t{1700000000000} + 10800000);
    EXPECT_EQ(pool.extend(id, 25h).error().code, ErrorCode::BAD_REQUEST);
    EXPECT_EQ(pool.extend("vm-nosuch", 1h).error().code, ErrorCode::UNKNOWN_LEASE);
    EXPECT_EQ(pool.extend("../x", 1h).error().code, ErrorCode::BAD_REQUEST);
    auto bad_owner = SandboxPool::request(1h);
    bad_owner.owner = std::string(129, 'o');
    EXPECT_EQ(pool.lease_sandbox(bad_owner).error().code, ErrorCode::BAD_REQUEST);
    // This backend cannot capture a running VM.
    EXPECT_EQ(pool.fork(id, 2, 0ms, {}).error().code, ErrorCode::BAD_REQUEST);
    EXPECT_EQ(pool.pause(id).error().code, ErrorCode::BAD_REQUEST);
    EXPECT_EQ(pool.snapshot(id, "base", "alice").error().code, ErrorCode::BAD_REQUEST);
    pool.stop();  // VMMs die with the pool manager; the registry still says running
  }
  Pool again(sp.options(), backend, guest, events);
  ASSERT_TRUE(again.start().ok());
  auto listed = again.sandbox_leases("");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].vm.vm_id, id);
  EXPECT_EQ((*listed)[0].state, schema::LeaseState::LOST);
  EXPECT_EQ((*listed)[0].note, "pool manager restarted: VMM gone");
  EXPECT_EQ((*listed)[0].owner, "alice");
  {
    std::lock_guard lock(events.mu);
    ASSERT_FALSE(events.failed.empty());
    EXPECT_EQ(events.failed.back().first, id);
    EXPECT_EQ(events.failed.back().second, "pool manager restarted: VMM gone");
  }
  EXPECT_EQ(again.resume(id, 0ms).error().code, ErrorCode::BAD_REQUEST);  // no capture here
  ASSERT_TRUE(again.release(id, "gone").ok());
  EXPECT_TRUE(again.sandbox_leases("")->empty());
  EXPECT_EQ(again.release(id, "twice").error().code, ErrorCode::UNKNOWN_LEASE);
}

TEST_F(Fixture, ALostSandboxLeaseExpiresOnItsClockWithAnEventSayingWhy) {
  SandboxPool sp;
  std::string id;
  {
    Pool pool(sp.options(), backend, guest, events);
    ASSERT_TRUE(pool.start().ok());
    auto l = pool.lease_sandbox(SandboxPool::request(10s));
    ASSERT_TRUE(l.ok()) << l.error().message;
    id = l->vm.vm_id;
  }
  Pool again(sp.options(), backend, guest, events);
  ASSERT_TRUE(again.start().ok());
  ASSERT_EQ(again.sandbox_leases("alice")->size(), 1u);
  size_t before = 0;
  {
    std::lock_guard lock(events.mu);
    before = events.failed.size();
  }
  sp.unix_offset_ms = 10001;  // past its end on the wall clock (what survives a restart)
  ASSERT_TRUE(events.wait_failed(before + 1, 3s));
  {
    std::lock_guard lock(events.mu);
    EXPECT_EQ(events.failed.back().first, id);
    EXPECT_NE(events.failed.back().second.find("lease expired"), std::string::npos);
    EXPECT_NE(events.failed.back().second.find("lost"), std::string::npos);
  }
  EXPECT_TRUE(again.sandbox_leases("")->empty());
  Status late = again.release(id, "late");
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.error().message.find("lease expired"), std::string::npos) << late.error().message;
}

}  // namespace
}  // namespace nv::vm
