// Proof tests of the eBPF sentinel (nv_sentinel_core) on the real kernel: egress denial on a VM
// cgroup2 dir, syscall counting per VM, exec alerts, exits, and the BPF LSM programs (loaded, or
// skipped with the kernel's errno). Traffic goes to loopback only: 127.0.0.2 stands in for a
// forbidden destination, 127.0.0.1 for an allowed one.
#include "sentinel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace s = nv::sentinel;

namespace {

struct Seen {
  std::vector<s::ExecAlert> execs;
  std::vector<s::ProcessExit> exits;
  std::vector<s::EgressDenial> denials;
  std::vector<s::LsmDenial> lsm;
};

// A cgroup2 dir for one test, removed at the end (its processes have exited by then).
class ScopedCgroup {
 public:
  explicit ScopedCgroup(const std::string& name) {
    std::string root;
    for (const char* candidate : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      struct statfs sfs {};
      if (statfs(candidate, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
        root = candidate;
        break;
      }
    }
    if (root.empty()) {
      why_ = "no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup";
      return;
    }
    path_ = root + "/nv-sectest-" + std::to_string(getpid()) + "-" + name;
    if (mkdir(path_.c_str(), 0755) != 0) {
      why_ = "mkdir(" + path_ + "): " + strerror(errno);
      path_.clear();
    }
  }
  ~ScopedCgroup() {
    if (path_.empty()) return;
    for (int i = 0; i < 50 && rmdir(path_.c_str()) != 0 && errno == EBUSY; ++i) usleep(10000);
  }
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  const std::string& why() const { return why_; }

 private:
  std::string path_;
  std::string why_;
};

// Moves the calling process into a cgroup2 dir ("0" = the writer). Child-side, so no gtest.
int join_cgroup(const std::string& dir) {
  int fd = open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = write(fd, "0", 1) == 1 ? 0 : errno;
  close(fd);
  return rc;
}

// A TCP listener on a loopback address.
class Listener {
 public:
  explicit Listener(const char* ip) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    socklen_t len = sizeof(a);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(fd_, 16) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      why_ = std::string("listener on ") + ip + ": " + strerror(errno);
      return;
    }
    port_ = ntohs(a.sin_port);
  }
  ~Listener() {
    if (fd_ >= 0) close(fd_);
  }
  uint16_t port() const { return port_; }
  const std::string& why() const { return why_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string why_;
};

// 0 on success, else errno of connect().
int connect_v4(const char* ip, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

// Same destination through a dual-stack IPv6 socket (::ffff:a.b.c.d). -1: no IPv6 here.
int connect_v4_mapped(const char* ip, uint16_t port) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  inet_pton(AF_INET6, (std::string("::ffff:") + ip).c_str(), &a.sin6_addr);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

// 0 on success, else errno of sendto() on an unconnected UDP socket (cgroup/sendmsg4).
int sendto_v4(const char* ip, uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  int rc = sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 1 ? 0 : errno;
  close(fd);
  return rc;
}

// A forked child that waits for go(), runs `body`, sends back up to 8 ints and exits.
class Child {
 public:
  using Results = std::array<int, 8>;
  explicit Child(std::function<Results()> body) {
    if (pipe2(go_, O_CLOEXEC) != 0 || pipe2(out_, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(go_[1]);
      close(out_[0]);
      char c;
      if (read(go_[0], &c, 1) != 1) _exit(90);
      Results r = body();
      ssize_t n = write(out_[1], r.data(), sizeof(r));
      _exit(n == static_cast<ssize_t>(sizeof(r)) ? 0 : 91);
    }
    close(go_[0]);
    close(out_[1]);
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(go_[1]);
    close(out_[0]);
  }
  pid_t pid() const { return pid_; }
  void go() { (void)!write(go_[1], "g", 1); }
  // Waits for the results and the exit; false if the child died without reporting.
  bool finish(Results* r, int* status = nullptr) {
    ssize_t n = read(out_[0], r->data(), sizeof(*r));
    int st = 0;
    waitpid(pid_, &st, 0);
    reaped_ = true;
    if (status) *status = st;
    return n == static_cast<ssize_t>(sizeof(*r));
  }

 private:
  pid_t pid_ = -1;
  int go_[2] = {-1, -1};
  int out_[2] = {-1, -1};
  bool reaped_ = false;
};

}  // namespace

class SentinelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    seen_ = new Seen;
    s::Callbacks cb;
    cb.on_exec_alert = [](const s::ExecAlert& a) { seen_->execs.push_back(a); };
    cb.on_exit = [](const s::ProcessExit& x) { seen_->exits.push_back(x); };
    cb.on_egress_denial = [](const s::EgressDenial& d) { seen_->denials.push_back(d); };
    cb.on_lsm_denial = [](const s::LsmDenial& d) { seen_->lsm.push_back(d); };
    sentinel_ = new s::Sentinel(cb);
    for (const s::ProgramStatus& p : sentinel_->load()) {
      printf("[program] %-20s %-17s %-22s loaded=%d attached=%d errno=%d %s\n", p.name.c_str(),
             p.object.c_str(), p.section.c_str(), p.loaded, p.attached, p.errnum, p.detail.c_str());
    }
  }
  static void TearDownTestSuite() {
    delete sentinel_;
    delete seen_;
    sentinel_ = nullptr;
    seen_ = nullptr;
  }

