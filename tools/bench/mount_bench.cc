// nv-bench mount — host directories (issue 15) through the public sandbox service, side by side
// in one run:
//   create          sandbox.create without a mount (the baseline), vs
//   create + mount  sandbox.create with a read-write mount of a host tree of --files files and
//                   --mib MiB (the copy-in: nv-mount-copier reads, the agent writes a tmpfs);
//                   copy-in = the difference of the p50s, and its throughput
//   sync (changed)  sandbox.sync after --changed files were rewritten in the guest, vs
//   sync (none)     sandbox.sync with nothing changed (the listing and the manifest compare)
// It starts its own orchestrator, pool manager (small tier) and executor (--mount-root a temp
// dir) beside nv-bench, or attaches to a running stack (--runtime-dir; then --host-dir must be
// under one of its --mount-root directories).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_stack.h"
#include "common/client.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/sandbox_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace sb = nv::sandbox;
using nv::bench::ms;
using nv::bench::pct;

struct Args {
  int runs = 5, files = 1000, mib = 20, changed = 100;
  std::string runtime_dir, host_dir, kernel, rootfs, accel = "tcg";
};

const char* kHelp =
    "usage: nv-bench mount [--runs N] [--files N] [--mib N] [--changed N] [--runtime-dir RT\n"
    "                       --host-dir DIR] [--kernel VMLINUX --rootfs ROOTFS --accel A]\n"
    "Host directories through the sandbox service: create with and without a read-write mount\n"
    "of N files / M MiB (copy-in), and sync of the changed files vs a sync of none.\n"
    "  --runs N      runs of each (default 5)\n"
    "  --files N     files in the host tree (default 1000, in 10 directories)\n"
    "  --mib N       MiB in all (default 20)\n"
    "  --changed N   files rewritten in the guest before each timed sync (default 100)\n";

bool parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--help" || k == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    } else if (k == "--runs") {
      a->runs = std::clamp(std::atoi(next().c_str()), 1, 1000);
    } else if (k == "--files") {
      a->files = std::clamp(std::atoi(next().c_str()), 1, 50000);
    } else if (k == "--mib") {
      a->mib = std::clamp(std::atoi(next().c_str()), 1, 512);
    } else if (k == "--changed") {
      a->changed = std::clamp(std::atoi(next().c_str()), 1, 50000);
    } else if (k == "--runtime-dir") {
      a->runtime_dir = next();
    } else if (k == "--host-dir") {
      a->host_dir = next();
    } else if (k == "--kernel") {
      a->kernel = next();
    } else if (k == "--rootfs") {
      a->rootfs = next();
    } else if (k == "--accel") {
      a->accel = next();
    } else {
      std::fprintf(stderr, "nv-bench mount: unknown option %s\n%s", k.c_str(), kHelp);
      return false;
    }
  }
  if (!a->runtime_dir.empty() && a->host_dir.empty()) {
    std::fprintf(stderr, "nv-bench mount: --runtime-dir needs --host-dir (under a --mount-root)\n");
    return false;
  }
  return true;
}

// The host tree: `files` files of equal size in 10 directories, pseudo-random bytes.
void make_tree(const std::string& dir, int files, int mib) {
  namespace fs = std::filesystem;
  const size_t each = (size_t(mib) << 20) / size_t(files);
  std::string data(each, '\0');
  uint64_t x = 88172645463325252ull;
  for (auto& c : data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  for (int i = 0; i < files; ++i) {
    std::string sub = dir + "/d" + std::to_string(i % 10);
    fs::create_directories(sub);
    data[0] = static_cast<char>(i);
    std::ofstream(sub + "/f" + std::to_string(i) + ".bin", std::ios::binary) << data;
  }
}

}  // namespace

