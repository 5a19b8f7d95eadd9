// The pool's sandbox registry (registry.h) against a real SQLite file in a temp dir, the checks
// on sandbox requests (sandbox_requests.h), and the memfd ↔ sparse file copies (capture.h).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "capture.h"
#include "registry.h"
#include "sandbox_requests.h"
#include "sysutil.h"

namespace nv::vm {
namespace {

using schema::LeaseState;
using schema::SizeTier;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nv-registry-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(dir_); }
  std::unique_ptr<Registry> open() {
    auto r = Registry::open(dir_ + "/pool.sqlite");
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? std::move(r.value()) : nullptr;
  }
  static LeaseRecord lease(const std::string& id, const std::string& owner, LeaseState st) {
    LeaseRecord r;
    r.vm_id = id;
    r.sandbox_id = "sbx-" + id;
    r.owner = owner;
    r.tier = SizeTier::MEDIUM;
    r.vcpus = 2;
    r.memory_mib = 512;
    r.state = st;
    r.lease_ms = 60000;
    r.expires_unix_ms = 1700000000123;
    r.state_dir = st == LeaseState::PAUSED ? "/state/paused/" + id : "";
    return r;
  }
  std::string dir_;
};

TEST_F(RegistryTest, LeasesRoundTripAndFilterByOwner) {
  auto reg = open();
  ASSERT_TRUE(reg);
  ASSERT_TRUE(reg->put_lease(lease("vm-b", "alice", LeaseState::RUNNING)).ok());
  ASSERT_TRUE(reg->put_lease(lease("vm-a", "bob", LeaseState::PAUSED)).ok());
  ASSERT_TRUE(reg->put_lease(lease("vm-c", "alice", LeaseState::PAUSED)).ok());
  auto all = reg->leases("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all.value().size(), 3u);
  EXPECT_EQ(all.value()[0].vm_id, "vm-a");  // ordered by id
  EXPECT_EQ(all.value()[0].owner, "bob");
  EXPECT_EQ(all.value()[0].tier, SizeTier::MEDIUM);
  EXPECT_EQ(all.value()[0].memory_mib, 512u);
  EXPECT_EQ(all.value()[0].expires_unix_ms, 1700000000123);
  EXPECT_EQ(all.value()[0].state_dir, "/state/paused/vm-a");
  auto alice = reg->leases("alice");
  ASSERT_TRUE(alice.ok());
  ASSERT_EQ(alice.value().size(), 2u);
  EXPECT_EQ(alice.value()[0].vm_id, "vm-b");
  EXPECT_EQ(alice.value()[1].vm_id, "vm-c");
  // Replace (extend) and remove.
  auto r = lease("vm-b", "alice", LeaseState::RUNNING);
  r.expires_unix_ms = 42;
  ASSERT_TRUE(reg->put_lease(r).ok());
  EXPECT_EQ(reg->lease("vm-b").value()->expires_unix_ms, 42);
  ASSERT_TRUE(reg->remove_lease("vm-b").ok());
  EXPECT_FALSE(reg->lease("vm-b").value().has_value());
  EXPECT_EQ(reg->leases("").value().size(), 2u);
}

TEST_F(RegistryTest, AfterARestartRunningLeasesAreLostAndPausedOnesStay) {
  {
    auto reg = open();
    ASSERT_TRUE(reg);
    ASSERT_TRUE(reg->put_lease(lease("vm-run", "alice", LeaseState::RUNNING)).ok());
    ASSERT_TRUE(reg->put_lease(lease("vm-pause", "alice", LeaseState::PAUSED)).ok());
    SnapshotRecordRow s;
    s.owner = "alice";
    s.name = "base";
    s.tier = SizeTier::SMALL;
    s.memory_mib = 256;
    s.dir = "/state/snapshots/x/base-1";
    ASSERT_TRUE(reg->add_snapshot(s).ok());
  }  // closed as a killed process would leave it (WAL journal)
  auto reg = open();
  ASSERT_TRUE(reg);
  auto lost = reg->mark_running_lost("pool manager restarted: VMM gone");
  ASSERT_TRUE(lost.ok());
  ASSERT_EQ(lost.value().size(), 1u);
  EXPECT_EQ(lost.value()[0].vm_id, "vm-run");
  auto run = reg->lease("vm-run").value();
  ASSERT_TRUE(run);
  EXPECT_EQ(run->state, LeaseState::LOST);
  EXPECT_EQ(run->note, "pool manager restarted: VMM gone");
  auto paused = reg->lease("vm-pause").value();
  ASSERT_TRUE(paused);
  EXPECT_EQ(paused->state, LeaseState::PAUSED);
  EXPECT_EQ(paused->state_dir, "/state/paused/vm-pause");
  auto snap = reg->snapshot("alice", "base").value();
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->dir, "/state/snapshots/x/base-1");
  // A second restart changes nothing more.
  EXPECT_TRUE(reg->mark_running_lost("again").value().empty());
}

