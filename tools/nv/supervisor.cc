#include "supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

namespace nv::launcher {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double restart_delay_s(int attempt) {
  if (attempt < 1) attempt = 1;
  return std::min(30.0, 0.5 * std::pow(2.0, attempt - 1));
}

std::string read_file(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t read_pid(const std::string& p) {
  try {
    return static_cast<pid_t>(std::stol(read_file(p)));
  } catch (...) {
    return 0;
  }
}

bool alive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return false;
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return !(close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z');
}

pid_t spawn(const std::string& binary, const std::string& log, const std::string& runtime_dir) {
  pid_t pid = fork();
  if (pid != 0) return pid;  // the parent: the pid, or -1
  setsid();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the supervisor blocks signals; services must not
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
  }
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  setenv("NV_RUNTIME_DIR", runtime_dir.c_str(), 1);
  std::string bin = binary;
  char* argv[] = {bin.data(), nullptr};
  execv(bin.c_str(), argv);
  std::fprintf(stderr, "execv(%s) failed: %s\n", bin.c_str(), std::strerror(errno));
  _exit(127);
}

namespace {

void say(const std::string& what) {
  char ts[32];
  std::time_t now = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%FT%TZ", std::gmtime(&now));
  std::cout << ts << " supervisor: " << what << std::endl;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "ended";
}

struct Supervised {
  const ServiceEntry* entry;
  pid_t pid = 0;
  Clock::time_point started{};
  Clock::time_point next_start{};  // when it may be started again
  int quick_deaths = 0;
  bool given_up = false;
};

}  // namespace

int supervise(const std::string& runtime_dir, const std::string& bin_dir) {
  fs::path rt = runtime_dir, pids = rt / "pids", logs = rt / "logs";
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);

  std::vector<Supervised> services;
  std::stringstream wanted(read_file((pids / "wanted").string()));
  std::map<std::string, bool> want;
  for (std::string n; std::getline(wanted, n);) {
    if (!n.empty()) want[n] = true;
  }
  for (const auto& e : kServices) {
    if (want.count(e.name) && fs::exists(fs::path(bin_dir) / e.binary)) {
      Supervised s{&e};
      // A service still running from an earlier supervisor is watched, not started again.
      s.pid = read_pid((pids / (std::string(e.name) + ".pid")).string());
      if (!alive(s.pid)) s.pid = 0;
      s.started = Clock::now();
      services.push_back(s);
    }
  }
  say("watching " + std::to_string(services.size()) + " services");
  std::map<pid_t, int> exits;  // statuses of reaped children not yet matched
  while (true) {
    timespec ts{0, 100 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      say("stopping (the services are left to nv down)");
      break;
    }
    if (sig == SIGHUP) {
      say("SIGHUP: retrying every service that is not running");
      for (auto& s : services) {
        if (s.pid == 0) {
          s.given_up = false;
          s.quick_deaths = 0;
          s.next_start = Clock::now();
          fs::remove(pids / (std::string(s.entry->name) + ".failed"));
        }
      }
    }
    for (int status; true;) {
      pid_t p = waitpid(-1, &status, WNOHANG);
      if (p <= 0) break;
      exits[p] = status;
    }
    auto now = Clock::now();
    for (auto& s : services) {
      std::string name = s.entry->name;
      if (s.pid != 0 && !exits.count(s.pid) && alive(s.pid)) continue;
      if (s.pid != 0) {
        // It died: its own exit status when it was our child.
        auto it = exits.find(s.pid);
        int status = it != exits.end() ? it->second : -1;
        if (it != exits.end()) exits.erase(it);
        std::string how = status == -1 ? "gone" : describe(status);
        kill(-s.pid, SIGKILL);  // helpers left in its session (process group) go with it
        bool ran_long = now - s.started >= std::chrono::seconds(60);
        s.quick_deaths = ran_long ? 1 : s.quick_deaths + 1;
        s.pid = 0;
        fs::remove(pids / (name + ".pid"));
        if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
          say(name + " exited cleanly; not restarted");
          s.given_up = true;
        } else if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2) {
          // Exit 2 is a usage or configuration error (bad option, port in use): a restart
          // would fail the same way.
          std::ofstream(pids / (name + ".failed"))
              << name << " " << how << " (bad options or configuration, see "
              << (logs / (name + ".log")).string() << "); not restarted\n";
          say(name + " " + how + ": configuration error, not restarted");
          s.given_up = true;
        } else if (s.quick_deaths > kMaxQuickRestarts) {
          std::ofstream(pids / (name + ".failed"))
              << name << " " << how << " after " << kMaxQuickRestarts
              << " quick restarts; gave up (see " << (logs / (name + ".log")).string() << ")\n";
          say(name + " " + how + ": too many quick restarts, giving up");
          s.given_up = true;
        } else {
          double d = restart_delay_s(s.quick_deaths);
          s.next_start = now + std::chrono::milliseconds(static_cast<int64_t>(d * 1000));
          say(name + " " + how + "; restart " + std::to_string(s.quick_deaths) + " in " +
              std::to_string(d).substr(0, 4) + " s");
        }
      }
      if (s.given_up || now < s.next_start) continue;
      fs::path log = logs / (name + ".log");
      pid_t pid = spawn((fs::path(bin_dir) / s.entry->binary).string(), log.string(), runtime_dir);
      if (pid < 0) {
        say("fork failed for " + name + ": " + std::strerror(errno));
        s.next_start = now + std::chrono::seconds(1);
        continue;
      }
      s.pid = pid;
      s.started = now;
      std::ofstream(pids / (name + ".pid")) << pid << "\n";
      fs::remove(pids / (name + ".failed"));
      say("started " + name + " (pid " + std::to_string(pid) + ")");
    }
    exits.clear();
  }
  return 0;
}

}  // namespace nv::launcher
