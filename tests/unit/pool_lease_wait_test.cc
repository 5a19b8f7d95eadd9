// Leases that wait for more VMs than the pool has (sandbox and plain) never block the requests
// that would free one: with a pool of max 2 VMs and 2 sandbox threads, 6 leases wait while both
// VMs are held; a vm.release of a held one (and vm.extend, vm.leases) is answered within moments
// and hands its freed VM's successor to a waiter. Before the fix, sandbox lease waits ran on the
// pool's sandbox threads, the release queued behind them and nothing was ever freed (the
// executor saw "vm.release did not answer within 5000 ms"). Requests go through the service's
// own dispatch (serve_sandbox_request, on_pool_thread), as nv-vm-pool-manager runs them.
#include <gtest/gtest.h>

#include <future>
#include <optional>

#include "sandbox_service.h"
#include "sysutil.h"
#include "vm_pool_fakes.h"

namespace nv::vm {
namespace {

constexpr uint32_t kMax = 2;
constexpr int kWaiters = 6;  // > kMax VMs and > PoolOptions::sandbox_threads
// Generous bounds for a loaded machine: the bug is a wait of the waiters' whole deadline.
constexpr auto kPrompt = 15s;
constexpr auto kWaiterDeadline = 60s;

std::shared_ptr<bus::BodyReader> lease_body(const std::string& sandbox_id, uint32_t deadline_ms) {
  capnp::MallocMessageBuilder mb;
  auto b = bus::init_body<schema::LeaseRequest>(mb);
  b.setTier(SizeTier::SMALL);
  b.setSandbox(true);
  b.setSandboxId(sandbox_id);
  b.setOwner("alice");
  b.setDeadlineMs(deadline_ms);
  b.setLeaseMs(600000);
  auto bytes = bus::encode_body(mb);
  auto r = bus::BodyReader::open(bytes, bus::Limits{});
  EXPECT_TRUE(r.ok());
  return std::make_shared<bus::BodyReader>(std::move(r.value()));
}

std::shared_ptr<bus::BodyReader> extend_body(const std::string& vm_id) {
  capnp::MallocMessageBuilder mb;
  auto b = bus::init_body<schema::ExtendRequest>(mb);
  b.setVmId(vm_id);
  b.setLeaseMs(900000);
  auto bytes = bus::encode_body(mb);
  return std::make_shared<bus::BodyReader>(std::move(bus::BodyReader::open(bytes, {}).value()));
}

std::string vm_id_of(const Result<ReplyBody>& r) {
  if (!r.ok()) return "";
  auto bytes = bus::encode_body(*r.value());
  auto reader = bus::BodyReader::open(bytes, {});
  auto l = reader.value().root<schema::Lease>();
  return l.ok() ? std::string(l.value().getVmId().cStr()) : "";
}

// After pool.stop(): every waiter still waiting ends promptly, with shuttingDown.
template <typename T>
void expect_shut_down(std::vector<std::future<Result<T>>>& waiters) {
  for (auto& w : waiters) {
    if (!w.valid()) continue;
    ASSERT_EQ(w.wait_for(kPrompt), std::future_status::ready);
    auto r = w.get();
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, ErrorCode::SHUTTING_DOWN) << r.error().message;
    }
  }
}

