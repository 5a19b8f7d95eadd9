// capture.h — a running VM's RAM and devices turned into a new sealed template (issue 13 §6).
//
// Today's tier templates (template_memory.h) are cold-booted VMs whose RAM lives in a memfd
// (share=on); their snapshot leaves the RAM out (x-ignore-shared) and clones map the sealed memfd
// copy-on-write. A sandbox's VM is such a clone: its RAM is a private (share=off) mapping, so a
// migration sends all of it. capture() uses that:
//   1. a receiver VMM starts on a NEW memfd (share=on, the VM's size) waiting for a migration
//      (VmSpec::incoming);
//   2. the source is paused and migrated into it over a socketpair (RAM included; zero pages
//      travel as flags and stay unallocated in the memfd) — the source's pause ends here: it
//      runs again (`cont`) while the rest happens;
//   3. the receiver saves its device state with x-ignore-shared into `state_path` (KiBs), exactly
//      as a tier template does, and quits; zero pages are freed (free_zero_pages) and the memfd
//      is sealed.
// Measured cost beyond the capture itself: QEMU's migration reads every page of the source's
// RAM, and a read of a hole of the tier template memfd (mapped by the source) allocates it: the
// first capture of a tier leaves that template fully allocated (the tier's RAM size, once,
// shared by all its clones).
// The result is a template like a tier's: clones restore `state_path` on the sealed memfd mapped
// copy-on-write (forks, lease fromSnapshot, resume). The guest's only disk is the read-only
// shared root image and all its writable state (/tmp, /home) is tmpfs in RAM, so RAM + device
// state is the whole sandbox.
//
// save_memory()/load_memory() move a template memfd to and from a sparse file (snapshots and
// paused sandboxes live on disk; zero pages stay holes). Every VMM here must be spawned by a
// thread that outlives it (its parent-death signal follows the spawning thread; pool.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend.h"
#include "template_memory.h"

namespace nv::vm {

struct CapturedVm {
  TemplateMemory memory;  // sealed
  std::string state_path;
  uint32_t vcpus = 1, memory_mib = 256;
  double pause_ms = 0;    // the source was paused this long (stop → cont)
  double capture_ms = 0;  // the whole capture
  double seal_ms = 0;     // seal_capture(): zero pages freed, then sealed
  ~CapturedVm();          // removes state_path when owned
  bool owns_state_file = true;
};

struct CaptureSpec {
  std::string receiver_id;  // a fresh VM id for the receiver VMM
  uint32_t vcpus = 1, memory_mib = 256;
  std::string kernel, rootfs;
  std::string state_path;  // where the device state is written
  // Return the all-zero pages of the new memfd to the kernel before sealing it. The receiver's
  // incoming migration reads every page it is told is zero, and a read of a tmpfs hole allocates
  // it, so without this the memfd holds the whole VM size (512 MiB for a medium VM holding
  // 175 MiB) for as long as forks map it. Costs a scan of the RAM (0.35–0.55 s for 512 MiB on
  // this loaded host); pause and snapshot skip it (their memfd is written sparse and dropped).
  // With it set, capture() returns the memfd NOT sealed: call seal_capture() before any VMM
  // maps it (restore_clones refuses an unsealed template). The seal waits (boundedly) for
  // writable shared mappings to go; TemplateMemory::seal has the rules.
  bool free_zero_pages = false;
};

// Frees the zero pages of a capture made with free_zero_pages, then seals its memfd.
Status seal_capture(CapturedVm& cap);

// See above. The source keeps running afterwards (also on failure, as far as it can).
Result<std::unique_ptr<CapturedVm>> capture(Backend& backend, RunningVm& source,
                                            const CaptureSpec& spec, Deadline deadline);

// Writes the memfd to `path` (sparse: zero pages are holes), fsynced. *allocated_bytes: what
// the file holds on disk.
Status save_memory(const TemplateMemory& memory, const std::string& path,
                   uint64_t* allocated_bytes);
// A new memfd of `bytes` filled from a save_memory() file, sealed.
Result<TemplateMemory> load_memory(const std::string& path, uint64_t bytes,
                                   const std::string& name);
// Allocated bytes of a file (st_blocks * 512), 0 when missing.
uint64_t allocated_bytes(const std::string& path);
uint64_t fd_allocated_bytes(int fd);

}  // namespace nv::vm
