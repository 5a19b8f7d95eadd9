// nv-bench sandbox — sandboxes that live, through the public bus interface, side by side in one
// run (issue 13's targets):
//   create        sandbox.create from the warm pool (the bench waits for a warm VM first)
//   exec live     python print(1) as a new process in a live sandbox (sandbox.exec), vs
//   exec fresh    the same through "exec": a fresh warm VM per run (what nv-exec does);
//                 target: live ≤ 0.5× fresh (p50)
//   context       print(1) in a live python context (sandbox.exec with a context); target ≤ 50 ms
//   fork          sandbox.fork of the live sandbox, one fork per call, vs
//   clone restore Lease.bootMs of warm clones leased from the pool (vm.lease), vs
//   cold boot     Lease.bootMs from a second pool manager started with --no-snapshot;
//                 target: fork ≤ 2× clone restore (p50)
//   pause, resume sandbox.pause / sandbox.resume of the live sandbox
//   PSS           of the VMM of an idle sandbox and of an idle fork (/proc/<pid>/smaps_rollup;
//                 the pid from the pool's vm.booted events, else the VMM named nv-<vm id>)
// It starts its own orchestrator, pool manager (small tier, --warm 2 --max 6) and executor in a
// temp runtime dir with the binaries beside nv-bench, or attaches to a running stack
// (--runtime-dir; the cold-boot pool is then still its own).
#include <nv/schema/events.capnp.h>
#include <nv/schema/exec.capnp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_stack.h"
#include "common/client.h"
#include "common/events.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/sandbox_client.h"
#include "pool_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace s = nv::schema;
namespace sb = nv::sandbox;

struct BenchArgs {
  int runs = 10;
  int fork_runs = 5;
  int cold_runs = 3;
  std::string runtime_dir, kernel, rootfs, accel = "tcg";
};

const char* kHelp =
    "usage: nv-bench sandbox [--runs N] [--fork-runs N] [--cold-runs N] [--runtime-dir RT]\n"
    "                        [--kernel VMLINUX --rootfs ROOTFS --accel tcg|kvm|auto]\n"
    "Sandboxes that live, side by side in one run: create from the warm pool; print(1) in a live\n"
    "sandbox vs a fresh VM (nv-exec's path) and in a live python context; fork vs a clone restore\n"
    "vs a cold boot; pause and resume; PSS of an idle sandbox and of an idle fork.\n"
    "  --runs N        runs of create, exec and context (default 10)\n"
    "  --fork-runs N   forks (default 5); pauses and resumes as many\n"
    "  --cold-runs N   cold boots from a --no-snapshot pool (default 3; 0: skip)\n"
    "  --runtime-dir   attach to a running stack (./nv up) instead of starting one\n";

using nv::bench::ms;
using nv::bench::pct;

bool parse(int argc, char** argv, BenchArgs* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--help" || k == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (k == "--runs") {
      a->runs = std::clamp(std::atoi(next().c_str()), 1, 1000);
    } else if (k == "--fork-runs") {
      a->fork_runs = std::clamp(std::atoi(next().c_str()), 1, 100);
    } else if (k == "--cold-runs") {
      a->cold_runs = std::clamp(std::atoi(next().c_str()), 0, 100);
    } else if (k == "--runtime-dir") {
      a->runtime_dir = next();
    } else if (k == "--kernel") {
      a->kernel = next();
    } else if (k == "--rootfs") {
      a->rootfs = next();
    } else if (k == "--accel") {
      a->accel = next();
    } else {
      std::fprintf(stderr, "nv-bench sandbox: unknown option %s\n%s", k.c_str(), kHelp);
      return false;
    }
  }
  return true;
}

// Pss of a process in MiB (smaps_rollup), 0 when it cannot be read.
double pss_mib(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("Pss:", 0) == 0) return std::atof(line.c_str() + 4) / 1024;
  }
  return 0;
}

