// nv-bench fork — sandboxes that live, pool side, side by side in one run, through the pool
// manager's public bus interface (vm.capnp via the executor's PoolClient): it starts its own
// nv-vm-pool-manager (snapshot mode) and, for the cold-boot column, a second one with
// --no-snapshot, each in a temp runtime dir.
//   clone restore  Lease.bootMs of warm leases: a clone of the tier template, restore → reseeded
//   cold boot      Lease.bootMs from the --no-snapshot pool: VMM start → Hello
//   fork           vm.fork of one running sandbox holding --write-mib MiB in /tmp (tmpfs), one
//                  fork per call: whole call (client side) and the capture (parent's RAM → a
//                  sealed template; the parent is paused for part of it)
//   pause, resume  vm.pause / vm.resume of that sandbox (client side)
//   PSS            of an idle fork's VMM (/proc/<pid>/smaps): all of it, the pages the fork wrote
//                  itself (Private_Dirty of its guest-RAM mapping) and the rest (what one more
//                  fork costs beyond its own writes); a warm clone's VMM beside it
// Targets (issue 13): fork p50 ≤ 2× clone restore p50; idle fork PSS ≤ 25 MiB beyond the pages
// it wrote. Needs root, QEMU and the guest image.
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_stack.h"
#include "guest/host/guest_channel.h"
#include "pool_client.h"
#include "sysutil.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
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

std::string self_dir() {
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string p = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string("./bin/x");
  return p.substr(0, p.rfind('/'));
}

// The VMM named nv-<vm_id> (QEMU -name), or -1.
pid_t vmm_pid(const std::string& vm_id) {
  pid_t p = nv::bench::vmm_pid_by_name(vm_id);
  return p > 0 ? p : -1;
}

struct Pss {
  double total_mib = 0;      // Pss of every mapping
  double ram_dirty_mib = 0;  // Private_Dirty of the guest-RAM mapping (pages the guest wrote)
};
// /proc/<pid>/smaps: Pss summed; Private_Dirty of the guest-RAM mapping, the one named
// memfd:<r>... for an `r` of `ram`.
Pss pss_of(pid_t pid, const std::vector<std::string>& ram) {
  Pss p;
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps");
  bool in_ram = false;
  for (std::string line; std::getline(f, line);) {
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (!key.empty() && key.back() != ':') {  // a mapping header: "addr perms off dev inode path"
      in_ram = std::any_of(ram.begin(), ram.end(), [&](const std::string& r) {
        return line.find("memfd:" + r) != std::string::npos;
      });
      continue;
    }
    double kb = 0;
    ls >> kb;
    if (key == "Pss:") p.total_mib += kb / 1024;
    if (key == "Private_Dirty:" && in_ram) p.ram_dirty_mib += kb / 1024;
  }
  return p;
}

struct Args {
  std::string guest_dir, accel = "auto", tier = "small";
  int runs = 5;
  int write_mib = 32;
};

void usage() {
  std::printf(
      "usage: nv-bench fork [--guest-dir DIR] [--accel auto|kvm|tcg] [--tier small|medium|large]\n"
      "                     [--runs N] [--write-mib M]\n"
      "  runs: forks, clone leases, pause/resume cycles (cold boots: min(N, 3))\n"
      "  write-mib: MiB the parent sandbox writes to /tmp (RAM) before it is forked\n");
}

