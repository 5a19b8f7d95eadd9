// exec_core.cc — see exec_core.h.
#include "guest/agent/exec_core.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "guest/protocol/frame.h"

namespace nv::guest::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr rlim_t kMiB = 1024 * 1024;

// Which step of the child's set-up failed; reported to the parent through the error pipe.
enum class ChildStep : int {
  setsid = 1,
  dup2,
  close_range,
  sigmask,
  setrlimit,
  chdir,
  setgroups,
  setgid,
  setuid,
  execve
};

const char* step_name(ChildStep s) {
  switch (s) {
    case ChildStep::setsid:
      return "setsid()";
    case ChildStep::dup2:
      return "dup2(stdio)";
    case ChildStep::close_range:
      return "close_range(3..)";
    case ChildStep::sigmask:
      return "sigprocmask(SIG_SETMASK)";
    case ChildStep::setrlimit:
      return "setrlimit()";
    case ChildStep::chdir:
      return "chdir(cwd)";
    case ChildStep::setgroups:
      return "setgroups(0)";
    case ChildStep::setgid:
      return "setgid()";
    case ChildStep::setuid:
      return "setuid()";
    case ChildStep::execve:
      return "execve()";
  }
  return "?";
}

struct ChildFailure {
  int step;
  int err;
};

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::string errno_text(const char* call, int err) {
  return std::string(call) + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) +
         ")";
}

// Async-signal-safe child set-up: only syscalls between fork and execve.
[[noreturn]] void child_main(const ExecSpec& spec, char* const* argv, char* const* envp,
                             const char* oom_adj, int in_fd, int out_fd, int err_fd,
                             int report_fd) {
  auto fail = [report_fd](ChildStep step) {
    ChildFailure f{static_cast<int>(step), errno};
    ssize_t w = ::write(report_fd, &f, sizeof f);
    (void)w;
    ::_exit(127);
  };
  // A new session: the program and everything it forks form one process group to kill.
  if (::setsid() < 0) fail(ChildStep::setsid);
  if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
    fail(ChildStep::dup2);
  }
  // Nothing of the agent's (its channel, listeners) may leak into the program.
  if (report_fd > 3 && ::close_range(3, report_fd - 1, 0) < 0) fail(ChildStep::close_range);
  if (::close_range(report_fd + 1, ~0U, 0) < 0) fail(ChildStep::close_range);
  // The agent blocks SIGCHLD (signalfd) and ignores SIGPIPE; the program starts clean.
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) < 0) fail(ChildStep::sigmask);
  if (oom_adj != nullptr) {
    // Best effort: a failure (no /proc, not permitted) leaves the inherited value.
    int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t w = ::write(fd, oom_adj, ::strlen(oom_adj));
      (void)w;
      ::close(fd);
    }
  }
  for (const RlimitRule& r : spec.rlimits) {
    struct rlimit lim {
      r.value, r.value
    };
    if (::setrlimit(r.resource, &lim) < 0) fail(ChildStep::setrlimit);
  }
  if (::chdir(spec.cwd.c_str()) < 0) fail(ChildStep::chdir);
  // Drop privileges last: groups, then gid, then uid (after setuid the others are refused).
  if (spec.uid >= 0) {
    if (::setgroups(0, nullptr) < 0) fail(ChildStep::setgroups);
    if (::setgid(static_cast<gid_t>(spec.gid >= 0 ? spec.gid : spec.uid)) < 0) {
      fail(ChildStep::setgid);
    }
    if (::setuid(static_cast<uid_t>(spec.uid)) < 0) fail(ChildStep::setuid);
  }
  ::execve(argv[0], argv, envp);
  fail(ChildStep::execve);
  ::_exit(127);  // not reached
}

// Buffers output per stream and hands it to the sink in chunks, honouring the cap.
class OutputPump {
 public:
  OutputPump(const ExecSpec& spec, const ChunkSink& sink, ExecOutcome& out)
      : spec_(spec), sink_(sink), out_(out) {}

  void add(OutStream s, const char* data, size_t n) {
    (s == OutStream::out ? out_.stdout_bytes : out_.stderr_bytes) += n;
    const uint64_t room = spec_.output_cap - std::min<uint64_t>(spec_.output_cap, accepted_);
    size_t keep = static_cast<size_t>(std::min<uint64_t>(room, n));
    if (keep < n) {
      out_.truncated = true;
      keep_tail(s == OutStream::out ? out_.stdout_tail : out_.stderr_tail, data + keep, n - keep);
    }
    if (keep == 0) return;
    accepted_ += keep;
    std::string& buf = pending(s);
    if (buf.empty()) first_pending_[index(s)] = Clock::now();
    buf.append(data, keep);
    while (buf.size() >= kMaxChunkBytes) {
      sink_(s, std::string_view(buf.data(), kMaxChunkBytes));
      buf.erase(0, kMaxChunkBytes);
      first_pending_[index(s)] = Clock::now();
    }
  }

