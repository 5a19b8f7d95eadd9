// privileges.h — shed privileges after start-up: optional uid/gid switch, capability sets
// reduced to a per-service list (libcap), bounding set and ambient set cleared of the rest,
// PR_SET_NO_NEW_PRIVS. Order matters and is fixed here (see drop_privileges).
#pragma once

#include <sys/capability.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "error.h"

namespace nv {

struct PrivilegeSpec {
  std::vector<cap_value_t> keep;  // capabilities kept in permitted+effective
  std::optional<uid_t> uid;       // switch to this uid (only when running as root)
  std::optional<gid_t> gid;
  bool no_new_privs = true;
};

// Applies the spec to the calling process (all threads when called before any are started).
// Steps: keep-caps across setuid → setgroups/setgid/setuid → cap_set_proc(keep) → drop every
// other capability from the bounding set → clear ambient → PR_SET_NO_NEW_PRIVS.
Status drop_privileges(const PrivilegeSpec& spec);

// "uid=0 gid=0 caps=cap_bpf,cap_perfmon=ep nnp=1 seccomp=2" — for logs and service.started.
std::string describe_privileges();

// Parses "cap_bpf,cap_perfmon" (names as cap_from_name takes them). "" = none.
Result<std::vector<cap_value_t>> parse_caps(const std::string& list);

}  // namespace nv
