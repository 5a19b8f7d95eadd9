// nv-bench exec — what the whole stack adds to running a trivial program in a microVM.
//
// Two paths, interleaved run by run (A/B in one process, same VMs, same moment):
//   direct  one VM leased straight from the pool manager, one nv_guest_channel connection to
//           its warm agent, the program sent with GuestChannel::exec again and again;
//   stack   an ExecRequest through the orchestrator's broker to nv-sandbox-executor, which
//           leases a fresh warm VM, connects to its agent, runs the program, replies, and has
//           the VM destroyed (what `nv-exec` does).
// Before each stack run the bench waits for a warm VM, so boot time is not in the figure (it is
// the pool's concern: `nv-bench vm`). Reports p50/p95 per path, the overhead and the ratio.
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
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/frames.h"
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

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

pid_t spawn(const std::string& bin, const std::vector<std::string>& args, const std::string& rt,
            const std::string& log) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  setenv("NV_RUNTIME_DIR", rt.c_str(), 1);
  FILE* f = std::freopen(log.c_str(), "a", stderr);
  (void)f;
  std::vector<char*> argv{const_cast<char*>(bin.c_str())};
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(bin.c_str(), argv.data());
  std::fprintf(stderr, "execv(%s): %s\n", bin.c_str(), std::strerror(errno));
  _exit(127);
}

