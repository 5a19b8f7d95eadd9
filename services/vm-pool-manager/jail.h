// jail.h — runs one VMM process in its own jail.
//
// The jail is a per-VM directory under the runtime dir holding only mount points for what the
// VMM needs (read-only binds of /usr, the kernel, the rootfs, a few device nodes) and one
// writable dir for its sockets. The VMM is started with clone3() into new mount, PID, IPC, UTS
// and network namespaces and then walks an ordered list of named steps (jail_steps()), in the
// spirit of nsjail's containProc: the first failing step stops the rest and is reported to the
// parent with its name and errno. Only after the last step does it exec the VMM binary.
//
// The child runs between clone3() and execve() in a copy of a multi-threaded process, so it only
// makes raw system calls on data prepared before the clone: no allocation, no glibc wrappers
// that coordinate threads (setresuid, setgroups).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "sysutil.h"

namespace nv::vm {

struct BindMount {
  std::string source;  // host path (file or dir)
  std::string target;  // absolute path inside the jail
  bool read_only = true;
  bool device = false;    // a device node: keep it usable (no MS_NODEV)
  bool optional = false;  // skip silently when the source does not exist
  std::string reason;     // why the VMM needs it (logged, reviewed)
};

struct JailSpec {
  std::string dir;    // host path of the jail root; created by prepare()
  uid_t uid = 65534;  // the VMM's unprivileged identity
  gid_t gid = 65534;
  std::vector<gid_t> groups;  // supplementary groups (e.g. kvm for /dev/kvm)
  std::vector<BindMount> binds;
  // Created inside, owned by uid with group `writable_group`, mode 02770: the setgid bit makes
  // every socket the VMM creates there belong to that group, so the pool manager and the
  // sandbox-executor (its members) can connect without CAP_DAC_OVERRIDE. The VMM's umask is 007.
  std::vector<std::string> writable_dirs;
  gid_t writable_group = 0;
  std::string hostname = "nv-vmm";
  // false: no namespaces, no mounts, no identity change — the process runs as the caller in the
  // jail dir (tests of fakes only; the pool never runs a real VMM like that).
  bool isolate = true;
  bool new_net_ns = true;  // no network device anyway; lo only
  bool new_pid_ns = true;
  uint64_t max_open_files = 4096;
  // A Landlock ruleset prepared in the parent (nv::landlock::prepare; fd owned by the caller),
  // enforced by the child right before it drops its identity. -1 = no Landlock.
  int landlock_fd = -1;
};

// The ordered names of the child's isolation steps (for logs, docs and tests).
const std::vector<std::string>& jail_steps();

struct JailedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
};

class Jail {
 public:
  // Creates the jail dir with its mount points, symlinks and writable dirs.
  static Result<Jail> prepare(JailSpec spec);
  Jail() = default;
  Jail(Jail&&) = default;
  Jail& operator=(Jail&&) = default;
  ~Jail();

  // Starts argv[0] (a path inside the jail) in the jail. `cgroup_procs` are open cgroup.procs
  // files the child joins first; `pass_fds` are (parent fd → child fd number) kept across exec;
  // stdout and stderr go to `log_fd` (or /dev/null when -1). Returns once the exec succeeded, or
  // the failing step's error.
  Result<JailedProcess> spawn(const std::vector<std::string>& argv,
                              const std::vector<int>& cgroup_procs,
                              const std::vector<std::pair<int, int>>& pass_fds, int log_fd);

  // The Landlock ruleset fd (kept open by the caller until spawn returns).
  void set_landlock_fd(int fd) { spec_.landlock_fd = fd; }
  // Host path of a path inside the jail.
  std::string host_path(const std::string& inner) const { return spec_.dir + inner; }
  const std::string& dir() const { return spec_.dir; }
  // Removes the jail dir (the VMM must have exited: its mounts die with its namespace).
  Status remove();

 private:
  JailSpec spec_;
  bool prepared_ = false;
};

}  // namespace nv::vm
