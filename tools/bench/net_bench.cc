// nv-bench net — guest networking through the policy path vs the same path unfiltered, side by
// side in one run (issue 16's target: policy ≥ 0.8× unfiltered):
//   throughput    a 50 MB HTTP GET by python in the guest (urllib), MB/s
//   connections   sequential TCP connect + close from the guest, connections/s
// Two nv-vm-pool-manager --net processes (small tier, --warm 1), each with its own uplink: a
// network namespace this bench makes ("the internet": 198.51.100.10 on its loopback, python3
// http.server serving a 50 MB file, and a TCP accept loop for the connection rate). One pool
// filters (the nftables table of network.h: deny set, allow set, ct count, token bucket at 1 GB/s
// so it does not cap the figure), the other runs with --net-no-filter (NAT only). Traffic stays
// inside namespaces the bench made.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_stack.h"
#include "common/interrupt.h"
#include "guest/host/guest_channel.h"
#include "pool_client.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const char* kHelp =
    "usage: nv-bench net [--runs N] [--mb N] [--conns N] [--kernel VMLINUX --rootfs ROOTFS]\n"
    "Guest networking: an HTTP GET of --mb MB (default 50) and --conns (default 200) TCP\n"
    "connections from a sandbox, through the nftables policy vs unfiltered (NAT only), each\n"
    "--runs times (default 3), in namespaces the bench makes.\n";

struct Args {
  int runs = 3, mb = 50, conns = 200;
  std::string kernel, rootfs;
};

std::string sh_out(const std::string& cmd) {
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    ::pclose(f);
  }
  return out;
}

// Spawns `args`; stdout and stderr go to `log` when given.
pid_t spawn(const std::vector<std::string>& args, const std::string& log = "") {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!log.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// One side: its "internet" namespace with the servers, and its pool manager.
struct Side {
  std::string name, dir, inet_path, endpoint;
  int inet_fd = -1;
  std::vector<pid_t> pids;  // servers, then the pool manager
  ~Side() {
    for (auto it = pids.rbegin(); it != pids.rend(); ++it) {
      ::kill(*it, it == pids.rbegin() ? SIGTERM : SIGKILL);  // the pool stops its VMs
      ::waitpid(*it, nullptr, 0);
    }
    if (inet_fd >= 0) ::close(inet_fd);
    if (!dir.empty()) sh_out("rm -rf " + dir);
  }
};

bool make_side(Side& s, const Args& a, const std::string& bin_dir, bool filtered) {
  s.dir = "/tmp/nv-bench-net-" + s.name + "-" + std::to_string(::getpid());
  sh_out("mkdir -p " + s.dir + "/www && head -c " + std::to_string(a.mb) + "M /dev/zero > " +
         s.dir + "/www/big");
  std::thread([&s] {
    if (::unshare(CLONE_NEWNET) == 0) s.inet_fd = ::open("/proc/thread-self/ns/net", O_RDONLY);
  }).join();
  if (s.inet_fd < 0) return false;
  s.inet_path = "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(s.inet_fd);
  const std::string in = "nsenter --net=" + s.inet_path + " ";
  sh_out(in + "ip link set lo up; " + in + "ip addr add 198.51.100.10/32 dev lo");
  s.pids.push_back(spawn({"nsenter", "--net=" + s.inet_path, "python3", "-m", "http.server",
                          "--bind", "198.51.100.10", "--directory", s.dir + "/www", "8080"}));
  s.pids.push_back(spawn(
      {"nsenter", "--net=" + s.inet_path, "python3", "-c",
       "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
       "s.bind(('198.51.100.10', 7070)); s.listen(512)\n"
       "while True:\n  c, _ = s.accept(); c.close()\n"}));
  s.endpoint = "ipc://" + s.dir + "/vm-pool.sock";
  std::vector<std::string> args = {bin_dir + "/nv-vm-pool-manager",
                                   "--runtime-dir",
                                   s.dir,
                                   "--state-dir",
                                   s.dir + "/state",
                                   "--vm-pool-endpoint",
                                   s.endpoint,
                                   "--events-in-endpoint",
                                   "ipc://" + s.dir + "/no-hub.sock",
                                   "--no-require-egress",
                                   "--accel",
                                   "tcg",
                                   "--size",
                                   "small",
                                   "--warm",
                                   "1",
                                   "--max",
                                   "2",
                                   "--boot-timeout-ms",
                                   "180000",
                                   "--net",
                                   "--net-uplink-netns",
                                   s.inet_path};
  if (!a.kernel.empty()) args.insert(args.end(), {"--kernel", a.kernel});
  if (!a.rootfs.empty()) args.insert(args.end(), {"--rootfs", a.rootfs});
  if (!filtered) args.push_back("--net-no-filter");
  s.pids.push_back(spawn(args, s.dir + "/pool.log"));
  return true;
}

std::string guest_python(const nv::exec::VmLease& l, const std::string& code) {
  auto deadline = Clock::now() + 600s;
  auto ch = nv::guest::GuestChannel::connect(l.channel_path, nv::guest::ChannelKind::unix_stream, 0,
                                             deadline);
  if (!ch.ok()) return "ERROR " + ch.error().message;
  nv::guest::ExecSpec spec;
  spec.language = nv::schema::Language::PYTHON;
  spec.code = code;
  spec.timeout_ms = 590000;
  std::string out;
  auto o = ch.value()->exec(
      spec,
      [&](nv::schema::Stream s, std::string_view d) {
        if (s == nv::schema::Stream::STDOUT) out.append(d);
      },
      deadline);
  if (!o.ok()) return "ERROR " + o.error().message;
  return out;
}

}  // namespace