class Stack {
 public:
  Stack(const std::string& dir, const Args& a, bool snapshot, int max) : dir_(dir) {
    (void)nv::vm::make_dirs(dir, 0755);
    endpoint_ = "ipc://" + dir + "/vm-pool.sock";
    std::vector<std::string> args = {
        self_dir() + "/nv-vm-pool-manager",
        "--runtime-dir",
        dir,
        "--state-dir",
        dir + "/state",
        "--vm-pool-endpoint",
        endpoint_,
        "--events-in-endpoint",
        "ipc://" + dir + "/no-hub.sock",
        "--kernel",
        a.guest_dir + "/vmlinux",
        "--rootfs",
        a.guest_dir + "/rootfs.ext4",
        "--no-require-egress",
        "--accel",
        a.accel,
        "--size",
        a.tier,
        "--warm",
        "1",
        "--max",
        std::to_string(max),
        "--boot-timeout-ms",
        "180000",
        "--log-level",
        getenv("NV_BENCH_LOG_LEVEL") ? getenv("NV_BENCH_LOG_LEVEL") : "warn"};
    if (!snapshot) args.push_back("--no-snapshot");
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
    client_ = std::make_unique<nv::exec::PoolClient>(
        ctx_, nv::ClientOptions{endpoint_, std::nullopt, "", {}});
  }
  ~Stack() {
    client_.reset();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    (void)nv::vm::remove_tree(dir_);
  }
  bool wait_warm(std::chrono::seconds limit) {
    auto until = Clock::now() + limit;
    while (Clock::now() < until && pid_ > 0) {
      auto st = client_->status(2000ms);
      if (st.ok() && st.value().warm >= 1 && st.value().booting == 0) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  // A fork kit ready (vm.status TierStatus.forkKits), as a warm clone is for a lease.
  bool wait_fork_kit(std::chrono::seconds limit) {
    auto until = Clock::now() + limit;
    while (Clock::now() < until && pid_ > 0) {
      auto st = client_->status(2000ms);
      if (st.ok() && st.value().fork_kits >= 1) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  nv::exec::PoolClient& pool() { return *client_; }

 private:
  std::string dir_, endpoint_;
  pid_t pid_ = -1;
  zmq::context_t ctx_;
  std::unique_ptr<nv::exec::PoolClient> client_;
};

std::string sh(const nv::exec::VmLease& l, const std::string& code) {
  auto deadline = Clock::now() + 300s;
  auto ch = nv::guest::GuestChannel::connect(l.channel_path, nv::guest::ChannelKind::unix_stream, 0,
                                             deadline);
  if (!ch.ok()) return "ERROR " + ch.error().message;
  nv::guest::ExecSpec spec;
  spec.language = nv::schema::Language::BASH;
  spec.code = code;
  spec.timeout_ms = 290000;
  std::string out;
  auto o = ch.value()->exec(
      spec, [&](nv::schema::Stream, std::string_view d) { out.append(d); }, deadline);
  if (!o.ok()) return "ERROR " + o.error().message;
  return out;
}

nv::schema::SizeTier tier_of(const std::string& t) {
  if (t == "medium") return nv::schema::SizeTier::MEDIUM;
  if (t == "large") return nv::schema::SizeTier::LARGE;
  return nv::schema::SizeTier::SMALL;
}

}  // namespace

int run_fork_bench(int argc, char** argv) {
  Args a;
  const char* bd = std::getenv("NV_BUILD_DIR");
  a.guest_dir = (bd && *bd ? std::string(bd) : self_dir() + "/..") + "/guest";
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--guest-dir") {
      a.guest_dir = next();
    } else if (k == "--accel") {
      a.accel = next();
    } else if (k == "--tier") {
      a.tier = next();
    } else if (k == "--runs") {
      a.runs = std::clamp(std::atoi(next().c_str()), 1, 50);
    } else if (k == "--write-mib") {
      a.write_mib = std::clamp(std::atoi(next().c_str()), 0, 4096);
    } else if (k == "--help" || k == "-h") {
      usage();
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  if (a.tier != "small" && a.tier != "medium" && a.tier != "large") {
    usage();
    return 2;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "nv-bench fork: needs root (VMM jails and cgroups)\n");
    return 2;
  }
  const std::string base = "/tmp/nv-forkbench-" + std::to_string(::getpid());
  std::vector<double> clone_ms, cold_ms, fork_ms, capture_ms, pause_ms, resume_ms;
  int forks_with_kit = 0;
  Pss fork_pss, clone_pss;
  std::string failure;
  {
    Stack s(base + "-snap", a, true, 4);
    if (!s.wait_warm(300s)) {
      std::fprintf(stderr, "nv-bench fork: no warm VM within 300 s\n");
      return 1;
    }
    // Clone restores: each lease takes the warm clone; the next one is restored meanwhile.
    for (int i = 0; i < a.runs && failure.empty(); ++i) {
      if (!s.wait_warm(300s)) failure = "no warm clone";
      auto l = s.pool().lease("bench", tier_of(a.tier), 60s);
      if (!l.ok()) {
        failure = "lease: " + l.error().message;
        break;
      }
      clone_ms.push_back(l.value().boot_ms);
      if (i == 0) {
        std::this_thread::sleep_for(2s);  // idle
        clone_pss = pss_of(vmm_pid(l.value().vm_id), {"nv-template"});
      }
      (void)s.pool().release("bench", l.value().vm_id, "bench");
    }
    nv::exec::SandboxLeaseSpec spec;
    spec.owner = "bench";
    spec.sandbox_id = "bench-parent";
    spec.tier = tier_of(a.tier);
    spec.wait = 120s;
    nv::exec::VmLease parent;
    if (failure.empty()) {
      (void)s.wait_warm(300s);
      auto p = s.pool().lease_sandbox("bench", spec);
      if (!p.ok()) failure = "sandbox lease: " + p.error().message;
      if (p.ok()) parent = p.value();
    }
    if (failure.empty() && a.write_mib > 0) {
      std::string w = sh(parent, "head -c " + std::to_string(a.write_mib) +
                                     "M /dev/urandom > /tmp/data && echo ok");
      if (w != "ok\n") failure = "write in the parent: " + w;
    }
    for (int i = 0; i < a.runs && failure.empty(); ++i) {
      (void)s.wait_warm(300s);  // no refill boot beside the fork
      // As a clone lease finds its clone restored ahead, a fork finds its kit made ahead.
      if (s.wait_fork_kit(60s)) ++forks_with_kit;
      auto t0 = Clock::now();
      auto f = s.pool().fork("bench", parent.vm_id, 1, 0ms, {});
      if (!f.ok()) {
        failure = "fork: " + f.error().message;
        break;
      }
      fork_ms.push_back(ms_since(t0));
      capture_ms.push_back(f.value().capture_ms);
      const auto& k = f.value().leases[0];
      if (i == 0) {
        std::this_thread::sleep_for(2s);  // idle
        fork_pss = pss_of(vmm_pid(k.vm_id), {"nv-capture"});
      }
      (void)s.pool().release("bench", k.vm_id, "bench");
    }
    for (int i = 0; i < a.runs && failure.empty(); ++i) {
      auto t0 = Clock::now();
      auto p = s.pool().pause("bench", parent.vm_id);
      if (!p.ok()) {
        failure = "pause: " + p.error().message;
        break;
      }
      pause_ms.push_back(ms_since(t0));
      t0 = Clock::now();
      auto r = s.pool().resume("bench", parent.vm_id, 0ms);
      if (!r.ok()) {
        failure = "resume: " + r.error().message;
        break;
      }
      resume_ms.push_back(ms_since(t0));
      parent = r.value();
    }
    if (!parent.vm_id.empty()) (void)s.pool().release("bench", parent.vm_id, "bench");
  }
  if (failure.empty()) {
    Stack c(base + "-cold", a, false, 1);
    for (int i = 0; i < std::min(a.runs, 3) && failure.empty(); ++i) {
      if (!c.wait_warm(300s)) {
        failure = "no cold-booted VM within 300 s";
        break;
      }
      auto l = c.pool().lease("bench", tier_of(a.tier), 60s);
      if (!l.ok()) {
        failure = "cold lease: " + l.error().message;
        break;
      }
      cold_ms.push_back(l.value().boot_ms);
      (void)c.pool().release("bench", l.value().vm_id, "bench");
    }
  }
  if (!failure.empty()) {
    std::fprintf(stderr, "nv-bench fork: %s\n", failure.c_str());
    return 1;
  }
  std::printf("nv-bench fork: tier %s, parent wrote %d MiB to /tmp, %d runs\n", a.tier.c_str(),
              a.write_mib, a.runs);
  std::printf("  %-34s %10s %10s\n", "", "p50 ms", "p95 ms");
  auto row = [](const char* name, const std::vector<double>& v) {
    std::printf("  %-34s %10.1f %10.1f\n", name, pct(v, 50), pct(v, 95));
  };
  row("cold boot (VMM start -> Hello)", cold_ms);
  row("clone restore (restore -> reseeded)", clone_ms);
  row("fork of 1 (whole vm.fork call)", fork_ms);
  std::printf("    (%d of %zu forks found a fork kit ready)\n", forks_with_kit, fork_ms.size());
  row("  of which capture", capture_ms);
  row("pause (vm.pause)", pause_ms);
  row("resume (vm.resume)", resume_ms);
  std::printf("  idle fork VMM:  PSS %.1f MiB = %.1f MiB it wrote + %.1f MiB beyond\n",
              fork_pss.total_mib, fork_pss.ram_dirty_mib,
              fork_pss.total_mib - fork_pss.ram_dirty_mib);
  std::printf("  idle clone VMM: PSS %.1f MiB = %.1f MiB it wrote + %.1f MiB beyond\n",
              clone_pss.total_mib, clone_pss.ram_dirty_mib,
              clone_pss.total_mib - clone_pss.ram_dirty_mib);
  double ratio = pct(fork_ms, 50) / std::max(1e-9, pct(clone_ms, 50));
  std::printf("  fork / clone restore (p50): %.2fx (target <= 2x: %s)\n", ratio,
              ratio <= 2 ? "met" : "NOT met");
  std::printf("  fork / cold boot (p50):     %.2fx\n",
              pct(fork_ms, 50) / std::max(1e-9, pct(cold_ms, 50)));
  double beyond = fork_pss.total_mib - fork_pss.ram_dirty_mib;
  std::printf("  idle fork PSS beyond its writes: %.1f MiB (target <= 25 MiB: %s)\n", beyond,
              beyond <= 25 ? "met" : "NOT met");
  return 0;
}
