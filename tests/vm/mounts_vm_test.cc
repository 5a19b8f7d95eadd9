// mounts_vm_test — host directories in sandboxes (issue 15) end to end with real microVMs:
// nv-orchestrator, nv-vm-pool-manager (TCG) and nv-sandbox-executor (seccomp on, --mount-root
// set: the executor spawns nv-mount-copier under its own filter) as child processes, driven only
// through the typed sandbox client. Few VMs, shared by the cases, which run in file order:
//   A. a mount outside every --mount-root (and one whose symlink resolves outside) is
//      mountRefused naming the rule and the roots, and the pool leases no VM for it;
//   B. one sandbox with a read-only and a read-write mount: the guest reads the ro files (the
//      host's symlink, fifo and hard link were not copied); write, chmod, rename, unlink each
//      fail with EROFS, for root too (the agent's writeFile);
//   C. rw: new and changed files reach the host with the same bytes at `sync`; a guest symlink
//      to outside is skipped (the host gets no link, the target is untouched); a guest hard link
//      becomes two independent host files; a guest removal removes the host file; a file changed
//      on both sides keeps the host's copy ("conflict");
//   C2. two guest processes swap a directory and a symlink (to /etc, to the host's outside
//      path) while the host syncs: no symlink on the host, nothing outside changed;
//   C3. SIGKILL + restart of the executor: the registry's manifests let it sync again;
//   D. fork: the fork carries the content but is not bound to the host directory (no sync);
//   E. pause/resume keep the mounts (still read-only); destroy syncs: a file written just before destroy is on the host afterwards;
//   F. quota: a write past the quota fails in the guest (ENOSPC); content within the tmpfs but
//      over the quota fails at sync with mountQuota and writes nothing.
// Skips (saying why) without root, the binaries or the guest image.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "common/frames.h"
#include "common/sandbox_client.h"
#include "pool_client.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::ErrorCode;
using nv::test::Process;
namespace sbx = nv::sandbox;

constexpr const char* kOwner = "uid:4343";

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}
void put(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}
std::string get(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
bool has_line_with(const std::vector<std::string>& lines, const std::string& part) {
  for (const auto& l : lines) {
    if (l.find(part) != std::string::npos) return true;
  }
  return false;
}

class MountsVm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    const std::string kernel = build + "/guest/vmlinux", rootfs = build + "/guest/rootfs.ext4";
    if (::geteuid() != 0) {
      skip_ = "needs root (the pool manager's jails and cgroups)";
      return;
    }
    for (auto name :
         {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor", "nv-mount-copier"}) {
      if (!exists(nv::test::bin(name))) {
        skip_ = std::string(name) + " is not built ($NV_BIN_DIR=" + nv::test::bin("") + ")";
        return;
      }
    }
    if (!exists(kernel) || !exists(rootfs)) {
      skip_ = "guest image missing (" + kernel + ", " + rootfs + ")";
      return;
    }
    rt_ = std::make_unique<nv::test::TempDir>("nv-mounts-vm");
    host_ = std::make_unique<nv::test::TempDir>("nv-mounts-host");
    root_ = host_->file("root");
    outside_ = host_->file("outside");
    ::mkdir(root_.c_str(), 0755);
    ::mkdir(outside_.c_str(), 0755);
    ::mkdir(host_->file("second-root").c_str(), 0755);
    env_ = {{"NV_RUNTIME_DIR", rt_->path()}, {"NV_LOG_LEVEL", "info"}};
    orch_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-orchestrator"), .args = {}, .env = env_}));
    pool_ = std::make_unique<Process>(Process::start(
        {.binary = nv::test::bin("nv-vm-pool-manager"),
         .args = {"--kernel", kernel, "--rootfs", rootfs, "--size", "small", "--warm", "1", "--max",
                  "4", "--accel", "tcg", "--boot-timeout-ms", "180000", "--no-require-egress"},
         .env = env_}));
    start_executor();
    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("clients.sock")), {}, {}, {}});
    sbx_ = std::make_unique<sbx::SandboxClient>(*client_, kOwner,
                                                sbx::ClientCallOptions{300s, "mounts-vm"});
    bool ready = nv::test::wait_until([&] { return sbx_->list().ok(); }, 120s, 500ms);
    if (!ready) setup_error_ = "the sandbox service never answered" + logs();
  }
  static void TearDownTestSuite() {
    sbx_.reset();
    client_.reset();
    zmq_.reset();
    for (auto* p : {&exec_, &pool_, &orch_}) {
      if (*p) (*p)->terminate(30s);
      p->reset();
    }
    rt_.reset();
    host_.reset();
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static void start_executor() {
    exec_ = std::make_unique<Process>(Process::start(
        {.binary = nv::test::bin("nv-sandbox-executor"),
         .args = {"--executor-name", "mnt", "--connect-timeout-ms", "60000", "--max-lease-wait-ms",
                  "200000", "--sandbox-file-timeout-ms", "60000", "--mount-root", root_,
                  "--mount-root", host_->file("second-root")},
         .env = env_}));
  }
  static std::string logs() {
    std::string out;
    if (exec_) out += "\n--- executor:\n" + exec_->stderr_text().substr(0, 30000);
    if (pool_) out += "\n--- pool:\n" + pool_->stderr_text().substr(0, 20000);
    return out;
  }
  // Runs bash in the sandbox (as the run user): "exit N: stdout+stderr".
  static std::string sh(const std::string& id, const std::string& code) {
    sbx::ExecSpec e;
    e.code = code;
    e.timeout_ms = 120000;
    auto r = sbx_->exec(id, e);
    if (!r.ok()) return "ERROR: " + r.error().to_string();
    return "exit " + std::to_string(r->exit_code) + ": " + r->stdout_data + r->stderr_data;
  }
  static size_t pool_leases() {
    nv::exec::PoolClient pc(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("vm-pool.sock")), {}, {}, {}});
    auto l = pc.leases("");
    return l.ok() ? l->size() : size_t(-1);
  }

  static inline std::string skip_, setup_error_, root_, outside_;
  static inline std::map<std::string, std::string> env_;
  static inline std::unique_ptr<nv::test::TempDir> rt_, host_;
  static inline std::unique_ptr<Process> orch_, pool_, exec_;
  static inline std::unique_ptr<zmq::context_t> zmq_;
  static inline std::unique_ptr<nv::Client> client_;
  static inline std::unique_ptr<sbx::SandboxClient> sbx_;
  static inline std::string main_;  // B..E share it
};