  // Flushes streams whose oldest pending byte is older than the flush interval (or all).
  void flush(bool all) {
    const auto now = Clock::now();
    for (OutStream s : {OutStream::out, OutStream::err}) {
      std::string& buf = pending(s);
      if (buf.empty()) continue;
      if (all || now - first_pending_[index(s)] >= spec_.flush_interval) {
        sink_(s, buf);
        buf.clear();
      }
    }
  }

  // The ring of a stream's last bytes: appended, and cut to tail_bytes once it holds twice
  // that (amortised O(1) per byte); finish() cuts it exactly.
  void keep_tail(std::string& tail, const char* data, size_t n) {
    const size_t cap = static_cast<size_t>(spec_.tail_bytes);
    if (cap == 0) return;
    if (n >= cap) {
      tail.assign(data + n - cap, cap);
      return;
    }
    tail.append(data, n);
    if (tail.size() >= 2 * cap) tail.erase(0, tail.size() - cap);
  }
  void finish() {
    for (std::string* t : {&out_.stdout_tail, &out_.stderr_tail}) {
      if (t->size() > spec_.tail_bytes) t->erase(0, t->size() - spec_.tail_bytes);
    }
  }

  // When the next time-based flush is due, or time_point::max() when nothing is pending.
  Clock::time_point next_flush() const {
    auto t = Clock::time_point::max();
    for (int i = 0; i < 2; ++i) {
      if (!pending_[i].empty()) t = std::min(t, first_pending_[i] + spec_.flush_interval);
    }
    return t;
  }

 private:
  static int index(OutStream s) { return s == OutStream::out ? 0 : 1; }
  std::string& pending(OutStream s) { return pending_[index(s)]; }

  const ExecSpec& spec_;
  const ChunkSink& sink_;
  ExecOutcome& out_;
  uint64_t accepted_ = 0;
  std::string pending_[2];
  Clock::time_point first_pending_[2];
};

}  // namespace

const std::vector<RlimitRule>& default_rlimits() {
  static const std::vector<RlimitRule> rules = {
      {RLIMIT_CORE, 0, "RLIMIT_CORE",
       "no core dumps: they fill the tmpfs scratch and nobody collects them"},
      {RLIMIT_NPROC, 256, "RLIMIT_NPROC",
       "fork bombs stop at 256 processes of the sandbox uid (not enforced for root)"},
      {RLIMIT_NOFILE, 1024, "RLIMIT_NOFILE", "bounds descriptors per process"},
      {RLIMIT_FSIZE, 256 * kMiB, "RLIMIT_FSIZE",
       "one file cannot eat the RAM-backed /tmp (SIGXFSZ past 256 MiB)"},
      {RLIMIT_MEMLOCK, 64 * 1024, "RLIMIT_MEMLOCK", "no pinning of guest memory"},
      {RLIMIT_MSGQUEUE, 0, "RLIMIT_MSGQUEUE", "POSIX message queues are not needed"},
      {RLIMIT_SIGPENDING, 1024, "RLIMIT_SIGPENDING", "bounds queued signals"},
  };
  return rules;
}

