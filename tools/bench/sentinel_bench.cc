// nv-bench sentinel: what the sentinel's BPF programs cost, measured side by side in one run.
//
//   getppid/baseline           sys_enter counter detached
//   getppid/counter_untracked  counter attached, this process not tracked (what every process on
//                              the host pays: one hash lookup per syscall)
//   getppid/counter_tracked    counter attached, this process tracked as a VM (lookup + count)
//   ring/egress_denials        UDP sendto to a denied loopback address from a VM cgroup: BPF
//                              refuses it, writes an event to the ring buffer, the loader delivers
//                              it to a callback; events/s end to end
//
// After the runs it prints the ratios to the baseline. Needs root (BPF, cgroup2). Loopback only.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "sentinel.h"

namespace {

namespace s = nv::sentinel;

struct BenchState {
  std::unique_ptr<s::Sentinel> sentinel;
  uint64_t denials = 0;
  std::string cgroup_root;  // cgroup2 mount
  std::string cgroup_dir;   // our VM stand-in
  std::string home_cgroup;  // where this process was
};
BenchState* g = nullptr;

std::string cgroup2_root() {
  for (const char* c : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct statfs sfs {};
    if (statfs(c, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) return c;
  }
  return "";
}

// This process's cgroup2 path ("0::/x" line of /proc/self/cgroup).
std::string own_cgroup2(const std::string& root) {
  std::ifstream f("/proc/self/cgroup");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("0::", 0) == 0) return root + line.substr(3);
  return root;
}

bool join(const std::string& dir) {
  int fd = open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, "0", 1) == 1;
  close(fd);
  return ok;
}

enum class Mode { kBaseline, kUntracked, kTracked };

void BM_getppid(benchmark::State& state, Mode mode) {
  s::Status st = g->sentinel->set_syscall_counting(mode != Mode::kBaseline);
  if (!st.ok()) {
    state.SkipWithError(st.text().c_str());
    return;
  }
  if (mode == Mode::kTracked) {
    st = g->sentinel->track_vm("bench", getpid(), "");
    if (!st.ok()) {
      state.SkipWithError(st.text().c_str());
      return;
    }
  }
  for (auto _ : state) benchmark::DoNotOptimize(syscall(SYS_getppid));
  if (mode == Mode::kTracked) {
    auto n = g->sentinel->syscall_count("bench");
    state.counters["counted"] = static_cast<double>(n.value_or(0));
    (void)g->sentinel->untrack_vm("bench");
  }
  (void)g->sentinel->set_syscall_counting(false);
}

// One iteration = kBatch denied sendto()s and the wait until all kBatch events were delivered.
void BM_ring_events(benchmark::State& state) {
  constexpr int kBatch = 1000;
  if (g->cgroup_dir.empty()) {
    state.SkipWithError("no cgroup2 dir for the egress programs");
    return;
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(9);  // discard; never sent: the egress program refuses it
  inet_pton(AF_INET, "127.0.0.2", &dst.sin_addr);
  // Join first: a socket belongs to the cgroup it was created in, and that decides which cgroup
  // programs see it.
  if (!join(g->cgroup_dir)) {
    state.SkipWithError("joining the bench cgroup failed");
    return;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    join(g->home_cgroup);
    state.SkipWithError("socket failed");
    return;
  }
  uint64_t lost = 0, sent_ok = 0;
  const uint64_t dropped0 = g->sentinel->events_dropped();
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t want = g->denials + kBatch;
    for (int i = 0; i < kBatch; ++i) {
      if (sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 1) sent_ok++;
      if ((i & 255) == 255) g->sentinel->poll(0);  // drain as we go: the ring holds ~3000
    }
    auto deadline = t0 + std::chrono::seconds(2);
    while (g->denials < want && std::chrono::steady_clock::now() < deadline) g->sentinel->poll(10);
    if (g->denials < want) {
      lost += want - g->denials;
      g->denials = want;
    }
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  join(g->home_cgroup);
  close(fd);
  state.counters["events_per_s"] =
      benchmark::Counter(kBatch, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lost"] = static_cast<double>(lost);
  state.counters["ring_full"] = static_cast<double>(g->sentinel->events_dropped() - dropped0);
  // A sendto that went through means the egress program did not refuse it: not an event.
  state.counters["not_refused"] = static_cast<double>(sent_ok);
}

// Keeps the per-iteration times to print the ratios after the console output.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter()
      : ConsoleReporter(isatty(STDOUT_FILENO) ? static_cast<OutputOptions>(OO_Tabular | OO_Color)
                                              : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs)
      if (!r.error_occurred && r.iterations > 0)
        ns_[r.benchmark_name()] = {r.GetAdjustedRealTime(), r.GetAdjustedCPUTime()};
    ConsoleReporter::ReportRuns(runs);
  }
  // Ratios against the mean of both baselines, by CPU time (less sensitive to a busy host than
  // wall time) and by wall time.
  void PrintRatios() const {
    auto get = [&](const std::string& n) {
      auto it = ns_.find(n);
      return it == ns_.end() ? std::pair<double, double>{0, 0} : it->second;
    };
    auto b1 = get("sentinel/getppid/baseline"), b2 = get("sentinel/getppid/baseline_again");
    int nb = (b1.second > 0) + (b2.second > 0);
    if (nb == 0) return;
    double base_real = (b1.first + b2.first) / nb, base_cpu = (b1.second + b2.second) / nb;
    for (const char* n :
         {"sentinel/getppid/counter_untracked", "sentinel/getppid/counter_tracked"}) {
      auto v = get(n);
      if (v.second > 0)
        printf("ratio %-36s cpu %.2fx (%.0f vs %.0f ns)  wall %.2fx (%.0f vs %.0f ns)\n", n,
               v.second / base_cpu, v.second, base_cpu, v.first / base_real, v.first, base_real);
    }
  }

 private:
  std::map<std::string, std::pair<double, double>> ns_;  // name -> (real ns, cpu ns)
};

}  // namespace