TEST_F(MountsVm, A_OutsideEveryRootIsRefusedBeforeAnyLease) {
  put(outside_ + "/secret.txt", "secret\n");
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/escape").c_str()), 0);
  size_t before = pool_leases();
  ASSERT_NE(before, size_t(-1));
  for (const std::string& host : {outside_, root_ + "/escape", std::string("/etc")}) {
    sbx::Spec spec;
    spec.mounts = {{.host_path = host, .guest_path = "/home/agent/x"}};
    auto s = sbx_->create(spec);
    ASSERT_FALSE(s.ok()) << host;
    EXPECT_EQ(s.error().code, ErrorCode::MOUNT_REFUSED) << s.error().to_string();
    EXPECT_NE(s.error().message.find("--mount-root"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find(root_), std::string::npos) << s.error().message;
  }
  // Shapes: badRequest.
  sbx::Spec bad;
  bad.mounts = {{.host_path = root_, .guest_path = "/home/agent/../etc"}};
  auto s = sbx_->create(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::BAD_REQUEST) << s.error().to_string();
  bad.mounts = {{.host_path = root_, .guest_path = "/tmp/x"}};
  s = sbx_->create(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::BAD_REQUEST) << s.error().to_string();
  EXPECT_EQ(pool_leases(), before);
  auto list = sbx_->list({}, true);
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty()) << "a refused create left a sandbox";
  ::unlink((root_ + "/escape").c_str());
}

