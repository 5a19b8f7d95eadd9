// nv-bench: NeuroVisor's benchmarks, one subcommand per concern.
//
//   nv-bench bus       broker round trip and throughput vs a raw DEALER<->ROUTER pair
//   nv-bench vm        VM pool (vm_bench.cc)
//   nv-bench exec      sandbox executor (exec_bench.cc)
//   nv-bench agent     agent loop (agent_bench.cc)
//   nv-bench sentinel  eBPF sentinel overhead (sentinel_bench.cc)
//   nv-bench load      N concurrent executions through a running stack (load_bench.cc)
// Each subcommand gets argv with its own name as argv[0] and takes --help.
// Parts whose source is not in the tree yet are compiled out (tools/bench.cmake) and say so.
#include <cstdio>
#include <cstring>

int run_bus_bench(int argc, char** argv);
int run_load_bench(int argc, char** argv);
#ifdef NV_HAVE_VM_BENCH
int run_vm_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_EXEC_BENCH
int run_exec_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_AGENT_BENCH
int run_agent_bench(int argc, char** argv);
#endif
#ifdef NV_HAVE_SENTINEL_BENCH
int run_sentinel_bench(int argc, char** argv);
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
#ifdef NV_HAVE_EXEC_BENCH
    {"exec", run_exec_bench, "sandbox executor: code execution round trip"},
#else
    {"exec", nullptr, "sandbox executor: code execution round trip"},
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
};

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
      std::fprintf(stderr, "nv-bench %s: not built yet (tools/bench/%s_bench.cc is not in this "
                   "build)\n", p.name, p.name);
      return 1;
    }
    return p.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "nv-bench: unknown subcommand '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
