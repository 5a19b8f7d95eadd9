// executor.h — one ExecRequest, end to end: validate → lease a VM → "started" status chunk →
// guest channel → put files → exec (output streamed as ExecChunk partials) → get files →
// ExecResult → release (destroy) the VM.
//
// The VM is released on every path: a LeaseGuard owns the lease from the moment the pool
// answers and destroys the VM in its destructor (errors, exceptions, cancellation); a watchdog
// thread destroys it early when the caller cancels or its deadline passes, which closes the
// guest stream and unblocks the channel call the handler is waiting in.
//
// Limits the host enforces whatever the guest does (the agent enforces its own as well):
//   - a hard deadline of timeout + host_grace on the exec call → VM destroyed, result
//     hostKilled + timedOut;
//   - the output cap: at most `output_cap` bytes kept and streamed; a guest that sends more than
//     the cap plus one chunk is cut off by the channel (output_cap) → VM destroyed;
//   - token buckets on guest bytes and messages (ChannelLimits) → rate_limited → VM destroyed;
//   - guest frame lengths bounded before buffering (ChannelLimits.max_frame_bytes).
//
// The lease asks the pool for a lifetime covering everything the handler may still do with the
// VM (connect, files in and out, the run's timeout + host_grace) plus lease_margin, and never
// more than the request's remaining time plus the margin: if this executor dies holding the VM,
// the pool manager destroys it when that lifetime ends.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "common/client.h"
#include "common/events.h"
#include "common/worker.h"
#include "guest/host/guest_channel.h"
#include "guest/protocol/frame.h"
#include "exec_limits.h"

namespace nv::exec {

struct ExecutorOptions {
  ExecLimits limits;
  uint32_t concurrency = 4;                          // requests handled at once, at most
  std::chrono::milliseconds host_grace{2000};        // hard deadline = timeout + this
  std::chrono::milliseconds connect_timeout{15000};  // channel connect → Hello
  std::chrono::milliseconds file_timeout{10000};     // each put/get
  std::chrono::milliseconds max_lease_wait{30000};   // waiting for a warm VM
  std::chrono::milliseconds lease_margin{5000};      // lease lifetime beyond the worst case
  std::chrono::milliseconds watchdog_interval{20};   // cancellation checks
  guest::ChannelLimits channel;                      // rates, frame cap (output cap: per run)
  ClientOptions pool;                                // this host's vm-pool-manager
  size_t max_result_bytes = 7u << 20;                // ExecResult frame budget (files cut)
};

class Executor {
 public:
  Executor(zmq::context_t& ctx, ExecutorOptions options, EventPublisher& events);

  // The "exec" worker's handler: answers `request` exactly once, from the calling thread.
  void handle(const std::shared_ptr<Request>& request);

  uint32_t in_flight() const { return in_flight_.load(); }
  const ExecutorOptions& options() const { return opt_; }

 private:
  zmq::context_t& ctx_;
  ExecutorOptions opt_;
  EventPublisher& events_;
  std::atomic<uint32_t> in_flight_{0};
};

}  // namespace nv::exec
