// exec_core.cc — see exec_core.h.
#include "guest/agent/exec_core.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

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
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

std::string errno_text(const char* call, int err) {
  return std::string(call) + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) +
         ")";
}

// Async-signal-safe child set-up: only syscalls between fork and execve. fds[0..2] become the
// child's stdin/stdout/stderr, fds[3..] its fds 3, 4, ... (nfds <= kMaxChildFds).
constexpr int kMaxChildFds = 8;
[[noreturn]] void child_main(const ExecSpec& spec, char* const* argv, char* const* envp,
                             const char* oom_adj, const int* fds, int nfds, int report_fd) {
  int rep = report_fd;
  auto fail = [&rep](ChildStep step) {
    ChildFailure f{static_cast<int>(step), errno};
    ssize_t w = ::write(rep, &f, sizeof f);
    (void)w;
    ::_exit(127);
  };
  // A new session: the program and everything it forks form one process group to kill.
  if (::setsid() < 0) fail(ChildStep::setsid);
  // Everything is first moved above the targets, so no dup2 overwrites a source still needed.
  constexpr int kHigh = 64;
  rep = ::fcntl(report_fd, F_DUPFD_CLOEXEC, kHigh);
  if (rep < 0) {
    rep = report_fd;
    fail(ChildStep::dup2);
  }
  int src[kMaxChildFds];
  for (int i = 0; i < nfds; ++i) {
    if ((src[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, kHigh)) < 0) fail(ChildStep::dup2);
  }
  for (int i = 0; i < nfds; ++i) {
    if (::dup2(src[i], i) < 0) fail(ChildStep::dup2);  // the target is not close-on-exec
  }
  // Nothing of the agent's (its channel, listeners) may leak into the program.
  if (rep > nfds &&
      ::close_range(static_cast<unsigned>(nfds), static_cast<unsigned>(rep - 1), 0) < 0) {
    fail(ChildStep::close_range);
  }
  if (::close_range(static_cast<unsigned>(rep + 1), ~0U, 0) < 0) fail(ChildStep::close_range);
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

void OutputPump::add(OutStream s, const char* data, size_t n) {
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

void OutputPump::flush(bool all) {
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

// The ring of a stream's last bytes: appended, and cut to tail_bytes once it holds twice that
// (amortised O(1) per byte); finish() cuts it exactly.
void OutputPump::keep_tail(std::string& tail, const char* data, size_t n) {
  const size_t cap = static_cast<size_t>(spec_.tail_bytes);
  if (cap == 0) return;
  if (n >= cap) {
    tail.assign(data + n - cap, cap);
    return;
  }
  tail.append(data, n);
  if (tail.size() >= 2 * cap) tail.erase(0, tail.size() - cap);
}

void OutputPump::finish() {
  for (std::string* t : {&out_.stdout_tail, &out_.stderr_tail}) {
    if (t->size() > spec_.tail_bytes) t->erase(0, t->size() - spec_.tail_bytes);
  }
}

Clock::time_point OutputPump::next_flush() const {
  auto t = Clock::time_point::max();
  for (int i = 0; i < 2; ++i) {
    if (!pending_[i].empty()) t = std::min(t, first_pending_[i] + spec_.flush_interval);
  }
  return t;
}

// ---- the drain thread ------------------------------------------------------------------------

namespace {

class Drainer {
 public:
  void add(int fd) {
    std::lock_guard<std::mutex> lock(mu_);
    if (ep_ < 0) {
      ep_ = ::epoll_create1(EPOLL_CLOEXEC);
      if (ep_ < 0) {
        ::close(fd);  // cannot drain: closing gives the writers EPIPE rather than a hang
        return;
      }
      std::thread([this] { loop(); }).detach();
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      ::close(fd);
      return;
    }
    ++count_;
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  void loop() {
    std::vector<char> buf(64 * 1024);
    epoll_event evs[16];
    for (;;) {
      int n = ::epoll_wait(ep_, evs, 16, -1);
      if (n < 0 && errno != EINTR) return;
      for (int i = 0; i < n; ++i) {
        int fd = evs[i].data.fd;
        ssize_t r;
        do {
          r = ::read(fd, buf.data(), buf.size());
        } while (r > 0 || (r < 0 && errno == EINTR));
        if (r == 0 || (r < 0 && errno != EAGAIN)) {  // every writer is gone
          std::lock_guard<std::mutex> lock(mu_);
          ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
          ::close(fd);
          --count_;
        }
      }
    }
  }

  std::mutex mu_;
  int ep_ = -1;
  size_t count_ = 0;
};

Drainer& drainer() {
  static Drainer* d = new Drainer();  // never destroyed: its thread runs until the agent ends
  return *d;
}

}  // namespace

void drain_and_drop(int fd) {
  if (fd >= 0) drainer().add(fd);
}

size_t draining_count() { return drainer().count(); }

Spawned spawn_program(const ExecSpec& spec, const std::vector<int>& child_fds) {
  Spawned sp;
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    sp.error = "no program to run (argv[0] must be an absolute path)";
    return sp;
  }
  if (child_fds.size() + 3 > static_cast<size_t>(kMaxChildFds)) {
    sp.error = "too many descriptors for the child";
    return sp;
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
  if (::pipe2(p_in, O_CLOEXEC) < 0) return sp.error = errno_text("pipe2(stdin)", errno), sp;
  Fd in_r(p_in[0]), in_w(p_in[1]);
  if (::pipe2(p_out, O_CLOEXEC) < 0) return sp.error = errno_text("pipe2(stdout)", errno), sp;
  Fd out_r(p_out[0]), out_w(p_out[1]);
  if (::pipe2(p_err, O_CLOEXEC) < 0) return sp.error = errno_text("pipe2(stderr)", errno), sp;
  Fd err_r(p_err[0]), err_w(p_err[1]);
  if (::pipe2(p_rep, O_CLOEXEC) < 0) return sp.error = errno_text("pipe2(report)", errno), sp;
  Fd rep_r(p_rep[0]), rep_w(p_rep[1]);
  int fds[kMaxChildFds] = {in_r.get(), out_w.get(), err_w.get()};
  int nfds = 3;
  for (int fd : child_fds) fds[nfds++] = fd;

  const pid_t pid = ::fork();
  if (pid < 0) return sp.error = errno_text("fork()", errno), sp;
  if (pid == 0) {
    child_main(spec, argv.data(), envp.data(), oom_adj.empty() ? nullptr : oom_adj.c_str(), fds,
               nfds, rep_w.get());
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
    sp.error = errno_text(step_name(static_cast<ChildStep>(failure.step)), failure.err);
    if (static_cast<ChildStep>(failure.step) == ChildStep::execve) {
      sp.error += " for " + spec.argv[0];
    } else if (static_cast<ChildStep>(failure.step) == ChildStep::chdir) {
      sp.error += " for " + spec.cwd;
    }
    return sp;
  }
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    // Without a pidfd the exit cannot be polled; kill rather than leave a program unsupervised.
    const int err = errno;
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    sp.error = errno_text("pidfd_open()", err);
    return sp;
  }
  for (int fd : {in_w.get(), out_r.get(), err_r.get()}) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  sp.pid = pid;
  sp.pidfd = pidfd.release();
  sp.in_w = in_w.release();
  sp.out_r = out_r.release();
  sp.err_r = err_r.release();
  return sp;
}

ExecOutcome run_exec(const ExecSpec& spec, const ChunkSink& sink) {
  ExecOutcome out;
  const auto start = Clock::now();
  Spawned sp = spawn_program(spec, {});
  if (!sp.error.empty()) {
    out.error = sp.error;
    out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return out;
  }
  const pid_t pid = sp.pid;
  out.pid = pid;
  Fd pidfd(sp.pidfd), in_w(sp.in_w), out_r(sp.out_r), err_r(sp.err_r);
  if (spec.background) {
    // What fits in the pipe now; the program may read the rest of nothing (EOF).
    if (!spec.stdin_data.empty()) {
      ssize_t w = ::write(in_w.get(), spec.stdin_data.data(), spec.stdin_data.size());
      (void)w;
    }
    drain_and_drop(out_r.release());
    drain_and_drop(err_r.release());
    out.exit_code = -1;
    out.duration_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return out;  // PID 1 reaps it when it ends
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
          in_w.reset();
          if (spec.keep_background) {
            // What the program wrote is in the pipes now (its descriptors closed before the
            // exit was reported); read that, then leave the pipes to the drain thread if a
            // process it left behind still holds them.
            for (auto [fd, stream] :
                 {std::pair{&out_r, OutStream::out}, std::pair{&err_r, OutStream::err}}) {
              while (fd->valid()) {
                ssize_t k = ::read(fd->get(), buf.data(), buf.size());
                if (k > 0) {
                  pump.add(stream, buf.data(), static_cast<size_t>(k));
                } else if (k < 0 && errno == EINTR) {
                  continue;
                } else if (k < 0 && errno == EAGAIN) {
                  drain_and_drop(fd->release());
                } else {
                  fd->reset();
                }
              }
            }
            break;
          }
          // Whatever the program left running in its group ends with it.
          kill_group();
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
