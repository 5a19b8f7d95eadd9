// contexts.cc — see contexts.h.
#include "guest/agent/contexts.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nv/schema/common.capnp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "guest/protocol/frame.h"

namespace nv::guest::agent {

namespace {

using Clock = std::chrono::steady_clock;
using schema::Language;

// Start-up of a new interpreter may take this long before the cell's own timeout starts.
constexpr std::chrono::milliseconds kStartupAllowance{60000};

// The python driver: cells are exec()d in one globals dict; the traceback of a failing cell
// leaves the driver's own frame out; SystemExit ends the cell (its code is the status), not the
// context. fds 3/4 are made non-inheritable so subprocesses of a cell do not hold them.
constexpr const char* kPythonDriver = R"PY(
import io, os, struct, sys, traceback
def _nv_driver():
    rfd, wfd = 3, 4
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    cell_globals = {'__name__': '__main__', '__builtins__': __builtins__}
    os.write(wfd, struct.pack('<i', -1))  # ready: the cell's timeout starts now
    def readn(n):
        b = b''
        while len(b) < n:
            c = os.read(rfd, n - len(b))
            if not c:
                return None
            b += c
        return b
    while True:
        head = readn(8)
        if head is None:
            return
        clen, ilen = struct.unpack('<II', head)
        code = readn(clen)
        data = readn(ilen) if ilen else b''
        if code is None or data is None:
            return
        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding='utf-8', errors='replace')
        status = 0
        try:
            exec(compile(code.decode('utf-8', 'replace'), '<cell>', 'exec'), cell_globals)
        except SystemExit as e:
            if e.code is None:
                status = 0
            elif isinstance(e.code, int):
                status = e.code
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except BaseException:
            et, ev, tb = sys.exc_info()
            traceback.print_exception(et, ev, tb.tb_next if tb is not None else None)
            status = 1
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:
                pass
        os.write(wfd, struct.pack('<i', status & 0x7fffffff))
_nv_driver()
)PY";

// The node driver: cells run with vm.runInThisContext (one persistent context: top-level
// declarations persist as in a browser console); a returned promise is awaited; the status is
// written once stdout and stderr have flushed everything before it.
constexpr const char* kNodeDriver = R"JS(
'use strict';
const fs = require('fs');
const vm = require('vm');
globalThis.require = require;
const report = (e) => process.stderr.write(((e && e.stack) ? e.stack : String(e)) + '\n');
process.on('uncaughtException', report);
process.on('unhandledRejection', report);
let pending = Buffer.alloc(0);
let busy = false;
function finish(status) {
  process.stdout.write('', () => process.stderr.write('', () => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(status);
    fs.writeSync(4, b);
    busy = false;
    next();
  }));
}
async function run(code) {
  try {
    const r = vm.runInThisContext(code, { filename: '<cell>' });
    if (r && typeof r.then === 'function') await r;
    return 0;
  } catch (e) {
    report(e);
    return 1;
  }
}
function next() {
  if (busy || pending.length < 8) return;
  const clen = pending.readUInt32LE(0), ilen = pending.readUInt32LE(4);
  if (pending.length < 8 + clen + ilen) return;
  const code = pending.subarray(8, 8 + clen).toString('utf8');
  pending = pending.subarray(8 + clen + ilen);
  busy = true;
  run(code).then(finish);
}
fs.writeSync(4, Buffer.from([0xff, 0xff, 0xff, 0xff]));  // ready: the cell's timeout starts now
const input = fs.createReadStream(null, { fd: 3 });
input.on('data', (d) => { pending = Buffer.concat([pending, d]); next(); });
input.on('end', () => process.exit(0));
)JS";

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

std::string errno_text(const char* call, int err) {
  return std::string(call) + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) +
         ")";
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

struct Contexts::Context {
  std::string name;
  bool ready = false;  // the driver reported it is ready (its first status, -1)
  uint16_t language = 0;
  int pid = -1;
  Fd pidfd, req_w, status_r, out_r, err_r;

