// sandbox_ops.cc — the sandbox calls that reach the guest: exec (streamed, exec_run.h as the
// "exec" service), files, processes, signals, context restarts. Each runs with the sandbox's
// `op` lock held and its state running.
#include "common/log.h"
#include "exec_run.h"
#include "sandbox_call.h"

namespace nv::exec {

namespace {

// How long a (re)connect tries before asking the pool whether the VM still runs.
constexpr milliseconds kQuickReconnect{2000};

using R = schema::SandboxRequest;

std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

sandbox::FileEntry entry(const guest::FileEntryInfo& e) {
  return sandbox::FileEntry{e.path, e.type, e.size, e.mode, e.mtime_unix_ms, e.link_target};
}

void reply_entries(SandboxService::Call& c, const std::vector<guest::FileEntryInfo>& entries);

}  // namespace

Status SandboxService::ensure_channel(Call& c, Sandbox& s) {
  if (s.channel && s.channel->is_open()) return {};
  s.channel.reset();
  // A living VM's agent greets within moments; a refused or silent socket may be a dead VMM
  // (killed, OOM) whose caller must not wait the whole connect timeout: try briefly, then ask
  // the pool whether it still runs the VM, and wait the full time only if it does.
  auto ch = connect_(s.lease, c.bounded(std::min(opt_.connect_timeout, kQuickReconnect)));
  if (!ch.ok() && opt_.connect_timeout > kQuickReconnect) {
    auto held = pool_->leases("");
    bool running = !held.ok();  // the pool cannot tell: give the VM the benefit of the doubt
    if (held.ok()) {
      for (const auto& l : held.value()) {
        if (l.vm_id == s.lease.vm_id && l.state == schema::LeaseState::RUNNING) running = true;
      }
    }
    if (running) ch = connect_(s.lease, c.bounded(opt_.connect_timeout));
  }
  if (ch.ok()) {
    s.channel = std::move(ch.value());
    return {};
  }
  // The VM's agent cannot be reached again: the sandbox is lost.
  std::string why = "vm lost: its agent cannot be reached (" + ch.error().message + ")";
  end(s, "sandbox.reaped", why, c.trace_id);
  return make_error(ErrorCode::VM_FAILED, "sandbox " + c.id + ": " + why);
}

Error SandboxService::guest_failed(Call& c, Sandbox& s, const guest::ChannelError& e,
                                   const std::string& what) {
  switch (e.code) {
    case guest::ChannelErrc::guest_error:
      if (e.guest_code == ErrorCode::NOT_FOUND) return make_error(ErrorCode::NOT_FOUND, e.message);
      if (e.guest_code == ErrorCode::UNSET || e.guest_code == ErrorCode::BAD_REQUEST) {
        return make_error(ErrorCode::BAD_REQUEST, e.message);
      }
      return make_error(e.guest_code, what + ": " + e.message);
    case guest::ChannelErrc::bad_argument:
      return make_error(ErrorCode::BAD_REQUEST, what + ": " + e.message);
    case guest::ChannelErrc::timeout:
      // The stream is in an unknown state; the next call reconnects.
      s.channel.reset();
      return make_error(ErrorCode::TIMED_OUT, what + ": the guest did not answer in time", true);
    case guest::ChannelErrc::protocol:
    case guest::ChannelErrc::rate_limited:
    case guest::ChannelErrc::output_cap:
      s.channel.reset();
      return make_error(ErrorCode::GUEST_PROTOCOL, what + ": " + e.message);
    default:
      break;
  }
  // closed / io / connect_failed: is the VM still there? One reconnect decides.
  s.channel.reset();
  if (auto st = ensure_channel(c, s); !st) return st.error();
  return make_error(ErrorCode::VM_FAILED,
                    what + ": the guest stream broke (" + e.message + "); reconnected, retry",
                    true);
}

void SandboxService::do_exec(Call& c, Sandbox& s) {
  if (auto st = ensure_channel(c, s); !st) return c.fail(st.error());
  auto e = c.r.getExec();
  Effective eff;
  Problems unused;
  check_run(e.getTimeoutMs(), e.getOutputCapBytes(), e.getTailBytes(), opt_.limits, eff, unused);
  guest::ExecSpec spec;
  spec.language =
      e.getLanguage() == schema::Language::UNSET ? schema::Language::BASH : e.getLanguage();
  spec.code = e.getCode();
  spec.stdin_data = str(e.getStdin());
  {
    std::lock_guard g(mu_);
    if (s.rec.info.inference.enabled) {  // before the sandbox's own env, which may override
      spec.env.emplace_back("OLLAMA_HOST", "http://127.0.0.1:11434");
      spec.env.emplace_back("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1");
    }
    spec.env.insert(spec.env.end(), s.rec.info.env.begin(), s.rec.info.env.end());
    spec.cwd = e.getCwd().size() ? std::string(e.getCwd()) : s.rec.info.cwd;
  }
  for (auto v : e.getEnv()) spec.env.emplace_back(v.getName(), v.getValue());  // exec's win
  spec.timeout_ms = static_cast<uint32_t>(eff.timeout.count());
  spec.output_cap_bytes = eff.output_cap;
  spec.tail_bytes = eff.tail_bytes;
  spec.trace_id = c.trace_id;
  spec.context = e.getContext();
  spec.keep_background = true;  // a sandbox keeps what its programs leave running
  spec.background = e.getBackground();

  RunOutput run;
  const std::string vm_id = s.lease.vm_id;
  publish_exec_started(events_, c.trace_id, spec.language, vm_id);
  auto finished = [&](const RunOutput* r, const std::string& status) {
    publish_exec_finished(events_, c.trace_id, spec.language, vm_id, c.elapsed_ms(), r, status);
  };
  send_chunk(*c.req, c.trace_id, schema::Stream::STATUS, "started vm=" + vm_id, run.seq++);
  auto on_chunk = [&](schema::Stream stream, std::string_view data) {
    take_chunk(run, *c.req, c.trace_id, eff.output_cap, eff.tail_bytes, stream, data);
  };
  auto outcome = s.channel->exec(spec, on_chunk, c.bounded(eff.timeout + opt_.host_grace));
  if (outcome.ok()) {
    take_outcome(run, outcome.value(), eff.tail_bytes);
  } else {
    const auto& ce = outcome.error();
    if (ce.code == guest::ChannelErrc::guest_error || ce.code == guest::ChannelErrc::bad_argument) {
      finished(nullptr, "error");
      return c.fail(guest_failed(c, s, ce, "exec"));
    }
    if (!host_ended(run, ce, opt_.host_grace, eff.timeout,
                    "the executor dropped the guest stream (the sandbox lives on)")) {
      finished(&run, "error");
      return c.fail(guest_failed(c, s, ce, "exec"));
    }
    // The stream is in an unknown state: the next call reconnects. The program may still run
    // in the guest; `processes` and `signal` reach it.
    s.channel.reset();
    log::warn("sandbox run ended by the host", {{"sandbox_id", c.id}, {"note", run.note}});
  }
  finished(&run, run_status(run));
  fill_result(c.reply().initExecResult(), c.trace_id, run, vm_id, c.elapsed_ms());
  c.send();
}

void SandboxService::do_guest_call(Call& c, Sandbox& s) {
  if (auto st = ensure_channel(c, s); !st) return c.fail(st.error());
  auto& ch = *s.channel;
  const auto deadline = c.bounded(opt_.file_timeout);
  switch (c.r.which()) {
    case R::WRITE_FILE: {
      auto w = c.r.getWriteFile();
      auto d = w.getData();
      auto r = ch.write_file(w.getPath(), {reinterpret_cast<const char*>(d.begin()), d.size()},
                             w.getMode(), w.getAppend(), deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "writeFile"));
      return reply_entries(c, {r.value()});
    }
    case R::READ_FILE: {
      auto f = c.r.getReadFile();
      // length 0 reads to the end, at most max_file_bytes per call (page with offset).
      auto r = ch.read_file(f.getPath(), f.getOffset(),
                            f.getLength() ? f.getLength() : opt_.max_file_bytes,
                            opt_.max_file_bytes, deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "readFile"));
      auto out = c.reply().initFile();
      out.setPath(f.getPath());
      out.setOffset(r->offset);
      out.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(r->data.data()), r->data.size()));
      out.setSize(r->size);
      out.setEof(r->eof);
      return c.send();
    }
    case R::LIST_FILES: {
      auto p = c.r.getListFiles();
      auto r = ch.list_dir(p.getPath(), p.getRecursive(), deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "listFiles"));
      return reply_entries(c, r.value());
    }
    case R::STAT_FILE: {
      auto r = ch.stat(c.r.getStatFile().getPath(), deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "statFile"));
      return reply_entries(c, {r.value()});
    }
    case R::REMOVE_FILE: {
      auto p = c.r.getRemoveFile();
      if (auto e = ch.remove(p.getPath(), p.getRecursive(), deadline)) {
        return c.fail(guest_failed(c, s, e, "removeFile"));
      }
      return c.reply_done();
    }
    case R::MAKE_DIR: {
      auto p = c.r.getMakeDir();
      auto r = ch.make_dir(p.getPath(), p.getRecursive(), deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "makeDir"));
      return reply_entries(c, {r.value()});
    }
    case R::PROCESSES: {
      auto r = ch.processes(deadline);
      if (!r.ok()) return c.fail(guest_failed(c, s, r.error(), "processes"));
      auto list = c.reply().initProcesses(static_cast<unsigned>(r->size()));
      for (unsigned i = 0; i < r->size(); ++i) {
        const auto& p = (*r)[i];
        sandbox::to_capnp(sandbox::Process{p.pid, p.ppid, p.command, p.state, p.rss_bytes,
                                           p.started_unix_ms, p.context},
                          list[i]);
      }
      return c.send();
    }
    case R::SIGNAL: {
      auto sg = c.r.getSignal();
      if (auto e = ch.signal(sg.getPid(), sg.getSignal(), deadline)) {
        return c.fail(guest_failed(c, s, e, "signal"));
      }
      return c.reply_done();
    }
    case R::RESTART_CONTEXT: {
      auto rc = c.r.getRestartContext();
      if (auto e = ch.reset_context(rc.getContext(), rc.getLanguage(), deadline)) {
        return c.fail(guest_failed(c, s, e, "restartContext"));
      }
      return c.reply_done();
    }
    default:
      return c.fail(make_error(ErrorCode::BAD_REQUEST, "operation not served here"));
  }
}

namespace {
void reply_entries(SandboxService::Call& c, const std::vector<guest::FileEntryInfo>& entries) {
  auto list = c.reply().initEntries(static_cast<unsigned>(entries.size()));
  for (unsigned i = 0; i < entries.size(); ++i) sandbox::to_capnp(entry(entries[i]), list[i]);
  c.send();
}
}  // namespace

}  // namespace nv::exec
