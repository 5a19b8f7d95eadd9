// capture.h — a running VM's RAM and devices turned into a new sealed template (issue 13 §6).
//
// Tier templates (template_memory.h) are cold-booted VMs whose RAM lives in a memfd (share=on);
// their snapshot leaves the RAM out (x-ignore-shared) and clones map the sealed memfd
// copy-on-write. A sandbox's VM is such a clone: its RAM is the tier template plus the pages it
// wrote since (anonymous copy-on-write pages in its VMM). capture() turns that into a template of
// its own, by one of two paths.
//
// Capture in place (the path taken whenever the source is such a clone):
//   1. the new memfd starts as a copy of the template: a TemplateCopy made ahead (the pool's fork
//      kits, fork_kit.cc) or a sparse copy made now, before the source pauses;
//   2. the source is paused and its device state alone is saved (RunningVm::save_device_state:
//      QEMU's xen-save-devices-state, every section of a migration stream but RAM's);
//   3. /proc/<vmm>/pagemap names the pages the source wrote (present and not file-backed, or
//      swapped: Documentation/admin-guide/mm/pagemap.rst); they are read from /proc/<vmm>/mem
//      into the new memfd at the same offsets (into a buffer, then pwrite(2): measured here,
//      faster than reading into a shared mapping of the new memfd, whose page faults dominate);
//   4. the source runs again; the memfd is sealed.
// The pause costs the device state plus the pages the sandbox wrote, not a pass over all of its
// RAM. Reading a VMM's memory needs ptrace access to it (CAP_SYS_PTRACE: VMMs run under their
// own uids); without it, captures migrate.
//
// By migration (cold-booted sources, or no ptrace access):
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
//
// Either way the result is a template like a tier's: clones restore `state_path` on the sealed
// memfd mapped copy-on-write (forks, lease fromSnapshot, resume). The guest's only disk is the
// read-only shared root image and all its writable state (/tmp, /home) is tmpfs in RAM, so RAM +
// device state is the whole sandbox. Device states of every VM are written without QEMU's
// configuration section (-global migration.send-configuration=off, qemu_backend.cc) so that
// both kinds load alike; files written before that setting do not load.
//
// save_memory()/load_memory() move a template memfd to and from a sparse file (snapshots and
// paused sandboxes live on disk; zero pages stay holes). Every VMM here must be spawned by a
// thread that outlives it (its parent-death signal follows the spawning thread; pool.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "backend.h"
#include "template_memory.h"

namespace nv::vm {

// A copy of a sealed template made ahead for a capture in place (the Pool's fork kits): a new
// memfd, not sealed, zero pages left out, and the inode of the template memfd it copies.
struct TemplateCopy {
  TemplateMemory memory;
  ino_t base_ino = 0;
};
// Copies the template memfd `base_fd` (sealed; `bytes` long) into a new memfd named `name`.
Result<TemplateCopy> copy_template(int base_fd, uint64_t bytes, const std::string& name);

struct CapturedVm {
  TemplateMemory memory;  // sealed
  std::string state_path;
  uint32_t vcpus = 1, memory_mib = 256;
  double pause_ms = 0;    // the source was paused this long (stop → cont)
  double capture_ms = 0;  // the whole capture
  double seal_ms = 0;     // seal_capture(): zero pages freed, then sealed
  // Capture in place: the source VMM and where it maps the RAM; the memory came from a spare;
  // the template copy's time (before the pause); the source's own pages copied while paused.
  bool in_place = false;
  pid_t source_pid = -1;
  UniqueFd source_mem, source_pagemap;  // /proc/<vmm>/mem and pagemap, opened by begin
  uint64_t ram_start = 0;
  bool from_spare = false;
  double template_copy_ms = 0;
  uint64_t written_bytes = 0;
  ~CapturedVm();  // removes state_path when owned
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

// Capture in place in two steps, so a caller can start the VMMs that will map the memory
// between them (a fork: the VMMs get the memfd before it is sealed, and no guest runs on it
// before finish() sealed it). begin: finds the source's private template mapping and fills a
// new memfd with the template: `*spare` when it copies that template (it is then moved out),
// else a copy made now; returns a null pointer (no error) when the source's RAM is no such
// mapping or its memory cannot be read (no CAP_SYS_PTRACE): use capture() then. The state file
// is created (empty) and the memory is NOT sealed yet. finish: pauses the source, saves its
// device state to cap.state_path, copies the pages it wrote, runs it again, seals the memory.
Result<std::unique_ptr<CapturedVm>> begin_capture_in_place(RunningVm& source,
                                                           const CaptureSpec& spec,
                                                           std::optional<TemplateCopy>* spare);
Status finish_capture_in_place(RunningVm& source, CapturedVm& cap, Deadline deadline);
// True once reading a VMM's memory was refused (no CAP_SYS_PTRACE): every capture then migrates,
// and the pool stops making fork kits, which only a capture in place uses.
bool capture_in_place_refused();

// See above: in place when the source's RAM is a private mapping of a template memfd, else by
// migration. The source keeps running afterwards (also on failure, as far as it can).
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
