#include "jail.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/limits.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#include "common/landlock.h"
#include "common/log.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace nv::vm {
namespace {

// struct clone_args, version 0 (64 bytes). Spelled out here because <linux/sched.h> redefines
// glibc's CLONE_* macros.
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t child_tid;
  uint64_t parent_tid;
  uint64_t exit_signal;
  uint64_t stack;
  uint64_t stack_size;
  uint64_t tls;
};

// Everything the child needs, prepared before clone3() so the child never allocates.
struct ChildPlan {
  const JailSpec* spec = nullptr;
  std::vector<std::string> bind_dst;              // host paths of the mount points
  std::vector<unsigned long> bind_remount_flags;  // 0 = no read-only remount
  std::string proc_dir;
  std::vector<int> cgroup_fds;
  std::vector<std::pair<int, int>> pass;  // (high CLOEXEC copy in the child, target fd)
  int max_target_fd = 2;
  int log_fd = -1;
  int null_fd = -1;
  std::vector<char*> argv;
  std::vector<char*> envp;
  int err_fd = -1;
  int parent_pidfd = -1;  // the spawning process; readable once it exited
};

// What the child reports when a step fails.
struct StepFailure {
  int step;
  int err;
  int item;  // index of the bind mount / cgroup fd involved, -1 if none
};

using StepFn = int (*)(const ChildPlan&, int* item);

// --- The isolation steps, in order. Each returns 0 or an errno. ---------------------------
//
// Order matters:
//  - cgroup.join comes first: from here on every page the VMM touches and every task it could
//    create counts against its limits; it needs root (the cgroup files are root's) and the host
//    /sys, both gone after the later steps. Joining after exec would leave a window in which the
//    VMM runs unlimited.
//  - the mount steps need CAP_SYS_ADMIN and the host paths, so they precede pivot_root, which
//    precedes the identity drop.
//  - no_new_privs and Landlock come before the uid drop (Landlock without CAP_SYS_ADMIN needs
//    no_new_privs); the uid drop clears every capability (uid 0 → non-zero without
//    SECBIT_KEEP_CAPS) and also the parent-death signal, so that is set right after it, last
//    before exec.

int step_cgroup_join(const ChildPlan& p, int* item) {
  for (size_t i = 0; i < p.cgroup_fds.size(); ++i) {
    *item = static_cast<int>(i);
    // "0" = the writing task itself (valid in v1 and v2).
    if (::write(p.cgroup_fds[i], "0", 1) != 1) return errno;
  }
  return 0;
}

int step_mount_private(const ChildPlan& p, int*) {
  if (!p.spec->isolate) return 0;
  // Nothing mounted below propagates to the host, and host mounts stop propagating in.
  return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 ? 0 : errno;
}

int step_mount_root(const ChildPlan& p, int*) {
  if (!p.spec->isolate) return 0;
  // pivot_root needs the new root to be a mount point.
  const char* d = p.spec->dir.c_str();
  return ::mount(d, d, nullptr, MS_BIND | MS_REC, nullptr) == 0 ? 0 : errno;
}

int step_mount_binds(const ChildPlan& p, int* item) {
  if (!p.spec->isolate) return 0;
  for (size_t i = 0; i < p.bind_dst.size(); ++i) {
    *item = static_cast<int>(i);
    const char* src = p.spec->binds[i].source.c_str();
    const char* dst = p.bind_dst[i].c_str();
    if (::mount(src, dst, nullptr, MS_BIND | MS_REC, nullptr) != 0) return errno;
    if (p.bind_remount_flags[i] &&
        ::mount(nullptr, dst, nullptr, p.bind_remount_flags[i], nullptr) != 0) {
      return errno;
    }
  }
  return 0;
}

