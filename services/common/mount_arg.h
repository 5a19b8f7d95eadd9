// mount_arg.h — the command-line spelling of a host directory mount (issue 15), shared by
// `nv-submit --mount` and `nv sandbox create --mount`:
//
//   HOST:GUEST[:ro|:rw]
//
//   HOST   a host directory; "~" and "~/..." are the caller's home ($HOME), a relative path is
//          taken from the current directory; the result is absolute and lexically normal ("."
//          and ".." components and repeated or trailing slashes removed, symlinks NOT resolved:
//          the executor resolves them once and checks the result against its --mount-root).
//          "~user" is refused.
//   GUEST  where it appears in the guest: absolute, or relative to /home/agent; after the same
//          normalization it must be strictly under /home/agent.
//   ro|rw  read-only (the default when no mode is given) or read-write. Read-write mounts are
//          copied back to the host at `sync` and when the sandbox or task ends.
//
// Paths with ':' in them cannot be given in this form (use nv-api's JSON body).
#pragma once

#include <string>
#include <string_view>

#include "error.h"
#include "sandbox_client.h"

namespace nv::sandbox {

inline constexpr std::string_view kGuestHome = "/home/agent";

// Parses one --mount value. `home` is the caller's home directory (for "~"), `cwd` its current
// directory (for a relative HOST); both absolute. badRequest saying what is wrong: no ':', an
// empty HOST or GUEST, a mode other than ro or rw, more than three ':'-separated parts, "~user",
// a GUEST outside /home/agent (or /home/agent itself). Quotas are left 0 (the executor's).
Result<Mount> parse_mount_arg(std::string_view arg, const std::string& home,
                              const std::string& cwd);

// parse_mount_arg with $HOME (else the passwd entry) and the process's current directory.
Result<Mount> parse_mount_arg(std::string_view arg);

}  // namespace nv::sandbox
