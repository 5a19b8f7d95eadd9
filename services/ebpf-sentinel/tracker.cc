#include "tracker.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bpf_loader.h"
#include "sentinel_tracker.h"
#include "sentinel_tracker.skel.h"

namespace nv::sentinel {

namespace {

std::string bounded(const char* s, size_t max) { return std::string(s, strnlen(s, max)); }

// pid → ppid of every process, from /proc/<pid>/stat (field 4, after the ")" of the comm).
std::map<pid_t, pid_t> process_parents() {
  std::map<pid_t, pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* ent = readdir(d)) {
    char* end = nullptr;
    long pid = strtol(ent->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream f(std::string("/proc/") + ent->d_name + "/stat");
    std::string line;
    if (!std::getline(f, line)) continue;  // raced with exit
    size_t rp = line.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(line.substr(rp + 1));
    char state = 0;
    long ppid = 0;
    if (rest >> state >> ppid) out[static_cast<pid_t>(pid)] = static_cast<pid_t>(ppid);
  }
  closedir(d);
  return out;
}

}  // namespace

Tracker::~Tracker() {
  // Destroying the skeleton detaches every link in skel->links and closes the maps.
  if (skel_) sentinel_tracker::destroy(skel_);
}

std::vector<ProgramStatus> Tracker::load(bool count_self) {
  capture_libbpf_messages();
  const uint32_t self = count_self ? 0u : static_cast<uint32_t>(getpid());
  statuses_ =
      load_skeleton<sentinel_tracker>("sentinel_tracker", &skel_, [self](sentinel_tracker* s) {
        s->rodata->sentinel_tgid = self;  // rodata is frozen at load: set it now
        return Status::Ok();
      });
  if (!skel_) return statuses_;
  slot_used_.assign(NV_MAX_VMS, false);
  slot_used_[0] = true;  // slot 0 means "not tracked" in the BPF programs

  // Attach order: fork before exec/exit, so a child forked while we attach is not missed by the
  // exec program's lookup; the counter last, since it is the one that costs every syscall.
  struct {
    bpf_program* prog;
    bpf_link** link;
  } order[] = {
      {skel_->progs.nv_process_fork, &skel_->links.nv_process_fork},
      {skel_->progs.nv_process_exec, &skel_->links.nv_process_exec},
      {skel_->progs.nv_process_exit, &skel_->links.nv_process_exit},
      {skel_->progs.nv_sys_enter, &skel_->links.nv_sys_enter},
  };
  for (auto& step : order) {
    if (!bpf_program__autoload(step.prog)) continue;  // refused at load; status says why
    bpf_link* link = bpf_program__attach(step.prog);
    int err = link ? 0 : errno;
    if (link) *step.link = link;
    note_attach(statuses_, bpf_program__name(step.prog), err, "bpf_program__attach");
  }
  return statuses_;
}

Status Tracker::add_tgid(pid_t tgid, uint32_t slot) {
  uint32_t key = static_cast<uint32_t>(tgid);
  int err = bpf_map__update_elem(skel_->maps.tracked_tgids, &key, sizeof(key), &slot, sizeof(slot),
                                 BPF_ANY);
  if (err)
    return Status::Fail("bpf_map_update_elem(tracked_tgids, " + std::to_string(tgid) + ")", -err);
  return Status::Ok();
}

Status Tracker::track(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir) {
  if (!skel_) return Status::Fail("track_vm(" + vm_id + ")", ENODEV, "tracker not loaded");
  if (vm_id.empty()) return Status::Fail("track_vm", EINVAL, "empty vm id");
  if (vmm_pid <= 0 && cgroup2_dir.empty())
    return Status::Fail("track_vm(" + vm_id + ")", EINVAL, "need a VMM pid or a cgroup2 dir");
  if (vms_.count(vm_id)) return Status::Fail("track_vm(" + vm_id + ")", EEXIST, "already tracked");
  if (vmm_pid > 0 && kill(vmm_pid, 0) != 0 && errno == ESRCH)
    return Status::Fail("kill(" + std::to_string(vmm_pid) + ", 0)", ESRCH, "no such VMM process");

  Vm vm;
  for (uint32_t s = 1; s < slot_used_.size(); ++s) {
    if (!slot_used_[s]) {
      vm.slot = s;
      break;
    }
  }
  if (vm.slot == 0) return Status::Fail("track_vm(" + vm_id + ")", ENOSPC, "all VM slots in use");

  // From here on the VM is registered, so one cleanup path (untrack) undoes a partial track.
  slot_used_[vm.slot] = true;
  vms_[vm_id] = vm;
  Status st = fill(vm_id, vmm_pid, cgroup2_dir);
  if (!st.ok()) (void)untrack(vm_id);
  return st;
}

Status Tracker::fill(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir) {
  Vm& vm = vms_[vm_id];
  // Counts start from zero for a reused slot.
  int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> zeros(ncpu > 0 ? ncpu : 1, 0);
  int err = bpf_map__update_elem(skel_->maps.syscall_counts, &vm.slot, sizeof(vm.slot),
                                 zeros.data(), zeros.size() * sizeof(uint64_t), BPF_ANY);
  if (err) return Status::Fail("bpf_map_update_elem(syscall_counts)", -err);

  if (!cgroup2_dir.empty()) {
    CgroupDir cg;
    Status st = open_cgroup2_dir(cgroup2_dir, &cg);
    if (!st.ok()) return st;
    ::close(cg.fd);
    err = bpf_map__update_elem(skel_->maps.tracked_cgroups, &cg.id, sizeof(cg.id), &vm.slot,
                               sizeof(vm.slot), BPF_NOEXIST);
    if (err) return Status::Fail("bpf_map_update_elem(tracked_cgroups, " + cgroup2_dir + ")", -err);
    vm.cgroup_id = cg.id;
    skel_->bss->tracked_cgroup_count += 1;
  }
  if (vmm_pid > 0) {
    vm.vmm_pid = vmm_pid;
    // The VMM first, then the descendants that already exist; new ones are added by the
    // sched_process_fork program from now on.
    Status st = add_tgid(vmm_pid, vm.slot);
    if (!st.ok()) return st;
    std::map<pid_t, pid_t> parents = process_parents();
    std::map<pid_t, bool> in_tree{{vmm_pid, true}};
    bool grew = true;
    while (grew) {
      grew = false;
      for (const auto& [pid, ppid] : parents) {
        if (in_tree.count(pid) || !in_tree.count(ppid)) continue;
        in_tree[pid] = true;
        grew = true;
        Status s = add_tgid(pid, vm.slot);
        if (!s.ok()) return s;
      }
    }
  }
  return Status::Ok();
}

Status Tracker::untrack(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return Status::Fail("untrack_vm(" + vm_id + ")", ENOENT, "not tracked");
  Vm vm = it->second;
  if (vm.cgroup_id) {
    bpf_map__delete_elem(skel_->maps.tracked_cgroups, &vm.cgroup_id, sizeof(vm.cgroup_id), 0);
    skel_->bss->tracked_cgroup_count -= 1;
  }
  // Every tgid of this slot (collect first: deleting while iterating restarts the walk).
  std::vector<uint32_t> doomed;
  uint32_t key = 0, next = 0;
  uint32_t* prev = nullptr;
  while (bpf_map__get_next_key(skel_->maps.tracked_tgids, prev, &next, sizeof(next)) == 0) {
    uint32_t slot = 0;
    if (bpf_map__lookup_elem(skel_->maps.tracked_tgids, &next, sizeof(next), &slot, sizeof(slot),
                             0) == 0 &&
        slot == vm.slot)
      doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (uint32_t tgid : doomed)
    bpf_map__delete_elem(skel_->maps.tracked_tgids, &tgid, sizeof(tgid), 0);
  slot_used_[vm.slot] = false;
  vms_.erase(it);
  return Status::Ok();
}

std::optional<uint64_t> Tracker::syscall_count(const std::string& vm_id) const {
  auto it = vms_.find(vm_id);
  if (it == vms_.end() || !skel_) return std::nullopt;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return std::nullopt;
  std::vector<uint64_t> per_cpu(ncpu, 0);
  uint32_t slot = it->second.slot;
  if (bpf_map__lookup_elem(skel_->maps.syscall_counts, &slot, sizeof(slot), per_cpu.data(),
                           per_cpu.size() * sizeof(uint64_t), 0) != 0)
    return std::nullopt;
  uint64_t total = 0;
  for (uint64_t v : per_cpu) total += v;
  return total;
}

std::map<std::string, uint64_t> Tracker::syscall_counts() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [vm_id, vm] : vms_) {
    if (auto c = syscall_count(vm_id)) out[vm_id] = *c;
  }
  return out;
}

