// bus_kill_test.cc — issue 11 findings 2 and 5 with real processes: SIGKILL the orchestrator
// while nv-exec and nv-submit wait, SIGKILL the llm-gateway during a (scripted, slow) model
// call, SIGKILL a client whose task runs, and SIGSTOP the orchestrator for 3 s mid-request.
//
//   nv-exec / nv-submit / nv::Client ──▶ nv-orchestrator (child; broker + agent loop)
//                                          ├──▶ "exec", "llm": workers in this test that hold
//                                          │    their requests until cancelled
//                                          └──▶ nv-llm-gateway (child) ──▶ fake_llm.py (child)
// Heartbeats are 250 ms (NV_HEARTBEAT_MS), so a silent peer is presumed gone after 750 ms.
#include <gtest/gtest.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/llm.capnp.h>
#include <nv/schema/task.capnp.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <thread>

#include "common/client.h"
#include "common/worker.h"
#include "support/process.h"

namespace {

namespace s = nv::schema;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nv::test::Process;
using nv::test::TempDir;

zmq::context_t& test_zmq() {
  static zmq::context_t ctx(1);
  return ctx;
}

// A worker that holds each request until it is cancelled (or 60 s pass), counting both.
class HoldingWorker {
 public:
  HoldingWorker(const std::string& endpoint, const std::string& service) {
    nv::WorkerOptions o;
    o.service = service;
    o.broker_endpoint = endpoint;
    o.capacity = 4;
    o.heartbeat = 250ms;
    thread_ = std::thread([this, o] {
      nv::Worker w(ctx_, o, [this](std::shared_ptr<nv::Request> r) {
        ++started;
        auto end = Clock::now() + 60s;
        while (!r->cancelled() && !stop_ && Clock::now() < end) {
          std::this_thread::sleep_for(10ms);
        }
        if (r->cancelled()) ++cancelled;
        r->fail(nv::make_error(nv::ErrorCode::CANCELLED, "held request ended"));
      });
      w.run(stop_);
    });
  }
  ~HoldingWorker() {
    stop_ = true;
    thread_.join();
  }
  std::atomic<int> started{0}, cancelled{0};

