// Landlock proof: a child restricted to one directory (as the VMM jail is) cannot open a host
// file outside it, can use files inside it, and cannot execute what is not on its exec list.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "landlock.h"

namespace ll = nv::landlock;

namespace {

int open_errno(const std::string& path, int flags) {
  int fd = open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

}  // namespace

TEST(LandlockProof, JailedProcessCannotOpenHostFileOutsideItsDir) {
  std::string why;
  if (!ll::available(&why)) GTEST_SKIP() << "Landlock unavailable: " << why;

  char jail_tmpl[] = "/tmp/nv-landlock-jail-XXXXXX";
  char host_tmpl[] = "/tmp/nv-landlock-host-XXXXXX";
  ASSERT_NE(mkdtemp(jail_tmpl), nullptr);
  int hfd = mkstemp(host_tmpl);
  ASSERT_GE(hfd, 0);
  ASSERT_EQ(write(hfd, "secret", 6), 6);
  close(hfd);
  const std::string jail = jail_tmpl, host_file = host_tmpl;
  const std::string inside = jail + "/disk.img";
  ASSERT_EQ(open_errno(inside, O_CREAT | O_WRONLY), 0);

  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    std::array<int, 6> r{};
    ll::Ruleset rules;
    rules.read_write = {jail};
    ll::Outcome o = ll::restrict_self(rules);
    r[0] = o.ok ? 0 : (o.errnum ? o.errnum : -1);
    r[1] = open_errno(host_file, O_RDONLY);                     // outside: refused
    r[2] = open_errno(inside, O_RDWR);                          // inside: allowed
    r[3] = open_errno(jail + "/new.sock", O_CREAT | O_WRONLY);  // create inside: allowed
    r[4] = open_errno("/etc/hostname", O_RDONLY);               // any host file: refused
    execl("/bin/true", "true", static_cast<char*>(nullptr));    // not on the exec list
    r[5] = errno;
    (void)!write(p[1], r.data(), sizeof(r));
    _exit(0);
  }
  close(p[1]);
  std::array<int, 6> r{};
  ASSERT_EQ(read(p[0], r.data(), sizeof(r)), static_cast<ssize_t>(sizeof(r)));
  close(p[0]);
  waitpid(pid, nullptr, 0);

  ASSERT_EQ(r[0], 0) << "restrict_self failed: " << strerror(r[0]);
  EXPECT_EQ(r[1], EACCES) << "host file outside the jail: " << strerror(r[1]);
  EXPECT_EQ(r[2], 0) << "file inside the jail: " << strerror(r[2]);
  EXPECT_EQ(r[3], 0) << "creating inside the jail: " << strerror(r[3]);
  EXPECT_EQ(r[4], EACCES) << "/etc/hostname: " << strerror(r[4]);
  EXPECT_EQ(r[5], EACCES) << "exec outside the exec list: " << strerror(r[5]);
  // The parent is unaffected.
  EXPECT_EQ(open_errno(host_file, O_RDONLY), 0);

  unlink(host_file.c_str());
  unlink(inside.c_str());
  unlink((jail + "/new.sock").c_str());
  rmdir(jail.c_str());
}

TEST(LandlockProof, MissingPathIsAnErrorUnlessSkipped) {
  std::string why;
  if (!ll::available(&why)) GTEST_SKIP() << "Landlock unavailable: " << why;
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    ll::Ruleset rules;
    rules.read_only = {"/nonexistent/nv-landlock"};
    ll::Outcome o = ll::restrict_self(rules);  // fails before restricting anything
    int r[2] = {o.ok ? 0 : o.errnum, o.call.find("/nonexistent") != std::string::npos};
    (void)!write(p[1], r, sizeof(r));
    _exit(0);
  }
  close(p[1]);
  int r[2] = {};
  ASSERT_EQ(read(p[0], r, sizeof(r)), static_cast<ssize_t>(sizeof(r)));
  close(p[0]);
  waitpid(pid, nullptr, 0);
  EXPECT_EQ(r[0], ENOENT);
  EXPECT_EQ(r[1], 1) << "the error names the path";
}

