#include "seccomp_policy.h"

#include <sched.h>
#include <seccomp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace nv::seccomp {

Rule allow(std::string syscall, std::string reason) {
  Rule r;
  r.syscall = std::move(syscall);
  r.reason = std::move(reason);
  return r;
}

Rule allow_if_masked(std::string syscall, unsigned arg_index, uint64_t mask, uint64_t value,
                     std::string reason) {
  Rule r = allow(std::move(syscall), std::move(reason));
  r.action = Action::kAllowIf;
  r.arg_index = arg_index;
  r.mask = mask;
  r.value = value;
  return r;
}

Rule fail_with(std::string syscall, int errnum, std::string reason) {
  Rule r = allow(std::move(syscall), std::move(reason));
  r.action = Action::kErrno;
  r.errnum = errnum;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Rule tables. One rule per line, with the reason. Keep them sorted by concern, not by name.
// ---------------------------------------------------------------------------------------------

const std::vector<Rule>& base_rules() {
  static const std::vector<Rule> rules = {
      // Process end and signals
      allow("exit", "thread exit"),
      allow("exit_group", "process exit"),
      allow("rt_sigreturn", "return from signal handlers (SIGTERM drain)"),
      allow("rt_sigaction", "install SIGTERM/SIGINT handlers"),
      allow("rt_sigprocmask", "block signals around critical sections, in new threads"),
      allow("sigaltstack", "sanitizer/abort handlers use an alternate stack"),
      allow("tgkill", "abort() and pthread_kill deliver signals to own threads"),
      allow("restart_syscall", "kernel restarts interrupted sleeps"),
      allow("rt_sigtimedwait", "service_main's signal thread waits for SIGTERM/SIGINT/SIGHUP"),
      // Memory
      allow("brk", "malloc heap"),
      allow("mmap", "malloc arenas, thread stacks, file maps"),
      allow("munmap", "free mappings"),
      allow("mprotect", "thread stack guard pages, dynamic loader"),
      allow("mremap", "realloc of large blocks"),
      allow("madvise", "malloc returns memory (MADV_DONTNEED), thread stacks"),
      // Threads and synchronisation
      allow_if_masked("clone", 0, CLONE_THREAD, CLONE_THREAD,
                      "new threads only (std::thread); new processes are refused"),
      fail_with("clone3", ENOSYS,
                "glibc tries clone3 first and falls back to clone, whose flags we can check"),
      allow("futex", "mutexes, condition variables, thread join"),
      allow("set_robust_list", "glibc registers robust futex list per thread"),
      allow("rseq", "glibc registers restartable sequences per thread"),
      allow("sched_yield", "spin-then-yield in ZeroMQ and libstdc++"),
      allow("sched_getaffinity", "std::thread::hardware_concurrency"),
      allow("gettid", "thread id for logs"),
      allow("getpid", "pid for logs"),
      allow("getrandom", "UUID v7 trace ids, std::random_device, CURVE keys"),
      // Time
      allow("clock_gettime", "timestamps (vDSO fallback)"),
      allow("clock_nanosleep", "sleeps, backoff"),
      allow("nanosleep", "sleeps, backoff"),
      allow("gettimeofday", "timestamps (vDSO fallback)"),
      // Plain I/O on descriptors the process already holds
      allow("read", "sockets, pipes, files"),
      allow("write", "sockets, pipes, logs to stderr"),
      allow("readv", "scatter reads"),
      allow("writev", "iostream/stdio flushes"),
      allow("close", "close descriptors"),
      allow("fstat", "stdio buffering decisions"),
      allow("newfstatat", "fstat via fstatat(AT_EMPTY_PATH) in glibc 2.33+"),
      allow("lseek", "file offsets"),
      allow("fcntl", "O_NONBLOCK / FD_CLOEXEC on sockets"),
      allow("prlimit64", "read own rlimits (getrlimit)"),
  };
  return rules;
}

const std::vector<Rule>& zmq_service_rules() {
  static const std::vector<Rule> rules = {
      // ZeroMQ transports (ipc:// Unix sockets, tcp:// with CURVE)
      allow("mlock", "libsodium locks CURVE key memory on tcp:// bus endpoints"),
      allow("munlock", "libsodium unlocks CURVE key memory on tcp:// bus endpoints"),
      allow("socket", "ZeroMQ ipc/tcp sockets, Prometheus HTTP listener"),
      allow("socketpair", "ZeroMQ signaler fallback"),
      allow("bind", "ROUTER/XPUB/HTTP endpoints"),
      allow("listen", "ROUTER/XPUB/HTTP endpoints"),
      allow("accept4", "incoming ZeroMQ and HTTP connections"),
      allow("connect", "DEALER/SUB connects to the orchestrator and the event proxy"),
      allow("shutdown", "ZeroMQ closes streams"),
      allow("getsockopt", "ZeroMQ reads SO_ERROR after non-blocking connect"),
      allow("setsockopt", "ZeroMQ sets TCP_NODELAY, SO_KEEPALIVE, buffer sizes"),
      allow("getsockname", "ZeroMQ resolves wildcard binds"),
      allow("getpeername", "ZAP peer address"),
      allow("sendto", "ZeroMQ frames"),
      allow("recvfrom", "ZeroMQ frames"),
      allow("sendmsg", "ZeroMQ frames"),
      allow("recvmsg", "ZeroMQ frames"),
      // ZeroMQ's I/O thread loop
      allow("epoll_create1", "ZeroMQ poller"),
      allow("epoll_ctl", "ZeroMQ poller"),
      allow("epoll_wait", "ZeroMQ poller"),
      allow("epoll_pwait", "ZeroMQ poller (glibc maps epoll_wait to it)"),
      allow("poll", "zmq_poll"),
      allow("ppoll", "zmq_poll via glibc"),
      allow("eventfd2", "ZeroMQ mailbox signaler"),
      allow("pipe2", "self-pipe for signal → shutdown"),
      allow("sched_getparam", "ZeroMQ reads the scheduling of each new I/O thread"),
      allow("sched_getscheduler", "ZeroMQ reads the scheduling of each new I/O thread"),
      allow("sched_setscheduler", "ZeroMQ applies its (default) scheduling to new I/O threads"),
      allow_if_masked("prctl", 0, 0xffffffffull, 15 /* PR_SET_NAME */,
                      "ZeroMQ/pthread_setname_np name their threads; other prctl options refused"),
      allow("dup", "stdio redirection of child loggers"),
      // Files: configuration, /proc, runtime dir
      allow("openat", "config files, $NV_RUNTIME_DIR, /proc/self"),
      allow("statx", "std::filesystem::exists on config and runtime paths"),
      allow("access", "std::filesystem / getenv-driven path checks"),
      allow("faccessat2", "access() in glibc 2.33+"),
      allow("getdents64", "list the runtime dir"),
      allow("unlink", "remove a stale ipc:// socket file before bind"),
      allow("unlinkat", "remove a stale ipc:// socket file before bind"),
      allow("uname", "ZeroMQ/CURL read the kernel version once"),
      allow("ioctl", "FIONBIO on sockets, isatty on stderr"),
      allow("getuid", "logs and runtime dir ownership checks"),
      allow("geteuid", "logs and runtime dir ownership checks"),
      allow("getgid", "logs and runtime dir ownership checks"),
      allow("getegid", "logs and runtime dir ownership checks"),
  };
  return rules;
}

const std::vector<Rule>& pool_manager_rules() {
  static const std::vector<Rule> rules = {
      // Spawning and reaping VMM processes (QEMU/Firecracker) through the jail
      allow("clone", "fork the jail child of each VMM (any flags: new namespaces)"),
      allow("clone3", "jail child with CLONE_INTO_CGROUP, CLONE_PIDFD and new namespaces"),
      allow("fork", "posix_spawn/fork fallbacks"),
      allow("vfork", "posix_spawn on glibc"),
      allow("execve", "exec the VMM binary in the jail child"),
      allow("execveat", "fexecve of the copied VMM binary"),
      allow("wait4", "reap VMM processes"),
      allow("waitid", "reap VMM processes (P_PIDFD)"),
      allow("kill", "SIGTERM/SIGKILL to VMMs on release or security.alert"),
      allow("pidfd_open", "race-free signalling of VMM processes"),
      allow("pidfd_send_signal", "race-free signalling of VMM processes"),
      allow("setpgid", "VMM in its own process group"),
      allow("setsid", "VMM detached from our session"),
      allow("close_range", "close inherited fds in the jail child before exec"),
      allow("dup2", "wire the VMM's stdio/serial fds in the jail child"),
      allow("dup3", "wire the VMM's stdio/serial fds in the jail child"),
      // Jail set-up in the child (namespaces, root, identity)
      allow("unshare", "new mount/pid/ipc/uts/net namespaces for the VMM"),
      allow("setns", "join a prepared namespace"),
      allow("mount", "private /dev with only kvm/tun, tmpfs scratch, bind mounts"),
      allow("umount2", "detach the old root after pivot_root"),
      allow("pivot_root", "enter the per-VM jail root"),
      allow("chroot", "enter the per-VM jail root (fallback)"),
      allow("chdir", "cd into the jail"),
      allow("mknodat", "create /dev/kvm, /dev/net/tun inside the jail"),
      allow("setuid", "drop to the unprivileged VMM uid"),
      allow("setgid", "drop to the unprivileged VMM gid"),
      allow("setresuid", "drop to the unprivileged VMM uid"),
      allow("setresgid", "drop to the unprivileged VMM gid"),
      allow("setgroups", "clear supplementary groups before the uid drop"),
      allow("capget", "libcap: read capability sets"),
      allow("capset", "libcap: drop capabilities in the jail child"),
      allow("prctl", "no_new_privs, PR_SET_PDEATHSIG, capability bounding set"),
      allow("seccomp", "install the VMM's own filter in the jail child"),
      allow("landlock_create_ruleset", "Landlock confinement of the VMM"),
      allow("landlock_add_rule", "Landlock confinement of the VMM"),
      allow("landlock_restrict_self", "Landlock confinement of the VMM"),
      allow("setrlimit", "per-VMM rlimits"),
      allow("prlimit64", "per-VMM rlimits"),
      // cgroups and jail directories
      allow("mkdir", "per-VM cgroup and jail dirs"),
      allow("mkdirat", "per-VM cgroup and jail dirs"),
      allow("rmdir", "remove per-VM cgroup and jail dirs"),
      allow("unlinkat", "remove jail files and snapshot files"),
      allow("renameat2", "atomic writes of snapshot files"),
      allow("rename", "atomic writes of snapshot files"),
      allow("linkat", "hard-link the VMM binary into the jail"),
      allow("symlinkat", "jail /dev/fd style links"),
      allow("fchown", "hand jail files to the VMM uid"),
      allow("fchownat", "hand jail files to the VMM uid"),
      allow("fchmod", "restrict jail file modes"),
      allow("fchmodat", "restrict jail file modes"),
      allow("ftruncate", "disk image and snapshot files"),
      allow("fallocate", "scratch disk images"),
      allow("copy_file_range", "copy the rootfs/VMM binary into the jail"),
      allow("sendfile", "copy files into the jail"),
      allow("fsync", "snapshot files durable before use"),
      allow("fdatasync", "snapshot files durable before use"),
      // The sandbox registry (SQLite, pool.sqlite) is used on the pool's own threads, but its
      // connection closes (a WAL checkpoint: pread64/pwrite64) when the service exits.
      allow("pread64", "the sandbox registry (SQLite) checkpoints its WAL at close"),
      allow("pwrite64", "the sandbox registry (SQLite) checkpoints its WAL at close"),
      allow("statfs", "detect cgroup v1/v2 (CGROUP2_SUPER_MAGIC)"),
      allow("fstatfs", "detect cgroup v1/v2 (CGROUP2_SUPER_MAGIC)"),
      allow("readlinkat", "resolve /proc/<pid>/exe of VMMs"),
      allow("memfd_create", "sealed kernel/initrd handed to the VMM"),
      allow("inotify_init1", "watch cgroup memory.events for OOM kills"),
      allow("inotify_add_watch", "watch cgroup memory.events for OOM kills"),
      allow("timerfd_create", "boot/lease deadlines in the event loop"),
      allow("timerfd_settime", "boot/lease deadlines in the event loop"),
      // Fail-closed leasing: is the sentinel's egress program attached to the VM's cgroup?
      allow_if_masked("bpf", 0, 0xffffffffull, 16 /* BPF_PROG_QUERY */,
                      "BPF_PROG_QUERY only: egress programs attached to a VM's cgroup2 dir"),
  };
  return rules;
}

const std::vector<Rule>& sentinel_rules() {
  static const std::vector<Rule> rules = {
      allow("bpf", "load programs, update tracking/policy maps, ring buffers"),
      allow_if_masked("kill", 1, 0xffffffffull, 0,
                      "signal 0 only: check that a VMM pid exists before tracking it"),
      allow("perf_event_open", "libbpf probes and tracing attachments"),
      allow("getdents64", "scan /proc for the descendants of a newly tracked VMM"),
      allow("statfs", "check that an egress target is a cgroup2 dir"),
      allow("fstatfs", "check that an egress target is a cgroup2 dir"),
      allow("readlinkat", "libbpf resolves /proc/self paths"),
      allow("sysinfo", "libbpf sizes per-CPU map values"),
      allow("capget", "libbpf feature probes"),
      allow("mkdir", "bpffs dirs for the pinned egress links of each VM cgroup"),
      allow("mkdirat", "bpffs dirs for the pinned egress links of each VM cgroup"),
      allow("rmdir", "remove a destroyed VM's bpffs pin dir"),
  };
  return rules;
}

// nv-llm-gateway on top of base_rules + zmq_service_rules. Those already cover libcurl's socket
// work, as profiled with `nv-llm-gateway --seccomp-log` (SCMP_ACT_LOG: nothing logged) and
// `strace -f -c` under agent_test and by hand over HTTP, HTTPS (handshake, CA bundle) and a
// name from /etc/hosts: socket/connect/getsockopt(SO_ERROR)/setsockopt(TCP_NODELAY,
// SO_KEEPALIVE)/getsockname/getpeername/sendto/recvfrom/poll/ppoll, its multi-handle wakeup
// socketpair, the threaded resolver's thread (clone with CLONE_THREAD only; clone3 refused with
// ENOSYS, glibc falls back), OpenSSL's openat/read/newfstatat of the CA bundle and getrandom.
// Listed here: what only the gateway needs.
const std::vector<Rule>& llm_gateway_rules() {
  static const std::vector<Rule> rules = {
      // Not seen in the profile (the tests resolve only loopback names from /etc/hosts): taken
      // from glibc's res_send.c, which a real DNS lookup of the model host goes through.
      allow("sendmmsg",
            "glibc's DNS resolver (getaddrinfo in curl's resolver thread) sends the "
            "A and AAAA queries in one sendmmsg"),
  };
  return rules;
}

namespace {

Profile make(const std::string& name, std::initializer_list<const std::vector<Rule>*> sets) {
  Profile p;
  p.name = name;
  for (const std::vector<Rule>* set : sets) p.rules.insert(p.rules.end(), set->begin(), set->end());
  return p;
}

}  // namespace

Profile zmq_service_profile(const std::string& name) {
  return make(name, {&base_rules(), &zmq_service_rules()});
}

Profile pool_manager_profile() {
  Profile p = make("vm-pool-manager", {&base_rules(), &zmq_service_rules(), &pool_manager_rules()});
  // Its clone and clone3 are unrestricted (pool_manager_rules): drop the threads-only clone and
  // the clone3 refusal of the base set so the wider rules are the ones that count (install()
  // keeps the first rule per syscall).
  std::vector<Rule> kept;
  for (const Rule& r : p.rules) {
    bool narrowed = (r.syscall == "clone" && r.action == Action::kAllowIf) ||
                    (r.syscall == "clone3" && r.action == Action::kErrno);
    if (!narrowed) kept.push_back(r);
  }
  p.rules = kept;
  return p;
}

Profile sentinel_profile() {
  return make("ebpf-sentinel", {&base_rules(), &zmq_service_rules(), &sentinel_rules()});
}

Profile llm_gateway_profile() {
  return make("llm-gateway", {&base_rules(), &zmq_service_rules(), &llm_gateway_rules()});
}

std::string InstallResult::text() const {
  std::string s;
  if (ok) {
    s = "ok: " + std::to_string(rules_added) + " rules";
  } else {
    char buf[128];
    const char* msg = strerror_r(errnum, buf, sizeof(buf));
    s = call + ": " + (msg ? msg : "?") + " (errno " + std::to_string(errnum) + ")";
  }
  if (!unknown.empty()) {
    s += "; unknown syscalls skipped:";
    for (const std::string& u : unknown) s += " " + u;
  }
  return s;
}

InstallResult install(const Profile& profile, const InstallOptions& options) {
  auto log = options.log ? options.log
                         : [](const std::string& line) { fprintf(stderr, "%s\n", line.c_str()); };
  InstallResult res;
  auto fail = [&](const std::string& call, int rc) {
    res.ok = false;
    res.call = call;
    res.errnum = rc < 0 ? -rc : rc;
    log("seccomp[" + profile.name + "]: " + res.text());
    return res;
  };
  if (options.default_action != SCMP_ACT_KILL_PROCESS)
    log("seccomp[" + profile.name + "]: WARNING: default action is not KILL_PROCESS (0x" +
        [&] {
          char b[16];
          snprintf(b, sizeof(b), "%x", options.default_action);
          return std::string(b);
        }() +
        "): this filter does not enforce");

  scmp_filter_ctx ctx = seccomp_init(options.default_action);
  if (!ctx) return fail("seccomp_init", EINVAL);
  struct Cleanup {
    scmp_filter_ctx c;
    ~Cleanup() { seccomp_release(c); }
  } cleanup{ctx};

  if (options.all_threads) {
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (rc != 0) return fail("seccomp_attr_set(CTL_TSYNC)", rc);
  }
  // A rule for a syscall already ruled (same name twice across sets) is skipped: first wins.
  // Conditional allows of one syscall add up instead (libseccomp ORs them): each names the
  // argument values it admits.
  std::vector<std::pair<std::string, Action>> seen;
  for (const Rule& r : profile.rules) {
    int nr = seccomp_syscall_resolve_name(r.syscall.c_str());
    if (nr == __NR_SCMP_ERROR) {
      res.unknown.push_back(r.syscall);
      continue;
    }
    bool dup = false;
    for (const auto& [name, action] : seen) {
      bool both_conditional = action == Action::kAllowIf && r.action == Action::kAllowIf;
      dup = dup || (name == r.syscall && !both_conditional);
    }
    if (dup) continue;
    seen.emplace_back(r.syscall, r.action);
    int rc = 0;
    switch (r.action) {
      case Action::kAllow:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        break;
      case Action::kAllowIf:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_CMP64(r.arg_index, SCMP_CMP_MASKED_EQ, r.mask, r.value));
        break;
      case Action::kErrno:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(static_cast<uint32_t>(r.errnum)), nr, 0);
        break;
    }
    if (rc != 0) return fail("seccomp_rule_add(" + r.syscall + ")", rc);
    res.rules_added++;
  }
  // seccomp_load sets no_new_privs first (SCMP_FLTATR_CTL_NNP defaults to on).
  int rc = seccomp_load(ctx);
  if (rc != 0) return fail("seccomp_load", rc);
  res.ok = true;
  log("seccomp[" + profile.name + "]: installed " + std::to_string(res.rules_added) +
      " rules, default " +
      (options.default_action == SCMP_ACT_KILL_PROCESS ? "KILL_PROCESS" : "non-enforcing") +
      (options.all_threads ? ", all threads" : ", this thread") +
      (res.unknown.empty() ? "" : ", " + std::to_string(res.unknown.size()) + " unknown skipped"));
  return res;
}

}  // namespace nv::seccomp