 private:
  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class BusKill : public ::testing::Test {
 protected:
  void start_orchestrator() {
    orch_.emplace(
        Process::start(nv::test::service_process(nv::test::bin("nv-orchestrator"), {}, env())));
    ASSERT_TRUE(nv::test::wait_until([&] { return rt_.has("clients.sock"); }, 20s))
        << orch_->stderr_text();
  }
  std::map<std::string, std::string> env() const {
    return {{"NV_RUNTIME_DIR", rt_.path()}, {"NV_HEARTBEAT_MS", "250"}};
  }
  std::string clients() const { return nv::bus::ipc_endpoint(rt_.file("clients.sock")); }
  std::string workers() const { return nv::bus::ipc_endpoint(rt_.file("workers.sock")); }
  bool has_services(const std::set<std::string>& want) {
    nv::Client c(test_zmq(), {clients(), {}, {}, {}});
    auto r = c.call("nv.status", nullptr, 1000ms);
    if (!r) return false;
    auto st = r->body.root<s::StatusReply>();
    if (!st) return false;
    std::set<std::string> have;
    for (auto svc : st->getServices()) have.insert(svc.getService());
    for (auto& w : want) {
      if (!have.count(w)) return false;
    }
    return true;
  }
  // A child client that waits on the stack (nv-exec, nv-submit), with what it printed.
  Process start_tool(const std::string& name, std::vector<std::string> args) {
    return Process::start(nv::test::service_process(nv::test::bin(name), std::move(args), env()));
  }

  TempDir rt_{"nv-buskill"};
  std::optional<Process> orch_;
};

// Finding 2: SIGKILL the orchestrator while nv-exec and nv-submit wait on it: both return
// within 10 s with a typed error (brokerLost) and exit 3 (unreachable), not after 92 s / never.
TEST_F(BusKill, OrchestratorKilledMidRequestClientsReturnWithBrokerLost) {
  start_orchestrator();
  HoldingWorker exec(workers(), "exec");
  HoldingWorker llm(workers(), "llm");
  ASSERT_TRUE(nv::test::wait_until([&] { return has_services({"exec", "llm", "task"}); }, 20s));
  auto nv_exec = start_tool("nv-exec", {"python", "-c", "print(1)", "--timeout", "100"});
  auto nv_submit = start_tool("nv-submit", {"--timeout", "300", "hold on"});
  ASSERT_TRUE(nv::test::wait_until([&] { return exec.started >= 1 && llm.started >= 1; }, 20s))
      << nv_exec.stderr_text() << nv_submit.stderr_text() << orch_->stderr_text();
  auto t0 = Clock::now();
  orch_->signal(SIGKILL);
  auto e = nv_exec.wait(15s);
  auto took_exec = Clock::now() - t0;
  auto sub = nv_submit.wait(15s);
  auto took_submit = Clock::now() - t0;
  ASSERT_TRUE(e) << "nv-exec still waits 15 s after the kill";
  ASSERT_TRUE(sub) << "nv-submit still waits 15 s after the kill";
  EXPECT_LT(took_exec, 10s);
  EXPECT_LT(took_submit, 10s);
  EXPECT_EQ(e->code, 3) << e->describe() << nv_exec.stderr_text();
  EXPECT_EQ(sub->code, 3) << sub->describe() << nv_submit.stderr_text();
  EXPECT_NE(nv_exec.stderr_text().find("brokerLost"), std::string::npos) << nv_exec.stderr_text();
  EXPECT_NE(nv_submit.stderr_text().find("brokerLost"), std::string::npos)
      << nv_submit.stderr_text();
}

// Finding 2: a task never outlives its client. SIGKILL nv-submit while its task waits for the
// model: the broker sees the client's connection close and cancels the task, which cancels
// its model call (the llm worker's request is cancelled within seconds).
TEST_F(BusKill, ClientKilledCancelsItsTaskAndTheModelCall) {
  start_orchestrator();
  HoldingWorker llm(workers(), "llm");
  ASSERT_TRUE(nv::test::wait_until([&] { return has_services({"llm", "task"}); }, 20s));
  auto nv_submit = start_tool("nv-submit", {"--timeout", "300", "hold on"});
  ASSERT_TRUE(nv::test::wait_until([&] { return llm.started >= 1; }, 20s))
      << nv_submit.stderr_text();
  auto t0 = Clock::now();
  nv_submit.signal(SIGKILL);
  ASSERT_TRUE(nv::test::wait_until([&] { return llm.cancelled >= 1; }, 10s, 20ms))
      << "the model call outlived its client\n"
      << orch_->stderr_text();
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_TRUE(orch_->running());
}

// Finding 2: SIGKILL the llm-gateway during a model call (fake_llm.py stalls 60 s): with no
// other llm worker the task fails fast with a typed error (workerLost), within 10 s.
TEST_F(BusKill, GatewayKilledDuringModelCallFailsTheTaskFast) {
  start_orchestrator();
  auto fake = Process::start(nv::test::service_process(
      "/usr/bin/python3", {nv::test::source_dir() + "/tests/fixtures/fake_llm.py", "--port-file",
                           rt_.file("llm.port"), "--record", rt_.file("requests.jsonl"), "--quiet",
                           "--script-json", R"js({"turns": [{"stall": 60, "say": "late"}]})js"}));
  ASSERT_TRUE(nv::test::wait_until([&] { return rt_.has("llm.port"); }, 20s));
  int port = 0;
  std::ifstream(rt_.file("llm.port")) >> port;
  auto gw = Process::start(
      nv::test::service_process(nv::test::bin("nv-llm-gateway"),
                                {"--llm-api", "ollama", "--model", "fake-model", "--llm-timeout",
                                 "120", "--llm-url", "http://127.0.0.1:" + std::to_string(port)},
                                env()));
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        return has_services({"llm", "task"});
      },
      20s))
      << gw.stderr_text();
  nv::Client c(test_zmq(), {clients(), {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  auto sub = nv::bus::init_body<s::SubmitTask>(mb);
  sub.setPrompt("take your time");
  sub.setTimeoutMs(300000);
  uint64_t id = c.send("task", &mb, 330s);
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        std::ifstream in(rt_.file("requests.jsonl"));
        std::string all((std::istreambuf_iterator<char>(in)), {});
        return all.find("/api/chat") != std::string::npos;
      },
      20s))
      << gw.stderr_text();
  auto t0 = Clock::now();
  gw.signal(SIGKILL);
  std::optional<nv::Client::Incoming> final;
  while (!final && Clock::now() - t0 < 15s) {
    auto in = c.receive(200ms);
    if (in && in->header.request_id == id && in->final()) final = std::move(in);
  }
  ASSERT_TRUE(final) << "the task still hangs 15 s after the gateway died\n"
                     << orch_->stderr_text();
  EXPECT_LT(Clock::now() - t0, 10s);
  std::string code;
  if (final->header.kind == nv::bus::Kind::ERROR) {
    code = nv::code_name(final->error().code);
  } else {
    auto r = final->body.root<s::TaskResult>();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->getStatus(), s::TaskStatus::FAILED);
    code = nv::code_name(nv::Error::from_capnp(r->getError()).code);
  }
  EXPECT_EQ(code, "workerLost");
}