  // "" when the program loaded, else why not (for GTEST_SKIP).
  static std::string missing(const std::string& name) {
    auto p = sentinel_->program(name);
    if (!p) return name + ": not in any object";
    if (p->loaded) return "";
    return name + " refused by this kernel: " + s::errno_text(p->errnum) + " (errno " +
           std::to_string(p->errnum) + ") " + p->detail;
  }

  // Polls the ring buffers until pred() holds or timeout_ms passes.
  static bool poll_until(const std::function<bool()>& pred, int timeout_ms = 2000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      s::Status err = s::Status::Ok();
      if (sentinel_->poll(50, &err) < 0) {
        ADD_FAILURE() << err.text();
        return false;
      }
    }
    return true;
  }

  static s::Sentinel* sentinel_;
  static Seen* seen_;
};

s::Sentinel* SentinelTest::sentinel_ = nullptr;
Seen* SentinelTest::seen_ = nullptr;

TEST_F(SentinelTest, EveryProgramIsReportedLoadedOrWithItsErrno) {
  const auto& programs = sentinel_->programs();
  ASSERT_FALSE(programs.empty());
  for (const char* name :
       {"nv_sys_enter", "nv_process_fork", "nv_process_exec", "nv_process_exit", "nv_connect4",
        "nv_connect6", "nv_sendmsg4", "nv_sendmsg6", "nv_file_open", "nv_socket_connect"}) {
    auto p = sentinel_->program(name);
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_TRUE(p->loaded || p->errnum != 0) << name << ": neither loaded nor an errno";
    if (!p->loaded) {
      EXPECT_FALSE(p->detail.empty()) << name;
    }
  }
}

