// nv — the launcher: start, stop and inspect a NeuroVisor stack on this host.
//
//   nv up [--runtime-dir DIR] [--only a,b] [--wait-s N]   start every built service that is not
//                                                         running, wait until all are ready
//   nv down [--runtime-dir DIR]                           SIGTERM in reverse order, clean up
//   nv status [--json]                                    every service: running, registered, dead
//   nv submit|exec|audit|bench|keygen ARGS...             run nv-<name> from beside this binary
//
// Every service runs as its own process (new session, log file under RT/logs, pid file under
// RT/pids), child of a supervisor (supervisor.h) that restarts it with backoff when it dies.
// Services that are not built are not started; nothing stands in for them.
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
#include <map>
#include <set>
#include <thread>

#include "common/client.h"
#include "common/config.h"
#include "common/interrupt.h"
#include "common/json.h"
#include "common/service.h"
#include "sandbox_cmd.h"
#include "supervisor.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

using nv::launcher::alive;
using nv::launcher::kServices;
using nv::launcher::read_pid;
using nv::launcher::ServiceEntry;

fs::path self_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : p.parent_path();
}

std::string read_file(const fs::path& p) { return nv::launcher::read_file(p.string()); }

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

// Ends the supervisor first (so nothing is restarted while the stack goes down), then every
// service in reverse start order.
int stop_all(const Common& c, bool quiet) {
  fs::path pids = fs::path(c.runtime_dir) / "pids";
  pid_t sup = read_pid(pids / "supervisor.pid");
  if (alive(sup)) {
    kill(sup, SIGTERM);
    for (int i = 0; i < 250 && alive(sup); ++i) {
      waitpid(sup, nullptr, WNOHANG);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (alive(sup)) kill(sup, SIGKILL);
  }
  std::error_code ec;
  fs::remove(pids / "supervisor.pid", ec);
  int stopped = 0;
  for (auto it = std::rbegin(kServices); it != std::rend(kServices); ++it) {
    fs::path pf = pids / (std::string(it->name) + ".pid");
    fs::remove(pids / (std::string(it->name) + ".failed"), ec);
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
  for (auto& e : fs::directory_iterator(c.runtime_dir, ec)) {
    if (e.is_socket() || e.path().extension() == ".sock") fs::remove(e.path(), ec);
  }
  fs::remove_all(pids, ec);
  return stopped;
}

std::string fmt_uptime(uint64_t ms) {
  uint64_t s = ms / 1000;
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%luh%02lum", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lum%02lus", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lu.%lus", s, (ms % 1000) / 100);
  return buf;
}

// What the launcher knows of each service it started: its pid file and the supervisor's note.
struct Launched {
  const ServiceEntry* entry;
  pid_t pid;  // 0 = no pid file
  bool running;
  std::string failed;  // the supervisor gave up: why
};

std::vector<Launched> launched(const Common& c) {
  fs::path pids = fs::path(c.runtime_dir) / "pids";
  std::vector<Launched> out;
  std::set<std::string> wanted;
  std::stringstream ss(read_file(pids / "wanted"));
  for (std::string n; std::getline(ss, n);) wanted.insert(n);
  for (const auto& e : kServices) {
    if (!wanted.count(e.name)) continue;
    pid_t pid = read_pid(pids / (std::string(e.name) + ".pid"));
    std::string failed = read_file(pids / (std::string(e.name) + ".failed"));
    while (!failed.empty() && failed.back() == '\n') failed.pop_back();
    out.push_back({&e, pid, alive(pid), failed});
  }
  return out;
}

// Exit status: 0 every service is running and registered; 1 one is dead or not registered
// (marked in the table); 3 the orchestrator does not answer.
int cmd_status(zmq::context_t& ctx, const Common& c, bool json) {
  auto mine = launched(c);
  pid_t sup = read_pid(fs::path(c.runtime_dir) / "pids" / "supervisor.pid");
  auto in = query_status(ctx, c, std::chrono::milliseconds(2000));
  if (int sig = nv::interrupt::requested()) {
    std::cerr << "nv status: " << nv::interrupt::signal_name(sig) << ": status query cancelled\n";
    return nv::interrupt::exit_code();
  }
  if (!in) {
    std::cerr << "nv status: no orchestrator answers at " << c.endpoints.clients
              << "; start the stack with `nv up`";
    if (!mine.empty()) std::cerr << " (logs: " << c.runtime_dir << "/logs)";
    std::cerr << "\n";
    return 3;
  }
  auto r = in->body.root<nv::schema::StatusReply>();
  if (!r) {
    std::cerr << "nv status: bad reply: " << r.error().message << "\n";
    return 1;
  }
  auto s = r.value();
  std::map<std::string, std::set<uint32_t>> registered;
  registered[""].insert(s.getOrchestratorPid());
  for (auto w : s.getServices()) registered[w.getService().cStr()].insert(w.getPid());
  std::vector<std::string> problems;
  for (const auto& l : mine) {
    std::string name = l.entry->name;
    if (!l.running) {
      std::string why = !l.failed.empty() ? " (" + l.failed + "; start it: nv up)"
                        : alive(sup)      ? " (the supervisor restarts it)"
                                          : " (start it: nv up)";
      problems.push_back(name + ": DEAD" + why);
    } else if (!registered[l.entry->registers_as].count(static_cast<uint32_t>(l.pid))) {
      problems.push_back(name + ": running (pid " + std::to_string(l.pid) +
                         ") but not registered with the orchestrator");
    }
  }
  if (!mine.empty() && !alive(sup)) {
    problems.push_back("supervisor: DEAD (crashed services are not restarted; nv up starts it)");
  }
  if (json) {
    // The StatusReply as JSON, with one more member: "problems" (strings, [] when all is well).
    capnp::JsonCodec codec;
    std::string out = nv::to_json(s);  // 64-bit numbers as numbers
    std::string list = "\"problems\":[";
    for (size_t i = 0; i < problems.size(); ++i) {
      list += (i ? "," : "") + std::string(codec.encode(capnp::Text::Reader(problems[i])).cStr());
    }
    list += "]";
    out.pop_back();  // the closing brace
    std::cout << out << (out.size() > 1 ? "," : "") << list << "}\n";
    return problems.empty() ? 0 : 1;
  }
  std::printf("%-18s %-34s %8s %9s %8s %9s\n", "SERVICE", "INSTANCE", "PID", "UPTIME", "CAPACITY",
              "INFLIGHT");
  std::printf("%-18s %-34s %8u %9s %8s %9s\n", "orchestrator", "(broker)", s.getOrchestratorPid(),
              fmt_uptime(s.getOrchestratorUptimeMs()).c_str(), "-", "-");
  for (auto w : s.getServices()) {
    // An instance of a service this launcher runs whose pid is not the live one is a killed
    // process the orchestrator still lists until its heartbeats time out.
    std::string instance = w.getInstance().cStr();
    for (const auto& l : mine) {
      if (w.getService() == l.entry->registers_as && w.getPid() != static_cast<uint32_t>(l.pid)) {
        instance += " (gone)";
      }
    }
    std::printf("%-18s %-34s %8u %9s %8u %9u\n", w.getService().cStr(), instance.c_str(),
                w.getPid(), fmt_uptime(w.getUptimeMs()).c_str(), w.getCapacity(), w.getInFlight());
  }
  for (const auto& l : mine) {
    if (!l.running) {
      std::printf("%-18s %-34s %8s %9s %8s %9s\n", l.entry->name, "DEAD", "-", "-", "-", "-");
    }
  }
  std::printf("queued requests: %u\n", s.getQueued());
  for (const auto& p : problems) std::printf("problem: %s\n", p.c_str());
  return problems.empty() ? 0 : 1;
}

// Starts the supervisor (a new session, log RT/logs/supervisor.log), which starts every wanted
// service not running.
pid_t start_supervisor(const Common& c) {
  fs::path rt = c.runtime_dir;
  pid_t pid = fork();
  if (pid != 0) return pid;
  setsid();
  int fd = ::open((rt / "logs" / "supervisor.log").c_str(),
                  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
  }
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  std::string self = (self_dir() / "nv").string();
  std::string rtdir = c.runtime_dir;
  char arg1[] = "supervise";
  char* argv[] = {self.data(), arg1, rtdir.data(), nullptr};
  execv(self.c_str(), argv);
  std::fprintf(stderr, "execv(%s) failed: %s\n", self.c_str(), std::strerror(errno));
  _exit(127);
}

int cmd_up(zmq::context_t& ctx, const Common& c, const std::string& only, int wait_s) {
  fs::path rt = c.runtime_dir, pids = rt / "pids";
  fs::create_directories(rt / "logs");
  fs::create_directories(pids);
  fs::path bin = self_dir();
  // Wanted: what an earlier `nv up` asked for, plus what this one asks for (--only, else all).
  std::set<std::string> wanted;
  {
    std::stringstream prev(read_file(pids / "wanted"));
    for (std::string n; std::getline(prev, n);) {
      if (!n.empty()) wanted.insert(n);
    }
    std::set<std::string> asked;
    std::stringstream ss(only);
    for (std::string n; std::getline(ss, n, ',');) {
      if (n.empty()) continue;
      bool known = false;
      for (const auto& e : kServices) known = known || n == e.name;
      if (!known) {
        std::cerr << "nv up: --only: unknown service '" << n << "' (";
        for (const auto& e : kServices) std::cerr << (&e == kServices ? "" : ", ") << e.name;
        std::cerr << ")\n";
        return 2;
      }
      asked.insert(n);
    }
    if (asked.empty()) {
      for (const auto& e : kServices) asked.insert(e.name);
    }
    asked.insert("orchestrator");
    for (const auto& e : kServices) {
      if (asked.count(e.name) && fs::exists(bin / e.binary)) wanted.insert(e.name);
    }
  }
  pid_t sup = read_pid(pids / "supervisor.pid");
  bool was_up = alive(sup);
  auto before = launched(c);
  bool all_running = was_up;
  {
    std::set<std::string> running;
    for (const auto& l : before) {
      if (l.running) running.insert(l.entry->name);
    }
    for (const auto& n : wanted) all_running = all_running && running.count(n);
  }
  if (!was_up) {
    // Leftovers of a stack whose supervisor died: sockets of dead services go; running
    // services stay and are watched again.
    std::error_code ec;
    for (const auto& l : before) {
      if (!l.running) fs::remove(pids / (std::string(l.entry->name) + ".pid"), ec);
      fs::remove(pids / (std::string(l.entry->name) + ".failed"), ec);
    }
  }
  {
    std::ofstream w(pids / "wanted");
    for (const auto& n : wanted) w << n << "\n";
  }
  if (all_running) {
    std::cout << "the stack is already up in " << c.runtime_dir << "\n";
  } else if (was_up) {
    // The supervisor is there: it starts what is missing now, its backoff reset.
    kill(sup, SIGHUP);
    std::cout << "asked the supervisor (pid " << sup << ") to start what is not running\n";
  } else {
    sup = start_supervisor(c);
    if (sup < 0) {
      std::cerr << "nv up: fork failed: " << std::strerror(errno) << "\n";
      return 1;
    }
    std::ofstream(pids / "supervisor.pid") << sup << "\n";
  }
  auto fail = [&](const std::string& why, const ServiceEntry* who) {
    std::cerr << "nv up: " << why << "\n";
    if (who) {
      fs::path log = rt / "logs" / (std::string(who->name) + ".log");
      std::cerr << "--- last lines of " << log.string() << " ---\n" << tail(log, 15);
    }
    std::cerr << "nv up: stopping the stack\n";
    stop_all(c, true);
    return 1;
  };
  // Ready = every wanted service runs, and the orchestrator answers nv.status and lists every
  // worker service. A service the supervisor gave up on (exit 2: bad options, a port in use)
  // fails the start at once.
  auto end = Clock::now() + std::chrono::seconds(wait_s);
  std::set<std::string> announced;
  for (const auto& l : before) {
    if (l.running) announced.insert(l.entry->name);
  }
  while (true) {
    if (int sig = nv::interrupt::requested()) {
      // Ctrl-C during start-up: what was started is stopped again, not left half up.
      std::cerr << "nv up: " << nv::interrupt::signal_name(sig)
                << ": start-up cancelled; stopping what was started\n";
      stop_all(c, true);
      return nv::interrupt::exit_code();
    }
    waitpid(-1, nullptr, WNOHANG);
    if (!alive(sup))
      return fail("the supervisor exited (log: " + (rt / "logs").string() + "/supervisor.log)",
                  nullptr);
    // Registered = the orchestrator lists the service with the pid running now (a killed
    // instance stays listed until its heartbeats time out).
    std::map<std::string, std::set<uint32_t>> registered;
    bool orchestrator_ok = false;
    if (auto in = query_status(ctx, c, std::chrono::milliseconds(500))) {
      auto r = in->body.root<nv::schema::StatusReply>();
      if (r) {
        orchestrator_ok = true;
        registered[""].insert(r->getOrchestratorPid());
        for (auto w : r->getServices()) registered[w.getService().cStr()].insert(w.getPid());
      }
    }
    std::set<std::string> missing;
    for (const auto& l : launched(c)) {
      if (!l.failed.empty()) return fail(l.failed, l.entry);
      if (l.running && !announced.count(l.entry->name)) {
        announced.insert(l.entry->name);
        std::cout << "started " << l.entry->name << " (pid " << l.pid << "): " << l.entry->role
                  << "\n";
      }
      if (!l.running || !registered[l.entry->registers_as].count(static_cast<uint32_t>(l.pid))) {
        missing.insert(l.entry->name);
      }
    }
    if (orchestrator_ok && missing.empty()) break;
    if (Clock::now() > end) {
      std::string names;
      for (auto& m : missing) names += " " + m;
      const ServiceEntry* who = nullptr;
      for (const auto& e : kServices) {
        if (missing.count(e.name)) who = &e;
      }
      if (!orchestrator_ok) who = &kServices[0];
      return fail("not ready after " + std::to_string(wait_s) +
                      " s:" + (orchestrator_ok ? names : std::string(" orchestrator")),
                  who);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (all_running) return cmd_status(ctx, c, false);
  std::cout << "NeuroVisor is up (runtime dir " << c.runtime_dir << ")\n"
            << "  clients:  " << c.endpoints.clients << "\n"
            << "  workers:  " << c.endpoints.workers << "\n"
            << "  events:   " << c.endpoints.events_out << "\n"
            << "  logs:     " << (rt / "logs").string() << "\n"
            << "  crashed services are restarted (supervisor pid " << sup << ")\n";
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
    "  up [--only a,b] [--wait-s N]   start every built service not running, wait until all are\n"
    "                                 ready; a supervisor restarts one that dies (backoff)\n"
    "  down                           stop the stack (SIGTERM, then SIGKILL after 20 s)\n"
    "  status [--json]                services registered on the bus, pids, uptime, dead ones;\n"
    "                                 exit 0 all up, 1 one is dead or unregistered, 3 no stack\n"
    "  submit|exec|audit|bench|keygen run that tool (nv-submit, ...) with the arguments\n"
    "  sandbox COMMAND ...            sandboxes that live: create, exec, cp, ls, fork, snapshot,\n"
    "                                 pause, resume, rm, ls-all (nv sandbox --help)\n"
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
  if (cmd == "supervise" && argc == 3) {  // `nv supervise RUNTIME_DIR`: started by `nv up`
    return nv::launcher::supervise(argv[2], self_dir().string());
  }
  if (cmd == "sandbox") return nv::launcher::sandbox_main(argc - 1, argv + 1);
  if (cmd == "submit" || cmd == "exec" || cmd == "audit" || cmd == "bench" || cmd == "keygen") {
    return pass_through(cmd, argc, argv);
  }
  if (cmd != "up" && cmd != "down" && cmd != "status") {
    std::cerr << "nv: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  }
  nv::Config config("nv " + cmd, "manage the NeuroVisor stack on this host");
  config.add_string("runtime-dir", "",
                    "runtime directory (default: $NV_RUNTIME_DIR or /run/neurovisor)");
  config.add_string("clients-endpoint", "",
                    "orchestrator front end (default ipc://RT/clients.sock)");
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
  if (!config.positional().empty()) {
    std::cerr << "nv " << cmd << ": unexpected argument '" << config.positional()[0] << "' (see nv "
              << cmd << " --help)\n";
    return 2;
  }
  Common c;
  c.runtime_dir =
      config.str("runtime-dir").empty() ? nv::default_runtime_dir() : config.str("runtime-dir");
  c.endpoints.clients = config.str("clients-endpoint").empty()
                            ? nv::bus::ipc_endpoint(c.runtime_dir + "/clients.sock")
                            : config.str("clients-endpoint");
  c.endpoints.workers = nv::bus::ipc_endpoint(c.runtime_dir + "/workers.sock");
  c.endpoints.events_out = nv::bus::ipc_endpoint(c.runtime_dir + "/events.sock");
  zmq::context_t ctx(1);
  // `nv down` finishes what it started whatever happens; `up` and `status` stop on Ctrl-C.
  if (cmd != "down") nv::interrupt::install();
  if (cmd == "up") {
    return cmd_up(ctx, c, config.str("only"), static_cast<int>(config.integer("wait-s")));
  }
  if (cmd == "down") {
    int n = stop_all(c, false);
    if (n == 0) std::cout << "nothing was running in " << c.runtime_dir << "\n";
    return 0;
  }
  return cmd_status(ctx, c, config.boolean("json"));
}
