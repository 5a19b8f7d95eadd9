// exec_limits.h — what an ExecRequest may ask for, and the check every request goes through
// before a VM is leased for it.
//
// Every bound has a default and a flag (main.cc adds them). validate() reports every problem of
// a request in one badRequest message ("code is 2000000 bytes, the limit is 1048576; env[3] name
// 'A=B' is not a valid variable name") so a caller fixes them in one round trip.
#pragma once

#include <nv/schema/exec.capnp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "guest/protocol/frame.h"

namespace nv::exec {

struct ExecLimits {
  uint32_t max_code_bytes = 1u << 20;      // ExecRequest.code
  uint32_t max_stdin_bytes = 4u << 20;     // ExecRequest.stdin
  uint32_t max_env = 64;                   // ExecRequest.env entries
  uint32_t max_env_bytes = 64u << 10;      // name + value of all entries
  uint32_t max_put_files = 16;             // ExecRequest.putFiles entries
  uint32_t max_put_bytes = 4u << 20;       // data of all putFiles together
  uint32_t max_get_files = 16;             // ExecRequest.getFiles entries
  uint32_t max_path_bytes = 1024;          // each put/get path
  uint32_t default_timeout_ms = 10000;     // timeoutMs == 0
  uint32_t max_timeout_ms = 300000;        // timeoutMs above this is refused
  uint32_t default_output_cap = 1u << 20;  // outputCapBytes == 0
  uint32_t max_output_cap = 4u << 20;      // outputCapBytes above this is refused
};

// Adds the --max-* / --default-* options with the defaults above.
void add_limit_options(Config& config);
ExecLimits limits_from(const Config& config);

// The request after defaults were applied (what the executor actually runs).
struct Effective {
  schema::Language language = schema::Language::UNSET;
  schema::SizeTier tier = schema::SizeTier::SMALL;
  std::chrono::milliseconds timeout{0};
  uint32_t output_cap = 0;
  uint32_t tail_bytes = 0;  // per stream, kept past the cap (guest::kDefaultTailBytes if unset)
};

// Checks a request against the limits. badRequest with every problem listed on failure.
Result<Effective> validate(schema::ExecRequest::Reader request, const ExecLimits& limits);

// Every problem of a request, reported in one badRequest ("code is 2000000 bytes, the limit is
// 1048576; env[3] name 'A=B' is not a valid variable name").
struct Problems {
  std::vector<std::string> list;
  void add(std::string p) { list.push_back(std::move(p)); }
  // "<what> is <got>, the limit is <limit>" when got > limit.
  void over(const std::string& what, uint64_t got, uint64_t limit);
  bool empty() const { return list.empty(); }
  // badRequest "invalid <what>: p1; p2; ...".
  Error error(const std::string& what) const;
};

// The checks validate() is made of, for the other requests that carry the same fields
// (sandbox.capnp SandboxExec, SandboxSpec).
bool valid_env_name(std::string_view name);  // [A-Za-z_][A-Za-z0-9_]*
// Why `path` is unusable ("" = fine): empty, longer than max_bytes, not absolute, a NUL, a '.'
// or '..' component. The guest agent checks the roots it may write under.
std::string path_problem(std::string_view path, uint32_t max_bytes);
// At most 64 printable bytes of `s`, quoted, for messages.
std::string quote(std::string_view s);
void check_language(schema::Language language, Problems& p);  // 1..4
// 0..3; returns the tier with unset = small.
schema::SizeTier check_tier(schema::SizeTier tier, Problems& p);
// Count, total bytes, names (and the reserved NEUROVISOR_ prefix).
void check_env(capnp::List<schema::EnvVar>::Reader env, const ExecLimits& l, Problems& p);
// timeoutMs, outputCapBytes, tailBytes (0 = the defaults) into e.
void check_run(uint32_t timeout_ms, uint32_t output_cap, uint32_t tail_bytes, const ExecLimits& l,
               Effective& e, Problems& p);

// "python" | "bash" | "sh" | "javascript"; "language<N>" for values out of range.
std::string language_name(schema::Language language);

}  // namespace nv::exec
