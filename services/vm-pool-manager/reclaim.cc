#include "reclaim.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>

#include "common/log.h"

namespace nv::vm {
namespace {

int count_tasks(const std::string& cgroup_dir) {
  auto procs = read_file(cgroup_dir + "/cgroup.procs");
  if (!procs.ok()) return 0;
  std::istringstream in(procs.value());
  int n = 0;
  for (pid_t pid; in >> pid;) ++n;
  return n;
}

}  // namespace

ReclaimReport reclaim_leftovers(const CgroupLayout& layout, const std::string& vms_dir,
                                const std::string& snapshot_dir,
                                const std::vector<std::string>& stale_sockets) {
  ReclaimReport r;
  for (const auto& id : list_dir(vms_dir)) {
    r.vms.push_back(id);
    // 1. the VMM (and anything it started) dies with its cgroups
    for (const auto& dir : layout.vm_dirs(id)) {
      struct stat st {};
      if (::stat(dir.c_str(), &st) != 0) continue;
      r.vmm_processes_killed += count_tasks(dir);
      if (Status s = kill_and_remove(dir); s.ok()) {
        ++r.cgroup_dirs_removed;
      } else {
        r.problems.push_back(s.error().message);
      }
    }
    // 2. its jail dir
    if (Status s = remove_tree(vms_dir + "/" + id); s.ok()) {
      ++r.jail_dirs_removed;
    } else {
      r.problems.push_back(s.error().message);
    }
  }
  // 3. snapshot templates (their RAM memfds died with the predecessor)
  for (const auto& name : list_dir(snapshot_dir)) {
    if (name.size() < 8 || name.compare(name.size() - 8, 8, ".vmstate") != 0) continue;
    if (::unlink((snapshot_dir + "/" + name).c_str()) == 0) ++r.files_removed;
  }
  for (const auto& sock : stale_sockets) {
    if (::unlink(sock.c_str()) == 0) ++r.files_removed;
  }
  return r;
}

}  // namespace nv::vm
