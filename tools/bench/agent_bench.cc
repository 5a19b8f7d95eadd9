// nv-bench agent: what the agent loop itself costs per iteration — the time a task spends
// neither in the model nor in the code executor — measured side by side in one run with the
// bus round trip it is built from.
//
//   client ──ipc──▶ broker ──inproc──▶ agent loop ──inproc──▶ broker ──ipc──▶ model double
//                                                              └───ipc──▶ exec double
// Everything runs in this process, each "service" with its own ZeroMQ context as if it were its
// own process; the agent loop shares the broker's context over inproc://, as in nv-orchestrator.
// The model double answers a scripted conversation at once (K tool calls, then an answer); the
// exec double answers each ExecRequest at once. Both time their own handlers, so
//   overhead per iteration = (task wall time − model handler time − exec handler time) / LLM calls
// Baseline in the same run: one Client → broker → worker → client round trip (an iteration makes
// two such round trips, plus one nv.status check per service per task).
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/llm.capnp.h>
#include <nv/schema/task.capnp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/config.h"
#include "common/frames.h"
#include "common/log.h"
#include "common/worker.h"
#include "orchestrator/agent.h"
#include "orchestrator/broker.h"

namespace {

namespace s = nv::schema;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double us_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// Handler time per trace id, summed (µs).
class HandlerClock {
 public:
  void add(const std::string& trace, double us) {
    std::lock_guard lock(mu_);
    by_trace_[trace] += us;
  }
  double take(const std::string& trace) {
    std::lock_guard lock(mu_);
    auto it = by_trace_.find(trace);
    if (it == by_trace_.end()) return 0;
    double v = it->second;
    by_trace_.erase(it);
    return v;
  }

 private:
  std::mutex mu_;
  std::map<std::string, double> by_trace_;
};

// A worker on its own context and thread ("its own process").
class Double {
 public:
  Double(const std::string& service, const std::string& endpoint, uint32_t capacity,
         nv::RequestHandler handler) {
    nv::WorkerOptions o;
    o.service = service;
    o.broker_endpoint = endpoint;
    o.capacity = capacity;
    thread_ = std::thread([this, o, handler] {
      nv::Worker w(ctx_, o, handler);
      w.run(stop_);
    });
  }
  ~Double() {
    stop_ = true;
    thread_.join();
  }

 private:
  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The instant scripted model: `tool_calls` calls, one per answer, then a text answer.
void model_handler(const std::shared_ptr<nv::Request>& r, uint32_t tool_calls, HandlerClock& hc) {
  auto t0 = Clock::now();
  auto req = r->read<s::ChatRequest>();
  if (!req) return r->fail(req.error());
  uint32_t assistant = 0;
  for (auto m : req->getMessages()) assistant += m.getRole() == s::Role::ASSISTANT ? 1 : 0;
  capnp::MallocMessageBuilder mb;
  auto rep = nv::bus::init_body<s::ChatReply>(mb);
  rep.setTraceId(req->getTraceId());
  rep.setModel("bench-model");
  auto m = rep.initMessage();
  m.setRole(s::Role::ASSISTANT);
  if (assistant < tool_calls) {
    auto c = m.initToolCalls(1);
    c[0].setId("call_" + std::to_string(assistant));
    c[0].setName("execute_code");
    c[0].setArgumentsJson(R"js({"language":"python","code":"print(6*7)"})js");
    rep.setDoneReason("tool_calls");
  } else {
    m.setContent("The answer is 42.");
    rep.setDoneReason("stop");
  }
  rep.setPromptTokens(10);
  rep.setCompletionTokens(5);
  std::string trace = req->getTraceId().cStr();
  hc.add(trace, us_since(t0));  // stop the clock before the reply leaves
  r->reply(mb);
}

// The instant exec double: a status chunk, a stdout chunk, the result.
void exec_handler(const std::shared_ptr<nv::Request>& r, HandlerClock& hc) {
  auto t0 = Clock::now();
  auto req = r->read<s::ExecRequest>();
  if (!req) return r->fail(req.error());
  std::string trace = req->getTraceId().cStr();
  auto chunk = [&](s::Stream stream, const std::string& data) {
    capnp::MallocMessageBuilder mb;
    auto c = nv::bus::init_body<s::ExecChunk>(mb);
    c.setTraceId(trace);
    c.setStream(stream);
    c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
    r->partial(mb);
  };
  chunk(s::Stream::STATUS, "started vm=bench");
  chunk(s::Stream::STDOUT, "42\n");
  capnp::MallocMessageBuilder mb;
  auto res = nv::bus::init_body<s::ExecResult>(mb);
  res.setTraceId(trace);
  std::string out = "42\n";
  res.setStdout(kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()), out.size()));
  res.setVmId("bench");
  hc.add(trace, us_since(t0));
  r->reply(mb);
}

