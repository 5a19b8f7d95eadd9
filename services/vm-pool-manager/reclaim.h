// reclaim.h — what a predecessor pool manager of the same runtime dir left behind.
//
// A pool manager that was SIGKILLed (or crashed, or lost its host mid-shutdown) cannot clean up:
// its VMMs may still run (an older build, or a kernel without the parent-death signal), and
// their cgroup dirs (v1 controllers and cgroup2), jail dirs, sockets and snapshot templates stay.
// A starting pool manager reclaims all of it before it serves, in this order: every VMM in a
// leftover VM's cgroups is SIGKILLed and its cgroup dirs removed (a cgroup with tasks cannot go),
// then the VM's jail dir (its mounts died with the VMM's mount namespace), then the snapshot
// templates. Scope: only VMs whose jail dir is in this runtime dir's vms/ — pool managers of other
// runtime dirs share the cgroup parent and are left alone.
#pragma once

#include <string>
#include <vector>

#include "cgroup.h"

namespace nv::vm {

struct ReclaimReport {
  std::vector<std::string> vms;  // ids of the leftover VMs found
  int vmm_processes_killed = 0;  // tasks found in their cgroups
  int cgroup_dirs_removed = 0;
  int jail_dirs_removed = 0;
  int files_removed = 0;              // snapshot templates, stale sockets
  std::vector<std::string> problems;  // what could not be removed (logged; start-up goes on)
};

// `vms_dir`: RUNTIME/vms (one jail dir per VM id). `snapshot_dir`: where templates go (*.vmstate
// files are removed). `stale_sockets`: socket paths that no live process serves any more.
ReclaimReport reclaim_leftovers(const CgroupLayout& layout, const std::string& vms_dir,
                                const std::string& snapshot_dir,
                                const std::vector<std::string>& stale_sockets);

}  // namespace nv::vm
