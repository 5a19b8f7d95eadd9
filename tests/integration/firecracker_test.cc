// FirecrackerBackend against tests/fixtures/fake_firecracker.py, a request-checking stand-in
// built from Firecracker's published API spec (Firecracker itself cannot be installed here).
// The fake runs like the real VMM would: in the backend's jail (namespaces, pivot_root,
// unprivileged uid) and cgroups. Needs root; skipped otherwise.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <rapidjson/document.h>

#include "firecracker_backend.h"

extern char** environ;

namespace nv::vm {
namespace {

using namespace std::chrono_literals;

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

std::string fixture() {
  const char* src = std::getenv("NV_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures/fake_firecracker.py";
}

// (method path status) per logged request.
std::vector<std::string> request_log(const std::string& jail_dir) {
  std::ifstream in(jail_dir + "/run/requests.log");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    if (d.HasParseError()) continue;
    out.push_back(std::string(d["method"].GetString()) + " " + d["path"].GetString() + " " +
                  std::to_string(d["status"].GetInt()));
  }
  return out;
}

// Connects to a hybrid vsock UDS, sends `connect_line`, returns everything read until EOF.
std::string vsock_exchange(const std::string& path, const std::string& connect_line) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)!::write(fd, connect_line.data(), connect_line.size());
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class FirecrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (jails and cgroups)";
    if (!exists("/usr/bin/python3")) GTEST_SKIP() << "needs /usr/bin/python3 for the fake";
    dir_ = "/tmp/nv-fc-test-" + std::to_string(::getpid());
    ASSERT_TRUE(make_dirs(dir_ + "/images", 0755).ok());
    ::chmod(dir_.c_str(), 0755);
    for (auto f : {"/images/vmlinux", "/images/rootfs.ext4"}) {
      std::ofstream(dir_ + f) << "not a real image\n";
      ::chmod((dir_ + f).c_str(), 0644);
    }
    layout_ = CgroupLayout::detect("/sys/fs/cgroup", "/proc/self/cgroup",
                                   "nv-fc-test-" + std::to_string(::getpid()));
    ASSERT_NE(layout_.mode, CgroupLayout::Mode::none) << layout_.reason;
    ASSERT_TRUE(layout_.prepare().ok());
    FirecrackerConfig c;
    c.command = {"/usr/bin/python3", "/fixture/fake_firecracker.py"};
    c.extra_binds = {
        {"/usr", "/usr", true, false, false, "python3 for the fake VMM"},
        {"/etc/ld.so.cache", "/etc/ld.so.cache", true, false, true, "dynamic loader"},
        {fixture(), "/fixture/fake_firecracker.py", true, false, false, "the fake VMM"}};
    c.runtime_dir = dir_ + "/runtime";
    c.cgroups = layout_;
    backend_ = std::make_unique<FirecrackerBackend>(c);
    spec_.vm_id = "fc-" + random_hex(4);
    spec_.vcpus = 2;
    spec_.memory_mib = 256;
    spec_.kernel = dir_ + "/images/vmlinux";
    spec_.rootfs = dir_ + "/images/rootfs.ext4";
  }
  void TearDown() override {
    backend_.reset();
    if (!dir_.empty()) {
      layout_.remove_parents();
      (void)remove_tree(dir_);
    }
  }
  Deadline soon() { return Clock::now() + 10s; }

  std::string dir_;
  CgroupLayout layout_;
  std::unique_ptr<FirecrackerBackend> backend_;
  VmSpec spec_;
};

TEST_F(FirecrackerTest, ColdBootConfiguresThroughTheApiInOrder) {
  auto vm = backend_->boot(spec_, soon());
  ASSERT_TRUE(vm.ok()) << vm.error().message;
  const VmInfo& info = vm.value()->info();
  EXPECT_EQ(info.backend, "firecracker");
  EXPECT_EQ(info.channel_kind, ChannelKind::hybridVsock);
  EXPECT_EQ(info.channel_path, info.jail_dir + "/run/vsock.sock");
  EXPECT_EQ(info.vsock_port, 6000u);
  EXPECT_GT(info.vmm_pid, 0);
  EXPECT_TRUE(vm.value()->alive());
  EXPECT_TRUE(vm.value()->check_responsive(soon()).ok());
  std::vector<std::string> want = {"PUT /boot-source 204",    "PUT /drives/rootfs 204",
                                   "PUT /machine-config 204", "PUT /vsock 204",
                                   "PUT /entropy 204",        "PUT /actions 204"};
  EXPECT_EQ(request_log(info.jail_dir), want);
  // The VMM is jailed: its own PID namespace (it is PID 1 there) and an unprivileged uid.
  std::string status = read_file("/proc/" + std::to_string(info.vmm_pid) + "/status").value();
  EXPECT_NE(status.find("NSpid:\t" + std::to_string(info.vmm_pid) + "\t1\n"), std::string::npos)
      << status;
  EXPECT_EQ(status.find("Uid:\t0\t"), std::string::npos);
  EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos);
  ASSERT_TRUE(vm.value()->destroy(soon()).ok());
}

