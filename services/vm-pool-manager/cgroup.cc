#include "cgroup.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <set>
#include <sstream>
#include <thread>

#include "common/log.h"

namespace nv::vm {
namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// Parses /proc/self/cgroup: "hier:ctrl1,ctrl2:path" → controller → path; "" key = the v2 line.
std::map<std::string, std::string> parse_self(const std::string& file) {
  std::map<std::string, std::string> out;
  auto text = read_file(file);
  if (!text.ok()) return out;
  std::istringstream in(text.value());
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (path == "/") path = "";
    if (ctrls.empty()) {
      out[""] = path;
      continue;
    }
    std::istringstream cs(ctrls);
    std::string c;
    while (std::getline(cs, c, ',')) out[c] = path;
  }
  return out;
}

uint64_t parse_u64(const std::string& s) {
  try {
    return s.empty() || s == "max" ? 0 : std::stoull(s);
  } catch (...) {
    return 0;
  }
}

// "key value" lines (cpu.stat, memory.events, memory.oom_control) → the value of `key`.
uint64_t keyed(const std::string& path, const std::string& key) {
  auto text = read_file(path);
  if (!text.ok()) return 0;
  std::istringstream in(text.value());
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

Status mkdir_one(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return sys_error("mkdir(" + dir + ")", errno);
  }
  return {};
}

}  // namespace