Status Tracker::set_counting(bool on) {
  if (!skel_ || !bpf_program__autoload(skel_->progs.nv_sys_enter))
    return Status::Fail("set_counting", ENODEV, "nv_sys_enter not loaded");
  bpf_link*& link = skel_->links.nv_sys_enter;
  if (!on) {
    if (link) bpf_link__destroy(link);
    link = nullptr;
    return Status::Ok();
  }
  if (link) return Status::Ok();
  link = bpf_program__attach(skel_->progs.nv_sys_enter);
  if (!link) {
    int err = errno;
    return Status::Fail("bpf_program__attach(nv_sys_enter)", err, take_libbpf_messages());
  }
  return Status::Ok();
}

Status Tracker::add_ring(ring_buffer** rb, Callbacks* callbacks) {
  if (!skel_) return Status::Fail("add_ring(proc_events)", ENODEV, "tracker not loaded");
  callbacks_ = callbacks;
  int fd = bpf_map__fd(skel_->maps.proc_events);
  if (*rb == nullptr) {
    *rb = ring_buffer__new(fd, &Tracker::on_record, this, nullptr);
    if (!*rb) return Status::Fail("ring_buffer__new(proc_events)", errno);
    return Status::Ok();
  }
  int err = ring_buffer__add(*rb, fd, &Tracker::on_record, this);
  if (err) return Status::Fail("ring_buffer__add(proc_events)", -err);
  return Status::Ok();
}

