// nv-bench: NeuroVisor's benchmarks, one subcommand per concern.
//
//   nv-bench bus       broker round trip and throughput vs a raw DEALER<->ROUTER pair
//   nv-bench vm        VM pool (vm_bench.cc)
//   nv-bench fork      sandboxes that live, pool side (fork_bench.cc)
//   nv-bench exec      sandbox executor (exec_bench.cc)
//   nv-bench output    guest output throughput, big vs small writes (output_bench.cc)
//   nv-bench agent     agent loop (agent_bench.cc)
//   nv-bench sentinel  eBPF sentinel overhead (sentinel_bench.cc)
//   nv-bench load      N concurrent executions through a running stack (load_bench.cc)
//   nv-bench sandbox   sandboxes that live, through the sandbox service (sandbox_bench.cc)
//   nv-bench mount     host directories: copy-in and sync through the sandbox service
//   nv-bench api       HTTP (nv-api) vs the bus, the same calls interleaved (api_bench.cc)
//   nv-bench dns       the sandbox resolver's answer latency vs the upstream (dns_bench.cc)
// Each subcommand gets argv with its own name as argv[0] and takes --help.
// Parts whose source is not in the tree yet are compiled out (tools/bench.cmake) and say so.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/interrupt.h"

int run_bus_bench(int argc, char** argv);
int run_load_bench(int argc, char** argv);
#ifdef NV_HAVE_VM_BENCH
int run_vm_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_EXEC_BENCH
int run_exec_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_FORK_BENCH
int run_fork_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_OUTPUT_BENCH
int run_output_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_AGENT_BENCH
int run_agent_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_SENTINEL_BENCH
int run_sentinel_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_SANDBOX_BENCH
int run_sandbox_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_API_BENCH
int run_api_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_MOUNT_BENCH
int run_mount_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_DNS_BENCH
int run_dns_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_NET_BENCH
int run_net_bench(int argc, char** argv);
#endif

