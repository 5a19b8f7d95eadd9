// session.cc — see session.h.
#include "guest/agent/session.h"

#include "guest/agent/mounts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <nv/schema/common.capnp.h>

#include <cerrno>
#include <cstring>

namespace nv::guest::agent {

namespace {

using schema::GuestMessage;
using schema::HostMessage;
using ErrorCode = schema::Error::Code;

std::string errno_text(const std::string& call, int err) {
  return call + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// Hostnames: what sethostname and DNS labels both accept.
bool vm_id_is_valid(const std::string& id) {
  if (id.empty() || id.size() > 63) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::vector<LanguageRule> default_languages() {
  using L = schema::Language;
  return {
      {static_cast<uint16_t>(L::PYTHON), "/usr/bin/python3", {"-c"}},
      {static_cast<uint16_t>(L::BASH), "/bin/bash", {"-c"}},
      {static_cast<uint16_t>(L::SH), "/bin/sh", {"-c"}},
      {static_cast<uint16_t>(L::JAVASCRIPT), "/usr/bin/node", {"-e"}},
  };
}

std::vector<std::string> merge_env(const std::vector<std::string>& base,
                                   const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> out;
  auto name_of = [](const std::string& entry) { return entry.substr(0, entry.find('=')); };
  auto put = [&](const std::string& name, std::string entry) {
    for (auto& e : out) {
      if (name_of(e) == name) {
        e = std::move(entry);  // replaced where it stood: each name appears once
        return;
      }
    }
    out.push_back(std::move(entry));
  };
  for (const auto& e : base) put(name_of(e), e);
  for (const auto& [name, value] : set) put(name, name + "=" + value);
  return out;
}

Session::Session(const AgentConfig& config, SystemOps& ops, WriteFn write)
    : config_(config),
      ops_(ops),
      write_(std::move(write)),
      decoder_(config.max_host_frame),
      files_(
          config, [this](capnp::MessageBuilder& mb) { send(mb); },
          [this](uint16_t code, const std::string& m) { send_error(code, m); }) {}

void Session::on_connect() {
  decoder_.reset();
  files_.abort_write();  // a write the previous host did not finish
  hello_sent_ = false;
  write_ok_ = true;
  send_hello();
}

void Session::send(capnp::MessageBuilder& message) {
  if (!write_ok_) return;
  std::string frame = encode_frame(message);
  write_ok_ = write_(frame);
}

void Session::send_hello() {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto hello = msg.initHello();
  hello.setAgentVersion(kAgentVersion);
  std::vector<uint16_t> present;
  for (const auto& l : config_.languages) {
    if (::access(l.program.c_str(), X_OK) == 0) present.push_back(l.language);
  }
  auto langs = hello.initLanguages(static_cast<unsigned>(present.size()));
  for (unsigned i = 0; i < present.size(); ++i) {
    langs.set(i, static_cast<schema::Language>(present[i]));
  }
  hello.setBootId(ops_.boot_id());
  hello.setUptimeMs(ops_.uptime_ms());
  hello_sent_ = true;
  send(mb);
}

void Session::send_error(uint16_t code, const std::string& message) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto err = msg.initError();
  err.setCode(static_cast<ErrorCode>(code));
  err.setMessage(message);
  err.setRetryable(false);
  err.setService("nv-guest-agent");
  send(mb);
}

bool Session::on_bytes(const char* data, size_t n) {
  // A host that sends something is there: try writing again even after a failed write.
  write_ok_ = true;
  decoder_.feed(data, n);
  for (;;) {
    kj::Array<capnp::word> words;
    auto st = decoder_.next(words);
    if (st == FrameDecoder::Status::need_more) return true;
    if (!hello_sent_) send_hello();  // whatever the host sends first, it sees Hello first
    if (st != FrameDecoder::Status::frame) {
      // The stream cannot be resynchronised after a bad length: say why and drop it.
      send_error(static_cast<uint16_t>(st == FrameDecoder::Status::oversized
                                           ? ErrorCode::OVERSIZED_FRAME
                                           : ErrorCode::MALFORMED_MESSAGE),
                 std::string(to_string(st)) + " (announced " +
                     std::to_string(decoder_.announced()) + " bytes, cap " +
                     std::to_string(decoder_.max_frame_bytes()) + "); dropping the connection");
      return false;
    }
    dispatch(kj::mv(words));
    if (shutdown_) return true;
  }
}

void Session::dispatch(kj::Array<capnp::word> words) {
  std::string perr;
  auto parsed = ParsedMessage::parse(kj::mv(words), perr);
  if (!parsed) {
    send_error(static_cast<uint16_t>(ErrorCode::MALFORMED_MESSAGE), perr);
    return;
  }
  // Dispatch boundary: nothing thrown while reading a hostile message gets past here.
  try {
    auto msg = parsed->root<HostMessage>();
    if (msg.getVersion() != schema::SCHEMA_VERSION) {
      send_error(static_cast<uint16_t>(ErrorCode::UNSUPPORTED_VERSION),
                 "schema version " + std::to_string(msg.getVersion()) + " is not supported; " +
                     "this agent speaks " + std::to_string(schema::SCHEMA_VERSION));
      return;
    }
    switch (msg.which()) {
      case HostMessage::EXEC:
        handle_exec(msg.getExec());
        return;
      case HostMessage::PUT_FILE:
        handle_put(msg.getPutFile());
        return;
      case HostMessage::GET_FILE:
        handle_get(msg.getGetFile());
        return;
      case HostMessage::PING: {
        // Nonce 0: a host that just connected wants the greeting, whether or not this agent
        // noticed the connection (a quick disconnect + reconnect looks like no change).
        if (msg.getPing() == 0) send_hello();
        capnp::MallocMessageBuilder mb;
        auto out = mb.initRoot<GuestMessage>();
        out.setVersion(schema::SCHEMA_VERSION);
        out.setPong(msg.getPing());
        send(mb);
        return;
      }
      case HostMessage::SHUTDOWN:
        shutdown_ = true;
        return;
      case HostMessage::RESEED:
        handle_reseed(msg.getReseed());
        return;
      case HostMessage::WRITE_CHUNK:
        files_.write_chunk(msg.getWriteChunk());
        return;
      case HostMessage::READ_RANGE:
        files_.read_range(msg.getReadRange());
        return;
      case HostMessage::FILE_OP:
        files_.file_op(msg.getFileOp());
        return;
      case HostMessage::LIST_PROCESSES:
        handle_processes();
        return;
      case HostMessage::SIGNAL:
        handle_signal(msg.getSignal());
        return;
      case HostMessage::RESET_CONTEXT:
        handle_reset(msg.getResetContext());
        return;
      case HostMessage::MOUNT_SETUP: {
        auto m = msg.getMountSetup();
        std::string error;
        if (!mount_setup(config_, m.getPath(), m.getSizeBytes(), m.getInodes(), error)) {
          return send_error(static_cast<uint16_t>(ErrorCode::BAD_REQUEST), error);
        }
        return send_ack("mountSetup");
      }
      case HostMessage::MOUNT_SEAL: {
        std::string error;
        if (!mount_seal(config_, msg.getMountSeal(), error)) {
          return send_error(static_cast<uint16_t>(ErrorCode::BAD_REQUEST), error);
        }
        return send_ack("mountSeal");
      }
      case HostMessage::START_INFERENCE: {
        std::string why = config_.start_inference ? config_.start_inference()
                                                  : "this agent has no inference bridge";
        if (!why.empty()) return send_error(static_cast<uint16_t>(ErrorCode::INTERNAL), why);
        send_ack("inference");
        return;
      }
      case HostMessage::STOP_INFERENCE:
        if (config_.stop_inference) config_.stop_inference();
        send_ack("inference");
        return;
      case HostMessage::INFERENCE_RESPONSE:  // the nv.inference port's, never the agent's
        break;
    }
    send_error(static_cast<uint16_t>(ErrorCode::BAD_REQUEST),
               "unknown request kind " + std::to_string(static_cast<int>(msg.which())) +
                   " (a newer host?)");
  } catch (...) {
    send_error(static_cast<uint16_t>(ErrorCode::MALFORMED_MESSAGE),
               "malformed request: " + describe_current_exception());
  }
}

void Session::handle_exec(schema::GuestExec::Reader req) {
  const uint32_t id = req.getId();
  auto send_result = [&](const ExecOutcome& o) {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto r = msg.initResult();
    r.setExecId(id);
    r.setExitCode(o.exit_code);
    r.setSignal(o.signal);
    r.setDurationMs(o.duration_ms);
    r.setTimedOut(o.timed_out);
    r.setTruncated(o.truncated);
    r.setStdoutBytes(o.stdout_bytes);
    r.setStderrBytes(o.stderr_bytes);
    r.setError(o.error);
    auto bytes = [](const std::string& t) {
      return kj::arrayPtr(reinterpret_cast<const kj::byte*>(t.data()), t.size());
    };
    r.setStdoutTail(bytes(o.stdout_tail));
    r.setStderrTail(bytes(o.stderr_tail));
    send(mb);
  };
  auto refuse = [&](const std::string& why) {
    ExecOutcome o;
    o.error = why;
    send_result(o);
  };

  const LanguageRule* rule = nullptr;
  for (const auto& l : config_.languages) {
    if (l.language == static_cast<uint16_t>(req.getLanguage())) rule = &l;
  }
  if (!rule) {
    return refuse("language " + std::to_string(static_cast<int>(req.getLanguage())) +
                  " is not supported by this agent (see Hello.languages)");
  }
  std::string code = req.getCode();
  const std::string context = req.getContext();
  if (!context.empty()) {
    if (!Contexts::valid_name(context)) {
      return refuse("context name '" + context.substr(0, 80) +
                    "' is not 1-64 bytes of [A-Za-z0-9._-]");
    }
    if (!Contexts::supports(rule->language)) {
      return refuse("contexts are served for python and javascript only");
    }
    if (req.getBackground()) return refuse("a context cell cannot run in the background");
  } else if (has_nul(code)) {
    return refuse("code contains a NUL byte; it cannot be passed as an argument");
  }

  ExecSpec spec;
  spec.argv.push_back(rule->program);
  for (const auto& f : rule->flags) spec.argv.push_back(f);
  spec.argv.push_back(code);  // contexts ignore argv past the program
  std::vector<std::pair<std::string, std::string>> request_env;
  for (auto e : req.getEnv()) {
    std::string name = e.getName(), value = e.getValue();
    if (name.empty() || name.find('=') != std::string::npos || has_nul(name) || has_nul(value)) {
      return refuse("invalid environment variable name '" + name.substr(0, 64) +
                    "' (empty, or contains '=' or NUL)");
    }
    request_env.emplace_back(std::move(name), std::move(value));
  }
  std::string trace = req.getTraceId();
  if (has_nul(trace)) return refuse("traceId contains a NUL byte");
  request_env.emplace_back("NEUROVISOR_TRACE_ID", trace);
  spec.env = merge_env(config_.base_env, request_env);
  auto stdin_data = req.getStdin();
  spec.stdin_data.assign(reinterpret_cast<const char*>(stdin_data.begin()), stdin_data.size());
  std::string cwd = req.getCwd();
  spec.cwd = cwd.empty() ? config_.default_cwd : cwd;
  if (has_nul(spec.cwd)) return refuse("cwd contains a NUL byte");
  uint32_t t = req.getTimeoutMs() == 0 ? config_.default_timeout_ms : req.getTimeoutMs();
  spec.timeout = std::chrono::milliseconds(std::min(t, config_.max_timeout_ms));
  uint32_t cap =
      req.getOutputCapBytes() == 0 ? config_.default_output_cap : req.getOutputCapBytes();
  spec.output_cap = std::min(cap, config_.max_output_cap);
  spec.tail_bytes =
      req.getTailBytes() == 0 ? kDefaultTailBytes : std::min(req.getTailBytes(), kMaxTailBytes);
  spec.uid = config_.run_uid;
  spec.gid = config_.run_gid;
  spec.rlimits = config_.rlimits;
  spec.oom_score_adj = config_.program_oom_score_adj;
  spec.background = req.getBackground();
  spec.keep_background = req.getKeepBackground() || spec.background;

  auto sink = [&](OutStream s, std::string_view data) {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto c = msg.initChunk();
    c.setExecId(id);
    c.setStream(s == OutStream::out ? schema::Stream::STDOUT : schema::Stream::STDERR);
    c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
    send(mb);
  };
  ExecOutcome outcome = context.empty() ? run_exec(spec, sink)
                                        : contexts_.run(context, rule->language, code, spec, sink);
  if (outcome.pid > 0) sessions_.insert(outcome.pid);
  if (sessions_.size() > 1024) {  // bounded between listings: forget groups that are gone
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = (::kill(-*it, 0) < 0 && errno == ESRCH) ? sessions_.erase(it) : std::next(it);
    }
  }
  send_result(outcome);
}

void Session::send_ack(const char* what) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  msg.initAck().setWhat(what);
  send(mb);
}

bool Session::is_sandbox_process(const ProcessRecord& p) const {
  if (p.pid == ::getpid() || p.kernel_thread) return false;
  if (config_.run_uid >= 0) return p.uid == config_.run_uid;
  return sessions_.count(p.sid) > 0;
}

void Session::handle_processes() {
  if (config_.reap_before_listing) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {}
  }
  std::vector<ProcessRecord> all = scan_processes();
  std::vector<const ProcessRecord*> mine;
  std::set<int> alive;
  for (const auto& p : all) {
    if (!is_sandbox_process(p)) continue;
    mine.push_back(&p);
    alive.insert(p.sid);
  }
  // Sessions with no process left are forgotten (their ids may be reused).
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = alive.count(*it) ? std::next(it) : sessions_.erase(it);
  }
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  // A frame holds ~4,000 processes with long command lines; RLIMIT_NPROC allows 256 per user.
  const size_t n = std::min<size_t>(mine.size(), 2000);
  auto list = msg.initProcesses(static_cast<unsigned>(n));
  for (unsigned i = 0; i < n; ++i) {
    const ProcessRecord& p = *mine[i];
    auto e = list[i];
    e.setPid(p.pid);
    e.setPpid(p.ppid);
    e.setCommand(p.command.substr(0, 4096));
    e.setState(p.state);
    e.setRssBytes(p.rss_bytes);
    e.setStartedUnixMs(p.started_unix_ms);
    e.setContext(contexts_.name_for_session(p.sid));
  }
  send(mb);
}

