// qemu_backend.h — VMs under qemu-system-x86_64 -M microvm, controlled over QMP.
//
// Each VM: its own cgroup (cgroup.h), its own jail (jail.h) holding the kernel and the read-only
// rootfs, a virtio-serial port "nv.agent" wired to a Unix socket server (the guest channel),
// virtio-rng, no network device, QEMU's own seccomp (-sandbox) and a QMP socket. Snapshots are
// QMP migrations into a file descriptor (QEMU may not spawn `cat` under -sandbox spawn=deny);
// restores start QEMU with `-incoming defer` and feed the file with migrate-incoming. With a
// template memfd (VmSpec::memory_fd, template_memory.h) the guest RAM is a memory-backend-file
// on /proc/self/fd/3 and both sides migrate with x-ignore-shared: the snapshot holds only
// device state, and clones map the template's RAM copy-on-write.
//
// Acceleration is decided by a real probe (probe_accel): boot the guest under KVM with a short
// deadline and keep KVM only if the agent said Hello. /dev/kvm existing proves nothing (on a
// nested-PVM host it exists and stock guests hang under it).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "backend.h"
#include "cgroup.h"
#include "network.h"

namespace nv::vm {

struct QemuConfig {
  std::string qemu_binary = "/usr/bin/qemu-system-x86_64";
  std::string runtime_dir = "/run/neurovisor";  // jails live in <runtime_dir>/vms/<vm-id>
  std::string accel = "auto";                   // auto (probe) | kvm | tcg
  // Guest kernel command line (guest/build.sh's manifest.json); QEMU appends the
  // virtio_mmio.device= entries (acpi=off).
  std::string kernel_cmdline =
      "console=ttyS0 root=/dev/vda ro rootfstype=ext4 init=/sbin/nv-guest-agent reboot=t "
      "panic=-1 quiet";
  uint32_t tcg_tb_size_mib = 64;    // TCG translation cache; QEMU's default (1 GiB) bloats RSS
  uint32_t vmm_overhead_mib = 256;  // cgroup memory limit = guest RAM + this (QEMU itself)
  uint32_t pids_max = 64;           // QEMU's threads (vCPUs, I/O workers)
  bool use_jail = true;
  bool use_cgroup = true;
  bool sandbox = true;      // QEMU -sandbox on,obsolete=deny,elevateprivileges=deny,...
  bool landlock = true;     // confine the VMM to its jail's files (when the kernel can)
  uid_t uid_base = 980000;  // VMM n runs as uid_base + n % uid_count, gid likewise
  uint32_t uid_count = 10000;
  gid_t channel_gid = 0;  // group owning the socket dir (pool manager, executor)
  CgroupLayout cgroups;   // from CgroupLayout::detect() + prepare()
  // Guest networking (network.h): every VM gets a virtio-net NIC on a TAP in its own network
  // namespace. nullptr = no NIC at all.
  std::shared_ptr<NetworkManager> network;
};

class QemuBackend : public Backend {
 public:
  explicit QemuBackend(QemuConfig config);

  std::string name() const override { return "qemu"; }
  std::string accel() const override { return accel_; }
  std::string accel_reason() const override { return accel_reason_; }
  bool supports_snapshot() const override { return true; }
  bool template_memory() const override { return true; }
  bool capture() const override { return true; }
  Result<std::unique_ptr<RunningVm>> boot(const VmSpec& spec, Deadline deadline) override;
  Result<std::unique_ptr<RunningVm>> start(const VmSpec& spec, Deadline deadline) override;

  // Decides the accelerator. With accel=auto: no usable /dev/kvm → tcg; otherwise boots `probe`
  // under KVM and calls `ready` (wait for the agent's Hello) until `probe_timeout`; KVM is kept
  // only when that succeeds. Logs the decision and the reason.
  using ReadyCheck = std::function<Status(const VmInfo&, Deadline)>;
  Status probe_accel(const VmSpec& probe, const ReadyCheck& ready,
                     std::chrono::milliseconds probe_timeout = std::chrono::seconds(15));
  // Ends a probe_accel() in progress on another thread at once (its VM is killed; the probe
  // decides tcg) and makes later probes return at once: SIGTERM during start-up.
  void abort_probe();
  // Forces the decision (tests, --accel tcg).
  void set_accel(std::string accel, std::string reason);

  // The QEMU argv for a VM (paths as seen inside the jail). Exposed for tests and logs.
  std::vector<std::string> command_line(const VmSpec& spec, bool incoming) const;

 private:
  QemuConfig cfg_;
  std::string accel_ = "tcg";
  std::string accel_reason_ = "not probed yet";
  std::atomic<uint64_t> seq_{0};
  std::atomic<bool> landlock_warned_{false};
  std::mutex probe_mu_;
  RunningVm* probe_vm_ = nullptr;  // guarded by probe_mu_
  bool probe_aborted_ = false;     // guarded by probe_mu_
};

}  // namespace nv::vm