int step_mount_proc(const ChildPlan& p, int*) {
  if (!p.spec->isolate) return 0;
  // A procfs of the new PID namespace: the VMM sees only itself.
  return ::mount("proc", p.proc_dir.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0
             ? 0
             : errno;
}

int step_pivot_root(const ChildPlan& p, int*) {
  if (::chdir(p.spec->dir.c_str()) != 0) return errno;
  if (!p.spec->isolate) return 0;
  // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves no
  // host path reachable from inside.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return errno;
  if (::umount2(".", MNT_DETACH) != 0) return errno;
  if (::chdir("/") != 0) return errno;
  return 0;
}

int step_hostname(const ChildPlan& p, int*) {
  if (!p.spec->isolate) return 0;
  const std::string& h = p.spec->hostname;
  return ::sethostname(h.data(), h.size()) == 0 ? 0 : errno;
}

int step_fds(const ChildPlan& p, int* item) {
  // stdin from /dev/null, stdout/stderr to the VMM log; passed fds at their numbers; every other
  // descriptor closes on exec (the error pipe stays open until the exec itself).
  if (::dup2(p.null_fd, 0) < 0) return errno;
  int out = p.log_fd >= 0 ? p.log_fd : p.null_fd;
  if (::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) return errno;
  for (size_t i = 0; i < p.pass.size(); ++i) {
    *item = static_cast<int>(i);
    if (::dup2(p.pass[i].first, p.pass[i].second) < 0) return errno;
  }
  if (::syscall(SYS_close_range, p.max_target_fd + 1, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    return errno;
  }
  return 0;
}

int step_signals(const ChildPlan&, int*) {
  // The pool manager's threads block signals; the VMM starts with a clean mask and defaults.
  uint64_t empty = 0;
  if (::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, sizeof empty) != 0) {
    return errno;
  }
  ::signal(SIGPIPE, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
  return 0;
}

int step_rlimits(const ChildPlan& p, int*) {
  rlimit core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &core) != 0) return errno;  // guest memory never hits a core file
  rlimit nofile{p.spec->max_open_files, p.spec->max_open_files};
  if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0) return errno;
  ::umask(007);  // sockets the VMM creates: its uid and the channel group (see JailSpec)
  return 0;
}

int step_no_new_privs(const ChildPlan&, int*) {
  // No setuid/file-capability gain after exec; also lets QEMU install its seccomp filter.
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : errno;
}

int step_landlock(const ChildPlan& p, int*) {
  // The ruleset was built in the parent (paths resolved there, allocation allowed); enforcing
  // it is one allocation-free syscall pair (no_new_privs + landlock_restrict_self). From here on
  // the VMM reaches only its jail's files, whatever its uid, even if a mount were missed.
  if (p.spec->landlock_fd < 0) return 0;
  return landlock::enforce(p.spec->landlock_fd);
}

int step_identity(const ChildPlan& p, int*) {
  if (!p.spec->isolate) return 0;
  // Raw syscalls: glibc's wrappers broadcast to threads that do not exist in this child.
  const auto& g = p.spec->groups;
  if (::syscall(SYS_setgroups, g.size(), g.data()) != 0) return errno;
  if (::syscall(SYS_setresgid, p.spec->gid, p.spec->gid, p.spec->gid) != 0) return errno;
  if (::syscall(SYS_setresuid, p.spec->uid, p.spec->uid, p.spec->uid) != 0) return errno;
  return 0;
}

int step_parent_death(const ChildPlan& p, int*) {
  // Die with the pool manager: no orphan VMMs after it crashes or is SIGKILLed. This must come
  // after the identity change, because the kernel clears the parent-death signal whenever a
  // task's uids or gids change (commit_creds) — set earlier, it silently never fires. execve keeps
  // it (no set-uid gain under no_new_privs). The signal follows the *thread* that cloned us, so
  // the pool spawns VMMs only from threads that live as long as their VMs (pool.h).
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return errno;
  // The parent may have died before the prctl: then no signal comes. getppid() cannot tell (it
  // is 0 in a new PID namespace), so poll a pidfd of the parent process opened before clone3():
  // it is readable once that process has exited.
  if (p.parent_pidfd >= 0) {
    pollfd pf{p.parent_pidfd, POLLIN, 0};
    if (::poll(&pf, 1, 0) != 0) return ESRCH;
  }
  return 0;
}