struct LeaseWaitTest : ::testing::Test {
  FakeState st;
  FakeBackend backend{st};
  FakeGuest guest;
  RecordingEvents events;
  std::string dir;
  void SetUp() override {
    char tmpl[] = "/tmp/nv-leasewait-XXXXXX";
    dir = ::mkdtemp(tmpl) ? tmpl : "";
    ASSERT_FALSE(dir.empty());
  }
  void TearDown() override { (void)remove_tree(dir); }
  PoolOptions options() {
    PoolOptions o = small_only(1, kMax);
    o.state_dir = dir;
    o.sandbox_threads = 2;
    o.default_lease_ttl = 600s;
    o.max_lease_ttl = 3600s;
    return o;
  }
  // Polls `cond` up to kPrompt.
  template <typename F>
  bool eventually(F cond) {
    auto until = Clock::now() + kPrompt;
    while (Clock::now() < until) {
      if (cond()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return cond();
  }
};

TEST_F(LeaseWaitTest, SandboxLeasesWaitingForAFullPoolNeverBlockTheReleaseThatFreesOne) {
  Pool pool(options(), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  std::vector<std::string> held;
  for (uint32_t i = 0; i < kMax; ++i) {
    auto r =
        serve_sandbox_request(pool, "vm.lease", lease_body("held-" + std::to_string(i), 30000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    held.push_back(vm_id_of(r));
  }
  std::vector<std::future<Result<ReplyBody>>> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    auto body = lease_body("waiter-" + std::to_string(i), kWaiterDeadline.count() * 1000);
    waiters.push_back(std::async(std::launch::async, [&pool, body] {
      return serve_sandbox_request(pool, "vm.lease", body);
    }));
  }
  ASSERT_TRUE(eventually([&] { return pool.status().tiers.at(0).waiting == kWaiters; }));
  // Other sandbox requests are answered while they wait.
  auto ext = std::async(std::launch::async, [&] {
    return serve_sandbox_request(pool, "vm.extend", extend_body(held[1]));
  });
  ASSERT_EQ(ext.wait_for(kPrompt), std::future_status::ready) << "vm.extend blocked by waiters";
  ASSERT_TRUE(ext.get().ok());
  // The release of a held VM is answered, and its successor goes to a waiter.
  auto rel = std::async(std::launch::async, [&] {
    return on_pool_thread(pool, [&] { return pool.release(held[0], "done"); });
  });
  ASSERT_EQ(rel.wait_for(kPrompt), std::future_status::ready) << "vm.release blocked by waiters";
  Status released = rel.get();
  ASSERT_TRUE(released.ok()) << released.error().message;
  ASSERT_TRUE(eventually([&] { return pool.status().tiers.at(0).waiting == kWaiters - 1; }));
  // Its registry write done, the waiter's answer comes.
  std::optional<Result<ReplyBody>> granted;
  ASSERT_TRUE(eventually([&] {
    for (auto& w : waiters) {
      if (w.valid() && w.wait_for(0s) == std::future_status::ready) granted.emplace(w.get());
    }
    return granted.has_value();
  }));
  ASSERT_TRUE(granted->ok()) << granted->error().message;
  std::string got = vm_id_of(*granted);
  EXPECT_NE(got, held[0]);  // a fresh VM, never the released one
  auto all = pool.sandbox_leases("alice");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), static_cast<size_t>(kMax));  // held[1] and the waiter's
  // The waiter's lease is released the same way; the next waiter gets one.
  auto rel2 = std::async(std::launch::async, [&] {
    return on_pool_thread(pool, [&] { return pool.release(got, "done"); });
  });
  ASSERT_EQ(rel2.wait_for(kPrompt), std::future_status::ready);
  EXPECT_TRUE(rel2.get().ok());
  ASSERT_TRUE(eventually([&] { return pool.status().tiers.at(0).waiting == kWaiters - 2; }));
  pool.stop();  // the rest end with shuttingDown
  expect_shut_down(waiters);
}

TEST_F(LeaseWaitTest, PlainLeasesWaitingForAFullPoolNeverBlockTheReleaseThatFreesOne) {
  Pool pool(options(), backend, guest, events);
  ASSERT_TRUE(pool.start().ok());
  std::vector<std::string> held;
  for (uint32_t i = 0; i < kMax; ++i) {
    auto l = pool.lease(SizeTier::SMALL, 30s);
    ASSERT_TRUE(l.ok()) << l.error().message;
    held.push_back(l->vm.vm_id);
  }
  std::vector<std::future<Result<LeaseInfo>>> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(std::async(std::launch::async, [&pool] {
      return pool.lease(SizeTier::SMALL,
                        std::chrono::duration_cast<std::chrono::milliseconds>(kWaiterDeadline));
    }));
  }
  ASSERT_TRUE(eventually([&] { return pool.status().tiers.at(0).waiting == kWaiters; }));
  // Sandbox-thread work (the leases list) and the release are answered while they wait.
  auto list = std::async(std::launch::async, [&] {
    capnp::MallocMessageBuilder mb;
    bus::init_body<schema::LeasesRequest>(mb).setOwner("alice");
    auto bytes = bus::encode_body(mb);
    auto body =
        std::make_shared<bus::BodyReader>(std::move(bus::BodyReader::open(bytes, {}).value()));
    return serve_sandbox_request(pool, "vm.leases", body);
  });
  ASSERT_EQ(list.wait_for(kPrompt), std::future_status::ready);
  EXPECT_TRUE(list.get().ok());
  auto rel = std::async(std::launch::async, [&] {
    return on_pool_thread(pool, [&] { return pool.release(held[0], "done"); });
  });
  ASSERT_EQ(rel.wait_for(kPrompt), std::future_status::ready) << "vm.release blocked by waiters";
  EXPECT_TRUE(rel.get().ok());
  ASSERT_TRUE(eventually([&] { return pool.status().tiers.at(0).waiting == kWaiters - 1; }));
  int granted = 0;
  ASSERT_TRUE(eventually([&] {
    for (auto& w : waiters) {
      if (!w.valid() || w.wait_for(0s) != std::future_status::ready) continue;
      auto r = w.get();
      EXPECT_TRUE(r.ok()) << r.error().message;
      if (r.ok()) {
        EXPECT_NE(r->vm.vm_id, held[0]);
      }
      granted++;
    }
    return granted > 0;
  }));
  EXPECT_EQ(granted, 1);
  pool.stop();
  expect_shut_down(waiters);
}

}  // namespace
}  // namespace nv::vm
