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
  // Sandboxes: when the main process ends, what it left running in its group keeps running;
  // their stdout/stderr are then drained and dropped (drain_and_drop) so they never block on a
  // full pipe nor get SIGPIPE. A timeout still kills the whole group.
  bool keep_background = false;
  // Return right after the start (exit_code -1): stdin gets what fits in the pipe without
  // waiting, the output is drained and dropped, no timeout applies (the caller signals it).
  bool background = false;
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
  int pid = -1;       // the main process (also its session and process group id); -1 if none
};

using ChunkSink = std::function<void(OutStream, std::string_view)>;

// Runs the program to completion (or timeout) and returns what happened. Never throws.
ExecOutcome run_exec(const ExecSpec& spec, const ChunkSink& sink);

// A program started by spawn_program; the caller owns every descriptor (-1 = none).
struct Spawned {
  int pid = -1;       // also its session and process group id
  int pidfd = -1;     // pollable: readable once the process exited
  int in_w = -1;      // its stdin
  int out_r = -1;     // its stdout, non-blocking
  int err_r = -1;     // its stderr, non-blocking
  std::string error;  // set (and every fd -1) when it could not be started
};

// Starts spec.argv the way run_exec does (own session, rlimits, uid, cwd, environment) and
// returns at once. `child_fds` are given to the child as fds 3, 4, ... (the caller keeps and
// closes its copies). spec.stdin_data, timeout and output settings are not used.
Spawned spawn_program(const ExecSpec& spec, const std::vector<int>& child_fds);

// Hands a pipe's read end to the agent's drain thread, which reads and drops everything until
// every writer closed it, then closes it. Takes ownership of fd.
void drain_and_drop(int fd);
// Pipes the drain thread holds now (tests).
size_t draining_count();

// Buffers output per stream and hands it to the sink in chunks of at most kMaxChunkBytes,
// honouring the output cap (the rest is counted, its end kept in ExecOutcome's tails).
class OutputPump {
 public:
  OutputPump(const ExecSpec& spec, const ChunkSink& sink, ExecOutcome& out)
      : spec_(spec), sink_(sink), out_(out) {}
  void add(OutStream s, const char* data, size_t n);
  // Flushes streams whose oldest pending byte is older than the flush interval (or all).
  void flush(bool all);
  // Cuts the tails to tail_bytes exactly; call once at the end.
  void finish();
  // When the next time-based flush is due, or time_point::max() when nothing is pending.
  std::chrono::steady_clock::time_point next_flush() const;

 private:
  void keep_tail(std::string& tail, const char* data, size_t n);
  static int index(OutStream s) { return s == OutStream::out ? 0 : 1; }
  std::string& pending(OutStream s) { return pending_[index(s)]; }

  const ExecSpec& spec_;
  const ChunkSink& sink_;
  ExecOutcome& out_;
  uint64_t accepted_ = 0;
  std::string pending_[2];
  std::chrono::steady_clock::time_point first_pending_[2];
};

}  // namespace nv::guest::agent