  // SIGKILLs the interpreter's group and collects it (up to 5 s: a process in uninterruptible
  // sleep is left to PID 1's reaping).
  void kill_and_wait() {
    if (pid <= 0) return;
    ::kill(-pid, SIGKILL);
    pollfd p{pidfd.get(), POLLIN, 0};
    if (pidfd.valid()) ::poll(&p, 1, 5000);
    int status = 0;
    ::waitpid(pid, &status, WNOHANG);  // ECHILD: PID 1's reaper was first
    pid = -1;
  }
};

Contexts::Contexts() = default;

Contexts::~Contexts() {
  for (auto& [name, c] : live_) c->kill_and_wait();
}

bool Contexts::valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool Contexts::supports(uint16_t language) {
  return language == static_cast<uint16_t>(Language::PYTHON) ||
         language == static_cast<uint16_t>(Language::JAVASCRIPT);
}

void Contexts::forget(const std::string& name) {
  auto it = live_.find(name);
  if (it == live_.end()) return;
  it->second->kill_and_wait();
  live_.erase(it);
}

bool Contexts::reset(const std::string& name) {
  const bool had = live_.count(name) > 0;
  forget(name);
  return had;
}

std::string Contexts::name_for_session(int sid) const {
  for (const auto& [name, c] : live_) {
    if (c->pid == sid) return name;
  }
  return "";
}

std::vector<int> Contexts::sessions() const {
  std::vector<int> out;
  for (const auto& [name, c] : live_) out.push_back(c->pid);
  return out;
}

