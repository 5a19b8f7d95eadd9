// BPF LSM enforcement (bpf/sentinel_lsm.bpf.c): file_open and socket_connect for tracked VM
// processes. Kernels that refuse BPF trampoline programs (this development kernel: EPERM at
// load) get a per-program status with the errno and nothing else changes.
#pragma once

#include <string>
#include <vector>

#include "events.h"
#include "status.h"

struct sentinel_lsm;  // bpftool skeleton
struct ring_buffer;

namespace nv::sentinel {

class Tracker;

class Lsm {
 public:
  Lsm() = default;
  ~Lsm();
  Lsm(const Lsm&) = delete;
  Lsm& operator=(const Lsm&) = delete;

  // open → share the tracker's tracked_tgids map → load → attach. Needs a loaded tracker
  // (tracked_tgids_fd >= 0) to know whom to confine.
  std::vector<ProgramStatus> load(int tracked_tgids_fd);
  bool loaded() const { return skel_ != nullptr; }

  // Tracked processes may not open this file (matched by device + inode).
  Status deny_file(const std::string& path);

  Status add_ring(ring_buffer** rb, Callbacks* callbacks, const Tracker* tracker);
  uint64_t dropped_events() const;

 private:
  static int on_record(void* ctx, void* data, size_t size);

  sentinel_lsm* skel_ = nullptr;
  std::vector<ProgramStatus> statuses_;
  Callbacks* callbacks_ = nullptr;
  const Tracker* tracker_ = nullptr;
};

}  // namespace nv::sentinel
