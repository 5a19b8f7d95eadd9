// supervisor.h — the process `nv up` leaves behind: parent of every service it starts, it
// restarts one that dies with exponential backoff, as systemd's Restart=on-failure does for the
// units in deploy/systemd.
//
// Files under RUNTIME/pids (the launcher's contract with `nv status`, `nv up` and `nv down`):
//   NAME.pid        pid of the running service NAME (rewritten at every restart)
//   NAME.failed     one line: why the supervisor gave up on NAME (exit 2 = bad options or a
//                   port in use, which a restart cannot fix; or too many quick crashes)
//   supervisor.pid  pid of the supervisor itself
//   wanted          the short names `nv up` asked for, one a line
// Signals: SIGTERM/SIGINT end the supervisor without touching the services (`nv down` stops
// those itself, in reverse start order); SIGHUP retries now every service not running, its
// backoff reset (`nv up` sends it when something is missing).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace nv::launcher {

struct ServiceEntry {
  const char* name;          // short name: log file, pid file, --only
  const char* binary;        // nv-<...> beside the launcher
  const char* registers_as;  // service name in nv.status ("" = the orchestrator itself)
  const char* role;
};

// Start order matters: the orchestrator is the hub everyone connects to; the sentinel comes
// before the pool manager so it sees the first vm.booted events; the executor after the pool
// manager whose VMs it leases. A new service is one more line here and one unit file in
// deploy/systemd/.
inline constexpr ServiceEntry kServices[] = {
    {"orchestrator", "nv-orchestrator", "", "broker, event hub, agent loop"},
    {"ebpf-sentinel", "nv-ebpf-sentinel", "ebpf-sentinel", "eBPF tracing and egress control"},
    {"metrics-exporter", "nv-metrics-exporter", "metrics-exporter", "Prometheus /metrics"},
    {"vm-pool-manager", "nv-vm-pool-manager", "vm-pool-manager", "warm microVM pool"},
    {"sandbox-executor", "nv-sandbox-executor", "exec", "runs code in microVMs"},
    {"llm-gateway", "nv-llm-gateway", "llm", "HTTP to the model server"},
    {"api", "nv-api", "api", "HTTP API (127.0.0.1:8420)"},
};

// Backoff before restart number `attempt` (1 = the first restart): 0.5 s, 1 s, 2 s, ... at most
// 30 s. A service that ran 60 s or more before dying starts again from attempt 1.
double restart_delay_s(int attempt);
// Consecutive quick deaths (each within 60 s of its start) after which the supervisor gives up.
inline constexpr int kMaxQuickRestarts = 8;

// Is `pid` a live process (a zombie is not)?
bool alive(pid_t pid);
pid_t read_pid(const std::string& path);
std::string read_file(const std::string& path);
// Forks and execs `binary` in a new session, stdout/stderr appended to `log`, stdin /dev/null,
// NV_RUNTIME_DIR set. Returns the pid, or -1.
pid_t spawn(const std::string& binary, const std::string& log, const std::string& runtime_dir);

// Runs the supervisor loop for the services named in RUNTIME/pids/wanted whose binaries are in
// `bin_dir`; returns its exit code. Started (daemonised) by `nv up`.
int supervise(const std::string& runtime_dir, const std::string& bin_dir);

}  // namespace nv::launcher
