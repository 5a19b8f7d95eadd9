// Process-tree tracking (bpf/sentinel_tracker.bpf.c): which processes belong to which VM, syscall
// counts per VM, and exec/exit events of tracked processes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "events.h"
#include "status.h"

struct sentinel_tracker;  // bpftool skeleton
struct ring_buffer;

namespace nv::sentinel {

class Tracker {
 public:
  Tracker() = default;
  ~Tracker();
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  // open → set rodata (our own tgid is not counted unless count_self) → load → attach. Returns
  // one status per program; the tracker is usable for whatever loaded and attached.
  std::vector<ProgramStatus> load(bool count_self = false);
  bool loaded() const { return skel_ != nullptr; }

  // Tracks a VM by its VMM pid (with every descendant, existing ones found in /proc and future
  // ones through sched_process_fork) and/or by its cgroup2 dir (every member). Either may be
  // empty (vmm_pid <= 0, cgroup2_dir ""), not both.
  Status track(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir);
  // Forgets the VM: its processes, its cgroup, its counts.
  Status untrack(const std::string& vm_id);

  // Syscalls made by each tracked VM since it was tracked.
  std::map<std::string, uint64_t> syscall_counts() const;
  std::optional<uint64_t> syscall_count(const std::string& vm_id) const;

  // Attaches/detaches only the sys_enter counter (the A/B switch of the benchmark).
  Status set_counting(bool on);

  // Adds the proc_events ring to `rb` (creating it when *rb is null).
  Status add_ring(ring_buffer** rb, Callbacks* callbacks);

  // fd of the tracked_tgids map, shared with the LSM programs; -1 when not loaded.
  int tracked_tgids_fd() const;

  // Exec/exit events lost because the ring buffer was full (counted in BPF).
  uint64_t dropped_events() const;

  // VM of a slot / cgroup id, "" if unknown.
  std::string vm_of_slot(uint32_t slot) const;

 private:
  static int on_record(void* ctx, void* data, size_t size);
  Status add_tgid(pid_t tgid, uint32_t slot);
  Status fill(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir);

  struct Vm {
    uint32_t slot = 0;
    pid_t vmm_pid = 0;
    uint64_t cgroup_id = 0;
  };
  sentinel_tracker* skel_ = nullptr;
  std::map<std::string, Vm> vms_;
  std::vector<bool> slot_used_;
  Callbacks* callbacks_ = nullptr;
  std::vector<ProgramStatus> statuses_;
};

}  // namespace nv::sentinel