Status kill_and_remove(const std::string& dir) {
  if (!exists(dir)) return {};
  if (exists(dir + "/cgroup.kill")) (void)write_file(dir + "/cgroup.kill", "1");
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    std::string procs = read_file(dir + "/cgroup.procs").ok()
                            ? read_file(dir + "/cgroup.procs").value()
                            : std::string();
    std::istringstream in(procs);
    pid_t pid = 0;
    bool any = false;
    while (in >> pid) {
      any = true;
      ::kill(pid, SIGKILL);
    }
    if (!any) break;
    if (std::chrono::steady_clock::now() > until) {
      return make_error(ErrorCode::INTERNAL, "cgroup " + dir + " still has tasks after SIGKILL");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // rmdir can briefly fail with EBUSY while the last task is being torn down.
  for (int i = 0; i < 200; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    if (errno != EBUSY) return sys_error("rmdir(" + dir + ")", errno);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return sys_error("rmdir(" + dir + ")", EBUSY);
}

const char* CgroupLayout::mode_name() const {
  switch (mode) {
    case Mode::v2:
      return "v2";
    case Mode::hybrid:
      return "hybrid";
    case Mode::none:
      return "none";
  }
  return "none";
}

CgroupLayout CgroupLayout::detect(const std::string& fs_root, const std::string& self_file,
                                  const std::string& group) {
  CgroupLayout l;
  auto self = parse_self(self_file);
  // Unified only: cgroup2 mounted at the root, with the controllers we need.
  if (exists(fs_root + "/cgroup.controllers")) {
    std::string ctrls = read_line(fs_root + "/cgroup.controllers");
    std::set<std::string> have;
    std::istringstream in(ctrls);
    for (std::string c; in >> c;) have.insert(c);
    std::string missing;
    for (const char* need : {"memory", "cpu", "pids"}) {
      if (!have.count(need)) missing += std::string(missing.empty() ? "" : ",") + need;
    }
    if (!missing.empty()) {
      l.reason = "cgroup2 at " + fs_root + " lacks controllers: " + missing;
      return l;
    }
    l.mode = Mode::v2;
    l.v2_parent = fs_root + self[""] + "/" + group;
    l.reason = "cgroup2 unified hierarchy with memory, cpu, pids at " + fs_root;
    return l;
  }
  // Hybrid / v1: one mount per controller.
  std::set<std::string> seen_dirs;
  std::string missing;
  for (const char* ctrl : {"memory", "cpu", "pids", "cpuacct"}) {
    std::string mnt = fs_root + "/" + ctrl;
    bool optional = std::string(ctrl) == "cpuacct";
    if (!exists(mnt + "/cgroup.procs") || !self.count(ctrl)) {
      if (!optional) missing += std::string(missing.empty() ? "" : ",") + ctrl;
      continue;
    }
    char real[PATH_MAX];
    std::string key = ::realpath(mnt.c_str(), real) ? real : mnt;
    if (!seen_dirs.insert(key).second) continue;  // cpu,cpuacct co-mounted
    l.v1_parents[ctrl] = mnt + self[ctrl] + "/" + group;
  }
  if (!missing.empty()) {
    l.v1_parents.clear();
    l.reason = "no cgroup2 controllers and no v1 mounts for: " + missing;
    return l;
  }
  l.mode = Mode::hybrid;
  if (exists(fs_root + "/unified/cgroup.procs")) {
    l.v2_parent = fs_root + "/unified" + self[""] + "/" + group;
  }
  l.reason = "v1 controllers under " + fs_root + "/<ctrl>" +
             (l.v2_parent.empty() ? std::string(", no cgroup2 for hooks")
                                  : ", controller-less cgroup2 at " + fs_root + "/unified");
  return l;
}

Status CgroupLayout::prepare() const {
  if (mode == Mode::none) return make_error(ErrorCode::INTERNAL, "no usable cgroups: " + reason);
  if (mode == Mode::hybrid) {
    for (const auto& [ctrl, dir] : v1_parents) {
      if (Status s = mkdir_one(dir); !s.ok()) return s;
    }
    if (!v2_parent.empty()) {
      if (Status s = mkdir_one(v2_parent); !s.ok()) return s;
    }
    return {};
  }
  // v2: controllers must be enabled in every ancestor's subtree_control down to v2_parent. The
  // service's own cgroup may hold processes, which cgroup2 forbids once it delegates controllers
  // ("no internal processes"), so on EBUSY the service moves itself into a "supervisor" leaf.
  std::string self_dir = v2_parent.substr(0, v2_parent.rfind('/'));
  const std::string enable = "+memory +cpu +pids";
  Status s = write_file(self_dir + "/cgroup.subtree_control", enable);
  if (!s.ok()) {
    std::string leaf = self_dir + "/supervisor";
    if (Status m = mkdir_one(leaf); !m.ok()) return m;
    std::string procs = read_file(self_dir + "/cgroup.procs").ok()
                            ? read_file(self_dir + "/cgroup.procs").value()
                            : std::string();
    std::istringstream in(procs);
    for (std::string pid; in >> pid;) (void)write_file(leaf + "/cgroup.procs", pid);
    if (Status again = write_file(self_dir + "/cgroup.subtree_control", enable); !again.ok()) {
      return again;
    }
  }
  if (Status m = mkdir_one(v2_parent); !m.ok()) return m;
  return write_file(v2_parent + "/cgroup.subtree_control", enable);
}

void CgroupLayout::remove_parents() const {
  for (const auto& [ctrl, dir] : v1_parents) ::rmdir(dir.c_str());
  if (!v2_parent.empty()) ::rmdir(v2_parent.c_str());
}

std::vector<std::string> CgroupLayout::vm_dirs(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& [ctrl, dir] : v1_parents) out.push_back(dir + "/" + name);
  if (!v2_parent.empty()) out.push_back(v2_parent + "/" + name);
  return out;
}

VmCgroup::~VmCgroup() {
  if (!dirs_.empty()) {
    Status s = destroy();
    if (!s.ok()) log::warn("cgroup cleanup failed", {{"error", s.error().message}});
  }
}

Result<VmCgroup> VmCgroup::create(const CgroupLayout& layout, const std::string& name,
                                  const CgroupLimits& limits) {
  VmCgroup cg;
  cg.mode_ = layout.mode;
  auto mk = [&cg](const std::string& dir) -> Status {
    if (::mkdir(dir.c_str(), 0755) != 0) return sys_error("mkdir(" + dir + ")", errno);
    cg.dirs_.push_back(dir);
    return {};
  };
  if (layout.mode == CgroupLayout::Mode::none) {
    return make_error(ErrorCode::INTERNAL, "no usable cgroups: " + layout.reason);
  }
  if (layout.mode == CgroupLayout::Mode::v2) {
    std::string dir = layout.v2_parent + "/" + name;
    if (Status s = mk(dir); !s.ok()) return s.error();
    cg.v2_dir_ = dir;
    if (limits.memory_bytes) {
      if (Status s = write_file(dir + "/memory.max", std::to_string(limits.memory_bytes));
          !s.ok()) {
        return s.error();
      }
      // No swap: the limit is a real bound on host memory.
      if (exists(dir + "/memory.swap.max")) (void)write_file(dir + "/memory.swap.max", "0");
    }
    if (limits.cpu_quota_percent) {
      std::string v = std::to_string(limits.cpu_quota_percent * 1000ULL) + " 100000";
      if (Status s = write_file(dir + "/cpu.max", v); !s.ok()) return s.error();
    }
    if (limits.pids_max) {
      if (Status s = write_file(dir + "/pids.max", std::to_string(limits.pids_max)); !s.ok()) {
        return s.error();
      }
    }
    return cg;
  }
  // hybrid: limits in the v1 dirs, plus a bare cgroup2 dir for BPF hooks.
  for (const auto& [ctrl, parent] : layout.v1_parents) {
    std::string dir = parent + "/" + name;
    if (Status s = mk(dir); !s.ok()) return s.error();
    cg.v1_dirs_[ctrl] = dir;
  }
  if (!layout.v2_parent.empty()) {
    std::string dir = layout.v2_parent + "/" + name;
    if (Status s = mk(dir); !s.ok()) return s.error();
    cg.v2_dir_ = dir;
  }
  if (limits.memory_bytes) {
    const std::string& d = cg.v1_dirs_["memory"];
    std::string v = std::to_string(limits.memory_bytes);
    if (Status s = write_file(d + "/memory.limit_in_bytes", v); !s.ok()) return s.error();
    // memsw >= limit must hold, so it is written second; equal values mean "no swap".
    if (exists(d + "/memory.memsw.limit_in_bytes")) {
      if (Status s = write_file(d + "/memory.memsw.limit_in_bytes", v); !s.ok()) {
        return s.error();
      }
    }
  }
  if (limits.cpu_quota_percent) {
    const std::string& d = cg.v1_dirs_["cpu"];
    if (Status s = write_file(d + "/cpu.cfs_period_us", "100000"); !s.ok()) return s.error();
    if (Status s =
            write_file(d + "/cpu.cfs_quota_us", std::to_string(limits.cpu_quota_percent * 1000ULL));
        !s.ok()) {
      return s.error();
    }
  }
  if (limits.pids_max) {
    if (Status s = write_file(cg.v1_dirs_["pids"] + "/pids.max", std::to_string(limits.pids_max));
        !s.ok()) {
      return s.error();
    }
  }
  return cg;
}

Result<std::vector<UniqueFd>> VmCgroup::open_procs() const {
  std::vector<UniqueFd> fds;
  for (const auto& dir : dirs_) {
    std::string p = dir + "/cgroup.procs";
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return sys_error("open(" + p + ", O_WRONLY)", errno);
    fds.push_back(std::move(fd));
  }
  return fds;
}

VmUsage VmCgroup::usage() const {
  VmUsage u;
  if (mode_ == CgroupLayout::Mode::v2 && !v2_dir_.empty()) {
    u.memory_bytes = parse_u64(read_line(v2_dir_ + "/memory.current"));
    u.memory_limit_bytes = parse_u64(read_line(v2_dir_ + "/memory.max"));
    u.cpu_usage_us = keyed(v2_dir_ + "/cpu.stat", "usage_usec");
    u.cpu_throttled_periods = keyed(v2_dir_ + "/cpu.stat", "nr_throttled");
    u.cpu_throttled_us = keyed(v2_dir_ + "/cpu.stat", "throttled_usec");
    u.pids = static_cast<uint32_t>(parse_u64(read_line(v2_dir_ + "/pids.current")));
    u.oom_kills = keyed(v2_dir_ + "/memory.events", "oom_kill");
    return u;
  }
  auto dir = [this](const char* c) {
    auto it = v1_dirs_.find(c);
    return it == v1_dirs_.end() ? std::string() : it->second;
  };
  if (auto d = dir("memory"); !d.empty()) {
    u.memory_bytes = parse_u64(read_line(d + "/memory.usage_in_bytes"));
    u.memory_limit_bytes = parse_u64(read_line(d + "/memory.limit_in_bytes"));
    u.oom_kills = keyed(d + "/memory.oom_control", "oom_kill");
  }
  if (auto d = dir("cpu"); !d.empty()) {
    u.cpu_throttled_periods = keyed(d + "/cpu.stat", "nr_throttled");
    u.cpu_throttled_us = keyed(d + "/cpu.stat", "throttled_time") / 1000;  // v1: nanoseconds
    if (exists(d + "/cpuacct.usage")) {                                    // cpu,cpuacct co-mounted
      u.cpu_usage_us = parse_u64(read_line(d + "/cpuacct.usage")) / 1000;
    }
  }
  if (auto d = dir("cpuacct"); !d.empty()) {
    u.cpu_usage_us = parse_u64(read_line(d + "/cpuacct.usage")) / 1000;
  }
  if (auto d = dir("pids"); !d.empty()) {
    u.pids = static_cast<uint32_t>(parse_u64(read_line(d + "/pids.current")));
  }
  return u;
}

Status VmCgroup::destroy() {
  Status first;
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    Status s = kill_and_remove(*it);
    if (!s.ok() && first.ok()) first = s;
  }
  if (first.ok()) {
    dirs_.clear();
    v1_dirs_.clear();
    v2_dir_.clear();
  }
  return first;
}

