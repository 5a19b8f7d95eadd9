// Landlock proof: a child restricted to one directory (as the VMM jail is) cannot open a host
// file outside it, can use files inside it, and cannot execute what is not on its exec list.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

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
    r[1] = open_errno(host_file, O_RDONLY);             // outside: refused
    r[2] = open_errno(inside, O_RDWR);                  // inside: allowed
    r[3] = open_errno(jail + "/new.sock", O_CREAT | O_WRONLY);  // create inside: allowed
    r[4] = open_errno("/etc/hostname", O_RDONLY);       // any host file: refused
    execl("/bin/true", "true", static_cast<char*>(nullptr));  // not on the exec list
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
