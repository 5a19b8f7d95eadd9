// nv_sentinel_core: the eBPF layer of NeuroVisor as a library. The nv-ebpf-sentinel service wraps
// it (bus events in, security.alert out); tests and benchmarks use it directly.
//
//   Sentinel s(callbacks);
//   for (auto& p : s.load()) log(p);          // per program: loaded? attached? errno, detail
//   s.track_vm("vm-1", vmm_pid, "/sys/fs/cgroup/unified/nv/vm-1");
//   s.attach_egress("/sys/fs/cgroup/unified/nv/vm-1", EgressPolicy{}, "vm-1");
//   while (running) s.poll(100);              // callbacks fire from here
//   s.syscall_counts();                       // {"vm-1": 123456}
//
// Lifecycle per BPF object: open → set rodata → load (whole object, else program by program)
// → attach → ring buffer poll → destroy; the destructor is the one cleanup path (ring buffer,
// then links, then objects). Without LoadOptions::pin_dir nothing is pinned, so a crashed
// sentinel leaves nothing attached; with it, egress links and policy maps are pinned and keep
// enforcing after the process dies (the service runs that way: issue 11, finding 4).
// Needs CAP_BPF + CAP_PERFMON (+ CAP_NET_ADMIN for cgroup programs, CAP_MAC_ADMIN for LSM) or
// root. No exceptions cross this API. Not thread-safe: use one thread (or lock around it).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "egress_policy.h"
#include "events.h"
#include "status.h"

struct ring_buffer;

namespace nv::sentinel {

class Tracker;
class Egress;
class Lsm;

struct LoadOptions {
  bool tracker = true;  // sentinel_tracker: syscall counts, exec/exit (tp_btf)
  bool egress = true;   // sentinel_egress: cgroup/connect4|6, cgroup/sendmsg4|6
  bool lsm = true;      // sentinel_lsm: lsm/file_open, lsm/socket_connect (needs the tracker)
  // The loading process's own syscalls are never counted, even if it is in a tracked tree
  // (the sentinel polling its maps is not VM activity). Benchmarks that measure the counter
  // on themselves set this to true.
  bool count_self = false;
  // A dir in a bpffs: egress links and policy maps are pinned there, so enforcement outlives
  // this process (Egress::set_pin_dir). "" = nothing pinned.
  std::string pin_dir;
};

class Sentinel {
 public:
  explicit Sentinel(Callbacks callbacks = {});
  ~Sentinel();
  Sentinel(const Sentinel&) = delete;
  Sentinel& operator=(const Sentinel&) = delete;

  // Loads and attaches what the kernel accepts; returns (and keeps) one status per program.
  // Programs the kernel refuses are reported with their errno; the rest keeps working.
  std::vector<ProgramStatus> load(const LoadOptions& options = {});
  const std::vector<ProgramStatus>& programs() const { return programs_; }
  // Status of one program by name ("nv_sys_enter", "nv_connect4", "nv_file_open", ...).
  std::optional<ProgramStatus> program(const std::string& name) const;

  // --- VM tracking (syscall counts, exec alerts, exits) -----------------------------------
  // By VMM pid (+ all its descendants) and/or by cgroup2 dir (+ all its members).
  Status track_vm(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir);
  Status untrack_vm(const std::string& vm_id);
  std::map<std::string, uint64_t> syscall_counts() const;
  std::optional<uint64_t> syscall_count(const std::string& vm_id) const;
  // Attach/detach only the per-syscall counter (benchmark A/B; tracking stays).
  Status set_syscall_counting(bool on);

  // --- Egress ------------------------------------------------------------------------------
  // Attaches the egress programs to a cgroup2 dir with `policy` (default: the default deny
  // list). vm_id is reported with its denials.
  Status attach_egress(const std::string& cgroup2_dir, const EgressPolicy& policy = {},
                       const std::string& vm_id = {});
  Status detach_egress(const std::string& cgroup2_dir);
  Status egress_set_rule(const std::string& cgroup2_dir, const EgressRule& rule);
  Status egress_remove_rule(const std::string& cgroup2_dir, const std::string& cidr);
  std::vector<EgressRule> egress_rules(const std::string& cgroup2_dir) const;
  // With LoadOptions::pin_dir: removes pins of cgroups that are gone (after catching up with
  // the live VMs); returns how many. Egress::sweep_stale_pins.
  size_t sweep_egress_pins();
  // With LoadOptions::pin_dir, on a clean stop: unpins what is gone, keeps live VMs' pins,
  // removes the pin dir when empty; returns how many cgroups stay pinned. Egress::release_pins.
  size_t release_egress_pins();

  // --- BPF LSM (where the kernel accepts it) ----------------------------------------------
  Status lsm_deny_file(const std::string& path);

  // --- Events ------------------------------------------------------------------------------
  // Waits up to timeout_ms (-1: forever, 0: just drain) for ring buffer records and delivers
  // them to the callbacks. Returns the number delivered, or -1 with *error set.
  int poll(int timeout_ms, Status* error = nullptr);
  // An epoll fd that becomes readable when records are waiting (for an outside event loop);
  // -1 when no ring buffer exists.
  int event_fd() const;
  uint64_t events_delivered() const { return events_delivered_; }
  // Events the BPF programs could not queue because a ring buffer was full (each program counts
  // its own; the enforcement decision is never affected).
  uint64_t events_dropped() const;

 private:
  Callbacks callbacks_;
  std::unique_ptr<Tracker> tracker_;
  std::unique_ptr<Egress> egress_;
  std::unique_ptr<Lsm> lsm_;
  ring_buffer* rb_ = nullptr;
  std::vector<ProgramStatus> programs_;
  uint64_t events_delivered_ = 0;
};

}  // namespace nv::sentinel