Status egress_hooks_attached(const std::string& cgroup2_dir) {
  if (cgroup2_dir.empty()) {
    return make_error(ErrorCode::EGRESS_UNENFORCED, "the VM has no cgroup2 dir to enforce on");
  }
  UniqueFd dir(::open(cgroup2_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return sys_error("open(" + cgroup2_dir + ")", errno);
  // The hooks bpf/sentinel_egress.bpf.c attaches: connect and sendmsg, IPv4 and IPv6. Effective
  // programs count (attached here or inherited from an ancestor).
  const std::pair<bpf_attach_type, const char*> hooks[] = {{BPF_CGROUP_INET4_CONNECT, "connect4"},
                                                           {BPF_CGROUP_INET6_CONNECT, "connect6"},
                                                           {BPF_CGROUP_UDP4_SENDMSG, "sendmsg4"},
                                                           {BPF_CGROUP_UDP6_SENDMSG, "sendmsg6"}};
  for (auto [type, name] : hooks) {
    bpf_attr attr{};
    attr.query.target_fd = static_cast<uint32_t>(dir.get());
    attr.query.attach_type = type;
    attr.query.query_flags = BPF_F_QUERY_EFFECTIVE;
    if (::syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof attr) != 0) {
      // EPERM: BPF_PROG_QUERY needs CAP_NET_ADMIN (kernels before 6.9 do not take CAP_SYS_ADMIN)
      return sys_error("bpf(BPF_PROG_QUERY, " + std::string(name) + ", " + cgroup2_dir + ")",
                       errno);
    }
    if (attr.query.prog_cnt == 0) {
      return make_error(ErrorCode::EGRESS_UNENFORCED,
                        std::string("no ") + name + " program on " + cgroup2_dir);
    }
  }
  return {};
}

}  // namespace nv::vm