TEST_F(RegistryTest, SnapshotNamesAreUniquePerOwner) {
  auto reg = open();
  ASSERT_TRUE(reg);
  SnapshotRecordRow s;
  s.owner = "alice";
  s.name = "base";
  ASSERT_TRUE(reg->add_snapshot(s).ok());
  auto again = reg->add_snapshot(s);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::BAD_REQUEST);
  s.owner = "bob";  // another owner may use the name
  ASSERT_TRUE(reg->add_snapshot(s).ok());
  EXPECT_EQ(reg->snapshots("").value().size(), 2u);
  EXPECT_EQ(reg->snapshots("alice").value().size(), 1u);
  ASSERT_TRUE(reg->remove_snapshot("alice", "base").ok());
  EXPECT_FALSE(reg->snapshot("alice", "base").value().has_value());
  EXPECT_TRUE(reg->snapshot("bob", "base").value().has_value());
}

TEST_F(RegistryTest, AnUnwritableDatabaseIsATypedError) {
  auto r = Registry::open(dir_ + "/missing-dir/pool.sqlite");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::INTERNAL);
  EXPECT_NE(r.error().message.find("missing-dir"), std::string::npos);
}

TEST(SandboxRequests, SnapshotNames) {
  EXPECT_TRUE(check_snapshot_name("base").ok());
  EXPECT_TRUE(check_snapshot_name("v1.2_final-A").ok());
  EXPECT_TRUE(check_snapshot_name(std::string(63, 'a')).ok());
  for (const std::string& bad : {std::string(), std::string(64, 'a'), std::string("../etc"),
                                 std::string("a/b"), std::string(".hidden"), std::string("sp ace"),
                                 std::string("nul\0x", 5), std::string("é")}) {
    auto s = check_snapshot_name(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code, ErrorCode::BAD_REQUEST);
  }
}

TEST(SandboxRequests, OwnersCountsIdsTiers) {
  EXPECT_TRUE(check_owner("alice@example").ok());
  EXPECT_FALSE(check_owner("").ok());
  EXPECT_TRUE(check_owner("", true).ok());
  EXPECT_FALSE(check_owner(std::string(129, 'o')).ok());
  EXPECT_FALSE(check_owner("a/b").ok());
  EXPECT_FALSE(check_owner("tab\there").ok());
  EXPECT_TRUE(check_fork(1, {}).ok());
  EXPECT_TRUE(check_fork(16, {}).ok());
  EXPECT_FALSE(check_fork(0, {}).ok());
  EXPECT_FALSE(check_fork(17, {}).ok());
  EXPECT_FALSE(check_fork(4294967295u, {}).ok());
  EXPECT_TRUE(check_fork(2, {"a", "b"}).ok());
  EXPECT_FALSE(check_fork(2, {"a"}).ok());
  EXPECT_FALSE(check_fork(1, {std::string(129, 'x')}).ok());
  EXPECT_TRUE(check_vm_id("vm-0123abcd").ok());
  EXPECT_FALSE(check_vm_id("").ok());
  EXPECT_FALSE(check_vm_id("VM-1").ok());
  EXPECT_FALSE(check_vm_id("../x").ok());
  EXPECT_FALSE(check_vm_id(std::string(49, 'a')).ok());
  EXPECT_TRUE(check_tier(SizeTier::LARGE).ok());
  EXPECT_FALSE(check_tier(static_cast<SizeTier>(9)).ok());
  EXPECT_EQ(owner_dir_name("alice").size(), 16u);
  EXPECT_NE(owner_dir_name("alice"), owner_dir_name("bob"));
}

TEST(SparseImages, MemoryRoundTripsThroughASparseFile) {
  char tmpl[] = "/tmp/nv-sparse-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  const uint64_t bytes = 64ull << 20;
  auto mem = TemplateMemory::create("nv-test", bytes);
  ASSERT_TRUE(mem.ok());
  // Two written regions, everything else zero (never touched).
  const std::string a(10000, 'A'), b = "tail";
  ASSERT_EQ(::pwrite(mem.value().fd(), a.data(), a.size(), 4096 * 7), ssize_t(a.size()));
  ASSERT_EQ(::pwrite(mem.value().fd(), b.data(), b.size(), bytes - 4), 4);
  uint64_t allocated = 0;
  ASSERT_TRUE(save_memory(mem.value(), dir + "/memory.img", &allocated).ok());
  EXPECT_GT(allocated, 0u);
  EXPECT_LE(allocated, 64u * 1024);  // sparse: ~4 pages, not 64 MiB
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/memory.img").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), bytes);
  auto back = load_memory(dir + "/memory.img", bytes, "nv-test-back");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(back.value().sealed());
  std::string got(a.size(), 0), tail(4, 0), zero(4096, 1);
  ASSERT_EQ(::pread(back.value().fd(), got.data(), got.size(), 4096 * 7), ssize_t(a.size()));
  ASSERT_EQ(::pread(back.value().fd(), tail.data(), 4, bytes - 4), 4);
  ASSERT_EQ(::pread(back.value().fd(), zero.data(), zero.size(), 1 << 20), 4096);
  EXPECT_EQ(got, a);
  EXPECT_EQ(tail, b);
  EXPECT_EQ(zero, std::string(4096, '\0'));
  // A size that does not match the VM is refused.
  auto wrong = load_memory(dir + "/memory.img", bytes * 2, "nv-test-wrong");
  EXPECT_FALSE(wrong.ok());
  (void)remove_tree(dir);
}

}  // namespace
}  // namespace nv::vm
