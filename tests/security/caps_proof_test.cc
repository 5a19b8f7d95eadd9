// Capabilities proof: a child that dropped CAP_NET_RAW and CAP_SYS_ADMIN (effective, permitted,
// inheritable and bounding sets) cannot raise them again and cannot open a raw socket.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace {

int raw_socket_errno() {
  int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

bool have_cap(cap_value_t cap) {
  cap_t caps = cap_get_proc();
  cap_flag_value_t v = CAP_CLEAR;
  cap_get_flag(caps, cap, CAP_EFFECTIVE, &v);
  cap_free(caps);
  return v == CAP_SET;
}

}  // namespace

TEST(CapsProof, DroppedCapabilityCannotBeRegainedAndRawSocketFails) {
  if (!have_cap(CAP_NET_RAW) || !have_cap(CAP_SYS_ADMIN))
    GTEST_SKIP() << "test runner lacks CAP_NET_RAW/CAP_SYS_ADMIN: nothing to drop";
  ASSERT_EQ(raw_socket_errno(), 0) << "raw socket must work before the drop for the proof to mean "
                                      "anything";
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    // [0] drop ok, [1] raise attempt errno, [2] raw socket errno, [3] bounding set still has it
    std::array<int, 4> r{};
    const cap_value_t drop[] = {CAP_NET_RAW, CAP_SYS_ADMIN};
    // Bounding set first: it needs CAP_SETPCAP, which we keep; then the process sets.
    for (cap_value_t c : drop)
      if (cap_drop_bound(c) != 0) r[0] = errno;
    cap_t caps = cap_get_proc();
    cap_set_flag(caps, CAP_EFFECTIVE, 2, drop, CAP_CLEAR);
    cap_set_flag(caps, CAP_PERMITTED, 2, drop, CAP_CLEAR);
    cap_set_flag(caps, CAP_INHERITABLE, 2, drop, CAP_CLEAR);
    if (cap_set_proc(caps) != 0) r[0] = errno;
    cap_free(caps);
    // Try to raise CAP_NET_RAW again.
    caps = cap_get_proc();
    const cap_value_t raise[] = {CAP_NET_RAW};
    cap_set_flag(caps, CAP_PERMITTED, 1, raise, CAP_SET);
    cap_set_flag(caps, CAP_EFFECTIVE, 1, raise, CAP_SET);
    r[1] = cap_set_proc(caps) == 0 ? 0 : errno;
    cap_free(caps);
    r[2] = raw_socket_errno();
    r[3] = prctl(PR_CAPBSET_READ, CAP_NET_RAW, 0, 0, 0);
    (void)!write(p[1], r.data(), sizeof(r));
    _exit(0);
  }
  close(p[1]);
  std::array<int, 4> r{};
  ASSERT_EQ(read(p[0], r.data(), sizeof(r)), static_cast<ssize_t>(sizeof(r)));
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(r[0], 0) << "dropping failed: " << strerror(r[0]);
  EXPECT_EQ(r[1], EPERM) << "raising CAP_NET_RAW again: " << strerror(r[1]);
  EXPECT_EQ(r[2], EPERM) << "raw socket after the drop: " << strerror(r[2]);
  EXPECT_EQ(r[3], 0) << "CAP_NET_RAW still in the bounding set";
  // The parent is untouched.
  EXPECT_EQ(raw_socket_errno(), 0);
}