int run_mount_bench(int argc, char** argv) {
  Args a;
  if (!parse(argc, argv, &a)) return 2;
  std::string base;
  if (a.host_dir.empty()) {
    char tmpl[] = "/tmp/nv-mount-bench-host-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      return 1;
    }
    base = tmpl;
    a.host_dir = base + "/proj";
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{base};
  make_tree(a.host_dir, a.files, a.mib);
  nv::bench::OwnStack own;
  std::string rt = nv::bench::start_exec_stack("mount", own, a.runtime_dir, a.kernel, a.rootfs,
                                               a.accel, 1, 3, {"--mount-root", base});
  if (rt.empty()) return 1;
  zmq::context_t ctx(1);
  nv::Client client(ctx, {nv::bus::ipc_endpoint(rt + "/clients.sock"), {}, {}, {}});
  if (!nv::bench::wait_exec_ready(client, 300s)) {
    std::fprintf(stderr, "nv-bench mount: no executor with capacity within 300 s (see %s)\n",
                 (rt + "/stack.log").c_str());
    return 1;
  }
  sb::SandboxClient sbx(client, "bench:" + std::to_string(::getpid()), {600s, {}});
  std::vector<double> plain, mounted, sync_changed, sync_none;
  int failures = 0;
  auto fail = [&](const char* what, const nv::Error& e) {
    ++failures;
    std::fprintf(stderr, "nv-bench mount: %s: %s\n", what, e.to_string().c_str());
  };
  sb::Spec with;
  with.mounts = {{.host_path = a.host_dir, .guest_path = "/home/agent/proj"}};
  std::string live;
  // Interleaved, run 0 not counted (host caches).
  for (int i = 0; i <= a.runs && !nv::interrupt::requested(); ++i) {
    auto t0 = Clock::now();
    auto p = sbx.create({});
    double d = ms(Clock::now() - t0);
    if (!p) {
      fail("create", p.error());
    } else {
      if (i > 0) plain.push_back(d);
      (void)sbx.destroy(p->sandbox_id);
    }
    t0 = Clock::now();
    auto m = sbx.create(with);
    d = ms(Clock::now() - t0);
    if (!m) {
      fail("create with a mount", m.error());
      continue;
    }
    if (i > 0) mounted.push_back(d);
    if (i < a.runs) {
      (void)sbx.destroy(m->sandbox_id);
    } else {
      live = m->sandbox_id;
    }
  }
  if (live.empty()) return 1;
  // Syncs: rewrite --changed files in the guest (not timed), then sync; and a sync of nothing.
  sb::ExecSpec touch;
  touch.timeout_ms = 120000;
  touch.code = "n=0; for f in /home/agent/proj/d*/f*.bin; do [ $n -ge " +
               std::to_string(a.changed) +
               " ] && break; head -c 20480 /dev/urandom > \"$f\"; n=$((n+1)); done; echo $n";
  uint64_t bytes = 0;
  for (int i = 0; i <= a.runs && !nv::interrupt::requested(); ++i) {
    auto r = sbx.exec(live, touch);
    if (!r || r->exit_code != 0) {
      fail("rewrite in the guest",
           r ? nv::make_error(nv::ErrorCode::INTERNAL, r->stderr_data) : r.error());
      continue;
    }
    auto t0 = Clock::now();
    auto s = sbx.sync(live);
    double d = ms(Clock::now() - t0);
    if (!s) {
      fail("sync", s.error());
      continue;
    }
    if (i > 0) {
      sync_changed.push_back(d);
      bytes = s->front().bytes_written;
    }
    t0 = Clock::now();
    s = sbx.sync(live);
    d = ms(Clock::now() - t0);
    if (!s) {
      fail("sync (none)", s.error());
      continue;
    }
    if (i > 0) sync_none.push_back(d);
  }
  (void)sbx.destroy(live);
  const double p_plain = pct(plain, 0.5), p_mount = pct(mounted, 0.5);
  const double copy_in = p_mount - p_plain;
  const double mib = double(a.mib);
  std::printf("nv-bench mount: %d files / %d MiB copied in, %d files changed per sync, %d runs\n",
              a.files, a.mib, a.changed, a.runs);
  std::printf("  %-18s p50 %9.1f ms  p90 %9.1f ms\n", "create", p_plain, pct(plain, 0.9));
  std::printf("  %-18s p50 %9.1f ms  p90 %9.1f ms  (%.2fx create)\n", "create + mount", p_mount,
              pct(mounted, 0.9), p_plain > 0 ? p_mount / p_plain : 0);
  std::printf("  %-18s p50 %9.1f ms  %.1f MiB/s, %.0f files/s\n", "copy-in", copy_in,
              copy_in > 0 ? mib / (copy_in / 1000) : 0,
              copy_in > 0 ? a.files / (copy_in / 1000) : 0);
  const double p_sync = pct(sync_changed, 0.5), p_none = pct(sync_none, 0.5);
  std::printf("  %-18s p50 %9.1f ms  p90 %9.1f ms  %.1f MiB/s (%llu bytes)\n", "sync (changed)",
              p_sync, pct(sync_changed, 0.9),
              p_sync > 0 ? double(bytes) / (1 << 20) / (p_sync / 1000) : 0,
              static_cast<unsigned long long>(bytes));
  std::printf("  %-18s p50 %9.1f ms  p90 %9.1f ms  (changed = %.2fx none)\n", "sync (none)", p_none,
              pct(sync_none, 0.9), p_none > 0 ? p_sync / p_none : 0);
  return failures == 0 ? 0 : 1;
}