TEST_F(SentinelTest, EgressDenyListRefusesDeniedLoopbackAndAllowsOther) {
  if (auto why = missing("nv_connect4"); !why.empty()) GTEST_SKIP() << why;
  ScopedCgroup cg("egress");
  if (!cg.ok()) GTEST_SKIP() << cg.why();
  Listener allowed("127.0.0.1"), denied("127.0.0.2");
  ASSERT_NE(allowed.port(), 0) << allowed.why();
  ASSERT_NE(denied.port(), 0) << denied.why();

  s::EgressPolicy policy;  // default deny list + the stand-in
  policy.rules.push_back({"127.0.0.2/32", s::EgressAction::kDeny,
                          "test: loopback stand-in for a forbidden destination"});
  s::Status st = sentinel_->attach_egress(cg.path(), policy, "vm-egress");
  ASSERT_TRUE(st.ok()) << st.text();

  const uint16_t dport = denied.port(), aport = allowed.port();
  const std::string dir = cg.path();
  Child child([&]() -> Child::Results {
    int joined = join_cgroup(dir);
    return {joined,
            connect_v4("127.0.0.2", dport),
            connect_v4("127.0.0.1", aport),
            sendto_v4("127.0.0.2", dport),
            connect_v4_mapped("127.0.0.2", dport),
            0,
            0,
            0};
  });
  ASSERT_GT(child.pid(), 0);
  child.go();
  Child::Results r{};
  ASSERT_TRUE(child.finish(&r));
  ASSERT_EQ(r[0], 0) << "joining the cgroup: " << strerror(r[0]);
  EXPECT_EQ(r[1], EPERM) << "connect to denied 127.0.0.2: " << strerror(r[1]);
  EXPECT_EQ(r[2], 0) << "connect to allowed 127.0.0.1: " << strerror(r[2]);
  EXPECT_EQ(r[3], EPERM) << "UDP sendto denied 127.0.0.2: " << strerror(r[3]);
  if (r[4] != -1) {
    EXPECT_EQ(r[4], EPERM) << "v4-mapped ::ffff:127.0.0.2: " << strerror(r[4]);
  }

  // The denial arrives as an event with pid, address, port and the rule's reason.
  const pid_t pid = child.pid();
  auto denial_for = [&](const char* hook) {
    for (const auto& d : seen_->denials)
      if (d.tgid == pid && d.hook == hook) return &d;
    return static_cast<const s::EgressDenial*>(nullptr);
  };
  ASSERT_TRUE(poll_until([&] { return denial_for("connect4") && denial_for("sendmsg4"); }, 1000))
      << "no denial event within 1 s";
  const s::EgressDenial* d = denial_for("connect4");
  EXPECT_EQ(d->address, "127.0.0.2");
  EXPECT_EQ(d->port, dport);
  EXPECT_EQ(d->vm_id, "vm-egress");
  EXPECT_EQ(d->cgroup_dir, cg.path());
  EXPECT_EQ(d->rule, "127.0.0.2/32");
  EXPECT_EQ(d->reason, "test: loopback stand-in for a forbidden destination");

  // Outside the VM cgroup the same destination is reachable.
  EXPECT_EQ(connect_v4("127.0.0.2", dport), 0);

  // The deny list is editable: without the rule the child gets through.
  st = sentinel_->egress_remove_rule(cg.path(), "127.0.0.2/32");
  ASSERT_TRUE(st.ok()) << st.text();
  Child again([&]() -> Child::Results {
    return {join_cgroup(dir), connect_v4("127.0.0.2", dport), 0, 0, 0, 0, 0, 0};
  });
  again.go();
  ASSERT_TRUE(again.finish(&r));
  EXPECT_EQ(r[1], 0) << "after removing the rule: " << strerror(r[1]);

  st = sentinel_->detach_egress(cg.path());
  EXPECT_TRUE(st.ok()) << st.text();
}

TEST_F(SentinelTest, EgressPolicyCoversNestedCgroupsAndIpv6) {
  if (auto why = missing("nv_connect6"); !why.empty()) GTEST_SKIP() << why;
  ScopedCgroup cg("egress-nested");
  if (!cg.ok()) GTEST_SKIP() << cg.why();
  // A cgroup the VM creates below its own dir has no policy entry: the programs walk up to the
  // nearest ancestor that has one.
  const std::string inner = cg.path() + "/inner";
  ASSERT_EQ(mkdir(inner.c_str(), 0755), 0) << strerror(errno);
  Listener denied("127.0.0.2");
  ASSERT_NE(denied.port(), 0) << denied.why();
  // IPv6 loopback listener, if this host has IPv6.
  int l6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 a6{};
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  socklen_t len = sizeof(a6);
  uint16_t port6 = 0;
  if (l6 >= 0 && bind(l6, reinterpret_cast<sockaddr*>(&a6), len) == 0 && listen(l6, 4) == 0 &&
      getsockname(l6, reinterpret_cast<sockaddr*>(&a6), &len) == 0)
    port6 = ntohs(a6.sin6_port);

  s::EgressPolicy policy;
  policy.rules.push_back({"127.0.0.2", s::EgressAction::kDeny, "test: v4 stand-in"});
  policy.rules.push_back({"::1/128", s::EgressAction::kDeny, "test: v6 stand-in"});
  s::Status st = sentinel_->attach_egress(cg.path(), policy, "vm-nested");
  ASSERT_TRUE(st.ok()) << st.text();

  const uint16_t dport = denied.port();
  Child child([&]() -> Child::Results {
    int joined = join_cgroup(inner);
    int v6 = -1;
    if (port6 != 0) {
      int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in6 d{};
      d.sin6_family = AF_INET6;
      d.sin6_addr = in6addr_loopback;
      d.sin6_port = htons(port6);
      v6 = connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof(d)) == 0 ? 0 : errno;
      close(fd);
    }
    return {joined, connect_v4("127.0.0.2", dport), v6, 0, 0, 0, 0, 0};
  });
  child.go();
  Child::Results r{};
  ASSERT_TRUE(child.finish(&r));
  ASSERT_EQ(r[0], 0) << strerror(r[0]);
  EXPECT_EQ(r[1], EPERM) << "nested cgroup, denied v4: " << strerror(r[1]);
  if (port6 != 0) {
    EXPECT_EQ(r[2], EPERM) << "denied ::1: " << strerror(r[2]);
    const pid_t pid = child.pid();
    ASSERT_TRUE(poll_until(
        [&] {
          for (const auto& d : seen_->denials)
            if (d.tgid == pid && d.hook == "connect6" && d.address == "::1" && d.port == port6)
              return true;
          return false;
        },
        1000))
        << "no connect6 denial event";
  }
  if (l6 >= 0) close(l6);
  EXPECT_TRUE(sentinel_->detach_egress(cg.path()).ok());
  rmdir(inner.c_str());
  if (port6 == 0) GTEST_SKIP() << "no IPv6 loopback here: the v6 half was not exercised";
}