// Finding 5: SIGSTOP the orchestrator for 3 s (four liveness windows) while a started request
// (it sent a partial, so it cannot be retried) runs on a worker, then SIGCONT: the worker is
// neither dropped nor cancelled, and the request's answer reaches the client.
TEST_F(BusKill, OrchestratorStallOfThreeSecondsLosesNothing) {
  start_orchestrator();
  std::atomic<bool> release{false};
  std::atomic<int> cancelled{0};
  zmq::context_t wctx(1);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    nv::WorkerOptions o;
    o.service = "steady";
    o.broker_endpoint = workers();
    o.capacity = 2;
    o.heartbeat = 250ms;
    nv::Worker w(wctx, o, [&](std::shared_ptr<nv::Request> r) {
      // A partial first: the request has started, so the broker may not retry it elsewhere.
      capnp::MallocMessageBuilder progress;
      nv::bus::init_body<s::StatusRequest>(progress);
      r->partial(progress);
      while (!release && !r->cancelled()) std::this_thread::sleep_for(10ms);
      if (r->cancelled()) {
        ++cancelled;
        return r->fail(nv::make_error(nv::ErrorCode::CANCELLED, "cancelled"));
      }
      capnp::MallocMessageBuilder mb;
      nv::bus::init_body<s::StatusRequest>(mb);
      r->reply(mb);
    });
    w.run(stop);
  });
  ASSERT_TRUE(nv::test::wait_until([&] { return has_services({"steady"}); }, 20s));
  nv::Client c(test_zmq(), {clients(), {}, {}, {}});
  uint64_t id = c.send("steady", nullptr, 30s);
  (void)c.receive(300ms);  // the request reaches the worker
  orch_->signal(SIGSTOP);
  std::this_thread::sleep_for(3s);
  orch_->signal(SIGCONT);
  std::this_thread::sleep_for(1s);  // the broker wakes and hears everyone
  release = true;
  std::optional<nv::Client::Incoming> final;
  auto t0 = Clock::now();
  while (!final && Clock::now() - t0 < 10s) {
    auto in = c.receive(200ms);
    if (in && in->header.request_id == id && in->final()) final = std::move(in);
  }
  stop = true;
  worker.join();
  ASSERT_TRUE(final);
  EXPECT_EQ(final->header.kind, nv::bus::Kind::REPLY)
      << final->error().to_string() << orch_->stderr_text();
  EXPECT_EQ(cancelled.load(), 0);
}

}  // namespace