TEST_F(MountsVm, B_ReadOnlyMountReadsAndRefusesEveryChange) {
  const std::string ro = root_ + "/ro", rw = root_ + "/rw";
  ::mkdir(ro.c_str(), 0755);
  ::mkdir((ro + "/sub").c_str(), 0755);
  ::mkdir(rw.c_str(), 0755);
  put(ro + "/readme.txt", "read me\n");
  put(ro + "/sub/deep.txt", "deep\n");
  ASSERT_EQ(::symlink((outside_ + "/secret.txt").c_str(), (ro + "/link").c_str()), 0);
  ASSERT_EQ(::mkfifo((ro + "/fifo").c_str(), 0644), 0);
  put(ro + "/hard1", "hard\n");
  ASSERT_EQ(::link((ro + "/hard1").c_str(), (ro + "/hard2").c_str()), 0);
  put(rw + "/keep.txt", "host keeps\n");
  put(rw + "/change.txt", "v1\n");
  put(rw + "/gone.txt", "remove me\n");
  put(rw + "/conflict.txt", "c1\n");
  sbx::Spec spec;
  spec.mounts = {{.host_path = ro, .guest_path = "/home/agent/ro", .read_only = true},
                 {.host_path = rw, .guest_path = "/home/agent/proj"}};
  auto s = sbx_->create(spec);
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  main_ = s->sandbox_id;
  ASSERT_EQ(s->mounts.size(), 2u);
  EXPECT_EQ(s->mounts[1].quota_bytes, 256ull << 20);  // the executor's default, made explicit
  EXPECT_EQ(sh(main_, "cat /home/agent/ro/readme.txt /home/agent/ro/sub/deep.txt"),
            "exit 0: read me\ndeep\n");
  // Not copied: the host's symlink (pointing outside), fifo and hard links.
  EXPECT_EQ(sh(main_, "cd /home/agent/ro && ls -A | tr '\\n' ' '"), "exit 0: readme.txt sub ");
  for (const std::string op :
       {"echo x > /home/agent/ro/readme.txt", "echo x > /home/agent/ro/new.txt",
        "chmod 600 /home/agent/ro/readme.txt", "mv /home/agent/ro/readme.txt /home/agent/ro/r2",
        "rm /home/agent/ro/readme.txt", "mkdir /home/agent/ro/d", "touch /home/agent/ro/sub/t"}) {
    auto out = sh(main_, op + " 2>&1; echo rc=$?");
    EXPECT_NE(out.find("Read-only file system"), std::string::npos) << op << " → " << out;
    EXPECT_EQ(out.find("rc=0"), std::string::npos) << op << " → " << out;
  }
  // Root (the agent's own file calls) is refused the same way.
  auto w = sbx_->write_file(main_, "/home/agent/ro/readme.txt", "root write\n");
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message.find("Read-only file system"), std::string::npos)
      << w.error().to_string();
  EXPECT_EQ(get(ro + "/readme.txt"), "read me\n");
  EXPECT_EQ(sh(main_, "cat /home/agent/ro/readme.txt"), "exit 0: read me\n");
}

TEST_F(MountsVm, C_ReadWriteMountSyncsToTheHost) {
  ASSERT_FALSE(main_.empty());
  const std::string rw = root_ + "/rw";
  EXPECT_EQ(sh(main_, "cat /home/agent/proj/keep.txt"), "exit 0: host keeps\n");
  // Binary bytes (every byte value), a change, a removal, a symlink to outside, a hard link.
  ASSERT_EQ(sh(main_,
               "cd /home/agent/proj && python3 -c \"import sys; sys.stdout.buffer.write("
               "bytes(range(256))*1000)\" > bin.dat && echo v2 > change.txt && rm gone.txt && "
               "mkdir -p out/deeper && echo result > out/deeper/r.txt && "
               "ln -s " +
                   outside_ +
                   "/secret.txt link && ln out/deeper/r.txt twin && "
                   "echo guest > conflict.txt && echo ok"),
            "exit 0: ok\n");
  put(rw + "/conflict.txt", "host changed\n");  // changed on both sides
  auto r = sbx_->sync(main_);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  ASSERT_EQ(r->size(), 1u);  // the rw mount only
  const auto& m = r->front();
  EXPECT_EQ(m.guest_path, "/home/agent/proj");
  EXPECT_EQ(m.host_path, rw);
  std::string bin;
  for (int i = 0; i < 1000; ++i) {
    for (int b = 0; b < 256; ++b) bin.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(get(rw + "/bin.dat"), bin);
  EXPECT_EQ(get(rw + "/change.txt"), "v2\n");
  EXPECT_EQ(get(rw + "/out/deeper/r.txt"), "result\n");
  EXPECT_FALSE(exists(rw + "/gone.txt"));
  EXPECT_EQ(get(rw + "/keep.txt"), "host keeps\n");
  EXPECT_EQ(get(rw + "/conflict.txt"), "host changed\n");
  // The guest's symlink: no link on the host, the target untouched.
  EXPECT_FALSE(exists(rw + "/link"));
  EXPECT_EQ(get(outside_ + "/secret.txt"), "secret\n");
  // The guest's hard link: two independent host files.
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((rw + "/twin").c_str(), &a), 0);
  ASSERT_EQ(::stat((rw + "/out/deeper/r.txt").c_str(), &b), 0);
  EXPECT_NE(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 1u);
  EXPECT_EQ(get(rw + "/twin"), "result\n");
  // bin.dat, change.txt, out/deeper/r.txt, twin.
  EXPECT_EQ(m.files_written, 4u);
  EXPECT_EQ(m.bytes_written, bin.size() + 3 + 7 + 7);
  EXPECT_EQ(m.files_removed, 1u);
  EXPECT_TRUE(has_line_with(m.skipped, "link: symlink")) << ::testing::PrintToString(m.skipped);
  EXPECT_TRUE(has_line_with(m.skipped, "conflict.txt: conflict"))
      << ::testing::PrintToString(m.skipped);
  // No temp file is left anywhere.
  EXPECT_EQ(sh(main_, "true"), "exit 0: ");
  auto leftovers = nv::test::run({.binary = "/usr/bin/find", .args = {rw, "-name", ".nv-sync-*"}});
  EXPECT_EQ(leftovers.out, "");
  // A second sync with nothing new writes nothing.
  auto again = sbx_->sync(main_);
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->front().files_written, 0u);
  EXPECT_EQ(again->front().files_removed, 0u);
}