// The real VMM under vmm_ruleset(): QEMU starts (paused, TCG) and keeps running, but cannot
// open a host file handed to it as its kernel.
namespace {

struct QemuRun {
  bool alive_after_wait = false;
  int status = 0;
  std::string stderr_text;
};

QemuRun run_qemu_jailed(const ll::VmmPaths& paths, const std::vector<std::string>& args,
                        int wait_ms) {
  QemuRun out;
  int errp[2];
  if (pipe2(errp, O_CLOEXEC) != 0) return out;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(errp[1], STDERR_FILENO);
    ll::Outcome o = ll::restrict_self(ll::vmm_ruleset(paths));
    if (!o.ok) {
      fprintf(stderr, "landlock: %s\n", o.text().c_str());
      _exit(100);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(paths.vmm_binary.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(paths.vmm_binary.c_str(), argv.data());
    fprintf(stderr, "execv: %s\n", strerror(errno));
    _exit(101);
  }
  close(errp[1]);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  for (int waited = 0; waited < wait_ms; waited += 50) {
    if (waitpid(pid, &out.status, WNOHANG) == pid) break;
    usleep(50 * 1000);
  }
  if (waitpid(pid, &out.status, WNOHANG) == 0) {
    out.alive_after_wait = true;
    kill(pid, SIGKILL);
    waitpid(pid, &out.status, 0);
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(errp[0], buf, sizeof(buf))) > 0) out.stderr_text.append(buf, n);
  close(errp[0]);
  return out;
}

}  // namespace

TEST(LandlockProof, JailedQemuRunsButCannotReadHostFile) {
  std::string why;
  if (!ll::available(&why)) GTEST_SKIP() << "Landlock unavailable: " << why;
  const std::string qemu = "/usr/bin/qemu-system-x86_64";
  if (access(qemu.c_str(), X_OK) != 0) GTEST_SKIP() << qemu << " not installed";

  char dir_tmpl[] = "/tmp/nv-landlock-vm-XXXXXX";
  ASSERT_NE(mkdtemp(dir_tmpl), nullptr);
  char host_tmpl[] = "/tmp/nv-landlock-hostkernel-XXXXXX";
  int hfd = mkstemp(host_tmpl);
  ASSERT_GE(hfd, 0);
  ASSERT_EQ(write(hfd, "not for the VMM", 15), 15);
  close(hfd);
  ll::VmmPaths paths;
  paths.vmm_binary = qemu;
  paths.vm_dir = dir_tmpl;
  const std::vector<std::string> base = {
      "-M",
      "microvm",
      "-accel",
      "tcg",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-S",
      "-m",
      "64",
      "-qmp",
      std::string("unix:") + dir_tmpl + "/qmp.sock,server=on,wait=off"};

  // Positive control: confined QEMU starts and stays up (paused) with what the ruleset grants.
  QemuRun ok = run_qemu_jailed(paths, base, 1500);
  EXPECT_TRUE(ok.alive_after_wait)
      << "jailed QEMU exited: status " << ok.status << ": " << ok.stderr_text;

  // The same VMM asked to load a host file outside its jail.
  std::vector<std::string> bad = base;
  bad.push_back("-kernel");
  bad.push_back(host_tmpl);
  QemuRun refused = run_qemu_jailed(paths, bad, 5000);
  EXPECT_FALSE(refused.alive_after_wait);
  EXPECT_NE(refused.stderr_text.find("Permission denied"), std::string::npos)
      << "QEMU stderr: " << refused.stderr_text;

  unlink(host_tmpl);
  unlink((std::string(dir_tmpl) + "/qmp.sock").c_str());
  rmdir(dir_tmpl);
}

// The jail's way: rules built in the parent with host paths, enforced in the child with no
// allocation (enforce is a prctl and one syscall).
TEST(LandlockProof, PreparedInParentEnforcedInChild) {
  std::string why;
  if (!ll::available(&why)) GTEST_SKIP() << "Landlock unavailable: " << why;
  char jail_tmpl[] = "/tmp/nv-landlock-prep-XXXXXX";
  ASSERT_NE(mkdtemp(jail_tmpl), nullptr);
  const std::string jail = jail_tmpl;
  ll::Ruleset rules;
  rules.read_write = {jail};
  ll::PreparedRuleset prepared = ll::prepare(rules);
  ASSERT_TRUE(prepared.ok()) << prepared.outcome().text();
  pid_t pid = fork();
  if (pid == 0) {
    int err = ll::enforce(prepared.fd());
    if (err != 0) _exit(100);
    int outside = open("/etc/hostname", O_RDONLY | O_CLOEXEC) < 0 ? errno : 0;
    int inside = open((jail + "/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600) < 0 ? errno : 0;
    _exit(outside == EACCES && inside == 0 ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "100: enforce failed, 1: wrong outcome";
  EXPECT_EQ(open_errno("/etc/hostname", O_RDONLY), 0);  // the parent is not confined
  unlink((jail + "/f").c_str());
  rmdir(jail.c_str());
}