namespace {

using RunFn = int (*)(int, char**);

struct Part {
  const char* name;
  RunFn run;  // nullptr: not built yet
  const char* what;
};

const Part kParts[] = {
    {"bus", run_bus_bench, "broker round trip and throughput vs a raw DEALER<->ROUTER pair"},
    {"load", run_load_bench, "N concurrent executions through a running stack (admission)"},
#ifdef NV_HAVE_VM_BENCH
    {"vm", run_vm_bench, "VM pool: boot, acquire and release"},
#else
    {"vm", nullptr, "VM pool: boot, acquire and release"},
#endif
#ifdef NV_HAVE_FORK_BENCH
    {"fork", run_fork_bench, "sandboxes: fork vs clone restore vs cold boot, pause, resume, PSS"},
#else
    {"fork", nullptr, "sandboxes: fork vs clone restore vs cold boot, pause, resume, PSS"},
#endif
#ifdef NV_HAVE_EXEC_BENCH
    {"exec", run_exec_bench, "sandbox executor: code execution round trip"},
#else
    {"exec", nullptr, "sandbox executor: code execution round trip"},
#endif
#ifdef NV_HAVE_OUTPUT_BENCH
    {"output", run_output_bench, "guest output throughput: one big write vs many small ones"},
#else
    {"output", nullptr, "guest output throughput: one big write vs many small ones"},
#endif
#ifdef NV_HAVE_AGENT_BENCH
    {"agent", run_agent_bench, "agent loop iterations"},
#else
    {"agent", nullptr, "agent loop iterations"},
#endif
#ifdef NV_HAVE_SENTINEL_BENCH
    {"sentinel", run_sentinel_bench, "eBPF sentinel overhead on syscalls and egress"},
#else
    {"sentinel", nullptr, "eBPF sentinel overhead on syscalls and egress"},
#endif
#ifdef NV_HAVE_SANDBOX_BENCH
    {"sandbox", run_sandbox_bench, "sandboxes that live: create, exec, context, fork, pause, PSS"},
#else
    {"sandbox", nullptr, "sandboxes that live: create, exec, context, fork, pause, PSS"},
#endif
#ifdef NV_HAVE_API_BENCH
    {"api", run_api_bench, "HTTP (nv-api) vs the bus: exec on a live sandbox, one-shot, no VM"},
#else
    {"api", nullptr, "HTTP (nv-api) vs the bus: exec on a live sandbox, one-shot, no VM"},
#endif
#ifdef NV_HAVE_MOUNT_BENCH
    {"mount", run_mount_bench, "host directories: copy-in at create, sync of changed files"},
#else
    {"mount", nullptr, "host directories: copy-in at create, sync of changed files"},
#endif
#ifdef NV_HAVE_DNS_BENCH
    {"dns", run_dns_bench, "sandbox resolver: allowed and NXDOMAIN answers vs the upstream"},
#else
    {"dns", nullptr, "sandbox resolver: allowed and NXDOMAIN answers vs the upstream"},
#endif
#ifdef NV_HAVE_NET_BENCH
    {"net", run_net_bench, "guest networking: GET and connection rate, policy vs unfiltered"},
#else
    {"net", nullptr, "guest networking: GET and connection rate, policy vs unfiltered"},
#endif
};

// Ctrl-C / SIGTERM: SIGINT and SIGTERM are blocked in every thread and taken by one thread
// here. It sets the interrupt flag (a bench's nv::Client::call then cancels its request
// upstream), stops the stack the bench started (its child processes get SIGTERM, so VMs are
// released and sockets removed), waits for them (10 s, then SIGKILL); the bench then returns
// and nv-bench exits 128 + signal (130, 143), after one line saying what was cancelled.
std::vector<pid_t> children() {
  std::vector<pid_t> out;
  std::ifstream list("/proc/self/task/" + std::to_string(::getpid()) + "/children");
  for (pid_t p; list >> p;) out.push_back(p);
  return out;
}

// Alive and not yet a zombie (its parent, the bench, may not have reaped it).
bool running(pid_t p) {
  std::ifstream stat("/proc/" + std::to_string(p) + "/stat");
  std::string pid, comm, state;
  if (!(stat >> pid >> comm >> state)) return false;
  return state != "Z";
}

void watch_signals(const char* part, sigset_t set) {
  int sig = 0;
  if (sigwait(&set, &sig) != 0) return;
  nv::interrupt::raise_flag(sig);
  std::fprintf(stderr,
               "\nnv-bench %s: %s: benchmark cancelled; stopping the processes it "
               "started\n",
               part, nv::interrupt::signal_name(sig).c_str());
  // The bench sees the flag (its nv::Client calls return `cancelled`) and returns, stopping
  // the stack it started and removing its temp dirs; main() then exits 128 + signal. A bench
  // that does not look within 3 s has its child processes stopped here instead.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  auto kids = children();
  for (pid_t p : kids) ::kill(p, SIGTERM);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (pid_t p : kids) {
    while (running(p) && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (running(p)) ::kill(p, SIGKILL);
  }
  // Let the bench finish its own clean-up (it exits the process when done), within reason.
  std::this_thread::sleep_for(std::chrono::seconds(10));
  std::fflush(stdout);
  ::_exit(128 + sig);
}

void usage(FILE* out) {
  std::fprintf(out, "usage: nv-bench SUBCOMMAND [options]   (SUBCOMMAND --help: its options)\n\n");
  for (const auto& p : kParts) {
    std::fprintf(out, "  %-9s %s%s\n", p.name, p.what, p.run ? "" : " (not built yet)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& p : kParts) {
    if (std::strcmp(argv[1], p.name) != 0) continue;
    if (!p.run) {
      std::fprintf(stderr,
                   "nv-bench %s: not built yet (tools/bench/%s_bench.cc is not in this "
                   "build)\n",
                   p.name, p.name);
      return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    // An inherited SIG_IGN (a shell's background job) would discard the signal before sigwait
    // sees it: take both back to the default first, like the other clients' handlers do.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread: all inherit the mask
    std::thread(watch_signals, p.name, set).detach();
    int rc = p.run(argc - 1, argv + 1);
    return nv::interrupt::requested() ? nv::interrupt::exit_code() : rc;
  }
  std::fprintf(stderr, "nv-bench: unknown subcommand '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
