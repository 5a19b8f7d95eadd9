// Seccomp allow-lists as reviewed data (nv_seccomp). A profile is a table of {syscall, reason}
// rules; anything not in it kills the whole process (SECCOMP_RET_KILL_PROCESS), so a missing
// entry shows up as a SIGSYS at once instead of a silent hole.
//
// Extending: add a rule with a reason to the list that needs it in seccomp_policy.cc (base_rules
// for every process, zmq_service_rules for bus services, ...), or build your own profile:
//   Profile p = zmq_service_profile();
//   p.name = "my-service";
//   p.rules.push_back(allow("inotify_init1", "watches its config dir"));
//   InstallResult r = install(p);
//   if (!r.ok) log(r.text());
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace nv::seccomp {

enum class Action : uint8_t {
  kAllow,    // the syscall runs
  kAllowIf,  // runs only if (arg[arg_index] & mask) == value, else the default action
  kErrno,    // fails with errnum (for probes libraries make and handle, e.g. clone3)
};

struct Rule {
  std::string syscall;  // name as libseccomp knows it ("openat", "clone3")
  std::string reason;   // who needs it and why: reviewed with every change
  Action action = Action::kAllow;
  int errnum = 0;          // kErrno
  unsigned arg_index = 0;  // kAllowIf
  uint64_t mask = 0;
  uint64_t value = 0;
};

Rule allow(std::string syscall, std::string reason);
Rule allow_if_masked(std::string syscall, unsigned arg_index, uint64_t mask, uint64_t value,
                     std::string reason);
Rule fail_with(std::string syscall, int errnum, std::string reason);

struct Profile {
  std::string name;
  std::vector<Rule> rules;
};

// Rule sets, composable (a profile is the concatenation of the sets it needs).
const std::vector<Rule>& base_rules();          // any C++ process: memory, threads, time, exit
const std::vector<Rule>& zmq_service_rules();   // ZeroMQ sockets, epoll, eventfd, files
const std::vector<Rule>& pool_manager_rules();  // VMM lifecycle: fork/exec, signals, cgroups, jail
const std::vector<Rule>& sentinel_rules();      // bpf(), perf_event_open, /proc scan
const std::vector<Rule>& llm_gateway_rules();   // libcurl HTTP(S) to the model server, resolver

// orchestrator, metrics-exporter, sandbox-executor (llm-gateway: llm_gateway_profile).
Profile zmq_service_profile(const std::string& name = "zmq-service");
Profile pool_manager_profile();
Profile sentinel_profile();
// nv-llm-gateway: the bus profile plus what libcurl (HTTP/HTTPS, name resolution) needs.
Profile llm_gateway_profile();

struct InstallOptions {
  // What the kernel does with a syscall no rule allows. Default: kill the whole process.
  // (SCMP_ACT_LOG here turns the profile into an audit-only run while writing a new profile;
  // install() then says so loudly in its log.)
  uint32_t default_action = 0x80000000U;  // SCMP_ACT_KILL_PROCESS
  // Apply to every thread of the process (ZeroMQ starts I/O threads before services install).
  bool all_threads = true;
  // Receives one line per step; default: stderr.
  std::function<void(const std::string&)> log;
};

struct InstallResult {
  bool ok = false;
  std::string call;  // failing libseccomp call
  int errnum = 0;    // its errno
  size_t rules_added = 0;
  std::vector<std::string> unknown;  // syscall names this architecture does not have (skipped)
  std::string text() const;
};

// Builds the filter from `profile` and loads it into the kernel (with no_new_privs).
// Irreversible on success.
InstallResult install(const Profile& profile, const InstallOptions& options = {});

}  // namespace nv::seccomp