struct Sample {
  double wall_us = 0, model_us = 0, exec_us = 0;
  uint32_t iterations = 0;
};

}  // namespace

int run_agent_bench(int argc, char** argv) {
  nv::Config c("nv-bench agent",
               "agent loop overhead per iteration (time spent neither in the model nor in the "
               "executor), with instant test doubles of both, beside the bus round trip");
  c.add_int("tasks", 300, "tasks measured");
  c.add_int("warmup", 30, "tasks run before measuring");
  c.add_int("tool-calls", 3, "tool calls per task (LLM calls = tool calls + 1)");
  c.add_int("concurrency", 1, "tasks in flight at once");
  c.add_int("round-trips", 5000, "bus round trips measured for the baseline");
  if (auto st = c.parse(argc, argv); !st) {
    std::fprintf(stderr, "nv-bench agent: %s\n", st.error().message.c_str());
    return 2;
  }
  if (c.help_requested()) {
    std::printf("%s", c.help().c_str());
    return 0;
  }
  int tasks = static_cast<int>(c.integer("tasks"));
  int warmup = static_cast<int>(c.integer("warmup"));
  auto tool_calls = static_cast<uint32_t>(c.integer("tool-calls"));
  int conc = std::max<int>(1, static_cast<int>(c.integer("concurrency")));
  int rts = static_cast<int>(c.integer("round-trips"));
  if (tasks < 1 || warmup < 0 || tool_calls > 50 || rts < 1) {
    std::fprintf(stderr,
                 "nv-bench agent: --tasks >= 1, --warmup >= 0, --tool-calls <= 50, "
                 "--round-trips >= 1\n");
    return 2;
  }
  nv::log::init("bench", nv::log::Level::warn);

  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("nv-bench-agent-" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto ipc = [&](const char* name) { return nv::bus::ipc_endpoint((dir / name).string()); };

  // The orchestrator "process": broker + agent loop on one context.
  zmq::context_t orch_ctx(1);
  nv::BrokerOptions bo;
  bo.worker_endpoints = {ipc("workers.sock"), "inproc://nv-workers"};
  bo.client_endpoints = {ipc("clients.sock"), "inproc://nv-clients"};
  bo.events_in_endpoints = {ipc("events-in.sock"), "inproc://nv-events-in"};
  bo.events_out_endpoints = {ipc("events.sock"), "inproc://nv-events"};
  bo.history = 1000;
  nv::Broker broker(orch_ctx, bo);
  if (auto st = broker.bind(); !st) {
    std::fprintf(stderr, "nv-bench agent: %s\n", st.error().message.c_str());
    return 1;
  }
  std::atomic<bool> stop{false}, broker_stop{false};
  std::thread broker_thread([&] { broker.run(broker_stop); });
  nv::agent::AgentOptions ao;
  ao.max_tasks = static_cast<uint32_t>(conc);
  ao.default_max_iterations = tool_calls + 1;
  nv::agent::Agent agent(orch_ctx, ao);
  std::thread agent_thread([&] { agent.run(stop); });

  HandlerClock model_clock, exec_clock;
  uint32_t cap = static_cast<uint32_t>(conc) * 2;
  Double model("llm", ipc("workers.sock"), cap,
               [&](std::shared_ptr<nv::Request> r) { model_handler(r, tool_calls, model_clock); });
  Double exec("exec", ipc("workers.sock"), cap,
              [&](std::shared_ptr<nv::Request> r) { exec_handler(r, exec_clock); });

  zmq::context_t client_ctx(1);
  // Wait until the three services are registered.
  {
    nv::Client cl(client_ctx, {ipc("clients.sock"), {}, {}, {}});
    auto end = Clock::now() + 10s;
    while (true) {
      capnp::MallocMessageBuilder mb;
      nv::bus::init_body<s::StatusRequest>(mb);
      int have = 0;
      if (auto r = cl.call("nv.status", &mb, 1000ms); r) {
        if (auto st = r->body.root<s::StatusReply>(); st) {
          for (auto svc : st->getServices()) {
            std::string n = svc.getService().cStr();
            have += (n == "task" || n == "llm" || n == "exec") ? 1 : 0;
          }
        }
      }
      if (have >= 3) break;
      if (Clock::now() > end) {
        std::fprintf(stderr, "nv-bench agent: the services did not register within 10 s\n");
        stop = true;
        agent_thread.join();
        broker_stop = true;
        broker_thread.join();
        return 1;
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  // 1. Baseline: one bus round trip to the instant model double, one at a time.
  std::vector<double> rt_us;
  {
    nv::Client cl(client_ctx, {ipc("clients.sock"), {}, {}, {}});
    for (int i = 0; i < rts + rts / 10; ++i) {
      capnp::MallocMessageBuilder mb;
      auto req = nv::bus::init_body<s::ChatRequest>(mb);
      req.setTraceId("baseline");
      auto msgs = req.initMessages(1);
      msgs[0].setRole(s::Role::USER);
      msgs[0].setContent("hi");
      auto t0 = Clock::now();
      auto r = cl.call("llm", &mb, 10s);
      double us = us_since(t0);
      if (!r) {
        std::fprintf(stderr, "nv-bench agent: baseline call failed: %s\n",
                     r.error().to_string().c_str());
        break;
      }
      if (i >= rts / 10) rt_us.push_back(us);
    }
    model_clock.take("baseline");
  }

  // 2. Tasks through the agent loop.
  std::mutex mu;
  std::vector<Sample> samples;
  std::atomic<int> next{0}, failures{0};
  int total = warmup + tasks;
  auto worker = [&] {
    nv::Client cl(client_ctx, {ipc("clients.sock"), {}, {}, {}});
    while (true) {
      int i = next++;
      if (i >= total) return;
      capnp::MallocMessageBuilder mb;
      auto t = nv::bus::init_body<s::SubmitTask>(mb);
      t.setPrompt("What is 6*7? (bench task " + std::to_string(i) + ")");
      auto t0 = Clock::now();
      auto r = cl.call("task", &mb, 60s);
      double wall = us_since(t0);
      if (!r) {
        ++failures;
        continue;
      }
      auto res = r->body.root<s::TaskResult>();
      if (!res || res->getStatus() != s::TaskStatus::COMPLETED) {
        ++failures;
        continue;
      }
      std::string trace = res->getTraceId().cStr();
      Sample smp{wall, model_clock.take(trace), exec_clock.take(trace), res->getIterations()};
      if (i < warmup) continue;
      std::lock_guard lock(mu);
      samples.push_back(smp);
    }
  };
  auto run_start = Clock::now();
  std::vector<std::thread> clients;
  for (int i = 0; i < conc; ++i) clients.emplace_back(worker);
  for (auto& t : clients) t.join();
  double run_s = us_since(run_start) / 1e6;

  stop = true;
  agent_thread.join();
  broker_stop = true;
  broker_thread.join();
  std::error_code ec;
  fs::remove_all(dir, ec);

  if (samples.empty()) {
    std::fprintf(stderr, "nv-bench agent: no task completed (%d failures)\n", failures.load());
    return 1;
  }
  std::vector<double> per_iter_wall, per_iter_model, per_iter_exec, overhead;
  for (auto& smp : samples) {
    double n = std::max<uint32_t>(1, smp.iterations);
    per_iter_wall.push_back(smp.wall_us / n);
    per_iter_model.push_back(smp.model_us / n);
    per_iter_exec.push_back(smp.exec_us / n);
    overhead.push_back((smp.wall_us - smp.model_us - smp.exec_us) / n);
  }
  double rt50 = percentile(rt_us, 0.5), rt95 = percentile(rt_us, 0.95);
  double o50 = percentile(overhead, 0.5), o95 = percentile(overhead, 0.95);
  std::printf(
      "nv-bench agent: %zu tasks × %u LLM calls (%u tool calls), %d in flight, "
      "%d failed; %.1f tasks/s\n",
      samples.size(), tool_calls + 1, tool_calls, conc, failures.load(),
      static_cast<double>(samples.size() + static_cast<size_t>(warmup)) / run_s);
  std::printf("  %-44s %10s %10s\n", "per iteration (µs)", "p50", "p95");
  std::printf("  %-44s %10.1f %10.1f\n", "bus round trip, client→broker→worker (baseline)", rt50,
              rt95);
  std::printf("  %-44s %10.1f %10.1f\n", "task wall time / LLM calls",
              percentile(per_iter_wall, .5), percentile(per_iter_wall, .95));
  std::printf("  %-44s %10.1f %10.1f\n", "  in the model double's handler",
              percentile(per_iter_model, .5), percentile(per_iter_model, .95));
  std::printf("  %-44s %10.1f %10.1f\n", "  in the exec double's handler",
              percentile(per_iter_exec, .5), percentile(per_iter_exec, .95));
  std::printf("  %-44s %10.1f %10.1f\n", "orchestration overhead", o50, o95);
  std::printf(
      "  overhead / bus round trip: p50 %.1fx (an iteration makes ~2 round trips: model, "
      "exec)\n",
      rt50 > 0 ? o50 / rt50 : 0.0);
  return failures.load() == 0 ? 0 : 1;
}