TEST_F(SentinelTest, DefaultPolicyCarriesMetadataAndPrivateRanges) {
  // Checked as data: tests never send traffic to these ranges.
  std::vector<std::string> cidrs;
  for (const auto& r : s::default_egress_rules()) {
    EXPECT_FALSE(r.reason.empty()) << r.cidr;
    s::Cidr c;
    EXPECT_TRUE(s::parse_cidr(r.cidr, &c).ok()) << r.cidr;
    cidrs.push_back(c.text());
  }
  for (const char* want : {"169.254.0.0/16", "fd00:ec2::254/128", "10.0.0.0/8", "172.16.0.0/12",
                           "192.168.0.0/16", "fc00::/7"}) {
    EXPECT_NE(std::find(cidrs.begin(), cidrs.end(), want), cidrs.end()) << want;
  }
}

TEST(EgressPolicy, CidrParsingCanonicalisesAndRejects) {
  s::Cidr c;
  ASSERT_TRUE(s::parse_cidr("10.1.2.3/8", &c).ok());
  EXPECT_EQ(c.text(), "10.0.0.0/8");  // host bits cleared
  ASSERT_TRUE(s::parse_cidr("fd00:ec2::254", &c).ok());
  EXPECT_EQ(c.text(), "fd00:ec2::254/128");
  ASSERT_TRUE(s::parse_cidr("127.0.0.2", &c).ok());
  EXPECT_EQ(c.text(), "127.0.0.2/32");
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "example.com"}) {
    s::Status st = s::parse_cidr(bad, &c);
    EXPECT_FALSE(st.ok()) << bad;
    if (!st.ok()) {
      EXPECT_EQ(st.error().errnum, EINVAL) << bad;
    }
  }
}

TEST_F(SentinelTest, TrackingAnExitedProcessFailsWithEsrch) {
  if (auto why = missing("nv_process_fork"); !why.empty()) GTEST_SKIP() << why;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  s::Status st = sentinel_->track_vm("vm-gone", pid, "");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().errnum, ESRCH) << st.text();
  EXPECT_FALSE(sentinel_->syscall_count("vm-gone").has_value());
}

