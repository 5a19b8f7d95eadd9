// process.h — start NeuroVisor binaries as child processes in tests, and the small helpers that go
// with that (temp runtime dirs, free loopback ports, polling with a deadline).
//
//   nv::test::TempDir rt("nv-test");
//   auto orch = nv::test::Process::start({.binary = nv::test::bin("nv-orchestrator"),
//                                         .env = {{"NV_RUNTIME_DIR", rt.path()}}});
//   ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("events.sock"); }, 5s))
//       << orch.stderr_text();
//   auto exit = orch.terminate();          // SIGTERM, wait (SIGKILL after the grace period)
//   EXPECT_TRUE(exit.clean()) << exit.describe() << orch.stderr_text();
//
// A Process captures the child's stdout and stderr on background threads (so a chatty child never
// blocks on a full pipe) and can feed it stdin. The child gets SIGKILL if the thread that
// started it dies (PR_SET_PDEATHSIG): start children from the test's main thread. The destructor
// kills and reaps a child that is still running, so a failed ASSERT leaves no orphan behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nv::test {

using namespace std::chrono_literals;

// How a child ended.
struct ExitStatus {
  int code = -1;   // exit code when it exited, else -1
  int signal = 0;  // the signal that killed it, else 0
  bool exited() const { return signal == 0 && code >= 0; }
  bool clean() const { return exited() && code == 0; }
  // "exit 0", "exit 3", "killed by signal 9 (Killed)".
  std::string describe() const;
};

// Every member has a default, so designated initializers may name only what they need:
//   Process::start({.binary = bin("nv-audit"), .args = {"--follow"}, .env = {{"K", "v"}}});
struct ProcessOptions {
  std::string binary{};                      // path to the executable
  std::vector<std::string> args{};           // argv[1...]
  std::map<std::string, std::string> env{};  // set in (or replacing in) this process's env
  std::vector<std::string> unset_env{};      // removed from the inherited environment
  std::optional<std::string> stdin_text{};   // written to the child's stdin, then closed;
                                             // without it stdin is /dev/null
  std::string working_dir{};                 // "" = inherit
};

// The source tree: $NV_SOURCE_DIR (set by ctest), else the tree this library was built from.
std::string source_dir();

// A NeuroVisor service or client under test, with what a developer's shell must not leak into
// it removed (OLLAMA_HOST would point the gateway at a real model server).
ProcessOptions service_process(std::string binary, std::vector<std::string> args,
                               std::map<std::string, std::string> env = {});

class Process {
 public:
  // Forks and execs. Throws std::runtime_error when the binary cannot be started (missing,
  // not executable); the child's own failures show up in its exit status and stderr.
  static Process start(ProcessOptions options);

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // SIGKILL and reap if still running

  pid_t pid() const;
  // True while the child has not exited (reaps it when it has).
  bool running();
  // Sends `sig` (no-op once the child has been reaped).
  void signal(int sig);
  // Waits up to `timeout` for the child to exit; nullopt if it is still running.
  std::optional<ExitStatus> wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL and wait. Returns how it ended.
  ExitStatus terminate(std::chrono::milliseconds grace = 10s);
  // Everything the child wrote so far (complete once it has exited and been waited for).
  std::string stdout_text() const;
  std::string stderr_text() const;
  // The command line, for failure messages.
  std::string command_line() const;

 private:
  struct State;
  explicit Process(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Runs a binary to completion (stdin_text fed, output captured); kills it after `timeout`.
struct RunResult {
  ExitStatus status;
  std::string out;
  std::string err;
  bool timed_out = false;
};
RunResult run(ProcessOptions options, std::chrono::milliseconds timeout = 30s);

// $NV_BIN_DIR/<name> (ctest sets NV_BIN_DIR to the build's bin/ directory); "" when unset.
std::string bin(const std::string& name);

// Finds `program` on $PATH; "" when not found.
std::string find_program(const std::string& program);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "nv-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string file(const std::string& name) const;
  // Whether path()/name exists.
  bool has(const std::string& name) const;
  // Names in the directory (not recursive), sorted.
  std::vector<std::string> list() const;

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
int free_loopback_port();

// Polls `pred` every `step` until it is true (returns true) or `timeout` passes (false).
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step = 50ms);

}  // namespace nv::test
