// nv — the launcher: start, stop and inspect a NeuroVisor stack on this host.
//
//   nv up [--runtime-dir DIR] [--only a,b] [--wait-s N]   start every built service, wait ready
//   nv down [--runtime-dir DIR]                           SIGTERM in reverse order, clean up
//   nv status [--json]                                    what is registered on the bus
//   nv submit|exec|audit|bench|keygen ARGS...             run nv-<name> from beside this binary
//
// Every service runs as its own process (new session, log file under RT/logs, pid file under
// RT/pids). Services that are not built are not started; nothing stands in for them.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/compat/json.h>
#include <nv/schema/bus.capnp.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/client.h"
#include "common/config.h"
#include "common/interrupt.h"
#include "common/json.h"
#include "common/service.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct ServiceEntry {
  const char* name;          // short name: log file, pid file, --only
  const char* binary;        // nv-<...> beside the launcher
  const char* registers_as;  // service name in nv.status ("" = the orchestrator itself)
  const char* role;
};

// Start order matters: the orchestrator is the hub everyone connects to; the sentinel comes
// before the pool manager so it sees the first vm.booted events; the executor after the pool
// manager whose VMs it leases.
constexpr ServiceEntry kServices[] = {
    {"orchestrator", "nv-orchestrator", "", "broker, event hub, agent loop"},
    {"ebpf-sentinel", "nv-ebpf-sentinel", "ebpf-sentinel", "eBPF tracing and egress control"},
    {"metrics-exporter", "nv-metrics-exporter", "metrics-exporter", "Prometheus /metrics"},
    {"vm-pool-manager", "nv-vm-pool-manager", "vm-pool-manager", "warm microVM pool"},
    {"sandbox-executor", "nv-sandbox-executor", "exec", "runs code in microVMs"},
    {"llm-gateway", "nv-llm-gateway", "llm", "HTTP to the model server"},
};

fs::path self_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : p.parent_path();
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t read_pid(const fs::path& p) {
  std::string s = read_file(p);
  try {
    return static_cast<pid_t>(std::stol(s));
  } catch (...) {
    return 0;
  }
}

bool alive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return false;
  // A zombie child of ours is not alive.
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return !(close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z');
}