ExecOutcome run_exec(const ExecSpec& spec, const ChunkSink& sink) {
  ExecOutcome out;
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    out.error = "no program to run (argv[0] must be an absolute path)";
    return out;
  }
  // Everything the child needs is prepared before fork: it may only make syscalls afterwards.
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::string oom_adj = spec.oom_score_adj ? std::to_string(*spec.oom_score_adj) : "";

  int p_in[2], p_out[2], p_err[2], p_rep[2];
  if (::pipe2(p_in, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(stdin)", errno), out;
  Fd in_r(p_in[0]), in_w(p_in[1]);
  if (::pipe2(p_out, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(stdout)", errno), out;
  Fd out_r(p_out[0]), out_w(p_out[1]);
  if (::pipe2(p_err, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(stderr)", errno), out;
  Fd err_r(p_err[0]), err_w(p_err[1]);
  if (::pipe2(p_rep, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(report)", errno), out;
  Fd rep_r(p_rep[0]), rep_w(p_rep[1]);

  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) return out.error = errno_text("fork()", errno), out;
  if (pid == 0) {
    child_main(spec, argv.data(), envp.data(), oom_adj.empty() ? nullptr : oom_adj.c_str(),
               in_r.get(), out_w.get(), err_w.get(), rep_w.get());
  }
  in_r.reset();
  out_w.reset();
  err_w.reset();
  rep_w.reset();

  // The report pipe closes on a successful execve (O_CLOEXEC) or carries the failing step.
  ChildFailure failure{0, 0};
  ssize_t got;
  do {
    got = ::read(rep_r.get(), &failure, sizeof failure);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof failure)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    out.error = errno_text(step_name(static_cast<ChildStep>(failure.step)), failure.err);
    if (static_cast<ChildStep>(failure.step) == ChildStep::execve) {
      out.error += " for " + spec.argv[0];
    } else if (static_cast<ChildStep>(failure.step) == ChildStep::chdir) {
      out.error += " for " + spec.cwd;
    }
    out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return out;
  }

  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    // Without a pidfd the exit cannot be polled; kill rather than leave a program unsupervised.
    const int err = errno;
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    out.error = errno_text("pidfd_open()", err);
    return out;
  }
  for (int fd : {in_w.get(), out_r.get(), err_r.get()}) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  if (spec.stdin_data.empty()) in_w.reset();

  OutputPump pump(spec, sink, out);
  const auto deadline = start + spec.timeout;
  auto drain_deadline = Clock::time_point::max();
  auto read_pause_until = Clock::time_point::min();
  size_t stdin_off = 0;
  bool exited = false;
  int status = 0;
  std::vector<char> buf(kMaxChunkBytes);

  // A process stuck in an uninterruptible sleep ignores even SIGKILL: after this long the agent
  // stops waiting for it (PID 1 reaps it whenever it ends) rather than hang with it.
  constexpr auto kKillWait = std::chrono::seconds(5);
  auto killed_at = Clock::time_point::max();
  bool abandoned = false;
  auto kill_group = [pid, &killed_at] {
    // The group id is the child's pid (setsid). ESRCH: the group is already gone.
    ::kill(-pid, SIGKILL);
    killed_at = std::min(killed_at, Clock::now());
  };

  while (!exited || out_r.valid() || err_r.valid()) {
    auto now = Clock::now();
    if (!exited && !out.timed_out && now >= deadline) {
      out.timed_out = true;
      kill_group();
    }
    if (exited && now >= drain_deadline) break;  // something escaped the group holds a pipe
    if (!exited && killed_at != Clock::time_point::max() && now >= killed_at + kKillWait) {
      out.error = "the program did not exit within 5 s of SIGKILL (uninterruptible sleep?)";
      abandoned = true;
      break;
    }

    // A pipe that gave little at the last read is left alone for a moment (see
    // ExecSpec::small_read_pause); once the program has exited, drain without pauses.
    const bool pausing = !exited && now < read_pause_until;
    auto wake = pump.next_flush();
    if (pausing) wake = std::min(wake, read_pause_until);
    if (!exited && !out.timed_out) wake = std::min(wake, deadline);
    if (exited) wake = std::min(wake, drain_deadline);
    if (!exited && killed_at != Clock::time_point::max()) {
      wake = std::min(wake, killed_at + kKillWait);
    }
    int timeout_ms = -1;
    if (wake != Clock::time_point::max()) {
      auto d = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
      timeout_ms = static_cast<int>(std::clamp<long long>(d, 0, 60000));
    }

    pollfd fds[4];
    int n = 0;
    int i_out = -1, i_err = -1, i_in = -1, i_pid = -1;
    if (out_r.valid() && !pausing) fds[i_out = n++] = {out_r.get(), POLLIN, 0};
    if (err_r.valid() && !pausing) fds[i_err = n++] = {err_r.get(), POLLIN, 0};
    if (in_w.valid()) fds[i_in = n++] = {in_w.get(), POLLOUT, 0};
    if (!exited) fds[i_pid = n++] = {pidfd.get(), POLLIN, 0};
    int r = ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
    if (r < 0 && errno != EINTR) {
      out.error = errno_text("poll()", errno);
      kill_group();
      break;
    }
    if (r > 0) {
      for (auto [idx, fd, stream] :
           {std::tuple{i_out, &out_r, OutStream::out}, std::tuple{i_err, &err_r, OutStream::err}}) {
        if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t k = ::read(fd->get(), buf.data(), buf.size());
        if (k > 0) {
          pump.add(stream, buf.data(), static_cast<size_t>(k));
          if (static_cast<size_t>(k) < spec.small_read_bytes) {
            read_pause_until = Clock::now() + spec.small_read_pause;
          }
        } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
          fd->reset();  // EOF: every writer of this pipe is gone
        }
      }
      if (i_in >= 0 && (fds[i_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t k = ::write(in_w.get(), spec.stdin_data.data() + stdin_off,
                            spec.stdin_data.size() - stdin_off);
        if (k > 0) stdin_off += static_cast<size_t>(k);
        // EPIPE: the program does not read its stdin; that is its business.
        if ((k < 0 && errno != EAGAIN && errno != EINTR) || stdin_off == spec.stdin_data.size()) {
          in_w.reset();
        }
      }
      if (i_pid >= 0 && (fds[i_pid].revents & POLLIN)) {
        pid_t w;
        do {
          w = ::waitpid(pid, &status, WNOHANG);
        } while (w < 0 && errno == EINTR);
        if (w == pid) {
          exited = true;
          out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
          // Whatever the program left running in its group ends with it.
          kill_group();
          in_w.reset();
          drain_deadline = Clock::now() + spec.drain_grace;
        }
      }
    }
    pump.flush(false);
  }
  if (!exited && !abandoned) {
    // Only on a poll() failure: make sure the child is gone and collected.
    kill_group();
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  pump.flush(true);
  pump.finish();
  if (abandoned) {
    out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    out.signal = SIGKILL;
  } else if (WIFEXITED(status)) {
    out.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    out.exit_code = -1;
    out.signal = WTERMSIG(status);
  }
  return out;
}

}  // namespace nv::guest::agent