int run_sentinel_bench(int argc, char** argv) {
  BenchState state;
  g = &state;
  s::Callbacks cb;
  cb.on_egress_denial = [](const s::EgressDenial&) { g->denials++; };
  s::LoadOptions opts;
  opts.lsm = false;        // not exercised here
  opts.count_self = true;  // the benchmark measures the counter on itself
  state.sentinel = std::make_unique<s::Sentinel>(cb);
  bool ok = true;
  for (const s::ProgramStatus& p : state.sentinel->load(opts)) {
    printf("program %-18s loaded=%d errno=%d %s\n", p.name.c_str(), p.loaded, p.errnum,
           p.detail.c_str());
    if (p.name == "nv_sys_enter" && !p.loaded) ok = false;
  }
  if (!ok) {
    fprintf(stderr, "sentinel bench: nv_sys_enter did not load; run as root\n");
    g = nullptr;
    return 1;
  }
  (void)state.sentinel->set_syscall_counting(false);

  state.cgroup_root = cgroup2_root();
  if (!state.cgroup_root.empty()) {
    state.home_cgroup = own_cgroup2(state.cgroup_root);
    std::string dir = state.cgroup_root + "/nv-bench-sentinel-" + std::to_string(getpid());
    if (mkdir(dir.c_str(), 0755) == 0) {
      s::EgressPolicy policy;
      policy.rules.push_back({"127.0.0.2/32", s::EgressAction::kDeny, "bench: loopback stand-in"});
      s::Status st = state.sentinel->attach_egress(dir, policy, "bench");
      if (st.ok()) {
        state.cgroup_dir = dir;
      } else {
        fprintf(stderr, "sentinel bench: %s\n", st.text().c_str());
        rmdir(dir.c_str());
      }
    }
  }

  // Registration order is run order: baseline, then both attached variants, then baseline
  // again, so drift during the run shows up as two different baselines.
  benchmark::RegisterBenchmark("sentinel/getppid/baseline", BM_getppid, Mode::kBaseline);
  benchmark::RegisterBenchmark("sentinel/getppid/counter_untracked", BM_getppid, Mode::kUntracked);
  benchmark::RegisterBenchmark("sentinel/getppid/counter_tracked", BM_getppid, Mode::kTracked);
  benchmark::RegisterBenchmark("sentinel/getppid/baseline_again", BM_getppid, Mode::kBaseline);
  benchmark::RegisterBenchmark("sentinel/ring/egress_denials", BM_ring_events)->UseManualTime();

  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();

  if (!state.cgroup_dir.empty()) {
    (void)state.sentinel->detach_egress(state.cgroup_dir);
    rmdir(state.cgroup_dir.c_str());
  }
  state.sentinel.reset();
  g = nullptr;
  return 0;
}

#ifdef NV_SENTINEL_BENCH_MAIN
int main(int argc, char** argv) { return run_sentinel_bench(argc, argv); }
#endif
