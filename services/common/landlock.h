// Landlock file confinement for the calling process (nv_landlock). Used in the VMM jail right
// before exec'ing QEMU/Firecracker: after restrict_self() the process and everything it execs
// can reach only the listed paths, whatever its uid or capabilities, even where BPF LSM is not
// available. Raw syscalls (no liblandlock dependency); the ABI version decides which access
// rights the kernel can enforce, and rights it does not know are left out, never faked.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nv::landlock {

// What the process may still reach. Everything not listed here is refused for every handled
// right (read, write, create, remove, execute, ...). Paths are resolved when the rules are added;
// a directory covers everything beneath it.
struct Ruleset {
  std::vector<std::string> read_only;   // read files, list directories (kernel, rootfs image)
  std::vector<std::string> read_write;  // + write, truncate, create/remove files, dirs, sockets,
                                        //   fifos (the VM's own sockets and scratch dir)
  std::vector<std::string> execute;     // + execute (and read): the VMM binary and its libraries
  // true: a listed path that does not exist is skipped (and logged); false: it is an error.
  bool skip_missing = false;
};

struct Outcome {
  bool ok = false;
  int abi = 0;                   // Landlock ABI version of the kernel, 0 when unavailable
  uint64_t handled_fs = 0;       // LANDLOCK_ACCESS_FS_* rights the ruleset restricts
  std::string call;              // failing call, e.g. "landlock_add_rule(/srv/vm-1)"
  int errnum = 0;                // its errno
  std::vector<std::string> log;  // what was done, one line per step
  // "ok (abi 7, ...)" or "call: strerror (errno N)".
  std::string text() const;
};

// What a VMM process (QEMU, Firecracker) needs to reach; vmm_ruleset() turns it into a Ruleset:
// the binary and the dynamic loader executable, shared libraries and firmware read-only, the
// kernel/rootfs images read-only, the VM's own dir (QMP/serial sockets, scratch, snapshots) and
// device nodes read-write. Nothing else on the host.
struct VmmPaths {
  std::string vmm_binary;                           // e.g. /usr/bin/qemu-system-x86_64
  std::vector<std::string> images;                  // kernel, initrd, rootfs image (read-only)
  std::string vm_dir;                               // per-VM dir (read-write)
  std::vector<std::string> devices = {"/dev/kvm"};  // read-write device nodes
  // Library and firmware locations, read-only. The default fits Debian's QEMU.
  std::vector<std::string> support = {"/lib",
                                      "/lib64",
                                      "/usr/lib",
                                      "/usr/lib64",
                                      "/usr/share/qemu",
                                      "/usr/share/seabios",
                                      "/etc/ld.so.cache",
                                      "/dev/urandom",
                                      "/proc/self",
                                      "/sys/devices/system/cpu"};
  // Executed by the kernel on exec (PT_INTERP of a dynamic binary).
  std::vector<std::string> loaders = {"/lib64/ld-linux-x86-64.so.2"};
};
// The result has skip_missing set (hosts differ in library dirs and devices): a missing binary or
// image is then not an error here but makes the exec / VMM start fail on its own.
Ruleset vmm_ruleset(const VmmPaths& paths);

// Landlock ABI version (>= 1), or -errno: -ENOSYS (kernel without Landlock), -EOPNOTSUPP
// (built in but disabled at boot, e.g. not in lsm=).
int abi_version();

// True when abi_version() >= 1; *why gets the reason when not.
bool available(std::string* why = nullptr);

// A ruleset built ahead of time, for callers that must not allocate when they enforce it (a
// clone3() child of a multi-threaded parent, right before exec). Landlock rules bind to the
// files' inodes when added, so build it with host paths in the parent; it still holds after
// the child pivots into its jail (bind mounts share the inodes).
class PreparedRuleset {
 public:
  PreparedRuleset() = default;
  ~PreparedRuleset();
  PreparedRuleset(PreparedRuleset&& other) noexcept;
  PreparedRuleset& operator=(PreparedRuleset&& other) noexcept;
  PreparedRuleset(const PreparedRuleset&) = delete;
  PreparedRuleset& operator=(const PreparedRuleset&) = delete;

  bool ok() const { return outcome_.ok && fd_ >= 0; }
  int fd() const { return fd_; }  // O_CLOEXEC; pass to enforce()
  const Outcome& outcome() const { return outcome_; }

 private:
  friend PreparedRuleset prepare(const Ruleset& rules);
  int fd_ = -1;
  Outcome outcome_;
};

// Steps 1-3 of restrict_self: ABI check, ruleset, one rule per path. Nothing is enforced yet.
PreparedRuleset prepare(const Ruleset& rules);

// Step 4 for a prepared ruleset, in the process to confine: PR_SET_NO_NEW_PRIVS, then
// landlock_restrict_self. No allocation, no locks (safe after clone/fork). Returns 0 or errno
// (of prctl or landlock_restrict_self).
int enforce(int ruleset_fd) noexcept;

// Applies `rules` to the calling thread and its future children (call it before spawning other
// threads, or from the single-threaded child right before exec). Sets PR_SET_NO_NEW_PRIVS, which
// Landlock requires of unprivileged callers. Irreversible: on success the process stays confined.
// On failure before landlock_restrict_self nothing is applied.
Outcome restrict_self(const Ruleset& rules);

}  // namespace nv::landlock
