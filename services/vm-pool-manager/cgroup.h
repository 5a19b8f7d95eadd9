// cgroup.h — one cgroup per VMM process: memory, CPU quota and pids limits, usage stats.
//
// Detected once at start (CgroupLayout::detect):
//   v2      — the unified hierarchy with the memory, cpu and pids controllers (production hosts).
//             One dir per VM: <root>/<service cgroup>/neurovisor/<vm-id>, limits in memory.max,
//             memory.swap.max, cpu.max, pids.max. The same dir serves the sentinel's egress hooks.
//   hybrid  — v1 controllers at /sys/fs/cgroup/<ctrl> (this machine, see facts.md): one dir per
//             controller (memory, cpu, pids) holds the limits, plus a controller-less cgroup2 dir
//             under /sys/fs/cgroup/unified so BPF cgroup hooks (connect4, …) can attach per VM.
//   none    — no usable controllers: refuse to start unless explicitly allowed (tests).
// Each VM dir sits under the pool manager's own cgroup ("/proc/self/cgroup"), so a delegated
// systemd unit keeps all its VMs inside its own subtree.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend.h"
#include "sysutil.h"

namespace nv::vm {

struct CgroupLimits {
  uint64_t memory_bytes = 0;       // hard limit for the VMM (guest RAM + VMM overhead); 0 = none
  uint32_t cpu_quota_percent = 0;  // 100 = one core; 0 = no quota
  uint32_t pids_max = 0;           // 0 = no limit
};

struct CgroupLayout {
  enum class Mode { none, v2, hybrid };
  Mode mode = Mode::none;
  std::string reason;  // why this mode was chosen (logged)
  // v2: the parent dir of every VM cgroup (controllers enabled in its subtree_control).
  // hybrid: the cgroup2 parent for the per-VM hook dirs ("" when no cgroup2 is mounted).
  std::string v2_parent;
  // hybrid: controller ("memory", "cpu", "pids") → parent dir of the VM dirs.
  std::map<std::string, std::string> v1_parents;

  // Looks at `fs_root` (normally /sys/fs/cgroup) and the process's own cgroup membership
  // (`self_cgroup_file`, normally /proc/self/cgroup). `group` names the subtree ("neurovisor").
  static CgroupLayout detect(const std::string& fs_root = "/sys/fs/cgroup",
                             const std::string& self_cgroup_file = "/proc/self/cgroup",
                             const std::string& group = "neurovisor");
  // Creates the parent dirs (and enables v2 controllers in them). Call once at start.
  Status prepare() const;
  // Removes the (empty) parent dirs again: service shutdown and tests.
  void remove_parents() const;
  // Every dir a VM named `name` would get (for tests and leak checks).
  std::vector<std::string> vm_dirs(const std::string& name) const;
  const char* mode_name() const;
};

// The cgroup dirs of one VM. Created before the VMM starts; the VMM's first act in its jail is
// to join them (jail.cc), so it never runs a single instruction outside its limits.
class VmCgroup {
 public:
  VmCgroup() = default;
  VmCgroup(VmCgroup&&) = default;
  VmCgroup& operator=(VmCgroup&&) = default;
  ~VmCgroup();

  static Result<VmCgroup> create(const CgroupLayout& layout, const std::string& name,
                                 const CgroupLimits& limits);

  // Opens every cgroup.procs (v1 and v2) for writing, for the child to write "0" into.
  Result<std::vector<UniqueFd>> open_procs() const;
  // Every dir of this VM (for tests and logs).
  const std::vector<std::string>& dirs() const { return dirs_; }
  const std::string& cgroup2_path() const { return v2_dir_; }
  VmUsage usage() const;
  // SIGKILLs anything still inside, waits for the dirs to empty, removes them. Idempotent.
  Status destroy();

 private:
  CgroupLayout::Mode mode_ = CgroupLayout::Mode::none;
  std::vector<std::string> dirs_;  // creation order; removed in reverse
  std::string v2_dir_;
  std::map<std::string, std::string> v1_dirs_;
};

// SIGKILLs whatever is still in the cgroup dir `dir` (cgroup.kill where the kernel has it, else
// each pid of cgroup.procs), waits up to 2 s for the tasks to go, and removes the dir. A missing
// dir is fine.
Status kill_and_remove(const std::string& dir);

// Whether the sentinel's egress programs (cgroup connect4|6 and sendmsg4|6) are attached to the
// VM's cgroup2 dir, asked of the kernel (bpf BPF_PROG_QUERY, effective programs): OK, or an
// egressUnenforced error naming the missing hook, or the syscall's error (EPERM where the kernel
// wants CAP_NET_ADMIN for the query). The pool's fail-closed lease check.
Status egress_hooks_attached(const std::string& cgroup2_dir);

}  // namespace nv::vm