int step_exec(const ChildPlan& p, int*) {
  ::execve(p.argv[0], p.argv.data(), p.envp.data());
  return errno;
}

struct Step {
  const char* name;
  StepFn fn;
};

constexpr Step kSteps[] = {
    {"cgroup.join", step_cgroup_join},
    {"mount.private", step_mount_private},
    {"mount.root", step_mount_root},
    {"mount.binds", step_mount_binds},
    {"mount.proc", step_mount_proc},
    {"pivot_root", step_pivot_root},
    {"hostname", step_hostname},
    {"fds", step_fds},
    {"signals", step_signals},
    {"rlimits", step_rlimits},
    {"no_new_privs", step_no_new_privs},
    {"landlock", step_landlock},
    {"identity", step_identity},
    {"parent_death", step_parent_death},
    {"exec", step_exec},
};

[[noreturn]] void child_main(const ChildPlan& p) {
  for (size_t i = 0; i < std::size(kSteps); ++i) {
    int item = -1;
    int err = kSteps[i].fn(p, &item);
    if (err != 0) {
      StepFailure f{static_cast<int>(i), err, item};
      (void)!::write(p.err_fd, &f, sizeof f);
      ::_exit(127);
    }
  }
  ::_exit(127);  // unreachable: step_exec either replaced us or failed
}

}  // namespace

const std::vector<std::string>& jail_steps() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& s : kSteps) v.emplace_back(s.name);
    return v;
  }();
  return names;
}

