// Typed events the sentinel delivers from its ring buffers (Sentinel::poll). The service that
// wraps this library turns them into bus Events (security.alert, vm.process.exit, ...).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace nv::sentinel {

// A process in a tracked VM tree called execve after the VM was tracked. A VMM has no business
// exec'ing anything once started, so every one of these is a security alert.
struct ExecAlert {
  std::string vm_id;
  uint64_t ts_ns = 0;      // CLOCK_MONOTONIC (bpf_ktime_get_ns)
  uint64_t cgroup_id = 0;  // cgroup2 id of the process
  pid_t pid = 0;           // thread that exec'd
  pid_t tgid = 0;
  pid_t ppid = 0;
  pid_t old_pid = 0;     // thread id before exec (differs when a non-leader thread exec'd)
  std::string comm;      // new comm (after exec)
  std::string filename;  // path given to execve (truncated to 127 bytes)
};

// A tracked process (whole thread group) exited.
struct ProcessExit {
  std::string vm_id;
  uint64_t ts_ns = 0;
  uint64_t cgroup_id = 0;
  pid_t pid = 0;
  pid_t tgid = 0;
  pid_t ppid = 0;
  int exit_code = 0;  // wait status form: (code << 8) | signal
  std::string comm;
};

// connect()/sendmsg() refused by the egress programs; the caller got EPERM.
struct EgressDenial {
  std::string vm_id;       // VM the cgroup was attached for ("" when attached without one)
  std::string cgroup_dir;  // cgroup2 dir whose policy refused it
  uint64_t ts_ns = 0;
  uint64_t cgroup_id = 0;  // the caller's own cgroup (may be below cgroup_dir)
  pid_t pid = 0;
  pid_t tgid = 0;
  std::string comm;
  std::string hook;     // "connect4", "connect6", "sendmsg4", "sendmsg6"
  int family = 0;       // 4 or 6 (v4-mapped v6 destinations: 6, matched by the v4 rules)
  int protocol = 0;     // IPPROTO_TCP, IPPROTO_UDP, ...
  std::string address;  // destination, text form
  uint16_t port = 0;
  std::string rule;    // the matching rule's CIDR
  std::string reason;  // the matching rule's reason
};

// BPF LSM refusal (only on hosts that accept BPF LSM programs).
struct LsmDenial {
  std::string vm_id;
  uint64_t ts_ns = 0;
  pid_t pid = 0;
  pid_t tgid = 0;
  std::string comm;
  std::string hook;  // "file_open" or "socket_connect"
  int family = 0;    // socket_connect: AF_INET / AF_INET6
  uint64_t dev = 0;  // file_open: kernel dev_t (major << 20 | minor) and inode
  uint64_t ino = 0;
};

// Set the ones you need; unset callbacks drop their events (poll still counts them).
struct Callbacks {
  std::function<void(const ExecAlert&)> on_exec_alert;
  std::function<void(const ProcessExit&)> on_exit;
  std::function<void(const EgressDenial&)> on_egress_denial;
  std::function<void(const LsmDenial&)> on_lsm_denial;
};

}  // namespace nv::sentinel