void Session::handle_signal(schema::SignalRequest::Reader req) {
  const int pid = req.getPid();
  const int sig = req.getSignal();
  const auto bad = static_cast<uint16_t>(ErrorCode::BAD_REQUEST);
  if (sig < 1 || sig > 64) {
    return send_error(bad, "signal " + std::to_string(sig) + " is not in 1..64");
  }
  if (pid <= 0) return send_error(bad, "pid " + std::to_string(pid) + " is not a process");
  if (pid == ::getpid()) return send_error(bad, "pid " + std::to_string(pid) + " is the agent");
  ProcessRecord p;
  if (!read_process(pid, p)) {
    return send_error(static_cast<uint16_t>(ErrorCode::NOT_FOUND),
                      "no process " + std::to_string(pid));
  }
  if (!is_sandbox_process(p)) {
    return send_error(bad, "process " + std::to_string(pid) + " (" + p.command.substr(0, 64) +
                               ") is not a sandbox process (kernel thread, the agent, or "
                               "another user's)");
  }
  if (::kill(pid, sig) < 0) {
    int e = errno;
    return send_error(
        static_cast<uint16_t>(e == ESRCH ? ErrorCode::NOT_FOUND : ErrorCode::BAD_REQUEST),
        errno_text("kill(" + std::to_string(pid) + ", " + std::to_string(sig) + ")", e));
  }
  send_ack("signal");
}

