#include "privileges.h"

#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace nv {
namespace {

Error sys_failure(const std::string& call) {
  return make_error(ErrorCode::INTERNAL, call + " failed: " + std::strerror(errno));
}

}  // namespace

Result<std::vector<cap_value_t>> parse_caps(const std::string& list) {
  std::vector<cap_value_t> caps;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    cap_value_t v;
    if (cap_from_name(name.c_str(), &v) != 0) {
      return make_error(ErrorCode::BAD_REQUEST, "unknown capability '" + name + "'");
    }
    caps.push_back(v);
  }
  return caps;
}

Status drop_privileges(const PrivilegeSpec& spec) {
  bool switch_user = (spec.uid || spec.gid) && geteuid() == 0;
  // 1. Keep the permitted set across the uid change; we reduce it explicitly below.
  if (switch_user && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
    return sys_failure("prctl(PR_SET_KEEPCAPS)");
  }
  // 2. Groups, then gid, then uid (after setuid we could no longer change groups).
  if (switch_user) {
    gid_t gid = spec.gid.value_or(getgid());
    if (setgroups(0, nullptr) != 0) return sys_failure("setgroups(0)");
    if (setresgid(gid, gid, gid) != 0) return sys_failure("setresgid");
    if (spec.uid) {
      uid_t uid = *spec.uid;
      if (setresuid(uid, uid, uid) != 0) return sys_failure("setresuid");
    }
  }
  // 3. Permitted and effective = `keep` ∩ what we hold now (a capability the process never had,
  // e.g. one the container runtime withheld, cannot be kept); inheritable empty.
  std::vector<cap_value_t> keep;
  if (cap_t now = cap_get_proc()) {
    for (cap_value_t c : spec.keep) {
      cap_flag_value_t v = CAP_CLEAR;
      if (cap_get_flag(now, c, CAP_PERMITTED, &v) == 0 && v == CAP_SET) keep.push_back(c);
    }
    cap_free(now);
  }
  cap_t caps = cap_init();
  if (!caps) return sys_failure("cap_init");
  if (!keep.empty()) {
    cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(keep.size()), keep.data(), CAP_SET);
    cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(keep.size()), keep.data(), CAP_SET);
  }
  // 4. Bounding set: drop everything not kept (needs CAP_SETPCAP, so before cap_set_proc).
  for (cap_value_t c = 0; c <= CAP_LAST_CAP; ++c) {
    bool kept = std::find(spec.keep.begin(), spec.keep.end(), c) != spec.keep.end();
    if (!kept && CAP_IS_SUPPORTED(c) && cap_get_bound(c) == 1) {
      if (cap_drop_bound(c) != 0 && errno != EPERM) {
        cap_free(caps);
        return sys_failure("cap_drop_bound(" + std::to_string(c) + ")");
      }
    }
  }
  if (cap_set_proc(caps) != 0) {
    cap_free(caps);
    return sys_failure("cap_set_proc");
  }
  cap_free(caps);
  // 5. Ambient set: nothing survives an execve.
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return sys_failure("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  }
  if (switch_user && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) {
    return sys_failure("prctl(PR_SET_KEEPCAPS, 0)");
  }
  // 6. No privilege can be gained through execve from here on (setuid bits, file caps).
  if (spec.no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return sys_failure("prctl(PR_SET_NO_NEW_PRIVS)");
  }
  return {};
}

std::string describe_privileges() {
  std::string out = "uid=" + std::to_string(geteuid()) + " gid=" + std::to_string(getegid());
  cap_t caps = cap_get_proc();
  if (caps) {
    char* text = cap_to_text(caps, nullptr);
    out += std::string(" caps=") + (text && *text ? text : "=");
    if (text) cap_free(text);
    cap_free(caps);
  }
  out += " nnp=" + std::to_string(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Seccomp:", 0) == 0) {
      auto v = line.substr(8);
      v.erase(0, v.find_first_not_of(" \t"));
      out += " seccomp=" + v;
    }
  }
  return out;
}

}  // namespace nv
