// nv-bench bus: what the broker costs, measured side by side with a raw cppzmq pair in one run.
//
//   raw     DEALER -> ROUTER echo thread -> DEALER           (2 hops, no parsing)
//   broker  Client -> Broker -> Worker -> Broker -> Client   (4 hops, header encode/parse at each)
// Same transport (ipc:// in a fresh temp dir), same frames on the wire ([empty][Header][Event]).
// Each side runs in its own ZeroMQ contexts (one per "process"), as the real services do.
// Two measurements per side:
//   one at a time  one request outstanding: round-trip p50/p99 and requests/s
//   pipelined      --window requests outstanding: requests/s
// Then the ratios broker/raw and the targets (p50 <= 2x raw, >= 100k msgs/s).
// `--micro` also runs Google Benchmark micro benchmarks of the framing hot path.
#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/config.h"
#include "common/log.h"
#include "common/worker.h"
#include "orchestrator/broker.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Settings {
  int requests = 20000;    // one-at-a-time round trips measured
  int warmup = 2000;       // round trips before measuring
  int pipelined = 200000;  // requests in the pipelined run
  int window = 256;        // outstanding requests in the pipelined run
  int payload = 32;        // bytes of payload in the request body
  bool handler_threads = false;
  int busy_poll_us = 0;  // the broker's busy-poll window
};

struct Result {
  double p50_us = 0, p99_us = 0, serial_rps = 0, pipelined_rps = 0;
  double cpu_us = 0;         // process CPU time (all threads, user + system) per pipelined request
  double serial_cpu_us = 0;  // ... per one-at-a-time round trip (busy-polling shows here)
};

// CPU time of the whole process: stable under noisy neighbours where wall time is not.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The request body both sides send: an Event with a payload in its trace id field.
zmq::message_t request_body(int payload) {
  capnp::MallocMessageBuilder mb;
  auto e = nv::bus::init_body<nv::schema::Event>(mb);
  e.setTopic("bench.ping");
  e.setTraceId(std::string(static_cast<size_t>(payload), 'x'));
  return nv::bus::encode_body(mb);
}

nv::bus::Header request_header() {
  nv::bus::Header h;
  h.kind = nv::bus::Kind::REQUEST;
  h.service = "bench";
  h.request_id = 1;
  h.deadline_ms = 10000;
  return h;
}

// ------------------------------------------------------------------------------------ raw pair

