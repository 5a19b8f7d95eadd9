#include "exec_run.h"

#include <algorithm>

namespace nv::exec {

namespace {
kj::ArrayPtr<const kj::byte> bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
}  // namespace

void send_chunk(Request& req, const std::string& trace_id, schema::Stream stream,
                std::string_view data, uint32_t seq) {
  capnp::MallocMessageBuilder mb;
  auto c = bus::init_body<schema::ExecChunk>(mb);
  c.setTraceId(trace_id);
  c.setStream(stream);
  c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  c.setSeq(seq);
  req.partial(mb);
}

void append_tail(std::string& tail, std::string_view data, size_t cap) {
  if (data.size() >= cap) {
    tail.assign(data.substr(data.size() - cap));
    return;
  }
  tail.append(data);
  if (tail.size() > cap) tail.erase(0, tail.size() - cap);
}

void take_chunk(RunOutput& run, Request& req, const std::string& trace_id, uint64_t cap,
                uint32_t tail_bytes, schema::Stream stream, std::string_view data) {
  const bool err = stream == schema::Stream::STDERR;
  (err ? run.err_seen : run.out_seen) += data.size();
  uint64_t room = cap > run.kept ? cap - run.kept : 0;
  auto take = static_cast<size_t>(std::min<uint64_t>(room, data.size()));
  if (take < data.size()) {
    run.truncated = true;
    append_tail(err ? run.err_tail : run.out_tail, data.substr(take), tail_bytes);
  }
  if (take == 0 || req.cancelled()) return;
  auto part = data.substr(0, take);
  (err ? run.err : run.out).append(part);
  run.kept += take;
  send_chunk(req, trace_id, stream, part, run.seq++);
}

void take_outcome(RunOutput& run, const guest::ExecOutcome& outcome, uint32_t tail_bytes) {
  run.outcome = outcome;
  run.timed_out = run.outcome.timed_out;
  run.truncated = run.truncated || run.outcome.truncated;
  append_tail(run.out_tail, run.outcome.stdout_tail, tail_bytes);
  append_tail(run.err_tail, run.outcome.stderr_tail, tail_bytes);
  if (!run.outcome.error.empty()) run.note = "the program could not start: " + run.outcome.error;
}

bool host_ended(RunOutput& run, const guest::ChannelError& ce, std::chrono::milliseconds grace,
                std::chrono::milliseconds timeout, const std::string& consequence) {
  switch (ce.code) {
    case guest::ChannelErrc::timeout:
      run.host_killed = true;
      run.timed_out = true;
      run.note = "no result " + std::to_string(grace.count()) + " ms after the " +
                 std::to_string(timeout.count()) + " ms timeout: " + consequence;
      break;
    case guest::ChannelErrc::rate_limited:
    case guest::ChannelErrc::output_cap:
    case guest::ChannelErrc::protocol:
      run.host_killed = true;
      run.truncated = run.truncated || ce.code == guest::ChannelErrc::output_cap;
      run.note = std::string("guest misbehaved (") + guest::to_string(ce.code) + ": " + ce.message +
                 "): " + consequence;
      break;
    default:
      return false;
  }
  run.outcome.exit_code = -1;
  run.outcome.stdout_bytes = run.out_seen;  // the agent never reported its counts
  run.outcome.stderr_bytes = run.err_seen;
  return true;
}

void fill_result(schema::ExecResult::Builder res, const std::string& trace_id, const RunOutput& run,
                 const std::string& vm_id, double wall_ms) {
  res.setTraceId(trace_id);
  res.setExitCode(run.outcome.exit_code);
  res.setSignal(run.outcome.signal);
  res.setDurationMs(run.outcome.duration_ms);
  res.setWallMs(wall_ms);
  res.setTimedOut(run.timed_out);
  res.setTruncated(run.truncated);
  res.setStdout(bytes(run.out));
  res.setStderr(bytes(run.err));
  res.setStdoutTail(bytes(run.out_tail));
  res.setStderrTail(bytes(run.err_tail));
  res.setStdoutBytes(run.outcome.stdout_bytes);
  res.setStderrBytes(run.outcome.stderr_bytes);
  res.setVmId(vm_id);
  res.setHostKilled(run.host_killed);
  res.setNote(run.note);
}

std::string run_status(const RunOutput& run) {
  return run.timed_out                ? "timeout"
         : run.host_killed            ? "killed"
         : !run.outcome.error.empty() ? "error"
                                      : "ok";
}

void publish_exec_started(EventPublisher& events, const std::string& trace_id,
                          schema::Language language, const std::string& vm_id) {
  events.publish(
      "exec.started",
      [&](schema::Event::Builder e) {
        auto s = e.initExecStarted();
        s.setLanguage(language);
        s.setVmId(vm_id);
      },
      trace_id);
}

void publish_exec_finished(EventPublisher& events, const std::string& trace_id,
                           schema::Language language, const std::string& vm_id, double wall_ms,
                           const RunOutput* run, const std::string& status) {
  events.publish(
      "exec.finished",
      [&](schema::Event::Builder e) {
        auto f = e.initExecFinished();
        f.setLanguage(language);
        f.setVmId(vm_id);
        f.setDurationMs(wall_ms);
        f.setExitCode(run ? run->outcome.exit_code : -1);
        f.setTimedOut(run && run->timed_out);
        f.setTruncated(run && run->truncated);
        f.setOutputBytes(run ? run->outcome.stdout_bytes + run->outcome.stderr_bytes : 0);
        f.setStatus(status);
      },
      trace_id);
}

}  // namespace nv::exec