uint64_t Tracker::dropped_events() const {
  return skel_ ? __atomic_load_n(&skel_->bss->dropped_events, __ATOMIC_RELAXED) : 0;
}

int Tracker::tracked_tgids_fd() const {
  return skel_ ? bpf_map__fd(skel_->maps.tracked_tgids) : -1;
}

std::string Tracker::vm_of_slot(uint32_t slot) const {
  for (const auto& [vm_id, vm] : vms_)
    if (vm.slot == slot) return vm_id;
  return "";
}

int Tracker::on_record(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Tracker*>(ctx);
  if (size < sizeof(nv_proc_event)) return 0;  // never trust a short record
  nv_proc_event e;
  memcpy(&e, data, sizeof(e));
  Callbacks* cb = self->callbacks_;
  if (e.kind == NV_EV_EXEC) {
    ExecAlert a;
    a.vm_id = self->vm_of_slot(e.slot);
    a.ts_ns = e.ts_ns;
    a.cgroup_id = e.cgroup_id;
    a.pid = static_cast<pid_t>(e.pid);
    a.tgid = static_cast<pid_t>(e.tgid);
    a.ppid = static_cast<pid_t>(e.ppid);
    a.old_pid = static_cast<pid_t>(e.old_pid);
    a.comm = bounded(e.comm, sizeof(e.comm));
    a.filename = bounded(e.filename, sizeof(e.filename));
    if (cb && cb->on_exec_alert) cb->on_exec_alert(a);
  } else if (e.kind == NV_EV_EXIT) {
    ProcessExit x;
    x.vm_id = self->vm_of_slot(e.slot);
    x.ts_ns = e.ts_ns;
    x.cgroup_id = e.cgroup_id;
    x.pid = static_cast<pid_t>(e.pid);
    x.tgid = static_cast<pid_t>(e.tgid);
    x.ppid = static_cast<pid_t>(e.ppid);
    x.exit_code = e.exit_code;
    x.comm = bounded(e.comm, sizeof(e.comm));
    if (cb && cb->on_exit) cb->on_exit(x);
  }
  return 0;
}

}  // namespace nv::sentinel