TEST_F(MountsVm, C2_AGuestRenameRaceReachesNothingOutside) {
  ASSERT_FALSE(main_.empty());
  const std::string rw = root_ + "/rw";
  // Two guest processes swap proj/race between a directory holding a file and a symlink to /etc
  // (and to the host path of `outside`, which the guest does not have) while the host syncs.
  sbx::ExecSpec race;
  race.background = true;
  race.timeout_ms = 120000;
  race.code =
      "cd /home/agent/proj; mkdir -p race.d; echo x > race.d/passwd; "
      "(for i in $(seq 60); do mv -T race.d race 2>/dev/null; mv -T race race.d 2>/dev/null; "
      "done) & (for i in $(seq 60); do ln -sfn /etc race 2>/dev/null; rm -f race 2>/dev/null; "
      "ln -sfn " +
      outside_ + " race 2>/dev/null; rm -f race; done) & wait; touch /home/agent/race.done";
  ASSERT_TRUE(sbx_->exec(main_, race).ok());
  for (int i = 0; i < 6; ++i) {
    auto r = sbx_->sync(main_);
    ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  }
  EXPECT_EQ(sh(main_,
               "for i in $(seq 120); do [ -e /home/agent/race.done ] && break; sleep 1; "
               "done; ls /home/agent/race.done"),
            "exit 0: /home/agent/race.done\n");
  ASSERT_TRUE(sbx_->sync(main_).ok());
  // Nothing outside the mount changed; no symlink on the host; /etc's files never came over.
  EXPECT_EQ(get(outside_ + "/secret.txt"), "secret\n");
  auto listing = nv::test::run({.binary = "/usr/bin/find", .args = {outside_}});
  EXPECT_EQ(listing.out, outside_ + "\n" + outside_ + "/secret.txt\n");
  auto links = nv::test::run({.binary = "/usr/bin/find", .args = {rw, "-type", "l"}});
  EXPECT_EQ(links.out, "");
  auto etc = nv::test::run({.binary = "/usr/bin/find", .args = {rw, "-name", "hostname"}});
  EXPECT_EQ(etc.out, "");
  for (const std::string name : {"race/passwd", "race.d/passwd"}) {
    if (::access((rw + "/" + name).c_str(), F_OK) == 0) {
      EXPECT_EQ(get(rw + "/" + name), "x\n");
    }
  }
}