// VMM pids the pool announced (vm.booted), read off the event stream between steps.
struct Booted {
  nv::EventSubscriber sub;
  std::map<std::string, pid_t> pids;
  std::map<std::string, bool> restored;  // from a snapshot (a clone) or booted cold
  Booted(zmq::context_t& ctx, const std::string& endpoint) : sub(ctx, endpoint, {"vm.booted"}) {}
  void drain() {
    while (auto e = sub.receive(0ms)) {
      if (!e->event.isVmBooted()) continue;
      auto b = e->event.getVmBooted();
      pids[b.getVmId().cStr()] = static_cast<pid_t>(b.getVmmPid());
      restored[b.getVmId().cStr()] = b.getRestored();
    }
  }
  pid_t pid_of(const std::string& vm_id) {
    drain();
    if (auto it = pids.find(vm_id); it != pids.end()) return it->second;
    return nv::bench::vmm_pid_by_name(vm_id);
  }
};

bool wait_warm(nv::exec::PoolClient& pool, uint32_t want, std::chrono::seconds limit) {
  for (auto end = Clock::now() + limit; Clock::now() < end && !nv::interrupt::requested();) {
    auto st = pool.status(2000ms);
    if (st && st->warm >= want && st->booting == 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Cold boots: Lease.bootMs from a pool manager of its own with --no-snapshot.
std::vector<double> cold_boots(zmq::context_t& ctx, const BenchArgs& a, const std::string& rt,
                               std::string* why) {
  std::vector<double> out;
  if (a.cold_runs == 0) return out;
  nv::bench::OwnStack cold;
  namespace fs = std::filesystem;
  fs::path bin_dir = fs::read_symlink("/proc/self/exe").parent_path();
  fs::path build =
      std::getenv("NV_BUILD_DIR") ? fs::path(std::getenv("NV_BUILD_DIR")) : bin_dir.parent_path();
  std::string kernel = a.kernel.empty() ? (build / "guest/vmlinux").string() : a.kernel;
  std::string rootfs = a.rootfs.empty() ? (build / "guest/rootfs.ext4").string() : a.rootfs;
  cold.dir = rt + "-cold";
  fs::create_directories(cold.dir);
  cold.pids = {
      nv::bench::spawn((bin_dir / "nv-vm-pool-manager").string(),
                       {"--kernel", kernel, "--rootfs", rootfs, "--size", "small", "--warm", "1",
                        "--max", "1", "--no-snapshot", "--accel", a.accel, "--no-require-egress"},
                       cold.dir, cold.dir + "/pool.log")};
  nv::exec::PoolClient pool(ctx, {nv::bus::ipc_endpoint(cold.dir + "/vm-pool.sock"), {}, {}, {}});
  for (int i = 0; i < a.cold_runs && !nv::interrupt::requested(); ++i) {
    if (!wait_warm(pool, 1, 300s)) {
      *why = "the --no-snapshot pool booted no VM within 300 s (" + cold.dir + "/pool.log)";
      break;
    }
    auto l = pool.lease("bench", s::SizeTier::SMALL, 60s);
    if (!l) {
      *why = "cold lease: " + l.error().to_string();
      break;
    }
    out.push_back(l->boot_ms);
    (void)pool.release("bench", l->vm_id, "bench");
  }
  return out;
}

void row(const char* what, const std::vector<double>& v, const char* unit = "ms") {
  if (v.empty()) {
    std::printf("  %-46s %10s %10s   (not measured)\n", what, "-", "-");
    return;
  }
  std::printf("  %-46s %10.1f %10.1f %s  (n=%zu)\n", what, pct(v, 0.5), pct(v, 0.95), unit,
              v.size());
}

void ratio(const char* what, double num, double den, double target, const char* cmp) {
  if (num <= 0 || den <= 0) {
    std::printf("  %-46s %10s   (a side was not measured)\n", what, "-");
    return;
  }
  double r = num / den;
  bool met = std::string(cmp) == "<=" ? r <= target : r >= target;
  std::printf("  %-46s %9.2fx   target %s %.2fx: %s\n", what, r, cmp, target,
              met ? "met" : "NOT met");
}

}  // namespace

int run_sandbox_bench(int argc, char** argv) {
  BenchArgs a;
  if (!parse(argc, argv, &a)) return 2;
  nv::bench::OwnStack own;
  std::string rt =
      nv::bench::start_exec_stack("sandbox", own, a.runtime_dir, a.kernel, a.rootfs, a.accel, 2, 6);
  if (rt.empty()) return 1;
  zmq::context_t ctx(1);
  nv::ClientOptions co{nv::bus::ipc_endpoint(rt + "/clients.sock"), {}, {}, {}};
  nv::Client client(ctx, co);
  nv::exec::PoolClient pool(ctx, {nv::bus::ipc_endpoint(rt + "/vm-pool.sock"), {}, {}, {}});
  Booted booted(ctx, nv::bus::ipc_endpoint(rt + "/events.sock"));
  if (!nv::bench::wait_exec_ready(client, 300s)) {
    if (nv::interrupt::requested()) return 1;
    std::fprintf(stderr, "nv-bench sandbox: no executor with capacity within 300 s (see %s)\n",
                 (rt + "/stack.log").c_str());
    return 1;
  }
  sb::SandboxClient sbx(client, "bench:" + std::to_string(::getpid()), {120s, {}});
  std::vector<double> create, live, fresh, context, fork, clone, pause, resume;
  std::vector<double> pss_sandbox, pss_fork;
  std::vector<std::string> failures;
  auto failed = [&](const std::string& what, const nv::Error& e) {
    failures.push_back(what + ": " + e.to_string());
    std::fprintf(stderr, "nv-bench sandbox: %s: %s\n", what.c_str(), e.to_string().c_str());
  };
  const uint32_t quiet_warm = a.runtime_dir.empty() ? 2 : 1;

  // create: from the warm pool, each destroyed after (not timed). The last one stays: "live".
  std::string live_id;
  for (int i = 0; i <= a.runs && !nv::interrupt::requested(); ++i) {
    if (!wait_warm(pool, quiet_warm, 300s)) {
      failures.push_back("no warm VM within 300 s");
      break;
    }
    auto t0 = Clock::now();
    auto info = sbx.create({});
    double d = ms(Clock::now() - t0);
    if (!info) {
      failed("create", info.error());
      continue;
    }
    if (i > 0) create.push_back(d);  // run 0 warms host-side caches
    if (i < a.runs) {
      (void)sbx.destroy(info->sandbox_id);
    } else {
      live_id = info->sandbox_id;
    }
  }
  if (live_id.empty()) {
    std::fprintf(stderr, "nv-bench sandbox: no sandbox could be made\n");
    return 1;
  }

  // exec: a live sandbox vs a fresh VM per run, interleaved; then the python context.
  sb::ExecSpec print1;
  print1.language = s::Language::PYTHON;
  print1.code = "print(1)";
  print1.timeout_ms = 30000;
  for (int i = 0; i <= a.runs && !nv::interrupt::requested(); ++i) {
    auto t0 = Clock::now();
    auto r = sbx.exec(live_id, print1);
    double d = ms(Clock::now() - t0);
    if (!r || r->exit_code != 0) {
      failed("live exec", r ? nv::make_error(nv::ErrorCode::INTERNAL, "exit code") : r.error());
    } else if (i > 0) {
      live.push_back(d);
    }
    if (!wait_warm(pool, quiet_warm, 300s)) break;
    capnp::MallocMessageBuilder mb;
    auto req = nv::bus::init_body<s::ExecRequest>(mb);
    req.setLanguage(s::Language::PYTHON);
    req.setCode("print(1)");
    req.setTimeoutMs(30000);
    t0 = Clock::now();
    auto f = client.call("exec", &mb, 90s);
    d = ms(Clock::now() - t0);
    if (!f) {
      failed("fresh exec", f.error());
    } else if (i > 0) {
      fresh.push_back(d);
    }
  }
  sb::ExecSpec ctx_print = print1;
  ctx_print.context = "bench";
  for (int i = 0; i <= a.runs && !nv::interrupt::requested(); ++i) {
    auto t0 = Clock::now();
    auto r = sbx.exec(live_id, ctx_print);
    double d = ms(Clock::now() - t0);
    if (!r || r->exit_code != 0) {
      failed("context exec", r ? nv::make_error(nv::ErrorCode::INTERNAL, "exit code") : r.error());
    } else if (i > 0) {  // run 0 starts the interpreter
      context.push_back(d);
    }
  }

  // PSS of the idle live sandbox's VMM.
  std::this_thread::sleep_for(2s);
  if (auto info = sbx.get(live_id); info) {
    pss_sandbox.push_back(pss_mib(booted.pid_of(info->vm_id)));
  }

  // fork, one at a time; the first fork's PSS once idle; every fork destroyed after. As a clone
  // lease finds its clone restored ahead, each fork finds its fork kit made ahead (vm.status).
  int forks_with_kit = 0;
  for (int i = 0; i < a.fork_runs && !nv::interrupt::requested(); ++i) {
    for (auto until = Clock::now() + 60s; Clock::now() < until;) {
      auto st = pool.status(2000ms);
      if (st && st->fork_kits >= 1) {
        ++forks_with_kit;
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    auto t0 = Clock::now();
    auto f = sbx.fork(live_id, 1);
    double d = ms(Clock::now() - t0);
    if (!f || f->empty()) {
      failed("fork", f ? nv::make_error(nv::ErrorCode::INTERNAL, "no fork") : f.error());
      continue;
    }
    fork.push_back(d);
    if (i == 0) {
      std::this_thread::sleep_for(2s);
      pss_fork.push_back(pss_mib(booted.pid_of((*f)[0].vm_id)));
    }
    for (auto& x : *f) (void)sbx.destroy(x.sandbox_id);
  }

  // pause and resume of the live sandbox.
  for (int i = 0; i < a.fork_runs && !nv::interrupt::requested(); ++i) {
    auto t0 = Clock::now();
    auto p = sbx.pause(live_id);
    double d = ms(Clock::now() - t0);
    if (!p) {
      failed("pause", p.error());
      break;
    }
    pause.push_back(d);
    t0 = Clock::now();
    auto r = sbx.resume(live_id);
    d = ms(Clock::now() - t0);
    if (!r) {
      failed("resume", r.error());
      break;
    }
    resume.push_back(d);
  }
  if (auto r = sbx.exec(live_id, ctx_print); !r || r->stdout_data != "1\n") {
    failures.push_back("the context did not answer after pause and resume");
  }
  (void)sbx.destroy(live_id);

  // Clone restores: Lease.bootMs of warm clones, straight from the pool (vm.lease).
  for (int i = 0; i < a.runs && !nv::interrupt::requested(); ++i) {
    if (!wait_warm(pool, quiet_warm, 300s)) break;
    auto l = pool.lease("bench", s::SizeTier::SMALL, 60s);
    if (!l) {
      failed("clone lease", l.error());
      continue;
    }
    booted.drain();  // its vm.booted event says whether it is a clone of the tier template
    if (l->restored || booted.restored[l->vm_id]) clone.push_back(l->boot_ms);
    (void)pool.release("bench", l->vm_id, "bench");
  }
  std::string cold_why;
  std::vector<double> cold = cold_boots(ctx, a, rt, &cold_why);
  if (!cold_why.empty()) failures.push_back(cold_why);

  auto st = pool.status(2000ms);
  std::printf("nv-bench sandbox: small tier, backend %s accel %s, %d runs (%d forks)\n",
              st ? st->backend.c_str() : "?", st ? st->accel.c_str() : "?", a.runs, a.fork_runs);
  std::printf("  %-46s %10s %10s\n", "", "p50", "p95");
  row("create from the warm pool", create);
  row("exec print(1), live sandbox (new process)", live);
  row("exec print(1), fresh VM per run (nv-exec)", fresh);
  row("print(1) in a live python context", context);
  row("fork (1 copy of a running sandbox)", fork);
  std::printf("    (%d of %zu forks found a fork kit ready)\n", forks_with_kit, fork.size());
  row("clone restore (vm.lease bootMs)", clone);
  row("cold boot (--no-snapshot pool, bootMs)", cold);
  row("pause", pause);
  row("resume", resume);
  row("PSS of an idle sandbox's VMM", pss_sandbox, "MiB");
  row("PSS of an idle fork's VMM", pss_fork, "MiB");
  ratio("exec live / fresh VM (p50)", pct(live, 0.5), pct(fresh, 0.5), 0.5, "<=");
  ratio("print(1) in a context / 50 ms (p50)", pct(context, 0.5), 50, 1.0, "<=");
  ratio("fork / clone restore (p50)", pct(fork, 0.5), pct(clone, 0.5), 2.0, "<=");
  if (!cold.empty()) {
    std::printf("  %-46s %9.2fx\n", "fork / cold boot (p50)",
                pct(cold, 0.5) > 0 ? pct(fork, 0.5) / pct(cold, 0.5) : 0.0);
  }
  for (auto& f : failures) std::printf("  failure: %s\n", f.c_str());
  return failures.empty() ? 0 : 1;
}