void Session::handle_reset(schema::ContextReset::Reader req) {
  const std::string name = req.getContext();
  if (!Contexts::valid_name(name)) {
    return send_error(
        static_cast<uint16_t>(ErrorCode::BAD_REQUEST),
        "context name '" + name.substr(0, 80) + "' is not 1-64 bytes of [A-Za-z0-9._-]");
  }
  // Resetting a context that does not run is not an error: the next exec starts fresh either way.
  contexts_.reset(name);
  send_ack("resetContext");
}

void Session::handle_put(schema::FilePut::Reader put) {
  std::string path = put.getPath();
  auto data = put.getData();
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto fd_out = msg.initFileData();
  fd_out.setPath(path.substr(0, 4096));
  std::string error;
  if (writable_root_of(config_, path).empty()) {
    error = "path '" + path.substr(0, 256) +
            "' refused: it must be absolute, without '.'/'..' "
            "parts, below one of the writable roots (/tmp, /home/agent)";
  } else {
    // Parents are created as needed, owned by the program's user so it can use them; no
    // symlink in the path is followed (files.h).
    std::string leaf;
    int err = 0;
    int dir = open_parent_for_write(config_, path, leaf, error, err);
    mode_t mode = put.getMode() == 0 ? 0644 : (put.getMode() & 07777);
    int fd = -1, open_err = 0;
    if (dir >= 0) {
      fd = ::openat(dir, leaf.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
      open_err = errno;
      ::close(dir);
    }
    if (dir < 0) {
      // `error` says where the walk stopped
    } else if (fd < 0) {
      error = errno_text("open(" + path + ")", open_err);
    } else {
      const auto* p = reinterpret_cast<const char*>(data.begin());
      size_t left = data.size();
      while (left > 0 && error.empty()) {
        ssize_t w = ::write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          error = errno_text("write(" + path + ")", errno);
          break;
        }
        p += w;
        left -= static_cast<size_t>(w);
      }
      if (error.empty() && ::fchmod(fd, mode) < 0) error = errno_text("fchmod", errno);
      if (error.empty() && config_.run_uid >= 0 &&
          ::fchown(fd, config_.run_uid, config_.run_gid) < 0) {
        error = errno_text("fchown", errno);
      }
      ::close(fd);
    }
  }
  fd_out.setFound(error.empty());
  fd_out.setError(error);
  send(mb);
}

