// nv-bench exec — what the whole stack adds to running a trivial program in a microVM.
//
// Paths, interleaved run by run (A/B in one process, same pool, same moment):
//   direct  a fresh warm VM leased straight from the pool manager (not timed), then timed: one
//           nv_guest_channel connection to its agent (Hello) and the program (GuestChannel::exec);
//   stack   an ExecRequest through the orchestrator's broker to nv-sandbox-executor, which
//           leases a fresh warm VM, connects to its agent, runs the program, replies, and has
//           the VM destroyed (what `nv-exec` does);
//   reused  for reference, one VM kept across runs: the program on a warm page cache, which the
//           product never offers (no VM is reused) — it shows what a fresh VM costs.
// Before each run the bench waits for a warm VM, so boot time is not in the figure (it is the
// pool's concern: `nv-bench vm`). Reports p50/p95 per path, the overhead and the ratio.
//
// Either attaches to a running stack (--runtime-dir of `./nv up`) or starts its own
// orchestrator, pool manager (small tier, --warm 2) and executor in a temp runtime dir, with the
// binaries that sit beside nv-bench.
#include <nv/schema/exec.capnp.h>
#include <nv/schema/vm.capnp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_stack.h"
#include "common/client.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/service.h"
#include "guest/host/guest_channel.h"
#include "pool_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct BenchArgs {
  int runs = 20;
  std::string runtime_dir;  // attach mode when set
  std::string kernel, rootfs, accel = "tcg";
  std::string code = "print(1)";
};

const char* kHelp =
    "usage: nv-bench exec [--runs N] [--code PY] [--runtime-dir RT]\n"
    "                     [--kernel VMLINUX --rootfs ROOTFS --accel tcg|kvm|auto]\n"
    "End-to-end latency of a trivial python program through the whole stack (broker → executor\n"
    "→ fresh warm VM) vs sent straight to a warm guest agent over nv_guest_channel, interleaved.\n"
    "  --runs N           runs per path (default 20)\n"
    "  --code PY          the program (default print(1))\n"
    "  --runtime-dir RT   attach to a running stack (./nv up) instead of starting one\n"
    "  --kernel, --rootfs guest image for the stack it starts (default $NV_BUILD_DIR/guest/...,\n"
    "                     else the build dir beside nv-bench)\n"
    "  --accel            the pool manager's accelerator (default tcg; auto probes KVM)\n";

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
      a->runs = std::max(1, std::atoi(next().c_str()));
    } else if (k == "--code") {
      a->code = next();
    } else if (k == "--runtime-dir") {
      a->runtime_dir = next();
    } else if (k == "--kernel") {
      a->kernel = next();
    } else if (k == "--rootfs") {
      a->rootfs = next();
    } else if (k == "--accel") {
      a->accel = next();
    } else {
      std::fprintf(stderr, "nv-bench exec: unknown option %s\n%s", k.c_str(), kHelp);
      return false;
    }
  }
  return true;
}

}  // namespace