// The stack this bench started (none in attach mode).
struct OwnStack {
  std::vector<pid_t> pids;  // executor, pool, orchestrator order for shutdown
  std::string dir;
  ~OwnStack() {
    for (pid_t p : pids) {
      ::kill(p, SIGTERM);
      for (int i = 0; i < 200 && waitpid(p, nullptr, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(50ms);
      }
      ::kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    if (!dir.empty()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }
};

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
  OwnStack own;
  std::string rt = a.runtime_dir;
  if (rt.empty()) {
    fs::path bin_dir = fs::read_symlink("/proc/self/exe").parent_path();
    fs::path build = std::getenv("NV_BUILD_DIR") ? fs::path(std::getenv("NV_BUILD_DIR"))
                                                 : bin_dir.parent_path();
    if (a.kernel.empty()) a.kernel = (build / "guest/vmlinux").string();
    if (a.rootfs.empty()) a.rootfs = (build / "guest/rootfs.ext4").string();
    for (auto& p : {a.kernel, a.rootfs}) {
      if (!fs::exists(p)) {
        std::fprintf(stderr, "nv-bench exec: %s missing (guest/build.sh, or --kernel/--rootfs, "
                             "or --runtime-dir of a running stack)\n", p.c_str());
        return 1;
      }
    }
    char tmpl[] = "/tmp/nv-exec-bench-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      return 1;
    }
    rt = own.dir = tmpl;
    std::string log = rt + "/stack.log";
    pid_t orch = spawn((bin_dir / "nv-orchestrator").string(), {}, rt, log);
    pid_t pool = spawn((bin_dir / "nv-vm-pool-manager").string(),
                       {"--kernel", a.kernel, "--rootfs", a.rootfs, "--size", "small", "--warm",
                        "2", "--max", "3", "--accel", a.accel},
                       rt, log);
    pid_t exec = spawn((bin_dir / "nv-sandbox-executor").string(), {}, rt, log);
    own.pids = {exec, pool, orch};
    std::fprintf(stderr, "nv-bench exec: started a stack in %s (logs: %s)\n", rt.c_str(),
                 log.c_str());
  }

  zmq::context_t ctx(1);
  nv::Client client(ctx, nv::ClientOptions{nv::bus::ipc_endpoint(rt + "/clients.sock"), {}, {},
                                           {}});
  nv::ClientOptions pool_opts{nv::bus::ipc_endpoint(rt + "/vm-pool.sock"), {}, {}, {}};
  nv::exec::PoolClient pool(ctx, pool_opts);

  auto wait_warm = [&](std::chrono::seconds limit) {
    auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      auto st = pool.status(2000ms);
      if (st && st->warm >= 1) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  };
  // The stack is ready when the executor registered with capacity.
  auto ready_end = Clock::now() + 180s;
  bool ready = false;
  while (!ready && Clock::now() < ready_end) {
    auto r = client.call("nv.status", nullptr, 2000ms);
    if (r) {
      auto body = r->body.root<nv::schema::StatusReply>();
      if (body) {
        for (auto s : body->getServices()) ready |= s.getService() == "exec" && s.getCapacity();
      }
    }
    if (!ready) std::this_thread::sleep_for(250ms);
  }
  if (!ready) {
    std::fprintf(stderr, "nv-bench exec: no executor with capacity within 180 s (see %s)\n",
                 (rt + "/stack.log").c_str());
    return 1;
  }

  // ---- direct: one warm VM for the whole run.
  if (!wait_warm(120s)) {
    std::fprintf(stderr, "nv-bench exec: the pool has no warm VM\n");
    return 1;
  }
  auto lease = pool.lease("", nv::schema::SizeTier::SMALL, 30000ms);
  if (!lease) {
    std::fprintf(stderr, "nv-bench exec: vm.lease: %s\n", lease.error().to_string().c_str());
    return 1;
  }
  auto kind = lease->channel_kind == "hybridVsock" ? nv::guest::ChannelKind::hybrid_vsock
                                                   : nv::guest::ChannelKind::unix_stream;
  auto ch = nv::guest::GuestChannel::connect(lease->channel_path, kind, lease->vsock_port,
                                             Clock::now() + 30s);
  if (!ch.ok()) {
    std::fprintf(stderr, "nv-bench exec: guest channel: %s\n", ch.error().message.c_str());
    (void)pool.release("", lease->vm_id, "bench failed");
    return 1;
  }
  nv::guest::ExecSpec spec;
  spec.language = nv::schema::Language::PYTHON;
  spec.code = a.code;
  spec.timeout_ms = 30000;

  std::vector<double> direct, stack, stack_exec_wall, stack_agent, direct_agent;
  int failures = 0;
  for (int i = 0; i < a.runs + 1; ++i) {  // run 0 warms caches and is not counted
    // direct
    uint32_t id = static_cast<uint32_t>(i + 1);
    spec.id = id;
    auto t0 = Clock::now();
    auto out = ch.value()->exec(spec, [](nv::schema::Stream, std::string_view) {},
                                Clock::now() + 60s);
    double d = ms(Clock::now() - t0);
    if (!out.ok() || out->exit_code != 0) {
      ++failures;
      std::fprintf(stderr, "direct run %d failed: %s\n", i,
                   out.ok() ? "non-zero exit" : out.error().message.c_str());
    } else if (i > 0) {
      direct.push_back(d);
      direct_agent.push_back(out->duration_ms);
    }
    // stack
    if (!wait_warm(120s)) {
      std::fprintf(stderr, "nv-bench exec: the pool did not refill\n");
      break;
    }
    capnp::MallocMessageBuilder mb;
    auto req = nv::bus::init_body<nv::schema::ExecRequest>(mb);
    req.setLanguage(nv::schema::Language::PYTHON);
    req.setCode(a.code);
    req.setTimeoutMs(30000);
    t0 = Clock::now();
    auto r = client.call("exec", &mb, 90s);
    d = ms(Clock::now() - t0);
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
  ch.value()->close();
  (void)pool.release("", lease->vm_id, "bench finished");

  auto st = pool.status(2000ms);
  double d50 = pct(direct, 0.5), d95 = pct(direct, 0.95);
  double s50 = pct(stack, 0.5), s95 = pct(stack, 0.95);
  std::printf("nv-bench exec: python %s, %zu/%zu runs per path, backend %s accel %s\n",
              a.code.c_str(), direct.size(), stack.size(), st ? st->backend.c_str() : "?",
              st ? st->accel.c_str() : "?");
  std::printf("%-44s %10s %10s\n", "path", "p50 ms", "p95 ms");
  std::printf("%-44s %10.2f %10.2f\n", "direct: warm agent over nv_guest_channel", d50, d95);
  std::printf("%-44s %10.2f %10.2f\n", "  (agent-measured program time)", pct(direct_agent, 0.5),
              pct(direct_agent, 0.95));
  std::printf("%-44s %10.2f %10.2f\n", "stack: client -> broker -> executor -> VM", s50, s95);
  std::printf("%-44s %10.2f %10.2f\n", "  (executor wall time, lease..reply)",
              pct(stack_exec_wall, 0.5), pct(stack_exec_wall, 0.95));
  std::printf("%-44s %10.2f %10.2f\n", "  (agent-measured program time)", pct(stack_agent, 0.5),
              pct(stack_agent, 0.95));
  // Everything but the program itself: a fresh VM runs it from a cold page cache (no VM is
  // ever reused), which the direct path, warm after run 0, does not pay.
  std::vector<double> direct_infra, stack_infra;
  for (size_t i = 0; i < direct.size(); ++i) direct_infra.push_back(direct[i] - direct_agent[i]);
  for (size_t i = 0; i < stack.size(); ++i) stack_infra.push_back(stack[i] - stack_agent[i]);
  std::printf("%-44s %10.2f %10.2f\n", "direct minus program time", pct(direct_infra, 0.5),
              pct(direct_infra, 0.95));
  std::printf("%-44s %10.2f %10.2f\n", "stack minus program time", pct(stack_infra, 0.5),
              pct(stack_infra, 0.95));
  double overhead = s50 - d50;
  double target = std::max(0.10 * d50, 5.0);
  std::printf("overhead p50: %.2f ms, ratio stack/direct p50 %.3f, p95 %.3f; target <= %.2f ms "
              "(max(10%% of direct, 5 ms)): %s\n",
              overhead, d50 > 0 ? s50 / d50 : 0.0, d95 > 0 ? s95 / d95 : 0.0, target,
              overhead <= target ? "met" : "NOT met");
  if (failures) std::printf("failures: %d\n", failures);
  return failures ? 1 : 0;
}
