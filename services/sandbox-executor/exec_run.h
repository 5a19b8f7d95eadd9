// exec_run.h — what one program run streams and answers, shared by the "exec" service
// (executor.cc: a fresh VM per request) and the "sandbox" service's exec (sandbox_exec.cc: a
// sandbox's VM): output kept up to the cap and sent as ExecChunk partials, the tails past it,
// the guest's outcome, and the ExecResult built from them.
#pragma once

#include <nv/schema/exec.capnp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/events.h"
#include "common/worker.h"
#include "guest/host/guest_channel.h"

namespace nv::exec {

// One run as it goes.
struct RunOutput {
  std::string out, err;
  // The end of each stream past `out`/`err`: chunks the cap dropped, then the guest's own tail
  // (GuestResult), cut to the request's tailBytes.
  std::string out_tail, err_tail;
  uint64_t kept = 0;
  uint64_t out_seen = 0, err_seen = 0;  // chunk bytes received per stream (kept or not)
  bool truncated = false;
  uint32_t seq = 0;
  guest::ExecOutcome outcome;
  bool host_killed = false;
  bool timed_out = false;
  std::string note;
};

// Sends one ExecChunk partial.
void send_chunk(Request& req, const std::string& trace_id, schema::Stream stream,
                std::string_view data, uint32_t seq);
// Appends to a stream's tail and keeps only its last `cap` bytes.
void append_tail(std::string& tail, std::string_view data, size_t cap);
// A chunk from the guest: kept and streamed up to `cap` bytes in all, the rest to the tail.
void take_chunk(RunOutput& run, Request& req, const std::string& trace_id, uint64_t cap,
                uint32_t tail_bytes, schema::Stream stream, std::string_view data);
// The guest's outcome arrived.
void take_outcome(RunOutput& run, const guest::ExecOutcome& outcome, uint32_t tail_bytes);
// The channel failed with a timeout, rate limit, output cap or protocol error: the host ends the
// run (the caller destroys the VM or, for a sandbox, drops the stream). false for other errors
// (closed, io, ...), which mean the VM stopped.
bool host_ended(RunOutput& run, const guest::ChannelError& error, std::chrono::milliseconds grace,
                std::chrono::milliseconds timeout, const std::string& consequence);
// Fills an ExecResult from the run (files are the caller's).
void fill_result(schema::ExecResult::Builder res, const std::string& trace_id, const RunOutput& run,
                 const std::string& vm_id, double wall_ms);
// "timeout" | "killed" | "error" | "ok" (exec.finished's status).
std::string run_status(const RunOutput& run);
// The exec.started and exec.finished events (events.capnp), the same for a one-shot exec and a
// sandbox's: metrics count both, and a VMM killed under either is traced to its run. `run` may be
// null (the run never started); wall_ms is the request's wall time.
void publish_exec_started(EventPublisher& events, const std::string& trace_id,
                          schema::Language language, const std::string& vm_id);
void publish_exec_finished(EventPublisher& events, const std::string& trace_id,
                           schema::Language language, const std::string& vm_id, double wall_ms,
                           const RunOutput* run, const std::string& status);

}  // namespace nv::exec
