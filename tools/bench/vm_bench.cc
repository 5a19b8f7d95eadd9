// nv-bench vm — microVM figures side by side in one run, on this machine's accelerator:
//   cold boot   VMM start → agent Hello (fresh kernel boot)
//   restore     clones of a template whose RAM is a sealed memfd (template_memory.h), as the pool
//               makes them: VMM start (-incoming defer) → device state loaded → Hello → reseeded;
//               and the part from the migrate-incoming command on ("restore → ready"), which is
//               what a pool refill costs: the pool begins each restore's VMM ahead of time
//               (PoolOptions::prestart), measured too ("pool refill")
//   warm lease  Pool::lease() with a warm VM waiting and no refill boot running (p50/p95)
//   RSS/PSS     of one idle VMM, cold-booted and restored (/proc/<pid>/smaps_rollup)
// Needs root, QEMU and the guest image ($NV_BUILD_DIR/guest or --guest-dir).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cgroup.h"
#include "guest_link.h"
#include "pool.h"
#include "qemu_backend.h"

namespace {

using nv::vm::Clock;
using namespace std::chrono_literals;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// "Rss:" and "Pss:" of a process, in MiB.
std::pair<double, double> rss_pss(pid_t pid) {
  auto text = nv::vm::read_file("/proc/" + std::to_string(pid) + "/smaps_rollup");
  double rss = 0, pss = 0;
  if (!text.ok()) return {0, 0};
  std::istringstream in(text.value());
  std::string key;
  double kb;
  std::string unit;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (!(ls >> key >> kb)) continue;
    if (key == "Rss:") rss = kb / 1024;
    if (key == "Pss:") pss = kb / 1024;
  }
  return {rss, pss};
}

struct Args {
  std::string guest_dir;
  std::string accel = "auto";
  int runs = 5;
  int leases = 20;
};

void usage() {
  std::printf(
      "usage: nv-bench vm [--guest-dir DIR] [--accel auto|kvm|tcg] [--runs N] [--leases N]\n"
      "  DIR holds vmlinux and rootfs.ext4 (default $NV_BUILD_DIR/guest, else BIN/../guest)\n");
}

}  // namespace

