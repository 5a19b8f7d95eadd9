#include "executor.h"

#include <nv/schema/exec.capnp.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "exec_run.h"
#include "pool_client.h"

namespace nv::exec {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
// The shortest wait for a warm VM worth asking the pool for.
constexpr milliseconds kMinLeaseWait{1000};

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Owns one lease: destroys the VM exactly once, from whichever thread asks first (the watchdog
// on cancellation, the handler after a host kill, or the destructor on every other path).
class LeaseGuard {
 public:
  LeaseGuard(zmq::context_t& ctx, ClientOptions pool, std::string trace_id, std::string vm_id)
      : ctx_(ctx),
        pool_(std::move(pool)),
        trace_id_(std::move(trace_id)),
        vm_id_(std::move(vm_id)) {}
  ~LeaseGuard() { release("request finished"); }
  LeaseGuard(const LeaseGuard&) = delete;
  LeaseGuard& operator=(const LeaseGuard&) = delete;

  // Thread-safe. nv::Client is per thread, so each call makes its own PoolClient.
  void release(const std::string& reason) {
    if (released_.exchange(true)) return;
    for (int attempt = 1; attempt <= 2; ++attempt) {
      PoolClient pool(ctx_, pool_);
      auto st = pool.release(trace_id_, vm_id_, reason, milliseconds(4000));
      if (st) {
        log::debug("vm released", {{"vm_id", vm_id_}, {"reason", reason}});
        return;
      }
      log::warn("vm.release failed",
                {{"vm_id", vm_id_}, {"attempt", attempt}, {"error", st.error().to_string()}});
    }
    log::error("could not release the VM: the pool manager still holds it as leased",
               {{"vm_id", vm_id_}});
  }
  const std::string& vm_id() const { return vm_id_; }

 private:
  zmq::context_t& ctx_;
  ClientOptions pool_;
  std::string trace_id_;
  std::string vm_id_;
  std::atomic<bool> released_{false};
};

// Destroys the VM as soon as the caller cancels or its deadline passes; the guest stream then
// closes and the channel call the handler is blocked in returns.
class Watchdog {
 public:
  Watchdog(std::shared_ptr<Request> req, LeaseGuard& lease, Clock::time_point request_end,
           milliseconds interval)
      : req_(std::move(req)),
        lease_(lease),
        end_(request_end),
        interval_(interval),
        thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // "" while it has not fired; "cancelled" or "deadline" after.
  std::string fired() {
    std::lock_guard lock(mu_);
    return fired_;
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!done_) {
      cv_.wait_for(lock, interval_);
      if (done_) return;
      std::string why;
      if (req_->cancelled())
        why = "cancelled";
      else if (Clock::now() >= end_)
        why = "deadline";
      if (why.empty()) continue;
      fired_ = why;
      lock.unlock();
      lease_.release(why == "cancelled" ? "caller cancelled the request"
                                        : "the caller's deadline passed");
      return;
    }
  }

  std::shared_ptr<Request> req_;
  LeaseGuard& lease_;
  Clock::time_point end_;
  milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string fired_;
  std::thread thread_;  // last: starts after the members it reads
};

struct InFlight {
  explicit InFlight(std::atomic<uint32_t>& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  std::atomic<uint32_t>& n_;
};

// What one run accumulates for its ExecResult: the output (exec_run.h) and the files read back.
struct RunState : RunOutput {
  struct File {
    std::string path, data, error;
    bool found = false;
  };
  std::vector<File> files;
};

kj::ArrayPtr<const kj::byte> bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// The lease lifetime to ask for: the longest this handler can keep the VM (every step below is
// bounded by its own timeout and by the request's end; the watchdog destroys the VM at the
// latter) plus a margin. The pool reclaims the VM after it if this process dies holding it.
milliseconds lease_lifetime(const ExecutorOptions& o, milliseconds run_timeout, size_t files,
                            milliseconds request_remaining) {
  milliseconds worst =
      o.connect_timeout + o.file_timeout * static_cast<int64_t>(files) + run_timeout + o.host_grace;
  if (request_remaining != milliseconds::max()) worst = std::min(worst, request_remaining);
  return std::min<milliseconds>(worst + o.lease_margin, milliseconds(UINT32_MAX));
}

guest::ChannelKind channel_kind(const std::string& name) {
  return name == "hybridVsock" ? guest::ChannelKind::hybrid_vsock : guest::ChannelKind::unix_stream;
}

}  // namespace

Executor::Executor(zmq::context_t& ctx, ExecutorOptions options, EventPublisher& events)
    : ctx_(ctx), opt_(std::move(options)), events_(events) {}

void Executor::handle(const std::shared_ptr<Request>& req) {
  const auto start = Clock::now();
  const auto& hdr = req->header();
  auto body = req->read<schema::ExecRequest>();
  if (!body) {
    req->fail(body.error());
    return;
  }
  auto r = body.value();
  std::string trace_id = hdr.trace_id.empty() ? std::string(r.getTraceId().cStr()) : hdr.trace_id;
  log::TraceScope trace(trace_id);
  auto eff = validate(r, opt_.limits);
  if (!eff) {
    log::info("exec request refused", {{"error", eff.error().message}});
    req->fail(eff.error());
    return;
  }
  InFlight in_flight(in_flight_);
  const auto language = eff->language;
  const std::string lang = language_name(language);

  auto publish_finished = [&](const std::string& vm_id, const RunState* run,
                              const std::string& status) {
    double wall = ms_since(start);
    publish_exec_finished(events_, trace_id, language, vm_id, wall, run, status);
    log::info("exec finished", {{"language", lang},
                                {"vm_id", vm_id},
                                {"status", status},
                                {"wall_ms", wall},
                                {"exit_code", run ? run->outcome.exit_code : -1}});
  };
  auto fail = [&](const std::string& vm_id, const RunState* run, const Error& e,
                  const std::string& status = "error") {
    publish_finished(vm_id, run, status);
    req->fail(e);
  };

  // ---- 1. Lease a warm VM within the caller's remaining time.
  auto remaining = req->remaining();
  const auto request_end =
      remaining == milliseconds::max() ? Clock::time_point::max() : start + remaining;
  auto lease_wait = std::min(opt_.max_lease_wait, remaining - milliseconds(200));
  // Too little time left to wait for a VM at all: the deadline was spent before this executor
  // got the request (in the broker's queue). That is a timeout, not a pool too small.
  if (lease_wait < kMinLeaseWait) {
    req->fail(make_error(ErrorCode::TIMED_OUT,
                         "only " + std::to_string(remaining.count()) +
                             " ms of the request's deadline were left when the executor took it "
                             "(it waited in the queue); retry, or give it a longer deadline",
                         true));
    return;
  }
  if (req->cancelled()) {
    req->fail(make_error(ErrorCode::CANCELLED, "the caller cancelled the request"));
    return;
  }
  VmLease lease;
  {
    PoolClient pool(ctx_, opt_.pool);
    auto lifetime = lease_lifetime(opt_, eff->timeout,
                                   r.getPutFiles().size() + r.getGetFiles().size(), remaining);
    auto l = pool.lease(trace_id, eff->tier, lease_wait, lifetime);
    if (!l) {
      log::warn("vm.lease failed", {{"error", l.error().to_string()}});
      fail("", nullptr, l.error());
      return;
    }
    lease = std::move(l.value());
  }
  LeaseGuard vm(ctx_, opt_.pool, trace_id, lease.vm_id);  // from here on: destroyed on every path

  // ---- 2. Tell the caller it started (the broker no longer retries it elsewhere after this).
  publish_exec_started(events_, trace_id, language, lease.vm_id);
  RunState run;
  send_chunk(*req, trace_id, schema::Stream::STATUS, "started vm=" + lease.vm_id, run.seq++);
  Watchdog watchdog(req, vm, request_end, opt_.watchdog_interval);
  auto stopped_early = [&]() -> std::optional<Error> {
    auto why = watchdog.fired();
    if (why == "cancelled") return make_error(ErrorCode::CANCELLED, "the caller cancelled");
    if (why == "deadline") {
      return make_error(ErrorCode::TIMED_OUT, "the request's deadline passed while it ran on VM " +
                                                  lease.vm_id + "; the VM was destroyed");
    }
    return std::nullopt;
  };
  auto bounded = [&](milliseconds d) { return std::min(Clock::now() + d, request_end); };

  // ---- 3. Connect to the guest agent.
  guest::ChannelLimits limits = opt_.channel;
  limits.max_output_bytes = uint64_t{eff->output_cap} + guest::kMaxChunkBytes;
  auto ch = guest::GuestChannel::connect(lease.channel_path, channel_kind(lease.channel_kind),
                                         lease.vsock_port, bounded(opt_.connect_timeout), limits);
  if (!ch.ok()) {
    if (auto e = stopped_early()) return fail(lease.vm_id, nullptr, *e, "killed");
    return fail(lease.vm_id, nullptr,
                make_error(ErrorCode::VM_FAILED, "cannot reach the guest agent of VM " +
                                                     lease.vm_id + " at " + lease.channel_path +
                                                     ": " + ch.error().message));
  }
  auto& channel = *ch.value();

  // ---- 4. Files in.
  auto puts = r.getPutFiles();
  for (unsigned i = 0; i < puts.size(); ++i) {
    auto p = puts[i];
    auto data = p.getData();
    auto err =
        channel.put_file(p.getPath(), {reinterpret_cast<const char*>(data.begin()), data.size()},
                         p.getMode(), bounded(opt_.file_timeout));
    if (!err) continue;
    if (auto e = stopped_early()) return fail(lease.vm_id, nullptr, *e, "killed");
    auto code =
        err.code == guest::ChannelErrc::guest_error ? ErrorCode::BAD_REQUEST : ErrorCode::VM_FAILED;
    return fail(lease.vm_id, nullptr,
                make_error(code, "putFiles[" + std::to_string(i) + "] " + p.getPath().cStr() +
                                     ": " + err.message));
  }

  // ---- 5. Run, streaming output as it comes.
  guest::ExecSpec spec;
  spec.language = language;
  spec.code = r.getCode();
  auto in = r.getStdin();
  spec.stdin_data.assign(reinterpret_cast<const char*>(in.begin()), in.size());
  for (auto e : r.getEnv()) spec.env.emplace_back(e.getName(), e.getValue());
  spec.timeout_ms = static_cast<uint32_t>(eff->timeout.count());
  spec.output_cap_bytes = eff->output_cap;
  spec.tail_bytes = eff->tail_bytes;
  spec.trace_id = trace_id;
  const uint64_t cap = eff->output_cap;
  auto on_chunk = [&](schema::Stream stream, std::string_view data) {
    take_chunk(run, *req, trace_id, cap, eff->tail_bytes, stream, data);
  };
  const auto hard_deadline = bounded(eff->timeout + opt_.host_grace);
  auto outcome = channel.exec(spec, on_chunk, hard_deadline);
  if (outcome.ok()) {
    take_outcome(run, outcome.value(), eff->tail_bytes);
  } else {
    if (auto e = stopped_early()) return fail(lease.vm_id, &run, *e, "killed");
    const auto& ce = outcome.error();
    if (!host_ended(run, ce, opt_.host_grace, eff->timeout, "the executor destroyed the VM")) {
      return fail(lease.vm_id, &run,
                  make_error(ErrorCode::VM_FAILED, "VM " + lease.vm_id +
                                                       " stopped while running the program (" +
                                                       ce.message + ")"));
    }
    log::warn("guest run ended by the host", {{"vm_id", lease.vm_id}, {"note", run.note}});
    vm.release(run.note);
  }

  // ---- 6. Files out (within the result's frame budget).
  const size_t output = run.kept + run.out_tail.size() + run.err_tail.size() + 4096;
  size_t budget = opt_.max_result_bytes > output ? opt_.max_result_bytes - output : 0;
  for (auto path : r.getGetFiles()) {
    RunState::File f;
    f.path = path;
    if (run.host_killed) {
      f.error = "the VM was destroyed before files could be read";
    } else {
      auto got = channel.get_file(f.path, bounded(opt_.file_timeout));
      if (!got.ok()) {
        f.error = got.error().message;
      } else if (got.value().size() > budget) {
        f.error = "file is " + std::to_string(got.value().size()) +
                  " bytes, more than the result has room for";
      } else {
        budget -= got.value().size();
        f.data = std::move(got.value());
        f.found = true;
      }
    }
    run.files.push_back(std::move(f));
  }
  if (auto e = stopped_early()) return fail(lease.vm_id, &run, *e, "killed");

  // ---- 7. The result.
  capnp::MallocMessageBuilder mb;
  auto res = bus::init_body<schema::ExecResult>(mb);
  fill_result(res, trace_id, run, lease.vm_id, ms_since(start));
  auto files = res.initFiles(static_cast<unsigned>(run.files.size()));
  for (unsigned i = 0; i < run.files.size(); ++i) {
    files[i].setPath(run.files[i].path);
    files[i].setData(bytes(run.files[i].data));
    files[i].setFound(run.files[i].found);
    files[i].setError(run.files[i].error);
  }
  std::string status = run_status(run);
  req->reply(mb);
  publish_finished(lease.vm_id, &run, status);
  // `vm` (LeaseGuard) destroys the VM here, after the caller has its answer.
}

}  // namespace nv::exec