class RawEcho {
 public:
  explicit RawEcho(const std::string& endpoint) : router_(ctx_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~RawEcho() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    std::vector<zmq::message_t> frames;
    while (!stop_) {
      zmq::pollitem_t item{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 100ms);
      // Frames: [identity][empty][header][body], sent back unchanged.
      while (nv::bus::recv_frames(router_, frames)) {
        for (size_t i = 0; i < frames.size(); ++i) {
          router_.send(frames[i],
                       i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
      }
    }
  }
  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

Result bench_raw(const std::string& endpoint, const Settings& s) {
  RawEcho echo(endpoint);
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::rcvtimeo, 10000);
  dealer.connect(endpoint);
  auto header = nv::bus::encode_header(request_header());
  auto body = request_body(s.payload);
  auto send = [&] {
    dealer.send(zmq::message_t(), zmq::send_flags::sndmore);
    dealer.send(zmq::message_t(header.data(), header.size()), zmq::send_flags::sndmore);
    dealer.send(zmq::message_t(body.data(), body.size()), zmq::send_flags::none);
  };
  std::vector<zmq::message_t> frames;
  auto receive = [&] {
    frames.clear();
    do {
      zmq::message_t m;
      if (!dealer.recv(m)) throw std::runtime_error("raw echo did not answer within 10 s");
      frames.push_back(std::move(m));
    } while (frames.back().more());
  };
  Result r;
  for (int i = 0; i < s.warmup; ++i) send(), receive();
  std::vector<double> us;
  us.reserve(static_cast<size_t>(s.requests));
  auto t0 = Clock::now();
  double serial_cpu0 = process_cpu_seconds();
  for (int i = 0; i < s.requests; ++i) {
    auto a = Clock::now();
    send();
    receive();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  r.serial_cpu_us = (process_cpu_seconds() - serial_cpu0) * 1e6 / s.requests;
  r.serial_rps = s.requests / seconds(Clock::now() - t0);
  r.p50_us = percentile(us, 0.50);
  r.p99_us = percentile(us, 0.99);
  t0 = Clock::now();
  double cpu0 = process_cpu_seconds();
  int sent = 0, done = 0;
  while (sent < std::min(s.window, s.pipelined)) send(), ++sent;
  while (done < s.pipelined) {
    receive();
    ++done;
    if (sent < s.pipelined) send(), ++sent;
  }
  r.pipelined_rps = s.pipelined / seconds(Clock::now() - t0);
  r.cpu_us = (process_cpu_seconds() - cpu0) * 1e6 / s.pipelined;
  return r;
}

// -------------------------------------------------------------------------------- broker path

Result bench_broker(const std::string& dir, const Settings& s) {
  zmq::context_t broker_ctx, worker_ctx, client_ctx;
  nv::BrokerOptions bo;
  bo.worker_endpoints = {nv::bus::ipc_endpoint(dir + "/workers.sock")};
  bo.client_endpoints = {nv::bus::ipc_endpoint(dir + "/clients.sock")};
  bo.max_queue = static_cast<size_t>(s.window) * 4 + 1000;
  bo.busy_poll = std::chrono::microseconds(s.busy_poll_us);
  nv::Broker broker(broker_ctx, bo);
  if (auto st = broker.bind(); !st) throw std::runtime_error(st.error().to_string());
  std::atomic<bool> stop_broker{false}, stop_worker{false};
  std::thread broker_thread([&] { broker.run(stop_broker); });

  nv::WorkerOptions wo;
  wo.service = "bench";
  wo.broker_endpoint = bo.worker_endpoints[0];
  wo.capacity = static_cast<uint32_t>(s.window) + 16;  // the worker is never the bottleneck
  wo.inline_handlers = !s.handler_threads;
  // Echo: the reply is the request body, as in the raw pair.
  nv::Worker worker(worker_ctx, wo, [](std::shared_ptr<nv::Request> r) {
    auto in = r->read<nv::schema::Event>();
    if (!in) return r->fail(in.error());
    capnp::MallocMessageBuilder mb;
    mb.setRoot(in.value());
    r->reply(mb);
  });
  std::thread worker_thread([&] { worker.run(stop_worker); });

  nv::ClientOptions co;
  co.endpoint = bo.client_endpoints[0];
  Result r;
  {
    nv::Client client(client_ctx, co);
    // Wait for the worker to register (the first calls get noWorker until it has).
    auto ready_by = Clock::now() + 10s;
    while (true) {
      auto st = client.call("nv.status", nullptr, 2s);
      if (!st) throw std::runtime_error("nv.status: " + st.error().to_string());
      auto reply = st->body.root<nv::schema::StatusReply>();
      if (reply && reply->getServices().size() == 1) break;
      if (Clock::now() > ready_by) throw std::runtime_error("the bench worker never registered");
      std::this_thread::sleep_for(5ms);
    }
    // The same bytes as the raw pair's body.
    auto body_bytes = request_body(s.payload);
    auto body_reader = nv::bus::BodyReader::open(body_bytes, nv::bus::Limits{});
    capnp::MallocMessageBuilder body;
    body.setRoot(body_reader->root<nv::schema::Event>().value());
    auto call = [&] {
      auto res = client.call("bench", &body, 10s);
      if (!res) throw std::runtime_error("broker call failed: " + res.error().to_string());
    };
    for (int i = 0; i < s.warmup; ++i) call();
    std::vector<double> us;
    us.reserve(static_cast<size_t>(s.requests));
    auto t0 = Clock::now();
    double serial_cpu0 = process_cpu_seconds();
    for (int i = 0; i < s.requests; ++i) {
      auto a = Clock::now();
      call();
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
    }
    r.serial_cpu_us = (process_cpu_seconds() - serial_cpu0) * 1e6 / s.requests;
    r.serial_rps = s.requests / seconds(Clock::now() - t0);
    r.p50_us = percentile(us, 0.50);
    r.p99_us = percentile(us, 0.99);

    t0 = Clock::now();
    double cpu0 = process_cpu_seconds();
    int sent = 0, done = 0;
    while (sent < std::min(s.window, s.pipelined)) client.send("bench", &body, 10s), ++sent;
    while (done < s.pipelined) {
      auto in = client.receive(10s);
      if (!in) throw std::runtime_error("pipelined: no answer within 10 s");
      if (in->header.kind != nv::bus::Kind::REPLY) {
        throw std::runtime_error("pipelined: " + in->error().to_string());
      }
      ++done;
      if (sent < s.pipelined) client.send("bench", &body, 10s), ++sent;
    }
    r.pipelined_rps = s.pipelined / seconds(Clock::now() - t0);
    r.cpu_us = (process_cpu_seconds() - cpu0) * 1e6 / s.pipelined;
  }
  stop_worker = true;
  worker_thread.join();
  stop_broker = true;
  broker_thread.join();
  return r;
}

// ------------------------------------------------------------------------ framing micro-bench

std::vector<zmq::message_t> routed_request(int payload) {
  std::vector<zmq::message_t> f;
  f.emplace_back("client-id", 9);
  f.emplace_back();
  f.push_back(nv::bus::encode_header(request_header()));
  f.push_back(request_body(payload));
  return f;
}

void BM_EncodeHeader(benchmark::State& state) {
  auto h = request_header();
  for (auto _ : state) benchmark::DoNotOptimize(nv::bus::encode_header(h));
}

void BM_ParseRouted(benchmark::State& state) {
  auto proto = routed_request(32);
  nv::bus::Limits limits;
  bool parse_body = state.range(0) != 0;
  for (auto _ : state) {
    std::vector<zmq::message_t> frames;
    for (auto& f : proto) frames.emplace_back(f.data(), f.size());
    nv::bus::Message msg;
    nv::bus::ParseError failure;
    benchmark::DoNotOptimize(nv::bus::parse(frames, true, limits, &msg, &failure, parse_body));
  }
}

void print_row(const char* name, const Result& r) {
  std::printf("  %-32s %9.1f %9.1f %14.0f %14.0f %10.1f %10.1f\n", name, r.p50_us, r.p99_us,
              r.serial_rps, r.pipelined_rps, r.cpu_us, r.serial_cpu_us);
  std::fflush(stdout);
}

}  // namespace

int run_bus_bench(int argc, char** argv) {
  // Google Benchmark's own flags (--benchmark_*) go to it; the rest are ours.
  std::vector<char*> ours{argv[0]}, theirs{argv[0]};
  for (int i = 1; i < argc; ++i) {
    (std::strncmp(argv[i], "--benchmark_", 12) == 0 ? theirs : ours).push_back(argv[i]);
  }
  nv::Config c("nv-bench bus",
               "Round-trip latency and throughput of a small request through the broker, side\n"
               "by side with a raw cppzmq DEALER<->ROUTER echo over the same transport.");
  Settings s;
  c.add_int("requests", s.requests, "one-at-a-time round trips measured per side");
  c.add_int("warmup", s.warmup, "round trips before measuring");
  c.add_int("pipelined", s.pipelined, "requests in the pipelined run per side");
  c.add_int("window", s.window, "requests outstanding in the pipelined run");
  c.add_int("payload", s.payload, "payload bytes in the request body");
  c.add_bool("handler-threads", false,
             "run the bench worker's handler on a thread per request (default: inline)");
  c.add_bool("micro", false, "also run Google Benchmark micro benchmarks of framing");
  c.add_string("side", "both", "raw | broker | both (one side alone is for profiling)");
  c.add_int("busy-poll-us", nv::BrokerOptions{}.busy_poll.count(),
            "the broker's busy-poll window (the orchestrator's default); when not 0 each round "
            "also runs the broker without it (0), side by side");
  c.add_int("rounds", 1, "repeat both sides this many times (alternating) and report each");
  auto st = c.parse(static_cast<int>(ours.size()), ours.data());
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-bench bus: %s\n", st.error().message.c_str());
    return 2;
  }
  s.requests = static_cast<int>(std::max<int64_t>(1, c.integer("requests")));
  s.warmup = static_cast<int>(std::max<int64_t>(0, c.integer("warmup")));
  s.pipelined = static_cast<int>(std::max<int64_t>(1, c.integer("pipelined")));
  s.window = static_cast<int>(std::max<int64_t>(1, c.integer("window")));
  s.payload = static_cast<int>(std::clamp<int64_t>(c.integer("payload"), 0, 1 << 20));
  s.handler_threads = c.boolean("handler-threads");
  s.busy_poll_us = static_cast<int>(std::clamp<int64_t>(c.integer("busy-poll-us"), 0, 100000));
  nv::log::init("nv-bench", nv::log::Level::warn);

  std::string tmpl = "/tmp/nv-bench-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = tmpl;
  auto header = nv::bus::encode_header(request_header());
  auto body = request_body(s.payload);
  std::printf("nv-bench bus: ipc:// in %s, header %zu B + body %zu B, %u CPUs\n", dir.c_str(),
              header.size(), body.size(), std::thread::hardware_concurrency());
  std::printf(
      "  one at a time: %d round trips after %d warm-up; pipelined: %d requests, "
      "%d outstanding; worker handlers %s\n"
      "  CPU us/req: process CPU time (all threads) per pipelined request; CPU 1-at-a-time: the\n"
      "  same per one-at-a-time round trip (where the broker's busy-polling shows)\n\n",
      s.requests, s.warmup, s.pipelined, s.window,
      s.handler_threads ? "on a thread each" : "inline");
  std::printf("  %-32s %9s %9s %14s %14s %10s %10s\n", "", "p50 us", "p99 us", "1-at-a-time/s",
              "pipelined/s", "CPU us/req", "CPU 1-at-a");
  int rounds = static_cast<int>(std::max<int64_t>(1, c.integer("rounds")));
  std::vector<double> p50_ratios, p99_ratios, broker_rps;
  int rc = 0;
  try {
    for (int round = 0; round < rounds; ++round) {
      const auto& side = c.str("side");
      Result raw, brk, still;
      if (side != "broker") raw = bench_raw(nv::bus::ipc_endpoint(dir + "/raw.sock"), s);
      if (side != "raw" && s.busy_poll_us > 0) {
        Settings blocking = s;
        blocking.busy_poll_us = 0;
        still = bench_broker(dir, blocking);
      }
      if (side != "raw") brk = bench_broker(dir, s);
      print_row("raw DEALER<->ROUTER echo", raw);
      if (s.busy_poll_us > 0) {
        print_row("broker, no busy-poll (before)", still);
        std::printf("  %-32s %8.2fx %8.2fx %13.2fx %13.2fx %9.2fx\n", "ratio no-busy-poll/raw",
                    still.p50_us / raw.p50_us, still.p99_us / raw.p99_us,
                    still.serial_rps / raw.serial_rps, still.pipelined_rps / raw.pipelined_rps,
                    still.cpu_us / raw.cpu_us);
      }
      char label[64];
      std::snprintf(label, sizeof label, "broker, busy-poll %d us", s.busy_poll_us);
      print_row(s.busy_poll_us > 0 ? label : "broker client->broker->worker", brk);
      std::printf("  %-32s %8.2fx %8.2fx %13.2fx %13.2fx %9.2fx\n", "ratio broker/raw",
                  brk.p50_us / raw.p50_us, brk.p99_us / raw.p99_us, brk.serial_rps / raw.serial_rps,
                  brk.pipelined_rps / raw.pipelined_rps, brk.cpu_us / raw.cpu_us);
      p50_ratios.push_back(brk.p50_us / raw.p50_us);
      p99_ratios.push_back(brk.p99_us / raw.p99_us);
      broker_rps.push_back(brk.pipelined_rps);
    }
    // Over several rounds the median is reported, not the best.
    double ratio = percentile(p50_ratios, 0.5), rps = percentile(broker_rps, 0.5);
    double ratio99 = percentile(p99_ratios, 0.5);
    std::printf(
        "\n  targets%s: p50 broker/raw %.2fx (<= 2.00x: %s); p99 broker/raw %.2fx "
        "(<= 4.00x: %s); broker pipelined %.0f msgs/s (>= 100000: %s)\n",
        rounds > 1 ? " (median of rounds)" : "", ratio, ratio <= 2.0 ? "met" : "MISSED", ratio99,
        ratio99 <= 4.0 ? "met" : "MISSED", rps, rps >= 100000 ? "met" : "MISSED");
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) == 3) {
      std::printf(
          "  load average %.2f on %u CPUs during the run (other work skews wall times; "
          "CPU us/req less so)\n",
          load[0], std::thread::hardware_concurrency());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nv-bench bus: %s\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  if (rc == 0 && c.boolean("micro")) {
    std::printf("\nframing micro benchmarks (Google Benchmark):\n");
    benchmark::RegisterBenchmark("bus/encode_header", BM_EncodeHeader);
    benchmark::RegisterBenchmark("bus/parse_routed/header_only", BM_ParseRouted)->Arg(0);
    benchmark::RegisterBenchmark("bus/parse_routed/with_body", BM_ParseRouted)->Arg(1);
    int bargc = static_cast<int>(theirs.size());
    benchmark::Initialize(&bargc, theirs.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  return rc;
}