TEST_F(SentinelTest, SyscallCountRisesForTrackedVmOnly) {
  if (auto why = missing("nv_sys_enter"); !why.empty()) GTEST_SKIP() << why;
  constexpr int kCalls = 20000;
  auto busy = []() -> Child::Results {
    for (int i = 0; i < kCalls; ++i) syscall(SYS_getppid);
    return {};
  };
  Child tracked(busy), untracked(busy), idle([]() -> Child::Results { return {}; });
  ASSERT_GT(tracked.pid(), 0);
  s::Status st = sentinel_->track_vm("vm-busy", tracked.pid(), "");
  ASSERT_TRUE(st.ok()) << st.text();
  st = sentinel_->track_vm("vm-idle", idle.pid(), "");
  ASSERT_TRUE(st.ok()) << st.text();

  // The untracked child runs first and alone: none of its calls may land on a VM.
  untracked.go();
  Child::Results r{};
  ASSERT_TRUE(untracked.finish(&r));
  auto busy0 = sentinel_->syscall_count("vm-busy");
  ASSERT_TRUE(busy0.has_value());
  EXPECT_LT(*busy0, 100u) << "untracked calls were counted for vm-busy";

  tracked.go();
  ASSERT_TRUE(tracked.finish(&r));
  auto busy1 = sentinel_->syscall_count("vm-busy");
  auto idle1 = sentinel_->syscall_count("vm-idle");
  ASSERT_TRUE(busy1 && idle1);
  EXPECT_GE(*busy1, static_cast<uint64_t>(kCalls));
  EXPECT_LT(*busy1, static_cast<uint64_t>(kCalls) + 1000) << "more than the VM's own calls";
  EXPECT_LT(*idle1, 100u) << "another VM's calls were counted for vm-idle";
  auto all = sentinel_->syscall_counts();
  EXPECT_EQ(all.count("vm-busy"), 1u);

  idle.go();
  ASSERT_TRUE(idle.finish(&r));
  EXPECT_TRUE(sentinel_->untrack_vm("vm-busy").ok());
  EXPECT_TRUE(sentinel_->untrack_vm("vm-idle").ok());
  EXPECT_FALSE(sentinel_->syscall_count("vm-busy").has_value());
}

TEST_F(SentinelTest, SyscallCountFollowsVmCgroup) {
  if (auto why = missing("nv_sys_enter"); !why.empty()) GTEST_SKIP() << why;
  ScopedCgroup cg("count");
  if (!cg.ok()) GTEST_SKIP() << cg.why();
  s::Status st = sentinel_->track_vm("vm-cgroup", 0, cg.path());
  ASSERT_TRUE(st.ok()) << st.text();
  const std::string dir = cg.path();
  Child member([&]() -> Child::Results {
    int joined = join_cgroup(dir);
    for (int i = 0; i < 5000; ++i) syscall(SYS_getppid);
    return {joined};
  });
  member.go();
  Child::Results r{};
  ASSERT_TRUE(member.finish(&r));
  ASSERT_EQ(r[0], 0) << strerror(r[0]);
  auto n = sentinel_->syscall_count("vm-cgroup");
  ASSERT_TRUE(n.has_value());
  EXPECT_GE(*n, 5000u);
  EXPECT_TRUE(sentinel_->untrack_vm("vm-cgroup").ok());
}