Result<Jail> Jail::prepare(JailSpec spec) {
  if (spec.dir.empty() || spec.dir[0] != '/') {
    return make_error(ErrorCode::BAD_REQUEST, "jail dir must be an absolute path");
  }
  auto slash = spec.dir.rfind('/');
  if (Status s = make_dirs(spec.dir.substr(0, slash), 0755); !s.ok()) return s.error();
  if (::mkdir(spec.dir.c_str(), 0755) != 0) return sys_error("mkdir(" + spec.dir + ")", errno);
  Jail jail;
  jail.prepared_ = true;  // from here on the destructor removes the dir
  jail.spec_.dir = spec.dir;

  std::vector<BindMount> kept;
  for (auto& b : spec.binds) {
    struct stat st {};
    if (::stat(b.source.c_str(), &st) != 0) {
      if (b.optional) continue;
      return sys_error("stat(" + b.source + ") for jail bind (" + b.reason + ")", errno);
    }
    std::string dst = spec.dir + b.target;
    if (S_ISDIR(st.st_mode)) {
      if (Status s = make_dirs(dst, 0755); !s.ok()) return s.error();
    } else {
      if (Status s = make_dirs(dst.substr(0, dst.rfind('/')), 0755); !s.ok()) return s.error();
      int fd = ::open(dst.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
      if (fd < 0) return sys_error("open(" + dst + ", O_CREAT)", errno);
      ::close(fd);
    }
    kept.push_back(std::move(b));
  }
  spec.binds = std::move(kept);
  // Merged-/usr hosts: /bin, /lib, /lib64 are symlinks into /usr; mirror them.
  for (const char* name : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(name, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    std::string link = spec.dir + name;
    if (::symlink(target, link.c_str()) != 0 && errno != EEXIST) {
      return sys_error("symlink(" + link + ")", errno);
    }
  }
  if (Status s = make_dirs(spec.dir + "/proc", 0555); !s.ok()) return s.error();
  for (const auto& w : spec.writable_dirs) {
    std::string d = spec.dir + w;
    if (Status s = make_dirs(d, 0755); !s.ok()) return s.error();
    if (::chown(d.c_str(), spec.uid, spec.writable_group) != 0) {
      return sys_error("chown(" + d + ")", errno);
    }
    if (::chmod(d.c_str(), 02770) != 0) return sys_error("chmod(" + d + ")", errno);
  }
  jail.spec_ = std::move(spec);
  return jail;
}

Jail::~Jail() {
  if (prepared_) {
    Status s = remove();
    if (!s.ok()) log::warn("jail cleanup failed", {{"error", s.error().message}});
  }
}

Status Jail::remove() {
  if (!prepared_) return {};
  Status s = remove_tree(spec_.dir);
  if (s.ok()) prepared_ = false;
  return s;
}

Result<JailedProcess> Jail::spawn(const std::vector<std::string>& argv,
                                  const std::vector<int>& cgroup_procs,
                                  const std::vector<std::pair<int, int>>& pass_fds, int log_fd) {
  if (!prepared_) return make_error(ErrorCode::INTERNAL, "jail not prepared");
  if (argv.empty()) return make_error(ErrorCode::BAD_REQUEST, "empty argv");
  ChildPlan p;
  p.spec = &spec_;
  for (const auto& b : spec_.binds) {
    p.bind_dst.push_back(spec_.dir + b.target);
    unsigned long fl = 0;
    if (b.read_only) {
      fl = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | (b.device ? 0 : MS_NODEV);
    }
    p.bind_remount_flags.push_back(fl);
  }
  p.proc_dir = spec_.dir + "/proc";
  p.cgroup_fds = cgroup_procs;
  p.log_fd = log_fd;

  UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_fd.valid()) return sys_error("open(/dev/null)", errno);
  p.null_fd = null_fd.get();
  // Copies of the passed fds above every target number, so dup2 never clobbers a source.
  std::vector<UniqueFd> high;
  for (auto [src, dst] : pass_fds) {
    UniqueFd h(::fcntl(src, F_DUPFD_CLOEXEC, 100));
    if (!h.valid()) return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno);
    p.pass.emplace_back(h.get(), dst);
    p.max_target_fd = std::max(p.max_target_fd, dst);
    high.push_back(std::move(h));
  }
  std::vector<std::string> args = argv;
  for (auto& a : args) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  std::string env_path = "PATH=/usr/bin:/bin";
  p.envp = {env_path.data(), nullptr};

  UniqueFd parent(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  if (!parent.valid()) return sys_error("pidfd_open(self)", errno);
  p.parent_pidfd = parent.get();

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return sys_error("pipe2", errno);
  UniqueFd err_r(pipefd[0]), err_w(pipefd[1]);
  p.err_fd = err_w.get();

  int pidfd = -1;
  CloneArgs ca{};
  ca.flags = CLONE_PIDFD;
  if (spec_.isolate) {
    ca.flags |= CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (spec_.new_pid_ns ? CLONE_NEWPID : 0) |
                (spec_.new_net_ns ? CLONE_NEWNET : 0);
  }
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0) return sys_error("clone3(CLONE_NEWNS|CLONE_NEWPID|...)", errno);
  if (pid == 0) child_main(p);

  JailedProcess proc;
  proc.pid = static_cast<pid_t>(pid);
  proc.pidfd = UniqueFd(pidfd);
  err_w.reset();
  StepFailure f{};
  ssize_t n;
  do {
    n = ::read(err_r.get(), &f, sizeof f);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return proc;  // the exec closed the pipe: the VMM is running
  int status = 0;
  ::waitpid(proc.pid, &status, 0);
  if (n != sizeof f || f.step < 0 || f.step >= static_cast<int>(std::size(kSteps))) {
    return make_error(ErrorCode::INTERNAL, "jail child died without a report");
  }
  std::string what = std::string("jail step '") + kSteps[f.step].name + "'";
  if (std::string(kSteps[f.step].name) == "mount.binds" && f.item >= 0 &&
      f.item < static_cast<int>(spec_.binds.size())) {
    const auto& b = spec_.binds[f.item];
    what += " mount(" + b.source + " -> " + b.target + ")";
  } else if (std::string(kSteps[f.step].name) == "exec") {
    what += " execve(" + argv[0] + ")";
  }
  return sys_error(what, f.err);
}

}  // namespace nv::vm