TEST_F(FirecrackerTest, HybridVsockHandshake) {
  auto vm = backend_->boot(spec_, soon());
  ASSERT_TRUE(vm.ok()) << vm.error().message;
  const VmInfo& info = vm.value()->info();
  std::string ok = vsock_exchange(info.channel_path, "CONNECT 6000\n");
  EXPECT_EQ(ok.rfind("OK ", 0), 0u) << ok;
  EXPECT_NE(ok.find("\nNV-FAKE-GUEST " + info.vm_id + "\n"), std::string::npos) << ok;
  // No guest listener on another port: closed without an OK.
  EXPECT_EQ(vsock_exchange(info.channel_path, "CONNECT 7000\n"), "");
}

TEST_F(FirecrackerTest, FakeRejectsRequestsThatBreakTheSpec) {
  // A fresh, unconfigured fake (no jail) to send bad requests to.
  std::string sock = dir_ + "/bare-api.sock";
  std::string py = "/usr/bin/python3", script = fixture(), flag = "--api-sock";
  char* argv[] = {py.data(), script.data(), flag.data(), sock.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, argv[0], nullptr, nullptr, argv, environ), 0);
  FirecrackerApi api(sock);
  ASSERT_TRUE(api.wait_up(soon(), -1).ok());
  struct Case {
    const char* method;
    const char* path;
    const char* body;
    const char* fault;
  } cases[] = {
      {"PUT", "/machine-config", R"({"mem_size_mib": 256})", "missing field `vcpu_count`"},
      {"PUT", "/machine-config", R"({"vcpu_count": "2", "mem_size_mib": 256})",
       "expected an integer"},
      {"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256, "cpus": 4})",
       "unknown field `cpus`"},
      {"PUT", "/machine-config", R"({"vcpu_count": 64, "mem_size_mib": 256})", "[1, 32]"},
      {"PUT", "/actions", R"({"action_type": "InstanceStart"})", "without kernel"},
      {"PUT", "/actions", R"({"action_type": "Boot"})", "expected one of"},
      {"PUT", "/drives/rootfs", R"({"drive_id": "other", "is_root_device": true,
        "path_on_host": "/etc/hostname", "is_read_only": true})",
       "does not match"},
      {"PUT", "/vsock", R"({"guest_cid": 2, "uds_path": "/tmp/x"})", "guest_cid"},
      {"PUT", "/boot-source", R"({"kernel_image_path": "/nonexistent/vmlinux"})", "not found"},
      {"PUT", "/snapshot/create", R"({"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"})",
       "not paused"},
      {"PATCH", "/vm", R"({"state": "Paused"})", "not been started"},
      {"PUT", "/network", R"({})", "Invalid request"},
  };
  for (const auto& c : cases) {
    Status s = api.call(c.method, c.path, c.body, soon());
    ASSERT_FALSE(s.ok()) << c.method << " " << c.path << " " << c.body;
    EXPECT_NE(s.error().message.find("400"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find(c.fault), std::string::npos) << s.error().message;
  }
  // And a valid configuration is accepted.
  EXPECT_TRUE(
      api.call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})", soon()).ok());
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

TEST_F(FirecrackerTest, SnapshotThenRestoreLoadsIntoAFreshProcess) {
  auto tpl = backend_->boot(spec_, soon());
  ASSERT_TRUE(tpl.ok()) << tpl.error().message;
  std::string snap = dir_ + "/small.vmstate";
  Status s = tpl.value()->snapshot(snap, soon());
  ASSERT_TRUE(s.ok()) << s.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((snap + ".mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 256 << 20);
  ASSERT_TRUE(tpl.value()->destroy(soon()).ok());

  VmSpec r = spec_;
  r.vm_id = "fc-" + random_hex(4);
  r.restore_from = snap;
  auto vm = backend_->boot(r, soon());
  ASSERT_TRUE(vm.ok()) << vm.error().message;
  EXPECT_TRUE(vm.value()->info().restored);
  EXPECT_EQ(request_log(vm.value()->info().jail_dir),
            std::vector<std::string>{"PUT /snapshot/load 204"});
  EXPECT_TRUE(vm.value()->check_responsive(soon()).ok());
  std::string ok = vsock_exchange(vm.value()->info().channel_path, "CONNECT 6000\n");
  EXPECT_EQ(ok.rfind("OK ", 0), 0u) << ok;
}

TEST_F(FirecrackerTest, KilledVmmIsSeenOnItsPidfdAndDestroyCleansUp) {
  auto vm = backend_->boot(spec_, soon());
  ASSERT_TRUE(vm.ok()) << vm.error().message;
  RunningVm& v = *vm.value();
  std::string jail = v.info().jail_dir;
  auto cg_dirs = layout_.vm_dirs(v.info().vm_id);
  for (auto& d : cg_dirs) EXPECT_TRUE(exists(d)) << d;
  ASSERT_EQ(::kill(v.info().vmm_pid, SIGKILL), 0);
  EXPECT_TRUE(wait_readable(v.exit_fd(), Clock::now() + 2s));
  EXPECT_FALSE(v.alive());
  EXPECT_NE(v.exit_reason().find("signal 9"), std::string::npos) << v.exit_reason();
  ASSERT_TRUE(v.destroy(soon()).ok());
  EXPECT_FALSE(exists(jail));
  for (auto& d : cg_dirs) EXPECT_FALSE(exists(d)) << d;
  EXPECT_NE(::kill(v.info().vmm_pid, 0), 0);
}

}  // namespace
}  // namespace nv::vm
