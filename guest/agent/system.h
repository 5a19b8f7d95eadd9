// system.h — what PID 1 does to the guest machine: ordered start-up steps, identity, power.
#pragma once

#include <string>

#include "guest/agent/session.h"

namespace nv::guest::agent {

// Mounts /proc, /sys, /dev (+pts, shm), /tmp and /run, re-opens the console on fds 0-2, brings
// up `lo`. Each step is logged with its call and errno on failure; failures do not stop the
// agent (PID 1 must keep serving, and exiting would panic the kernel).
void init_system();

// Mounts a tmpfs at `dir` (the run user's home, /home/agent) owned by uid/gid, sized like /tmp
// (50% of RAM at most; tmpfs pages are only used when written).
void mount_home(const char* dir, int uid, int gid);

// oom_score_adj = -1000 for the agent: the OOM killer picks a program instead.
void protect_from_oom();

// Real SystemOps: RNDADDENTROPY on /dev/urandom, clock_settime, sethostname + /run/nv/vm-id.
class LinuxSystemOps final : public SystemOps {
 public:
  std::string add_entropy(std::string_view bytes) override;
  std::string set_clock(int64_t unix_time_ns) override;
  std::string set_identity(const std::string& vm_id) override;
  std::string configure_network(const std::string& mac, const std::string& ipv4,
                                const std::string& gateway) override;  // netconfig.cc
  std::string boot_id() override;
  uint64_t uptime_ms() override;
};

// Ends the VM: sync, kill everything else, then reset the machine. A reset, not RB_POWER_OFF:
// QEMU microvm with acpi=off and Firecracker have no power-off device, so power-off would only
// halt the CPU and leave the VMM running. QEMU runs with -no-reboot (a reset ends the process),
// and Firecracker ends the VM on the i8042 reset. Never returns.
[[noreturn]] void power_off();

// One JSON log line on stderr (the serial console in the guest).
void log_line(const char* level, const std::string& message);

}  // namespace nv::guest::agent
