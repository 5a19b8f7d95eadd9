// bench_stack.h — the stack an exec-level benchmark runs against (nv-bench exec, output):
// attach to a running one (--runtime-dir of `./nv up`) or start nv-orchestrator,
// nv-vm-pool-manager (small tier, --warm 2 --max 3 unless said) and nv-sandbox-executor from beside
// nv-bench in a temp runtime dir, stopped again (SIGTERM, reverse order) when OwnStack goes.
#pragma once

#include <nv/schema/bus.capnp.h>
#include <signal.h>
#include <stdlib.h>
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/interrupt.h"

namespace nv::bench {

// Milliseconds of a duration.
inline double ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The `p` quantile (0..1) of `v`, nearest rank; 0 for none.
inline double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// The pid of the VMM of `vm_id` (QEMU runs with -name nv-<vm id>), found in /proc; 0 if none.
inline pid_t vmm_pid_by_name(const std::string& vm_id) {
  const std::string want = "nv-" + vm_id;
  pid_t found = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), {});
    std::stringstream ss(cmd);
    for (std::string arg; !found && std::getline(ss, arg, '\0');) {
      if (arg == want) found = std::atoi(e->d_name);
    }
    if (found) break;
  }
  if (d) ::closedir(d);
  return found;
}

inline pid_t spawn(const std::string& bin, const std::vector<std::string>& args,
                   const std::string& rt, const std::string& log) {
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

// The stack a bench started (none in attach mode).
struct OwnStack {
  std::vector<pid_t> pids;  // executor, pool, orchestrator order for shutdown
  std::string dir;
  ~OwnStack() {
    for (pid_t p : pids) {
      ::kill(p, SIGTERM);
      for (int i = 0; i < 200 && waitpid(p, nullptr, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ::kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
};

// The runtime dir to use: `runtime_dir` when given, else a new stack's (kernel/rootfs default
// to $NV_BUILD_DIR/guest/..., else the build dir beside nv-bench). "" after printing why not.
inline std::string start_exec_stack(const char* part, OwnStack& own, const std::string& runtime_dir,
                                    std::string kernel, std::string rootfs,
                                    const std::string& accel, int warm = 2, int max = 3,
                                    const std::vector<std::string>& executor_args = {}) {
  namespace fs = std::filesystem;
  if (!runtime_dir.empty()) return runtime_dir;
  fs::path bin_dir = fs::read_symlink("/proc/self/exe").parent_path();
  fs::path build =
      std::getenv("NV_BUILD_DIR") ? fs::path(std::getenv("NV_BUILD_DIR")) : bin_dir.parent_path();
  if (kernel.empty()) kernel = (build / "guest/vmlinux").string();
  if (rootfs.empty()) rootfs = (build / "guest/rootfs.ext4").string();
  for (auto& p : {kernel, rootfs}) {
    if (!fs::exists(p)) {
      std::fprintf(stderr,
                   "nv-bench %s: %s missing (guest/build.sh, or --kernel/--rootfs, "
                   "or --runtime-dir of a running stack)\n",
                   part, p.c_str());
      return "";
    }
  }
  std::string tmpl_s = std::string("/tmp/nv-") + part + "-bench-XXXXXX";
  std::vector<char> tmpl(tmpl_s.begin(), tmpl_s.end());
  tmpl.push_back('\0');
  if (!mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return "";
  }
  std::string rt = own.dir = tmpl.data();
  std::string log = rt + "/stack.log";
  pid_t orch = spawn((bin_dir / "nv-orchestrator").string(), {}, rt, log);
  pid_t pool = spawn((bin_dir / "nv-vm-pool-manager").string(),
                     {"--kernel", kernel, "--rootfs", rootfs, "--size", "small", "--warm",
                      std::to_string(warm), "--max", std::to_string(max), "--accel", accel,
                      "--no-require-egress"},  // the bench's stack runs no sentinel
                     rt, log);
  pid_t exec = spawn((bin_dir / "nv-sandbox-executor").string(), executor_args, rt, log);
  own.pids = {exec, pool, orch};
  std::fprintf(stderr, "nv-bench %s: started a stack in %s (logs: %s)\n", part, rt.c_str(),
               log.c_str());
  return rt;
}

// Waits until an "exec" worker is registered with capacity (false after `limit`, or on Ctrl-C).
inline bool wait_exec_ready(Client& client, std::chrono::seconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end && !interrupt::requested()) {
    auto r = client.call("nv.status", nullptr, std::chrono::milliseconds(2000));
    if (r) {
      auto body = r->body.root<schema::StatusReply>();
      if (body) {
        for (auto s : body->getServices()) {
          if (s.getService() == "exec" && s.getCapacity()) return true;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return false;
}

}  // namespace nv::bench
