#include "process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace nv::test {

std::string ExitStatus::describe() const {
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  if (code >= 0) return "exit " + std::to_string(code);
  return "not exited";
}

struct Process::State {
  ProcessOptions options;
  pid_t pid = -1;
  std::optional<ExitStatus> status;
  mutable std::mutex mu;  // guards out, err
  std::string out, err;
  std::atomic<bool> exited{false};
  std::vector<std::thread> threads;

  // Reads `fd` into `into` until EOF, or until the child has exited and the pipe stays quiet
  // (a grandchild holding the pipe open must not hang the test).
  void read_pipe(int fd, std::string* into) {
    char buf[4096];
    int quiet_polls = 0;
    while (true) {
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, 100);
      if (rc < 0 && errno == EINTR) continue;
      if (rc == 0) {
        if (exited.load() && ++quiet_polls >= 3) break;
        continue;
      }
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      quiet_polls = 0;
      std::lock_guard lock(mu);
      into->append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
  }

  void write_stdin(int fd, std::string text) {
    // A child that closes stdin early must not SIGPIPE the test: block it on this thread.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }

  void record(int wstatus) {
    ExitStatus s;
    if (WIFEXITED(wstatus)) s.code = WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus)) s.signal = WTERMSIG(wstatus);
    status = s;
    exited = true;
  }

  bool poll_exit() {
    if (status) return true;
    int wstatus = 0;
    pid_t r = ::waitpid(pid, &wstatus, WNOHANG);
    if (r == pid) {
      record(wstatus);
      return true;
    }
    return false;
  }

  void join_threads() {
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
    threads.clear();
  }
};

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

Process::Process(std::unique_ptr<State> state) : s_(std::move(state)) {}
Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (s_ && !s_->status && s_->pid > 0) {
      ::kill(s_->pid, SIGKILL);
      int ws = 0;
      if (::waitpid(s_->pid, &ws, 0) == s_->pid) s_->record(ws);
    }
    if (s_) s_->join_threads();
    s_ = std::move(other.s_);
  }
  return *this;
}

Process::~Process() {
  if (!s_) return;
  if (!s_->status && s_->pid > 0) {
    ::kill(s_->pid, SIGKILL);
    int ws = 0;
    if (::waitpid(s_->pid, &ws, 0) == s_->pid) s_->record(ws);
  }
  s_->exited = true;
  s_->join_threads();
}

Process Process::start(ProcessOptions options) {
  auto s = std::make_unique<State>();
  s->options = std::move(options);
  const auto& o = s->options;

  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> argv_s{o.binary};
  argv_s.insert(argv_s.end(), o.args.begin(), o.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& name : o.unset_env) env_map.erase(name);
  for (const auto& [k, v] : o.env) env_map[k] = v;
  std::vector<std::string> env_s;
  for (const auto& [k, v] : env_map) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2], in_pipe[2] = {-1, -1}, exec_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) fail("pipe2(stdout)");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) fail("pipe2(stderr)");
  if (o.stdin_text && ::pipe2(in_pipe, O_CLOEXEC) != 0) fail("pipe2(stdin)");
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) fail("pipe2(exec status)");
  int devnull = o.stdin_text ? -1 : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const char* cwd = o.working_dir.empty() ? nullptr : o.working_dir.c_str();
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    // Child. Die with the starting thread; undo the test's signal mask and dispositions.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::sigaction(sig, &dfl, nullptr);
    int in_fd = o.stdin_text ? in_pipe[0] : devnull;
    if (::dup2(in_fd, 0) < 0 || ::dup2(out_pipe[1], 1) < 0 || ::dup2(err_pipe[1], 2) < 0 ||
        (cwd && ::chdir(cwd) != 0)) {
      int err = errno;
      (void)!::write(exec_pipe[1], &err, sizeof(err));
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    int err = errno;
    (void)!::write(exec_pipe[1], &err, sizeof(err));
    ::_exit(127);
  }

  // Parent.
  s->pid = pid;
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (o.stdin_text) ::close(in_pipe[0]);
  if (devnull >= 0) ::close(devnull);
  ::close(exec_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n == sizeof(child_errno)) {
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    if (o.stdin_text) ::close(in_pipe[1]);
    throw std::runtime_error("cannot start " + o.binary + ": " + std::strerror(child_errno));
  }
  State* st = s.get();
  st->threads.emplace_back([st, fd = out_pipe[0]] { st->read_pipe(fd, &st->out); });
  st->threads.emplace_back([st, fd = err_pipe[0]] { st->read_pipe(fd, &st->err); });
  if (o.stdin_text) {
    st->threads.emplace_back(
        [st, fd = in_pipe[1], text = *o.stdin_text] { st->write_stdin(fd, text); });
  }
  return Process(std::move(s));
}

pid_t Process::pid() const { return s_->pid; }

bool Process::running() { return !s_->poll_exit(); }

void Process::signal(int sig) {
  if (!s_->poll_exit()) ::kill(s_->pid, sig);
}

std::optional<ExitStatus> Process::wait(std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!s_->poll_exit()) {
    if (std::chrono::steady_clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  s_->join_threads();  // output is complete once the pipes are drained
  return s_->status;
}

ExitStatus Process::terminate(std::chrono::milliseconds grace) {
  signal(SIGTERM);
  if (auto st = wait(grace)) return *st;
  ::kill(s_->pid, SIGKILL);
  int ws = 0;
  if (::waitpid(s_->pid, &ws, 0) == s_->pid) s_->record(ws);
  s_->join_threads();
  return *s_->status;
}

std::string Process::stdout_text() const {
  std::lock_guard lock(s_->mu);
  return s_->out;
}

std::string Process::stderr_text() const {
  std::lock_guard lock(s_->mu);
  return s_->err;
}

std::string Process::command_line() const {
  std::string cmd = s_->options.binary;
  for (const auto& a : s_->options.args) cmd += " " + a;
  return cmd;
}

RunResult run(ProcessOptions options, std::chrono::milliseconds timeout) {
  auto p = Process::start(std::move(options));
  RunResult r;
  if (auto st = p.wait(timeout)) {
    r.status = *st;
  } else {
    r.timed_out = true;
    r.status = p.terminate(0ms);
  }
  r.out = p.stdout_text();
  r.err = p.stderr_text();
  return r;
}

std::string bin(const std::string& name) {
  const char* dir = std::getenv("NV_BIN_DIR");
  if (!dir || !*dir) return {};
  return std::string(dir) + "/" + name;
}

std::string find_program(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(start, end - start) + "/" + program;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

TempDir::TempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  if (!::mkdtemp(templ.data())) fail("mkdtemp(" + templ + ")");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::file(const std::string& name) const { return path_ + "/" + name; }

bool TempDir::has(const std::string& name) const {
  struct stat st {};
  return ::lstat(file(name).c_str(), &st) == 0;
}

std::vector<std::string> TempDir::list() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path_, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    fail("bind(127.0.0.1:0)");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

std::string source_dir() {
  const char* d = std::getenv("NV_SOURCE_DIR");
  return d && *d ? d : NV_TEST_SOURCE_DIR;
}

ProcessOptions service_process(std::string binary, std::vector<std::string> args,
                               std::map<std::string, std::string> env) {
  ProcessOptions o;
  o.binary = std::move(binary);
  o.args = std::move(args);
  o.env = std::move(env);
  o.unset_env = {"OLLAMA_HOST"};
  return o;
}

}  // namespace nv::test