std::string tail(const fs::path& p, size_t lines) {
  std::string text = read_file(p);
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

struct Common {
  std::string runtime_dir;
  nv::Endpoints endpoints;
};

std::optional<nv::Client::Incoming> query_status(zmq::context_t& ctx, const Common& c,
                                                 std::chrono::milliseconds deadline) {
  nv::Client client(ctx, nv::ClientOptions{c.endpoints.clients, {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  nv::bus::init_body<nv::schema::StatusRequest>(mb);
  auto r = client.call("nv.status", &mb, deadline);
  if (!r) return std::nullopt;
  return std::move(r.value());
}

pid_t spawn(const fs::path& binary, const fs::path& log, const std::vector<std::string>& args,
            const std::string& runtime_dir) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid > 0) return pid;
  setsid();
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
  }
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  setenv("NV_RUNTIME_DIR", runtime_dir.c_str(), 1);
  std::vector<char*> argv;
  std::string bin = binary.string();
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(bin.c_str(), argv.data());
  std::fprintf(stderr, "execv(%s) failed: %s\n", bin.c_str(), std::strerror(errno));
  _exit(127);
}

int stop_all(const Common& c, bool quiet) {
  fs::path pids = fs::path(c.runtime_dir) / "pids";
  int stopped = 0;
  for (auto it = std::rbegin(kServices); it != std::rend(kServices); ++it) {
    fs::path pf = pids / (std::string(it->name) + ".pid");
    if (!fs::exists(pf)) continue;
    pid_t pid = read_pid(pf);
    if (alive(pid)) {
      kill(pid, SIGTERM);
      auto end = Clock::now() + std::chrono::seconds(20);
      while (alive(pid) && Clock::now() < end) {
        waitpid(pid, nullptr, WNOHANG);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (alive(pid)) {
        std::cerr << "nv down: " << it->name << " (pid " << pid
                  << ") ignored SIGTERM for 20 s; sending SIGKILL\n";
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        for (int i = 0; i < 100 && alive(pid); ++i) {
          waitpid(pid, nullptr, WNOHANG);
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      // Anything left in its session (helpers it started) goes too.
      kill(-pid, SIGKILL);
      ++stopped;
      if (!quiet) std::cout << "stopped " << it->name << " (pid " << pid << ")\n";
    }
    fs::remove(pf);
  }
  // No socket file is left behind, whoever created it.
  std::error_code ec;
  for (auto& e : fs::directory_iterator(c.runtime_dir, ec)) {
    if (e.is_socket() || e.path().extension() == ".sock") fs::remove(e.path(), ec);
  }
  fs::remove(pids, ec);
  return stopped;
}

std::string fmt_uptime(uint64_t ms) {
  uint64_t s = ms / 1000;
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%luh%02lum", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lum%02lus", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lu.%lus", s, (ms % 1000) / 100);
  return buf;
}

int cmd_status(zmq::context_t& ctx, const Common& c, bool json) {
  auto in = query_status(ctx, c, std::chrono::milliseconds(2000));
  if (int sig = nv::interrupt::requested()) {
    std::cerr << "nv status: " << nv::interrupt::signal_name(sig) << ": status query cancelled\n";
    return nv::interrupt::exit_code();
  }
  if (!in) {
    std::cerr << "nv status: no orchestrator answers at " << c.endpoints.clients
              << "; start the stack with `./nv up`\n";
    return 3;
  }
  auto r = in->body.root<nv::schema::StatusReply>();
  if (!r) {
    std::cerr << "nv status: bad reply: " << r.error().message << "\n";
    return 1;
  }
  if (json) {
    std::cout << nv::to_json(r.value()) << "\n";  // 64-bit numbers as numbers
    return 0;
  }
  auto s = r.value();
  std::printf("%-18s %-34s %8s %9s %8s %9s\n", "SERVICE", "INSTANCE", "PID", "UPTIME",
              "CAPACITY", "INFLIGHT");
  std::printf("%-18s %-34s %8u %9s %8s %9s\n", "orchestrator", "(broker)", s.getOrchestratorPid(),
              fmt_uptime(s.getOrchestratorUptimeMs()).c_str(), "-", "-");
  for (auto w : s.getServices()) {
    std::printf("%-18s %-34s %8u %9s %8u %9u\n", w.getService().cStr(), w.getInstance().cStr(),
                w.getPid(), fmt_uptime(w.getUptimeMs()).c_str(), w.getCapacity(),
                w.getInFlight());
  }
  std::printf("queued requests: %u\n", s.getQueued());
  return 0;
}

int cmd_up(zmq::context_t& ctx, const Common& c, const std::string& only, int wait_s) {
  fs::path rt = c.runtime_dir;
  fs::create_directories(rt / "logs");
  fs::create_directories(rt / "pids");
  fs::path orch_pid = rt / "pids" / "orchestrator.pid";
  if (fs::exists(orch_pid) && alive(read_pid(orch_pid))) {
    std::cout << "the stack is already up in " << c.runtime_dir << "\n";
    return cmd_status(ctx, c, false);
  }
  stop_all(c, true);  // leftovers of a stack that died
  fs::create_directories(rt / "pids");
  std::set<std::string> wanted;
  std::stringstream ss(only);
  for (std::string n; std::getline(ss, n, ',');) {
    if (!n.empty()) wanted.insert(n);
  }
  fs::path bin = self_dir();
  struct Started {
    const ServiceEntry* entry;
    pid_t pid;
  };
  std::vector<Started> started;
  auto fail = [&](const std::string& why, const ServiceEntry* who) {
    std::cerr << "nv up: " << why << "\n";
    if (who) {
      fs::path log = rt / "logs" / (std::string(who->name) + ".log");
      std::cerr << "--- last lines of " << log.string() << " ---\n" << tail(log, 15);
    }
    std::cerr << "nv up: stopping what was started\n";
    stop_all(c, true);
    return 1;
  };
  for (const auto& e : kServices) {
    if (!wanted.empty() && !wanted.count(e.name) && std::string(e.name) != "orchestrator") {
      continue;
    }
    fs::path binary = bin / e.binary;
    if (!fs::exists(binary)) continue;  // not built (yet): not started
    fs::path log = rt / "logs" / (std::string(e.name) + ".log");
    pid_t pid = spawn(binary, log, {}, c.runtime_dir);
    if (pid < 0) return fail(std::string("fork failed: ") + std::strerror(errno), nullptr);
    std::ofstream(rt / "pids" / (std::string(e.name) + ".pid")) << pid << "\n";
    started.push_back({&e, pid});
    std::cout << "started " << e.name << " (pid " << pid << "): " << e.role << "\n";
  }
  // Ready = the orchestrator answers nv.status and lists every started worker service.
  auto end = Clock::now() + std::chrono::seconds(wait_s);
  while (true) {
    if (int sig = nv::interrupt::requested()) {
      // Ctrl-C during start-up: what was started is stopped again, not left half up.
      std::cerr << "nv up: " << nv::interrupt::signal_name(sig)
                << ": start-up cancelled; stopping what was started\n";
      stop_all(c, true);
      return nv::interrupt::exit_code();
    }
    for (auto& s : started) {
      waitpid(s.pid, nullptr, WNOHANG);
      if (!alive(s.pid)) return fail(std::string(s.entry->name) + " exited during start-up", s.entry);
    }
    std::set<std::string> missing;
    for (auto& s : started) {
      if (*s.entry->registers_as) missing.insert(s.entry->registers_as);
    }
    bool orchestrator_ok = false;
    if (auto in = query_status(ctx, c, std::chrono::milliseconds(500))) {
      auto r = in->body.root<nv::schema::StatusReply>();
      if (r) {
        orchestrator_ok = true;
        for (auto w : r->getServices()) missing.erase(w.getService().cStr());
      }
    }
    if (orchestrator_ok && missing.empty()) break;
    if (Clock::now() > end) {
      std::string names;
      for (auto& m : missing) names += " " + m;
      const ServiceEntry* who = nullptr;
      for (auto& s : started) {
        if (missing.count(s.entry->registers_as)) who = s.entry;
      }
      if (!orchestrator_ok) who = &kServices[0];
      return fail("not ready after " + std::to_string(wait_s) + " s:" +
                      (orchestrator_ok ? names : std::string(" orchestrator")),
                  who);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::cout << "NeuroVisor is up (runtime dir " << c.runtime_dir << ")\n"
            << "  clients:  " << c.endpoints.clients << "\n"
            << "  workers:  " << c.endpoints.workers << "\n"
            << "  events:   " << c.endpoints.events_out << "\n"
            << "  logs:     " << (rt / "logs").string() << "\n";
  return 0;
}

int pass_through(const std::string& tool, int argc, char** argv) {
  fs::path binary = self_dir() / ("nv-" + tool);
  if (!fs::exists(binary)) {
    std::cerr << "nv: " << binary.string() << " is not built\n";
    return 127;
  }
  std::vector<char*> args;
  std::string bin = binary.string();
  args.push_back(bin.data());
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(bin.c_str(), args.data());
  std::cerr << "nv: execv(" << bin << ") failed: " << std::strerror(errno) << "\n";
  return 127;
}

constexpr const char* kUsage =
    "usage: nv COMMAND [options]\n"
    "  up [--only a,b] [--wait-s N]   start every built service and wait until all are ready\n"
    "  down                           stop the stack (SIGTERM, then SIGKILL after 20 s)\n"
    "  status [--json]                services registered on the bus, pids, uptime\n"
    "  submit|exec|audit|bench|keygen run that tool (nv-submit, ...) with the arguments\n"
    "options for up, down, status: --runtime-dir DIR (env NV_RUNTIME_DIR)\n";

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "submit" || cmd == "exec" || cmd == "audit" || cmd == "bench" || cmd == "keygen") {
    return pass_through(cmd, argc, argv);
  }
  if (cmd != "up" && cmd != "down" && cmd != "status") {
    std::cerr << "nv: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  }
  nv::Config config("nv " + cmd, "manage the NeuroVisor stack on this host");
  config.add_string("runtime-dir", "", "runtime directory (default: $NV_RUNTIME_DIR or /run/neurovisor)");
  config.add_string("clients-endpoint", "", "orchestrator front end (default ipc://RT/clients.sock)");
  config.add_string("only", "", "up: start only these services (comma-separated short names)");
  config.add_int("wait-s", 180, "up: seconds to wait for every service to be ready");
  config.add_bool("json", false, "status: print JSON");
  if (auto st = config.parse(argc - 1, argv + 1); !st) {
    std::cerr << "nv " << cmd << ": " << st.error().message << "\n";
    return 2;
  }
  if (config.help_requested()) {
    std::cout << config.help();
    return 0;
  }
  Common c;
  c.runtime_dir = config.str("runtime-dir").empty() ? nv::default_runtime_dir()
                                                    : config.str("runtime-dir");
  c.endpoints.clients = config.str("clients-endpoint").empty()
                            ? nv::bus::ipc_endpoint(c.runtime_dir + "/clients.sock")
                            : config.str("clients-endpoint");
  c.endpoints.workers = nv::bus::ipc_endpoint(c.runtime_dir + "/workers.sock");
  c.endpoints.events_out = nv::bus::ipc_endpoint(c.runtime_dir + "/events.sock");
  zmq::context_t ctx(1);
  // `nv down` finishes what it started whatever happens; `up` and `status` stop on Ctrl-C.
  if (cmd != "down") nv::interrupt::install();
  if (cmd == "up") return cmd_up(ctx, c, config.str("only"), static_cast<int>(config.integer("wait-s")));
  if (cmd == "down") {
    int n = stop_all(c, false);
    if (n == 0) std::cout << "nothing was running in " << c.runtime_dir << "\n";
    return 0;
  }
  return cmd_status(ctx, c, config.boolean("json"));
}
