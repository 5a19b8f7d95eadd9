// template_memory.h — the guest RAM of a snapshot template, shared copy-on-write by its clones.
//
// Why: restoring a QEMU snapshot by streaming its RAM into each clone costs time (every page is
// copied) and memory (every clone owns a private copy of all of it). Instead the template VM
// runs with its RAM in a memfd (memory-backend-file, share=on); its snapshot then carries only
// device state (the x-ignore-shared migration capability skips the shared RAM), and every
// clone maps the same memfd privately (share=off): pages it only reads stay shared in the page
// cache, pages it writes become its own. Restore is a few KiB of device state instead of the
// whole RAM, and an idle clone's PSS is a fraction of a cold-booted VM's.
//
// Why a sealed memfd and not a file: a clone maps the RAM with MAP_PRIVATE, but QEMU 7.2 opens
// the backing file O_RDWR (its read-only option makes guest RAM read-only too). A VMM taken
// over by its guest could then write into the file and poison every later clone. Once the
// template is gone, seal() adds F_SEAL_WRITE (plus GROW/SHRINK/SEAL): write(2), ftruncate and
// shared writable mappings of the memfd fail for everyone, while private copy-on-write mappings
// keep working. The VMM reaches it as /proc/self/fd/N (its jail mounts a procfs of its own PID
// namespace); no file is left on disk and the memory goes away with the pool manager.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "sysutil.h"

namespace nv::vm {

class TemplateMemory {
 public:
  // A memfd of `bytes` (zero-filled, nothing allocated until touched). `name` shows in
  // /proc/<pid>/maps as memfd:<name>.
  static Result<TemplateMemory> create(const std::string& name, uint64_t bytes);
  TemplateMemory() = default;

  // Adds F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL and checks they hold. The
  // kernel refuses F_SEAL_WRITE (EBUSY) while any shared mapping that may write the memfd
  // exists: the template VMM's, and also one whose process was already reaped but whose address
  // space someone still holds (a /proc/<pid>/cmdline or smaps reader such as pgrep keeps the mm
  // alive until it lets go). So call it after the template VMM is reaped; it then retries EBUSY
  // every few ms for up to `wait_for_writers` (0 = one attempt). Errors: vmFailed, retryable,
  // when a writable shared mapping outlasts the wait (the memfd stays unsealed: never hand it to
  // a clone); vmFailed/internal for other fcntl failures.
  Status seal(std::chrono::milliseconds wait_for_writers = kSealWait);
  static constexpr std::chrono::milliseconds kSealWait{5000};
  bool sealed() const;

  int fd() const { return fd_.get(); }
  uint64_t bytes() const { return bytes_; }
  bool valid() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
  uint64_t bytes_ = 0;
};

}  // namespace nv::vm