int run_net_bench(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--help" || k == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    } else if (k == "--runs") {
      a.runs = std::clamp(std::atoi(next().c_str()), 1, 100);
    } else if (k == "--mb") {
      a.mb = std::clamp(std::atoi(next().c_str()), 1, 1000);
    } else if (k == "--conns") {
      a.conns = std::clamp(std::atoi(next().c_str()), 1, 10000);
    } else if (k == "--kernel") {
      a.kernel = next();
    } else if (k == "--rootfs") {
      a.rootfs = next();
    } else {
      std::fprintf(stderr, "nv-bench net: unknown option %s\n%s", k.c_str(), kHelp);
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "nv-bench net: needs root (network namespaces, VM jails)\n");
    return 2;
  }
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string bin_dir = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "";
  bin_dir = bin_dir.substr(0, bin_dir.rfind('/'));
  Side pol, raw;
  pol.name = "policy";
  raw.name = "unfiltered";
  if (!make_side(pol, a, bin_dir, true) || !make_side(raw, a, bin_dir, false)) {
    std::fprintf(stderr, "nv-bench net: cannot make the namespaces\n");
    return 1;
  }
  zmq::context_t ctx;
  struct Result {
    std::vector<double> mbps, cps;
  } res[2];
  Side* sides[2] = {&pol, &raw};
  std::vector<nv::exec::VmLease> leases(2);
  std::vector<std::unique_ptr<nv::exec::PoolClient>> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(std::make_unique<nv::exec::PoolClient>(
        ctx, nv::ClientOptions{sides[i]->endpoint, std::nullopt, "", {}}));
    nv::exec::SandboxLeaseSpec s;
    s.sandbox_id = "bench-net-" + sides[i]->name;
    s.owner = "bench";
    s.tier = nv::schema::SizeTier::SMALL;
    s.wait = 300s;
    s.network.allow = true;
    s.network.entries = {"198.51.100.10/32"};
    s.network.bandwidth = 1'000'000'000;  // the token bucket is there, but not the bottleneck
    s.network.max_connections = 65536;
    nv::Result<nv::exec::VmLease> l = nv::make_error(nv::ErrorCode::TIMED_OUT, "no pool");
    for (auto end = Clock::now() + 300s; Clock::now() < end && !nv::interrupt::requested();) {
      l = clients[i]->lease_sandbox("bench", s);
      if (l.ok() || (l.error().code != nv::ErrorCode::POOL_EXHAUSTED &&
                     l.error().code != nv::ErrorCode::TIER_UNAVAILABLE &&
                     l.error().code != nv::ErrorCode::VM_FAILED)) {
        break;
      }
      std::this_thread::sleep_for(500ms);
    }
    if (!l.ok()) {
      std::fprintf(stderr, "nv-bench net: lease (%s): %s\n%s\n", sides[i]->name.c_str(),
                   l.error().message.c_str(),
                   sh_out("tail -5 " + sides[i]->dir + "/pool.log").c_str());
      return 1;
    }
    leases[i] = l.value();
  }
  const std::string get =
      "import time, urllib.request\nt = time.monotonic()\nn = 0\n"
      "with urllib.request.urlopen('http://198.51.100.10:8080/big', timeout=300) as r:\n"
      "    while True:\n        b = r.read(1 << 20)\n        if not b: break\n        n += len(b)\n"
      "print(n, time.monotonic() - t)\n";
  const std::string conn =
      "import socket, time\nt = time.monotonic()\nfor _ in range(" + std::to_string(a.conns) +
      "):\n    s = socket.create_connection(('198.51.100.10', 7070), 10)\n    s.close()\n"
      "print(" +
      std::to_string(a.conns) + ", time.monotonic() - t)\n";
  for (int r = 0; r < a.runs && !nv::interrupt::requested(); ++r) {
    for (int i = 0; i < 2; ++i) {  // interleaved: both sides see the same machine load
      double bytes = 0, secs = 0;
      std::string o = guest_python(leases[i], get);
      if (std::sscanf(o.c_str(), "%lf %lf", &bytes, &secs) == 2 && secs > 0 &&
          bytes == a.mb * 1048576.0) {
        res[i].mbps.push_back(bytes / 1e6 / secs);
      } else {
        std::fprintf(stderr, "nv-bench net: GET (%s) failed: %s\n", sides[i]->name.c_str(),
                     o.c_str());
      }
      o = guest_python(leases[i], conn);
      double c = 0;
      if (std::sscanf(o.c_str(), "%lf %lf", &c, &secs) == 2 && secs > 0) {
        res[i].cps.push_back(c / secs);
      } else {
        std::fprintf(stderr, "nv-bench net: connections (%s) failed: %s\n", sides[i]->name.c_str(),
                     o.c_str());
      }
    }
  }
  auto med = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("nv-bench net: %d runs, %d MB GET, %d connections, guest python under %s\n", a.runs,
              a.mb, a.conns, leases[0].accel.c_str());
  std::printf("  %-34s %10.1f MB/s (median)\n", "GET through the policy", med(res[0].mbps));
  std::printf("  %-34s %10.1f MB/s (median)\n", "GET unfiltered (NAT only)", med(res[1].mbps));
  std::printf("  %-34s %10.1f /s (median)\n", "connections through the policy", med(res[0].cps));
  std::printf("  %-34s %10.1f /s (median)\n", "connections unfiltered", med(res[1].cps));
  const double t = med(res[1].mbps) > 0 ? med(res[0].mbps) / med(res[1].mbps) : 0;
  const double c = med(res[1].cps) > 0 ? med(res[0].cps) / med(res[1].cps) : 0;
  std::printf("  throughput ratio policy/unfiltered %.2f (target >= 0.8: %s)\n", t,
              t >= 0.8 ? "met" : "NOT met");
  std::printf("  connection ratio policy/unfiltered %.2f (target >= 0.8: %s)\n", c,
              c >= 0.8 ? "met" : "NOT met");
  for (int i = 0; i < 2; ++i) (void)clients[i]->release("bench", leases[i].vm_id, "bench done");
  return res[0].mbps.empty() || res[1].mbps.empty() ? 1 : 0;
}
