// processes.cc — see processes.h.
#include "guest/agent/processes.h"

#include <dirent.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace nv::guest::agent {

namespace {

// The whole of a small /proc file ("" when it cannot be read).
std::string read_small(const std::string& path, size_t cap) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[4096];
  while (out.size() < cap) {
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, cap - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

int64_t ms_of(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

bool read_process(int pid, ProcessRecord& out) {
  const std::string base = "/proc/" + std::to_string(pid);
  const std::string stat = read_small(base + "/stat", 4096);
  // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
  // stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
  const size_t close = stat.rfind(')');
  const size_t open = stat.find('(');
  if (close == std::string::npos || open == std::string::npos || close + 2 >= stat.size()) {
    return false;
  }
  std::vector<std::string> f;  // fields from `state` on (field 3 of proc(5) is f[0])
  size_t i = close + 2;
  while (i < stat.size() && f.size() < 22) {
    size_t j = stat.find(' ', i);
    if (j == std::string::npos) j = stat.size();
    f.push_back(stat.substr(i, j - i));
    i = j + 1;
  }
  if (f.size() < 22) return false;
  out = ProcessRecord{};
  out.pid = pid;
  out.state = f[0];
  out.ppid = std::atoi(f[1].c_str());
  out.pgid = std::atoi(f[2].c_str());
  out.sid = std::atoi(f[3].c_str());
  const long hz = ::sysconf(_SC_CLK_TCK);
  const uint64_t start_ticks = std::strtoull(f[19].c_str(), nullptr, 10);
  const uint64_t rss_pages = std::strtoull(f[21].c_str(), nullptr, 10);
  out.rss_bytes = rss_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // starttime counts clock ticks since boot: now - uptime + starttime.
  out.started_unix_ms = ms_of(CLOCK_REALTIME) - ms_of(CLOCK_BOOTTIME) +
                        static_cast<int64_t>(start_ticks * 1000 / static_cast<uint64_t>(hz));
  const std::string status = read_small(base + "/status", 8192);
  size_t u = status.find("\nUid:");
  if (u != std::string::npos) out.uid = std::atoi(status.c_str() + u + 5);
  std::string cmd = read_small(base + "/cmdline", 4096);
  while (!cmd.empty() && cmd.back() == '\0') cmd.pop_back();
  std::replace(cmd.begin(), cmd.end(), '\0', ' ');
  // Kernel threads have no command line and are children of kthreadd (pid 2) or kthreadd.
  out.kernel_thread = cmd.empty() && (pid == 2 || out.ppid == 2);
  out.command = cmd.empty() ? "[" + stat.substr(open + 1, close - open - 1) + "]" : cmd;
  return true;
}

std::vector<ProcessRecord> scan_processes() {
  std::vector<ProcessRecord> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    ProcessRecord r;
    if (read_process(static_cast<int>(pid), r)) out.push_back(std::move(r));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const ProcessRecord& a, const ProcessRecord& b) { return a.pid < b.pid; });
  return out;
}

}  // namespace nv::guest::agent
