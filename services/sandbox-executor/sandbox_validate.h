// sandbox_validate.h — the checks every SandboxRequest goes through before anything else
// (schemas/sandbox.capnp gives the ranges). All problems of a request in one badRequest.
#pragma once

#include <nv/schema/sandbox.capnp.h>

#include <string_view>

#include "common/error.h"
#include "exec_limits.h"

namespace nv::exec {

struct SandboxLimits {
  ExecLimits exec;                      // exec: code, stdin, env, timeout, output
  uint64_t max_file_bytes = 32u << 20;  // writeFile data, readFile length
  uint32_t max_path_bytes = 4096;
  uint32_t max_lifetime_ms = 86400000;
  uint32_t max_labels = 16;
  uint32_t max_fork = 16;
  uint32_t max_owner_bytes = 128;
};

// Names of contexts, snapshots and label keys: 1..63 bytes of [a-zA-Z0-9._-].
bool valid_name(std::string_view name);
// The request's envelope (owner, version, the union's range) and the operation's fields.
Status validate(schema::SandboxRequest::Reader r, const SandboxLimits& limits);

}  // namespace nv::exec