int run_vm_bench(int argc, char** argv) {
  Args a;
  // Default: $NV_BUILD_DIR/guest, else the guest dir of the build this binary belongs to
  // (BUILD/bin/nv-bench → BUILD/guest, where guest/build.sh puts the image).
  const char* bd = std::getenv("NV_BUILD_DIR");
  std::string build = bd && *bd ? bd : "";
  if (build.empty()) {
    char exe[4096];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    std::string p = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string("./bin/x");
    p = p.substr(0, p.rfind('/'));
    build = p.substr(0, p.rfind('/'));
  }
  a.guest_dir = build + "/guest";
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--guest-dir")
      a.guest_dir = next();
    else if (k == "--accel")
      a.accel = next();
    else if (k == "--runs")
      a.runs = std::max(1, std::atoi(next().c_str()));
    else if (k == "--leases")
      a.leases = std::max(1, std::atoi(next().c_str()));
    else if (k == "--help" || k == "-h") {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "nv-bench vm: needs root (VMM jails and cgroups)\n");
    return 2;
  }
  const std::string kernel = a.guest_dir + "/vmlinux", rootfs = a.guest_dir + "/rootfs.ext4";
  if (::access(kernel.c_str(), R_OK) != 0 || ::access(rootfs.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "nv-bench vm: %s or %s missing (guest/build.sh)\n", kernel.c_str(),
                 rootfs.c_str());
    return 2;
  }
  const std::string dir = "/tmp/nv-vmbench-" + std::to_string(::getpid());
  (void)nv::vm::make_dirs(dir, 0755);
  auto layout = nv::vm::CgroupLayout::detect("/sys/fs/cgroup", "/proc/self/cgroup",
                                             "nv-vmbench-" + std::to_string(::getpid()));
  if (auto s = layout.prepare(); !s.ok()) {
    std::fprintf(stderr, "nv-bench vm: cgroups: %s\n", s.error().message.c_str());
    return 1;
  }
  nv::vm::QemuConfig qc;
  qc.runtime_dir = dir + "/runtime";
  qc.accel = a.accel;
  qc.cgroups = layout;
  nv::vm::QemuBackend backend(qc);
  nv::vm::ChannelGuestLink guest;
  nv::vm::VmSpec spec;
  spec.vcpus = 1;
  spec.memory_mib = 256;
  spec.kernel = kernel;
  spec.rootfs = rootfs;
  spec.vm_id = "bench-probe";
  (void)backend.probe_accel(
      spec, [&](const nv::vm::VmInfo& vm, nv::vm::Deadline d) { return guest.wait_ready(vm, d); });
  int rc = 0;
  std::vector<double> cold, restore_total, restore_ready, leases, refills;
  double cold_rss = 0, cold_pss = 0, rest_rss = 0, rest_pss = 0, snap_ms = 0;
  long long snap_bytes = -1;
  const std::string snap = dir + "/small.vmstate";
  // --- cold boots (anonymous RAM, as without --snapshot) --------------------------------------
  for (int i = 0; i < a.runs && rc == 0; ++i) {
    spec.vm_id = "bench-cold-" + std::to_string(i);
    auto t0 = Clock::now();
    auto vm = backend.boot(spec, Clock::now() + 120s);
    if (!vm.ok()) {
      std::fprintf(stderr, "cold boot failed: %s\n", vm.error().message.c_str());
      rc = 1;
      break;
    }
    if (auto s = guest.wait_ready(vm.value()->info(), Clock::now() + 120s); !s.ok()) {
      std::fprintf(stderr, "no Hello: %s\n", s.error().message.c_str());
      rc = 1;
    }
    cold.push_back(ms_since(t0));
    if (i == a.runs - 1 && rc == 0) {
      std::this_thread::sleep_for(1s);  // idle
      std::tie(cold_rss, cold_pss) = rss_pss(vm.value()->info().vmm_pid);
    }
    (void)vm.value()->destroy(Clock::now() + 2s);
  }
  // --- the snapshot template: a cold boot on a memfd, as the pool makes it ----------------------
  nv::vm::TemplateMemory memory;
  if (rc == 0) {
    auto m = nv::vm::TemplateMemory::create("nv-bench-template", uint64_t{spec.memory_mib} << 20);
    if (!m.ok()) {
      std::fprintf(stderr, "template memory: %s\n", m.error().message.c_str());
      return 1;
    }
    memory = std::move(m.value());
    spec.vm_id = "bench-template";
    spec.memory_fd = memory.fd();
    spec.memory_shared = true;
    auto vm = backend.boot(spec, Clock::now() + 120s);
    if (!vm.ok() || !guest.wait_ready(vm.value()->info(), Clock::now() + 120s).ok()) {
      std::fprintf(stderr, "template boot failed\n");
      rc = 1;
    } else {
      std::this_thread::sleep_for(200ms);  // as the pool's snapshot_settle
      auto ts = Clock::now();
      if (auto s = vm.value()->snapshot(snap, Clock::now() + 60s); !s.ok()) {
        std::fprintf(stderr, "snapshot failed: %s\n", s.error().message.c_str());
        rc = 1;
      }
      snap_ms = ms_since(ts);
      struct stat sb {};
      if (::stat(snap.c_str(), &sb) == 0) snap_bytes = static_cast<long long>(sb.st_size);
    }
    if (vm.ok()) (void)vm.value()->destroy(Clock::now() + 2s);
    if (rc == 0) {
      if (auto s = memory.seal(); !s.ok()) {
        std::fprintf(stderr, "seal: %s\n", s.error().message.c_str());
        rc = 1;
      }
    }
    spec.memory_shared = false;
  }
  // --- restores -------------------------------------------------------------------------------
  std::vector<std::unique_ptr<nv::vm::RunningVm>> restored;
  for (int i = 0; i < a.runs && rc == 0; ++i) {
    spec.vm_id = "bench-restore-" + std::to_string(i);
    spec.restore_from = snap;
    auto t0 = Clock::now();
    auto vm = backend.boot(spec, Clock::now() + 60s);
    if (!vm.ok()) {
      std::fprintf(stderr, "restore failed: %s\n", vm.error().message.c_str());
      rc = 1;
      break;
    }
    auto t_after_restore = Clock::now();
    auto s =
        guest.reseed(vm.value()->info(), nv::vm::random_bytes(64), spec.vm_id, Clock::now() + 60s);
    if (!s.ok()) {
      std::fprintf(stderr, "reseed failed: %s\n", s.error().message.c_str());
      rc = 1;
    }
    restore_total.push_back(ms_since(t0));
    restore_ready.push_back(vm.value()->info().restore_ms + ms_since(t_after_restore));
    restored.push_back(std::move(vm.value()));
  }
  if (!restored.empty()) {
    std::this_thread::sleep_for(1s);
    double r = 0, p = 0;
    for (auto& vm : restored) {
      auto [rr, pp] = rss_pss(vm->info().vmm_pid);
      r += rr;
      p += pp;
    }
    rest_rss = r / static_cast<double>(restored.size());
    rest_pss = p / static_cast<double>(restored.size());
  }
  for (auto& vm : restored) (void)vm->destroy(Clock::now() + 2s);
  restored.clear();
  // --- warm leases through the pool (snapshot mode) --------------------------------------------
  if (rc == 0) {
    // The pool's own refills: with a standby VMM begun ahead of time (PoolOptions::prestart)
    // a refill is load + Hello + reseed; vm.booted carries that duration.
    struct RefillTimes : nv::vm::PoolEvents {
      std::mutex mu;
      std::vector<double> ms;
      void on_booted(const nv::vm::VmInfo& vm, nv::vm::SizeTier, double boot_ms) override {
        std::lock_guard lock(mu);
        if (vm.restored) ms.push_back(boot_ms);
      }
    } events;
    nv::vm::PoolOptions po;
    po.tiers = {{nv::vm::SizeTier::SMALL, 1, 256, 2, 3}};
    po.kernel = kernel;
    po.rootfs = rootfs;
    po.snapshot = true;
    po.snapshot_dir = dir + "/pool-snapshots";
    nv::vm::Pool pool(po, backend, guest, events);
    if (auto s = pool.start(); !s.ok()) {
      std::fprintf(stderr, "pool: %s\n", s.error().message.c_str());
      rc = 1;
    }
    for (int i = 0; i < a.leases && rc == 0; ++i) {
      if (!pool.wait_warm(Clock::now() + 120s)) break;
      // A warm VM waiting, the refill that made it and the next standby VMM finished: the lease
      // is timed alone (and the next refill starts from a ready standby).
      for (;;) {
        auto t = pool.status().tiers.at(0);
        if (t.booting == 0 && t.standby > 0) break;
        std::this_thread::sleep_for(5ms);
      }
      std::this_thread::sleep_for(20ms);
      auto t0 = Clock::now();
      auto l = pool.lease(nv::vm::SizeTier::SMALL, 10s);
      leases.push_back(ms_since(t0));
      if (!l.ok()) break;
      (void)pool.release(l.value().vm.vm_id, "bench");
    }
    pool.stop();
    std::lock_guard lock(events.mu);
    refills = events.ms;
  }
  layout.remove_parents();
  (void)nv::vm::remove_tree(dir);

  std::printf("nv-bench vm — QEMU microvm, accel %s (%s)\n", backend.accel().c_str(),
              backend.accel_reason().c_str());
  std::printf("  %-34s %10s %10s %6s\n", "what", "p50 ms", "p95 ms", "n");
  auto row = [](const char* what, const std::vector<double>& v) {
    std::printf("  %-34s %10.1f %10.1f %6zu\n", what, pct(v, 50), pct(v, 95), v.size());
  };
  row("cold boot → Hello", cold);
  row("restore: VMM start → reseeded", restore_total);
  row("restore: load cmd → reseeded", restore_ready);
  row("pool refill (standby VMM) → reseeded", refills);
  std::printf("  %-34s %10.3f %10.3f %6zu\n", "warm lease", pct(leases, 50), pct(leases, 95),
              leases.size());
  std::printf(
      "  snapshot (stop + migrate to file)  %10.1f ms, %lld bytes (RAM stays in the "
      "sealed template memfd)\n",
      snap_ms, snap_bytes);
  if (!restore_total.empty()) {
    std::printf("  cold / restore ratio: %.1fx (VMM start included), %.1fx (from load command)\n",
                pct(cold, 50) / pct(restore_total, 50), pct(cold, 50) / pct(restore_ready, 50));
  }
  std::printf(
      "  idle VMM memory: cold-booted RSS %.0f MiB PSS %.0f MiB; restored RSS %.0f MiB "
      "PSS %.0f MiB (mean of %d)\n",
      cold_rss, cold_pss, rest_rss, rest_pss, a.runs);
  std::printf(
      "{\"bench\":\"vm\",\"accel\":\"%s\",\"cold_p50_ms\":%.1f,\"restore_p50_ms\":%.1f,"
      "\"restore_ready_p50_ms\":%.1f,\"lease_p50_ms\":%.3f,\"lease_p95_ms\":%.3f,"
      "\"cold_pss_mib\":%.0f,\"restored_pss_mib\":%.0f}\n",
      backend.accel().c_str(), pct(cold, 50), pct(restore_total, 50), pct(restore_ready, 50),
      pct(leases, 50), pct(leases, 95), cold_pss, rest_pss);
  return rc;
}