TEST_F(SentinelTest, ExecInTrackedTreeRaisesAlertAndExitIsReported) {
  if (auto why = missing("nv_process_exec"); !why.empty()) GTEST_SKIP() << why;
  if (auto why = missing("nv_process_fork"); !why.empty()) GTEST_SKIP() << why;
  // The tracked "VMM" forks a grandchild (tracked through sched_process_fork) that execs.
  Child vmm([]() -> Child::Results {
    pid_t gc = fork();
    if (gc == 0) {
      execl("/bin/true", "true", static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    waitpid(gc, &st, 0);
    return {gc, st};
  });
  // An untracked process exec'ing is nobody's alert.
  Child bystander([]() -> Child::Results {
    pid_t gc = fork();
    if (gc == 0) {
      execl("/bin/true", "true", static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    waitpid(gc, &st, 0);
    return {gc, st};
  });
  s::Status st = sentinel_->track_vm("vm-exec", vmm.pid(), "");
  ASSERT_TRUE(st.ok()) << st.text();
  bystander.go();
  Child::Results b{};
  ASSERT_TRUE(bystander.finish(&b));
  vmm.go();
  Child::Results r{};
  ASSERT_TRUE(vmm.finish(&r));
  ASSERT_EQ(r[1], 0) << "grandchild exec failed, status " << r[1];
  const pid_t grandchild = r[0], vmm_pid = vmm.pid();

  auto alert = [&]() -> const s::ExecAlert* {
    for (const auto& a : seen_->execs)
      if (a.tgid == grandchild) return &a;
    return nullptr;
  };
  auto exited = [&](pid_t tgid) {
    for (const auto& x : seen_->exits)
      if (x.tgid == tgid) return true;
    return false;
  };
  ASSERT_TRUE(poll_until([&] { return alert() && exited(vmm_pid); }, 2000))
      << "no exec alert / exit event within 2 s";
  const s::ExecAlert* a = alert();
  EXPECT_EQ(a->vm_id, "vm-exec");
  EXPECT_EQ(a->filename, "/bin/true");
  EXPECT_EQ(a->comm, "true");
  EXPECT_EQ(a->ppid, vmm_pid);
  for (const auto& x : seen_->execs) EXPECT_NE(x.tgid, b[0]) << "untracked exec raised an alert";
  for (const auto& x : seen_->exits) {
    if (x.tgid == vmm_pid) {
      EXPECT_EQ(x.vm_id, "vm-exec");
    }
  }
  EXPECT_TRUE(sentinel_->untrack_vm("vm-exec").ok());
}

TEST_F(SentinelTest, LsmFileOpenDeniesTrackedProcessOrReportsWhyNot) {
  if (auto why = missing("nv_file_open"); !why.empty()) GTEST_SKIP() << why;
  auto p = sentinel_->program("nv_file_open");
  if (!p->attached) GTEST_SKIP() << "nv_file_open loaded but not attached: " << p->detail;
  char path[] = "/tmp/nv-lsm-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  s::Status st = sentinel_->lsm_deny_file(path);
  ASSERT_TRUE(st.ok()) << st.text();
  const std::string file = path;
  Child vmm([&]() -> Child::Results {
    int f = open(file.c_str(), O_RDONLY);
    int rc = f >= 0 ? 0 : errno;
    if (f >= 0) close(f);
    return {rc};
  });
  ASSERT_TRUE(sentinel_->track_vm("vm-lsm", vmm.pid(), "").ok());
  vmm.go();
  Child::Results r{};
  ASSERT_TRUE(vmm.finish(&r));
  EXPECT_EQ(r[0], EPERM);
  int outside = open(path, O_RDONLY);  // untracked: unaffected
  EXPECT_GE(outside, 0);
  if (outside >= 0) close(outside);
  unlink(path);
  EXPECT_TRUE(sentinel_->untrack_vm("vm-lsm").ok());
}

TEST_F(SentinelTest, LsmSocketConnectLoadsOrReportsWhyNot) {
  if (auto why = missing("nv_socket_connect"); !why.empty()) GTEST_SKIP() << why;
  auto p = sentinel_->program("nv_socket_connect");
  EXPECT_TRUE(p->attached) << p->detail;
}

// The sentinel keeps working under its own seccomp profile once loaded (load first, then the
// filter, as the service does): tracking, egress attach/detach, counts, polling.
#include "seccomp_policy.h"

TEST_F(SentinelTest, SentinelWorksUnderItsSeccompProfile) {
  if (auto why = missing("nv_connect4"); !why.empty()) GTEST_SKIP() << why;
  if (auto why = missing("nv_sys_enter"); !why.empty()) GTEST_SKIP() << why;
  ScopedCgroup cg("seccomp");
  if (!cg.ok()) GTEST_SKIP() << cg.why();
  const std::string dir = cg.path();
  const pid_t tracked = getpid();  // before the filter: getppid is not on the profile
  pid_t pid = fork();
  if (pid == 0) {
    s::Sentinel sentinel;
    s::LoadOptions opts;
    opts.lsm = false;
    sentinel.load(opts);
    nv::seccomp::InstallOptions io;
    io.log = [](const std::string&) {};
    if (!nv::seccomp::install(nv::seccomp::sentinel_profile(), io).ok) _exit(3);
    if (!sentinel.track_vm("vm-sc", tracked, dir).ok()) _exit(4);
    if (!sentinel.attach_egress(dir, {}, "vm-sc").ok()) _exit(5);
    if (!sentinel.egress_set_rule(dir, {"127.0.0.3", s::EgressAction::kDeny, "test"}).ok())
      _exit(6);
    if (sentinel.poll(10) < 0) _exit(7);
    if (!sentinel.syscall_count("vm-sc").has_value()) _exit(8);
    if (!sentinel.detach_egress(dir).ok()) _exit(9);
    if (!sentinel.untrack_vm("vm-sc").ok()) _exit(10);
    _exit(0);  // the destructor's cleanup is covered by every other test
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status)
                                 << " (SIGSYS = a syscall missing from sentinel_profile)";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