void Session::handle_get(const std::string& path) {
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto fd_out = msg.initFileData();
  fd_out.setPath(path.substr(0, 4096));
  std::string error, content;
  if (!path_is_clean(path)) {
    error = "path '" + path.substr(0, 256) + "' refused: it must be absolute, without '.'/'..'";
  } else {
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    struct stat st {};
    if (fd < 0) {
      error = errno_text("open(" + path + ")", errno);
    } else if (::fstat(fd, &st) < 0) {
      error = errno_text("fstat(" + path + ")", errno);
    } else if (!S_ISREG(st.st_mode)) {
      error = "'" + path + "' is not a regular file";
    } else if (static_cast<uint64_t>(st.st_size) > config_.max_get_file_bytes) {
      error = "'" + path + "' has " + std::to_string(st.st_size) + " bytes; at most " +
              std::to_string(config_.max_get_file_bytes) + " can be fetched";
    } else {
      content.resize(static_cast<size_t>(st.st_size));
      size_t got = 0;
      while (got < content.size()) {
        ssize_t r = ::read(fd, content.data() + got, content.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
          error = errno_text("read(" + path + ")", errno);
          break;
        }
        if (r == 0) break;  // the file shrank meanwhile
        got += static_cast<size_t>(r);
      }
      content.resize(got);
    }
    if (fd >= 0) ::close(fd);
  }
  fd_out.setFound(error.empty());
  fd_out.setError(error);
  if (error.empty()) {
    fd_out.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(content.data()), content.size()));
  }
  send(mb);
}

