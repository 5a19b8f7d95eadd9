// exec_core.h — run one program the way the guest agent does, independent of the protocol.
//
// The child gets its own session and process group (setsid), pipes for stdin/stdout/stderr, a
// reviewed set of rlimits, an explicit environment, a working directory and optionally an
// unprivileged uid/gid. The caller gets coalesced output chunks (at most kMaxChunkBytes each,
// at most `output_cap` bytes in all; everything is counted) and one ExecOutcome, which carries
// the end of each stream that went past the cap (a ring of `tail_bytes` per stream). On timeout the
// whole process group is SIGKILLed. When the main process ends, what is left of its group is
// killed too, and the pipes are drained for a short grace period.
//
// Nothing here needs a VM: unit tests run it against /bin/sh on the build host.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nv::guest::agent {

// One resource limit applied to every program, with the reason it exists.
struct RlimitRule {
  int resource;
  rlim_t value;
  const char* name;
  const char* reason;
};

// The agent's default limits (exec_core.cc lists the reasons).
const std::vector<RlimitRule>& default_rlimits();

struct ExecSpec {
  std::vector<std::string> argv;  // argv[0]: absolute path of the program
  std::vector<std::string> env;   // "NAME=value", the child's whole environment
  std::string stdin_data;         // written to the child's stdin, which is then closed
  std::string cwd = "/tmp";
  std::chrono::milliseconds timeout{10000};
  uint64_t output_cap = 1u << 20;  // stdout+stderr bytes delivered as chunks at most (the head)
  // Per stream, the last bytes past the head kept in a ring and returned in ExecOutcome, so the
  // end of a long output (a result line, a traceback) survives the cap.
  uint64_t tail_bytes = 64u << 10;
  int uid = -1;  // run as this uid/gid when >= 0 (needs privilege)
  int gid = -1;
  std::vector<RlimitRule> rlimits = default_rlimits();
  // Written to /proc/self/oom_score_adj in the child when set (-1000..1000). The agent makes
  // programs the OOM killer's first choice and itself exempt, so a program that exhausts the
  // VM's memory dies and the agent reports it.
  std::optional<int> oom_score_adj;
  // Grace to drain the pipes after the main process ended and its group was killed.
  std::chrono::milliseconds drain_grace{200};
  // Output is coalesced into chunks and flushed at least this often while the program runs.
  std::chrono::milliseconds flush_interval{20};
  // After a read that found little in a pipe (a program writing line by line), the agent
  // leaves that pipe alone this long, so the writes in between fill the pipe instead of each
  // waking the agent. Measured under TCG on one vCPU (nv-bench output): python printing
  // 200,000 lines unbuffered took 16.2 s into a pipe with an eager reader vs 4.3 s into
  // /dev/null — the reader's wake-up per write, not the writes, was the cost.
  std::chrono::milliseconds small_read_pause{5};
  size_t small_read_bytes = 16 * 1024;  // reads below this count as small
};

enum class OutStream { out = 1, err = 2 };

struct ExecOutcome {
  int exit_code = -1;  // -1 when killed by a signal or never started
  int signal = 0;      // the signal that ended it, 0 if none
  double duration_ms = 0;
  bool timed_out = false;
  bool truncated = false;     // output went past output_cap
  uint64_t stdout_bytes = 0;  // written by the program in all
  uint64_t stderr_bytes = 0;
  // The last bytes (at most ExecSpec.tail_bytes) of each stream that were not delivered as
  // chunks; empty when the stream fit the head.
  std::string stdout_tail, stderr_tail;
  std::string error;  // the program could not be started: the failing call and errno text
};

using ChunkSink = std::function<void(OutStream, std::string_view)>;

// Runs the program to completion (or timeout) and returns what happened. Never throws.
ExecOutcome run_exec(const ExecSpec& spec, const ChunkSink& sink);

}  // namespace nv::guest::agent