TEST_F(MountsVm, C3_ARestartedExecutorStillSyncs) {
  ASSERT_FALSE(main_.empty());
  ASSERT_TRUE(sbx_->sync(main_).ok());  // a clean baseline: only restart.txt is new below
  EXPECT_EQ(sh(main_, "echo after restart > /home/agent/proj/restart.txt && echo ok"),
            "exit 0: ok\n");
  exec_->signal(SIGKILL);
  exec_->wait(10s);
  start_executor();
  ASSERT_TRUE(nv::test::wait_until([&] { return sbx_->get(main_).ok(); }, 120s, 500ms)) << logs();
  auto r = sbx_->sync(main_);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(get(root_ + "/rw/restart.txt"), "after restart\n");
  // The manifest came back too: only the new file was written.
  EXPECT_EQ(r->front().files_written, 1u) << ::testing::PrintToString(r->front().skipped);
}

TEST_F(MountsVm, D_ForkCarriesContentButIsNotBound) {
  ASSERT_FALSE(main_.empty());
  auto f = sbx_->fork(main_, 1);
  ASSERT_TRUE(f.ok()) << f.error().to_string() << logs();
  ASSERT_EQ(f->size(), 1u);
  const auto child = f->front().sandbox_id;
  EXPECT_TRUE(f->front().mounts.empty());
  EXPECT_EQ(sh(child, "cat /home/agent/proj/change.txt /home/agent/ro/readme.txt"),
            "exit 0: v2\nread me\n");
  EXPECT_EQ(sh(child, "echo fork > /home/agent/proj/fork.txt && echo ok"), "exit 0: ok\n");
  auto r = sbx_->sync(child);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->empty());
  ASSERT_TRUE(sbx_->destroy(child).ok());
  EXPECT_FALSE(exists(root_ + "/rw/fork.txt"));
}

TEST_F(MountsVm, E_DestroySyncsFirst) {
  ASSERT_FALSE(main_.empty());
  // Pause and resume carry the mounts like any guest state: still there, still read-only.
  ASSERT_TRUE(sbx_->pause(main_).ok());
  auto resumed = sbx_->resume(main_);
  ASSERT_TRUE(resumed.ok()) << resumed.error().to_string() << logs();
  EXPECT_EQ(resumed->mounts.size(), 2u);
  EXPECT_EQ(sh(main_,
               "cat /home/agent/ro/readme.txt; touch /home/agent/ro/t 2>&1 | grep -c "
               "'Read-only file system'"),
            "exit 0: read me\n1\n");
  EXPECT_EQ(sh(main_, "echo last words > /home/agent/proj/last.txt && echo ok"), "exit 0: ok\n");
  auto d = sbx_->destroy(main_);
  ASSERT_TRUE(d.ok()) << d.error().to_string();
  EXPECT_EQ(d->end_reason, "destroyed by owner");
  EXPECT_EQ(get(root_ + "/rw/last.txt"), "last words\n");
}

TEST_F(MountsVm, F_QuotaHoldsInTheGuestAndAtSync) {
  const std::string q = host_->file("second-root");
  ::mkdir(q.c_str(), 0755);
  put(q + "/seed.txt", "seed\n");
  sbx::Spec spec;
  spec.mounts = {
      {.host_path = q, .guest_path = "/home/agent/q", .quota_bytes = 64 << 10, .quota_files = 100}};
  auto s = sbx_->create(spec);
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  // Far past the quota: the guest's tmpfs is full.
  auto out = sh(s->sandbox_id, "head -c 4194304 /dev/zero 2>&1 > /home/agent/q/big; echo rc=$?");
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
  EXPECT_EQ(sh(s->sandbox_id, "rm -f /home/agent/q/big && echo ok"), "exit 0: ok\n");
  // Within the tmpfs's slack but over the quota: sync refuses, nothing is written.
  EXPECT_EQ(sh(s->sandbox_id, "head -c 73728 /dev/zero > /home/agent/q/over && echo ok"),
            "exit 0: ok\n");
  auto r = sbx_->sync(s->sandbox_id);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::MOUNT_QUOTA) << r.error().to_string();
  EXPECT_FALSE(exists(q + "/over"));
  EXPECT_EQ(sh(s->sandbox_id, "rm /home/agent/q/over && echo small > /home/agent/q/s && echo ok"),
            "exit 0: ok\n");
  r = sbx_->sync(s->sandbox_id);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(get(q + "/s"), "small\n");
  ASSERT_TRUE(sbx_->destroy(s->sandbox_id).ok());
}

}  // namespace