int run_exec_bench(int argc, char** argv) {
  BenchArgs a;
  if (!parse(argc, argv, &a)) return 2;
  nv::bench::OwnStack own;
  std::string rt =
      nv::bench::start_exec_stack("exec", own, a.runtime_dir, a.kernel, a.rootfs, a.accel);
  if (rt.empty()) return 1;

  zmq::context_t ctx(1);
  nv::Client client(ctx,
                    nv::ClientOptions{nv::bus::ipc_endpoint(rt + "/clients.sock"), {}, {}, {}});
  nv::ClientOptions pool_opts{nv::bus::ipc_endpoint(rt + "/vm-pool.sock"), {}, {}, {}};
  nv::exec::PoolClient pool(ctx, pool_opts);

  const uint32_t quiet_warm = a.runtime_dir.empty() ? 2 : 1;
  auto wait_warm = [&](std::chrono::seconds limit) {
    auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      auto st = pool.status(2000ms);
      // Full and quiet: every warm VM there, no refill boot competing for the CPU with the
      // timed run (the pool this bench starts keeps 2 warm; max 3 leaves room for the reused VM).
      if (st && st->warm >= quiet_warm && st->booting == 0) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  };
  // The stack is ready when the executor registered with capacity.
  if (!nv::bench::wait_exec_ready(client, 180s)) {
    if (nv::interrupt::requested()) return 1;  // main.cc said why and exits 128 + signal
    std::fprintf(stderr, "nv-bench exec: no executor with capacity within 180 s (see %s)\n",
                 (rt + "/stack.log").c_str());
    return 1;
  }

  nv::guest::ExecSpec spec;
  spec.language = nv::schema::Language::PYTHON;
  spec.code = a.code;
  spec.timeout_ms = 30000;
  // Straight to a warm agent: connect to its channel (Hello) and run the program. `reuse`
  // keeps one channel open across runs (the same VM again: warm page cache, which the product
  // never gives a program since no VM is reused); otherwise a fresh warm VM is leased first
  // (not timed) and released after (not timed).
  struct Direct {
    double total_ms = 0, agent_ms = 0;
    std::string error;
  };
  std::unique_ptr<nv::guest::GuestChannel> reused;
  std::string reused_vm;
  auto run_direct = [&](uint32_t id, bool reuse) -> Direct {
    Direct r;
    std::optional<nv::exec::VmLease> fresh;
    if (!reuse || !reused) {
      if (!wait_warm(120s)) return {0, 0, "the pool has no warm VM"};
      auto l = pool.lease("", nv::schema::SizeTier::SMALL, 30000ms);
      if (!l) return {0, 0, "vm.lease: " + l.error().to_string()};
      fresh = *l;
    }
    auto t0 = Clock::now();
    nv::guest::GuestChannel* ch = reused.get();
    std::unique_ptr<nv::guest::GuestChannel> own;
    if (fresh) {
      auto kind = fresh->channel_kind == "hybridVsock" ? nv::guest::ChannelKind::hybrid_vsock
                                                       : nv::guest::ChannelKind::unix_stream;
      auto c = nv::guest::GuestChannel::connect(fresh->channel_path, kind, fresh->vsock_port,
                                                Clock::now() + 30s);
      if (!c.ok()) {
        (void)pool.release("", fresh->vm_id, "bench failed");
        return {0, 0, "guest channel: " + c.error().message};
      }
      own = std::move(c.value());
      ch = own.get();
    }
    spec.id = id;
    auto out = ch->exec(
        spec, [](nv::schema::Stream, std::string_view) {}, Clock::now() + 60s);
    r.total_ms = ms(Clock::now() - t0);
    if (!out.ok()) {
      r.error = out.error().message;
    } else if (out->exit_code != 0) {
      r.error = "exit code " + std::to_string(out->exit_code);
    } else {
      r.agent_ms = out->duration_ms;
    }
    if (reuse && fresh) {
      reused = std::move(own);
      reused_vm = fresh->vm_id;
    } else if (fresh) {
      own->close();
      (void)pool.release("", fresh->vm_id, "bench");
    }
    return r;
  };

  std::vector<double> direct, stack, stack_exec_wall, stack_agent, direct_agent, reuse, reuse_agent;
  int failures = 0;
  for (int i = 0; i < a.runs + 1; ++i) {  // run 0 warms host-side caches and is not counted
    const uint32_t id = static_cast<uint32_t>(i + 1);
    Direct d1 = run_direct(id, false);  // a fresh warm VM
    if (!d1.error.empty()) {
      ++failures;
      std::fprintf(stderr, "direct run %d failed: %s\n", i, d1.error.c_str());
    } else if (i > 0) {
      direct.push_back(d1.total_ms);
      direct_agent.push_back(d1.agent_ms);
    }
    Direct d2 = run_direct(id, true);  // the same VM again
    if (!d2.error.empty()) {
      ++failures;
      std::fprintf(stderr, "reused-agent run %d failed: %s\n", i, d2.error.c_str());
    } else if (i > 0) {
      reuse.push_back(d2.total_ms);
      reuse_agent.push_back(d2.agent_ms);
    }
    if (!wait_warm(120s)) {
      std::fprintf(stderr, "nv-bench exec: the pool did not refill\n");
      break;
    }
    capnp::MallocMessageBuilder mb;
    auto req = nv::bus::init_body<nv::schema::ExecRequest>(mb);
    req.setLanguage(nv::schema::Language::PYTHON);
    req.setCode(a.code);
    req.setTimeoutMs(30000);
    auto t0 = Clock::now();
    auto r = client.call("exec", &mb, 90s);
    double d = ms(Clock::now() - t0);
    if (!r) {
      ++failures;
      std::fprintf(stderr, "stack run %d failed: %s\n", i, r.error().to_string().c_str());
      continue;
    }
    auto res = r->body.root<nv::schema::ExecResult>();
    if (!res || res->getExitCode() != 0) {
      ++failures;
      continue;
    }
    if (i > 0) {
      stack.push_back(d);
      stack_exec_wall.push_back(res->getWallMs());
      stack_agent.push_back(res->getDurationMs());
    }
  }
  if (reused) reused->close();
  if (!reused_vm.empty()) (void)pool.release("", reused_vm, "bench finished");

  auto st = pool.status(2000ms);
  double d50 = pct(direct, 0.5), d95 = pct(direct, 0.95);
  double s50 = pct(stack, 0.5), s95 = pct(stack, 0.95);
  std::printf("nv-bench exec: python %s, %zu/%zu runs per path, backend %s accel %s\n",
              a.code.c_str(), direct.size(), stack.size(), st ? st->backend.c_str() : "?",
              st ? st->accel.c_str() : "?");
  auto row = [](const char* what, const std::vector<double>& v) {
    std::printf("%-50s %10.2f %10.2f\n", what, pct(v, 0.5), pct(v, 0.95));
  };
  std::printf("%-50s %10s %10s\n", "path (each run on a fresh warm VM unless said)", "p50 ms",
              "p95 ms");
  row("direct: connect to a warm agent + run", direct);
  row("  (agent-measured program time)", direct_agent);
  row("stack: client -> broker -> executor -> VM", stack);
  row("  (executor wall time, lease..reply)", stack_exec_wall);
  row("  (agent-measured program time)", stack_agent);
  row("same VM reused (never done by the product)", reuse);
  row("  (agent-measured program time)", reuse_agent);
  // Everything but the program itself.
  std::vector<double> direct_infra, stack_infra;
  for (size_t i = 0; i < direct.size(); ++i) direct_infra.push_back(direct[i] - direct_agent[i]);
  for (size_t i = 0; i < stack.size(); ++i) stack_infra.push_back(stack[i] - stack_agent[i]);
  row("direct minus program time", direct_infra);
  row("stack minus program time", stack_infra);
  double overhead = s50 - d50;
  double target = std::max(0.10 * d50, 5.0);
  std::printf(
      "overhead p50: %.2f ms, ratio stack/direct p50 %.3f, p95 %.3f; target <= %.2f ms "
      "(max(10%% of direct, 5 ms)): %s\n",
      overhead, d50 > 0 ? s50 / d50 : 0.0, d95 > 0 ? s95 / d95 : 0.0, target,
      overhead <= target ? "met" : "NOT met");
  if (failures) std::printf("failures: %d\n", failures);
  return failures ? 1 : 0;
}