void Session::handle_reseed(schema::Reseed::Reader reseed) {
  auto entropy = reseed.getEntropy();
  std::string vm_id = reseed.getVmId();
  std::string error;
  if (entropy.size() < 16 || entropy.size() > 4096) {
    error = "reseed needs 16..4096 bytes of entropy, got " + std::to_string(entropy.size());
  } else if (!vm_id_is_valid(vm_id)) {
    error = "vmId '" + vm_id.substr(0, 80) + "' is not a valid hostname (1-63 of [A-Za-z0-9._-])";
  }
  if (error.empty()) {
    error = ops_.add_entropy(
        std::string_view(reinterpret_cast<const char*>(entropy.begin()), entropy.size()));
  }
  if (error.empty() && reseed.getUnixTimeNs() > 0) error = ops_.set_clock(reseed.getUnixTimeNs());
  if (error.empty()) error = ops_.set_identity(vm_id);
  if (error.empty() && reseed.hasNetwork()) {
    auto n = reseed.getNetwork();
    error = ops_.configure_network(n.getMac(), n.getIpv4(), n.getGateway());
    if (!error.empty()) error = "network: " + error;
  }
  if (!error.empty()) {
    send_error(static_cast<uint16_t>(ErrorCode::BAD_REQUEST), "reseed: " + error);
    return;
  }
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto id = msg.initReseeded();
  id.setVmId(vm_id);
  id.setBootId(ops_.boot_id());
  send(mb);
}

}  // namespace nv::guest::agent
