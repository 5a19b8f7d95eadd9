// backend.h — the interface every VMM backend (QEMU, Firecracker, test fakes) implements.
//
// A Backend boots a VM from a VmSpec (cold, or restored from a snapshot file) and returns a
// RunningVm: the VMM process (pid + pidfd), the guest channel (socket path and kind), and the
// per-VM resources it owns (cgroup, jail dir). Destroying a RunningVm stops the VMM and removes
// every resource it owns; the destructor does the same as a last resort.
//
// The pool (pool.h) only talks to this interface, so its logic is tested with a fake backend.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"  // nv::Error, nv::Result, nv::Status

namespace nv::vm {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// How the host reaches the guest agent.
enum class ChannelKind {
  unixStream,   // a Unix stream socket wired straight to the guest (QEMU virtio-serial chardev)
  hybridVsock,  // Firecracker's vsock UDS: "CONNECT <port>\n" → "OK <n>\n", then the stream
};
const char* channel_kind_name(ChannelKind kind);

// What to boot.
struct VmSpec {
  std::string vm_id;  // unique, never reused; names the jail dir and the cgroups
  uint32_t vcpus = 1;
  uint32_t memory_mib = 256;
  std::string kernel;        // host path of the guest kernel (ELF vmlinux with a PVH note)
  std::string rootfs;        // host path of the root filesystem image (attached read-only)
  std::string restore_from;  // host path of a snapshot made by RunningVm::snapshot; "" = cold
  // Guest RAM in a template memfd (template_memory.h; backends with template_memory() only):
  // memory_shared = true: the guest writes into it (the snapshot template, whose snapshot then
  // leaves the RAM out); false: mapped copy-on-write (a clone restored from that snapshot).
  // -1: anonymous RAM of the VMM's own.
  int memory_fd = -1;
  bool memory_shared = false;
  // A capture receiver (capture.h): the VMM starts waiting for its state (QEMU -incoming defer)
  // with no restore file; RunningVm::receive_state() then feeds it a running VM's migration
  // stream, RAM included, which lands in memory_fd (shared). restore_from must be "".
  bool incoming = false;
};

// What a booted VM looks like from outside.
struct VmInfo {
  std::string vm_id;
  pid_t vmm_pid = -1;  // in the pool manager's PID namespace
  ChannelKind channel_kind = ChannelKind::unixStream;
  std::string channel_path;  // host path of the guest channel socket
  uint32_t vsock_port = 0;   // hybridVsock: the guest port to CONNECT to
  std::string backend;       // "qemu" | "firecracker" | "fake"
  std::string accel;         // "kvm" | "tcg"
  bool restored = false;
  std::string jail_dir;      // "" when the backend runs without a jail
  std::string cgroup2_path;  // the VM's cgroup2 directory (egress hooks), "" if none
  double vmm_start_ms = 0;   // spawn → control channel answering
  double restore_ms = 0;     // restored VMs: state load command → guest running
  // Host path of the nv.inference port's socket (guest.capnp InferenceRequest), "" = none.
  std::string inference_path;
};

// Resource usage read from the VM's cgroup.
struct VmUsage {
  uint64_t memory_bytes = 0;
  uint64_t memory_limit_bytes = 0;
  uint64_t cpu_usage_us = 0;
  uint64_t cpu_throttled_periods = 0;  // cpu.stat nr_throttled
  uint64_t cpu_throttled_us = 0;       // v2 cpu.stat throttled_usec; v1 throttled_time (ns) / 1000
  uint32_t pids = 0;
  uint64_t oom_kills = 0;  // v2 memory.events oom_kill / v1 memory.oom_control oom_kill
};

class RunningVm {
 public:
  virtual ~RunningVm() = default;
  virtual const VmInfo& info() const = 0;
  // A descriptor that becomes readable when the VMM process exits (a pidfd for real VMMs).
  virtual int exit_fd() const = 0;
  // Non-blocking: true while the VMM process has not exited.
  virtual bool alive() = 0;
  // How the VMM ended ("exited with status 0", "killed by signal 9"), "" while alive.
  virtual std::string exit_reason() = 0;
  // Asks the VMM whether it still answers its control channel before the deadline.
  virtual Status check_responsive(Deadline deadline) = 0;
  // Pauses the guest and writes its full state to `path`; the VM stays paused afterwards.
  virtual Status snapshot(const std::string& path, Deadline deadline) = 0;
  // Stops the VMM (gracefully until `deadline`, then SIGKILL), waits for it, and removes every
  // resource it owns (cgroup dirs, jail dir, sockets). Idempotent.
  virtual Status destroy(Deadline deadline) = 0;
  // SIGKILLs the VMM at once and returns (no reaping, no cleanup: its owner's destroy() does
  // that). Safe from any thread while another one waits on the VM: the pool's stop() uses it so
  // a template or a boot in progress fails within moments instead of running to its deadline.
  virtual void kill_now() {}
  // Usage from the VM's cgroup (zeros when the backend runs without one).
  virtual Result<VmUsage> usage() = 0;
  // --- Capture (capture.h), for backends with capture(); the defaults answer badRequest.
  // Pauses the guest and migrates its whole state into `fd` (a socket or a file), RAM included
  // unless `ignore_shared` (then RAM shared with a template memfd is left out); returns when the
  // migration completed. The guest stays paused until resume_guest().
  virtual Status send_state(int fd, bool ignore_shared, Deadline deadline);
  // A VM started with VmSpec::incoming: reads a send_state() stream from `fd` and returns once
  // it is loaded (the guest paused).
  virtual Status receive_state(int fd, Deadline deadline);
  // Runs a paused guest again (after send_state, receive_state or save_device_state).
  virtual Status resume_guest(Deadline deadline);
  // Pauses the guest and writes its device state alone, no RAM at all, into `fd` (a file
  // opened for writing): every section of a migration stream but RAM's (QEMU's
  // xen-save-devices-state, docs: qapi/migration.json). A VM restored from it (VmSpec::
  // restore_from) finds its RAM in the memory it maps (capture.h, capture in place). The guest
  // stays paused until resume_guest().
  virtual Status save_device_state(int fd, Deadline deadline);
  // Second step of a restore begun with Backend::start(): loads the snapshot and runs the
  // guest. A no-op for VMs that are already running (cold boots, backends that cannot split).
  virtual Status complete_restore(Deadline /*deadline*/) { return {}; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // "kvm" | "tcg" (after probing), and why.
  virtual std::string accel() const = 0;
  virtual std::string accel_reason() const = 0;
  virtual bool supports_snapshot() const = 0;
  // Snapshots keep guest RAM in a shared template memfd (VmSpec::memory_fd) instead of the
  // snapshot file; the pool then creates, seals and hands that memfd to template and clones.
  virtual bool template_memory() const { return false; }
  // Can turn a running VM's RAM into a new template (RunningVm::send_state/receive_state/
  // resume_guest and VmSpec::incoming): forks, snapshots and pause of sandboxes (capture.h).
  virtual bool capture() const { return false; }
  // Starts the VMM and returns once its control channel answers; the guest may still be booting
  // (the pool then waits for the agent's Hello on the guest channel).
  virtual Result<std::unique_ptr<RunningVm>> boot(const VmSpec& spec, Deadline deadline) = 0;
  // A restore in two steps, so the slow one (starting the VMM process) can happen ahead of
  // time: start() brings the VMM up and, for a restore (spec.restore_from), leaves it waiting
  // for its state (QEMU: -incoming defer); RunningVm::complete_restore() then loads it. The
  // default does everything in start() (boot()), for backends that cannot split.
  virtual Result<std::unique_ptr<RunningVm>> start(const VmSpec& spec, Deadline deadline) {
    return boot(spec, deadline);
  }
};

}  // namespace nv::vm