ExecOutcome Contexts::run(const std::string& name, uint16_t language, const std::string& code,
                          const ExecSpec& spec, const ChunkSink& sink) {
  ExecOutcome out;
  const auto start = Clock::now();
  auto it = live_.find(name);
  if (it != live_.end() && it->second->language != language) {
    out.error = "context '" + name + "' runs another language; reset it or use another name";
    return out;
  }
  if (it != live_.end()) {
    pollfd p{it->second->pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {  // it ended between cells (a thread called os._exit, ...)
      forget(name);
      it = live_.end();
    }
  }
  if (it == live_.end()) {
    if (spec.argv.empty()) {
      out.error = "no interpreter for the context";
      return out;
    }
    int req[2], st[2];
    if (::pipe2(req, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(request)", errno), out;
    Fd req_r(req[0]), req_w(req[1]);
    if (::pipe2(st, O_CLOEXEC) < 0) return out.error = errno_text("pipe2(status)", errno), out;
    Fd st_r(st[0]), st_w(st[1]);
    ExecSpec s = spec;
    const bool python = language == static_cast<uint16_t>(Language::PYTHON);
    s.argv = {spec.argv[0], python ? "-c" : "-e", python ? kPythonDriver : kNodeDriver};
    Spawned sp = spawn_program(s, {req_r.get(), st_w.get()});
    if (!sp.error.empty()) {
      out.error = sp.error;
      return out;
    }
    ::close(sp.in_w);  // cells get their stdin through the request
    auto c = std::make_unique<Context>();
    c->name = name;
    c->language = language;
    c->pid = sp.pid;
    c->pidfd.reset(sp.pidfd);
    c->out_r.reset(sp.out_r);
    c->err_r.reset(sp.err_r);
    // Output written between cells (a thread) waits in these pipes for the next cell: give it
    // 1 MiB of room (pipe-max-size's default) instead of 64 KiB before the writer blocks.
    for (int fd : {c->out_r.get(), c->err_r.get()}) ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
    c->req_w.reset(::fcntl(req_w.get(), F_DUPFD_CLOEXEC, 0));
    c->status_r.reset(::fcntl(st_r.get(), F_DUPFD_CLOEXEC, 0));
    ::fcntl(c->req_w.get(), F_SETFL, ::fcntl(c->req_w.get(), F_GETFL) | O_NONBLOCK);
    ::fcntl(c->status_r.get(), F_SETFL, ::fcntl(c->status_r.get(), F_GETFL) | O_NONBLOCK);
    it = live_.emplace(name, std::move(c)).first;
  }
  Context& c = *it->second;
  out.pid = c.pid;

  std::string request(8, '\0');
  const uint32_t lens[2] = {static_cast<uint32_t>(code.size()),
                            static_cast<uint32_t>(spec.stdin_data.size())};
  for (int i = 0; i < 2; ++i) {
    for (int b = 0; b < 4; ++b) request[i * 4 + b] = static_cast<char>((lens[i] >> (8 * b)) & 0xff);
  }
  request += code;
  request += spec.stdin_data;
  size_t sent = 0;

  OutputPump pump(spec, sink, out);
  std::vector<char> buf(kMaxChunkBytes);
  char status_bytes[4];
  size_t status_got = 0;
  // A new interpreter's start-up (node's is seconds under TCG) does not eat the cell's timeout:
  // until the driver says it is ready (status -1) the bound is the start-up allowance.
  auto deadline =
      c.ready ? start + spec.timeout : start + std::max(spec.timeout, kStartupAllowance);
  auto read_some = [&](Fd& fd, OutStream s) {
    // Reads what is there now; false at EOF or an error.
    for (;;) {
      ssize_t k = ::read(fd.get(), buf.data(), buf.size());
      if (k > 0) {
        pump.add(s, buf.data(), static_cast<size_t>(k));
        continue;
      }
      if (k < 0 && errno == EINTR) continue;
      return k < 0 && errno == EAGAIN;
    }
  };
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) {
      out.timed_out = true;
      read_some(c.out_r, OutStream::out);
      read_some(c.err_r, OutStream::err);
      out.exit_code = -1;
      out.signal = SIGKILL;
      forget(name);
      break;
    }
    auto wake = std::min(pump.next_flush(), deadline);
    int timeout_ms = static_cast<int>(std::clamp<long long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1, 0, 60000));
    pollfd fds[5] = {{c.out_r.get(), POLLIN, 0},
                     {c.err_r.get(), POLLIN, 0},
                     {c.status_r.get(), POLLIN, 0},
                     {c.pidfd.get(), POLLIN, 0},
                     {sent < request.size() ? c.req_w.get() : -1, POLLOUT, 0}};
    int r = ::poll(fds, 5, timeout_ms);
    if (r < 0 && errno != EINTR) {
      out.error = errno_text("poll()", errno);
      forget(name);
      break;
    }
    if (r > 0) {
      if (fds[0].revents) read_some(c.out_r, OutStream::out);
      if (fds[1].revents) read_some(c.err_r, OutStream::err);
      if (fds[4].revents & (POLLOUT | POLLERR | POLLHUP)) {
        ssize_t k = ::write(c.req_w.get(), request.data() + sent, request.size() - sent);
        if (k > 0) sent += static_cast<size_t>(k);
      }
      if (fds[2].revents & POLLIN) {
        ssize_t k = ::read(c.status_r.get(), status_bytes + status_got, 4 - status_got);
        if (k > 0) status_got += static_cast<size_t>(k);
        if (status_got == 4 && !c.ready) {
          c.ready = true;
          status_got = 0;
          deadline = Clock::now() + spec.timeout;
        } else if (status_got == 4) {
          // The driver flushed the cell's output before the status: it is in the pipes now.
          read_some(c.out_r, OutStream::out);
          read_some(c.err_r, OutStream::err);
          uint32_t v = 0;
          for (int b = 0; b < 4; ++b) {
            v |= static_cast<uint32_t>(static_cast<uint8_t>(status_bytes[b])) << (8 * b);
          }
          out.exit_code = static_cast<int>(v);
          break;
        }
      }
      if (fds[3].revents & POLLIN) {
        read_some(c.out_r, OutStream::out);
        read_some(c.err_r, OutStream::err);
        int status = 0;
        pid_t w = ::waitpid(c.pid, &status, WNOHANG);
        if (w == c.pid && WIFEXITED(status)) {
          out.exit_code = WEXITSTATUS(status);
        } else if (w == c.pid && WIFSIGNALED(status)) {
          out.signal = WTERMSIG(status);
        }
        forget(name);  // also kills what is left of its group
        break;
      }
    }
    pump.flush(false);
  }
  out.duration_ms = ms_since(start);
  pump.flush(true);
  pump.finish();
  return out;
}

}  // namespace nv::guest::agent
