// agent_harness.h — the stack the agent tests run (agent_test, agent_sandbox_test), with real
// processes and sockets:
//
//   nv-submit / nv::Client ──▶ nv-orchestrator (broker + agent loop, child process)
//                                  ├──▶ nv-llm-gateway (child) ──HTTP──▶ fake_llm.py (child)
//                                  ├──▶ FakeSandboxExec (service "exec": a test double of
//                                  │    nv-sandbox-executor that runs nothing; it answers
//                                  │    from a table of known programs)
//                                  └──▶ FakeSandboxService (services "sandbox" and
//                                       "sandbox.fake": sandboxes that live, in memory;
//                                       fake_sandbox.h)
// Every test gets a fresh runtime dir and its own stack.
#pragma once
#include <gtest/gtest.h>
#include <strings.h>
#include <unistd.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/llm.capnp.h>
#include <nv/schema/task.capnp.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "agent.h"
#include "common/client.h"
#include "common/events.h"
#include "common/frames.h"
#include "common/trace_id.h"
#include "common/worker.h"
#include "fake_sandbox.h"
#include "support/process.h"

namespace nv::agent_harness {

namespace s = nv::schema;
using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::TempDir;

using nv::test::source_dir;

inline std::string nonce_hex() {
  std::random_device rd;
  std::mt19937_64 g(rd());
  char buf[16];
  std::snprintf(buf, sizeof buf, "%012llx",
                static_cast<unsigned long long>(g() & 0xffffffffffffULL) | 0x100000000000ULL);
  return buf;
}

// The value the "model" asks to compute for a nonce: int(nonce, 16) * 7.
inline std::string times7(const std::string& hex) {
  return std::to_string(std::stoull(hex, nullptr, 16) * 7);
}

inline std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
inline std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

// ============================================================ the sandbox executor test double

// Registers as service "exec" like nv-sandbox-executor, but runs nothing: each program it is
// sent is matched against a table of known programs and answered with the output a real run
// would print. Unknown programs get exit code 127. It streams the same shape as the real
// executor: a `status` chunk first, then stdout, then the ExecResult.
class FakeSandboxExec {
 public:
  struct Answer {
    std::string out;
    int exit = 0;
    bool timed_out = false;
    std::optional<nv::Error> error = std::nullopt;  // answer with a bus Error instead
  };
  using Rule = std::pair<std::regex, std::function<Answer(const std::smatch&)>>;
  struct Seen {
    std::string code, header_trace, body_trace;
    s::Language language;
    uint32_t timeout_ms;
  };

  FakeSandboxExec(const std::string& workers_endpoint, uint32_t capacity,
                  std::chrono::milliseconds delay)
      : delay_(delay) {
    auto prints = [](std::string out) { return Answer{std::move(out), 0, false, {}}; };
    rules_.push_back({std::regex(R"(print\(int\('([0-9a-f]+)', 16\) \* 7\))"),
                      [=](const std::smatch& m) { return prints(times7(m[1]) + "\n"); }});
    rules_.push_back({std::regex(R"(^print\(2\+2\)$)"), [=](auto&) { return prints("4\n"); }});
    // A fresh VM never has a file an earlier call wrote.
    rules_.push_back({std::regex(R"(^echo .* > \S+\n?$)"), [=](auto&) { return prints(""); }});
    rules_.push_back(
        {std::regex(R"(^cat (\S+)\n?$)"), [](const std::smatch& m) {
           return Answer{"cat: " + m[1].str() + ": No such file or directory\n", 1, false, {}};
         }});
    rules_.push_back({std::regex(R"(^echo (\S+)$)"),
                      [=](const std::smatch& m) { return prints(m[1].str() + "\n"); }});
    // Arithmetic the reply tests ask for, computed here (a real run is in agent_e2e_test):
    // print(A**B), console.log(A**B), print(math.factorial(N)) after "import math".
    auto power = [=](const std::smatch& m) {
      unsigned long long v = 1;
      for (int i = 0; i < std::stoi(m[2]); ++i) v *= std::stoull(m[1]);
      return prints(std::to_string(v) + "\n");
    };
    rules_.push_back({std::regex(R"(^print\((\d+)\*\*(\d+)\)\n?$)"), power});
    rules_.push_back({std::regex(R"(^console\.log\((\d+)\*\*(\d+)\)\n?$)"), power});
    rules_.push_back({std::regex(R"(^import math\nprint\(math\.factorial\((\d+)\)\)\n?$)"),
                      [=](const std::smatch& m) {
                        unsigned long long v = 1;
                        for (int i = 2; i <= std::stoi(m[1]); ++i) v *= static_cast<unsigned>(i);
                        return prints(std::to_string(v) + "\n");
                      }});
    rules_.push_back(
        {std::regex(R"(^print\('again'\)$)"), [=](auto&) { return prints("again\n"); }});
    rules_.push_back({std::regex(R"(time\.sleep\(999\))"), [](auto&) {
                        Answer a;
                        a.exit = -1;
                        a.timed_out = true;
                        return a;
                      }});
    rules_.push_back({std::regex(R"(^crash the vm$)"), [](auto&) {
                        Answer a;
                        a.error = nv::make_error(nv::ErrorCode::VM_FAILED,
                                                 "fake sandbox: the VM died (vmm exited)");
                        return a;
                      }});
    nv::WorkerOptions o;
    o.service = "exec";
    o.broker_endpoint = workers_endpoint;
    o.capacity = capacity;
    o.heartbeat = 200ms;
    thread_ = std::thread([this, o] {
      nv::Worker w(ctx_, o, [this](std::shared_ptr<nv::Request> r) { handle(r); });
      w.run(stop_);
    });
  }
  ~FakeSandboxExec() {
    stop_ = true;
    thread_.join();
  }

  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  int max_concurrent() const { return max_active_.load(); }

 private:
  void handle(const std::shared_ptr<nv::Request>& r) {
    auto req = r->read<s::ExecRequest>();
    if (!req) return r->fail(req.error());
    std::string code = str(req->getCode());
    int now = ++active_;
    for (int m = max_active_.load(); now > m && !max_active_.compare_exchange_weak(m, now);) {}
    int n;
    {
      std::lock_guard lock(mu_);
      seen_.push_back({code, r->header().trace_id, str(req->getTraceId()), req->getLanguage(),
                       req->getTimeoutMs()});
      n = static_cast<int>(seen_.size());
    }
    auto chunk = [&](s::Stream stream, const std::string& data, uint32_t seq) {
      capnp::MallocMessageBuilder mb;
      auto c = nv::bus::init_body<s::ExecChunk>(mb);
      c.setStream(stream);
      c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
      c.setSeq(seq);
      r->partial(mb);
    };
    chunk(s::Stream::STATUS, "started vm=fake-" + std::to_string(n), 0);
    std::this_thread::sleep_for(delay_);
    Answer a{"", 127, false, {}};
    std::smatch m;
    bool known = false;
    for (auto& [re, fn] : rules_) {
      if (std::regex_search(code, m, re)) {
        a = fn(m);
        known = true;
        break;
      }
    }
    std::string err = known ? "" : "fake sandbox: no table entry for this program\n";
    --active_;
    if (a.error) return r->fail(*a.error);
    if (!a.out.empty()) chunk(s::Stream::STDOUT, a.out, 1);
    capnp::MallocMessageBuilder mb;
    auto res = nv::bus::init_body<s::ExecResult>(mb);
    res.setTraceId(req->getTraceId());
    res.setExitCode(a.exit);
    res.setDurationMs(12.5);
    res.setWallMs(static_cast<double>(delay_.count()) + 1);
    res.setTimedOut(a.timed_out);
    res.setStdout(kj::arrayPtr(reinterpret_cast<const kj::byte*>(a.out.data()), a.out.size()));
    res.setStderr(kj::arrayPtr(reinterpret_cast<const kj::byte*>(err.data()), err.size()));
    res.setStdoutBytes(a.out.size());
    res.setVmId("fake-" + std::to_string(n));
    r->reply(mb);
  }

  zmq::context_t ctx_{1};
  std::chrono::milliseconds delay_;
  std::vector<Rule> rules_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::atomic<int> active_{0}, max_active_{0};
};

// ========================================================================== the stack under test

using nv::test::service_process;

inline zmq::context_t& test_zmq() {
  static zmq::context_t ctx(1);
  return ctx;
}

struct StackOptions {
  std::string script_json{};  // the fake model's script (or script_file)
  std::string script_file{};
  std::string api = "ollama";
  std::vector<std::string> gateway_args{};  // extra nv-llm-gateway flags
  std::vector<std::string> orchestrator_args{};
  bool start_fake = true;           // false: the gateway points at a closed port
  bool url_in_ollama_host = false;  // give the gateway OLLAMA_HOST=127.0.0.1:PORT
  bool start_exec = true;
  uint32_t exec_capacity = 4;
  std::chrono::milliseconds exec_delay{20};
  bool start_sandbox = false;     // also FakeSandboxService ("sandbox", "sandbox.fake")
  bool fresh_vm_per_call = true;  // the orchestrator gets --fresh-vm-per-call
};

class Stack {
 public:
  explicit Stack(StackOptions o) : o_(std::move(o)) {
    std::string url;
    if (o_.start_fake) {
      std::vector<std::string> args = {source_dir() + "/tests/fixtures/fake_llm.py",
                                       "--port-file",
                                       rt_.file("llm.port"),
                                       "--record",
                                       rt_.file("requests.jsonl"),
                                       "--quiet"};
      if (!o_.script_file.empty()) {
        args.insert(args.end(), {"--script", o_.script_file});
      } else {
        args.insert(args.end(), {"--script-json", o_.script_json});
      }
      fake_.emplace(Process::start(service_process("/usr/bin/python3", args)));
      if (!nv::test::wait_until([&] { return rt_.has("llm.port"); }, 20s)) {
        throw std::runtime_error("fake_llm.py did not start: " + fake_->stderr_text());
      }
      std::ifstream in(rt_.file("llm.port"));
      int port = 0;
      in >> port;
      url = "http://127.0.0.1:" + std::to_string(port);
    } else {
      url = "http://127.0.0.1:" + std::to_string(nv::test::free_loopback_port());
    }
    std::map<std::string, std::string> env = {{"NV_RUNTIME_DIR", rt_.path()},
                                              {"NV_HEARTBEAT_MS", "250"}};
    std::vector<std::string> oargs = o_.orchestrator_args;
    if (o_.fresh_vm_per_call) oargs.insert(oargs.begin(), "--fresh-vm-per-call");
    orch_.emplace(Process::start(service_process(nv::test::bin("nv-orchestrator"), oargs, env)));
    if (!nv::test::wait_until([&] { return rt_.has("clients.sock"); }, 20s)) {
      throw std::runtime_error("nv-orchestrator did not start: " + orch_->stderr_text());
    }
    std::vector<std::string> gargs = {"--llm-api",  o_.api,          "--model",
                                      "fake-model", "--llm-timeout", "10"};
    gargs.insert(gargs.end(), o_.gateway_args.begin(), o_.gateway_args.end());
    auto gopts = service_process(nv::test::bin("nv-llm-gateway"), gargs, env);
    if (o_.url_in_ollama_host) {
      gopts.unset_env.clear();
      gopts.env["OLLAMA_HOST"] = url.substr(std::string("http://").size());  // host:port
    } else {
      gopts.args.insert(gopts.args.end(), {"--llm-url", url});
    }
    gw_.emplace(Process::start(gopts));
    if (o_.start_exec) {
      exec_ = std::make_unique<FakeSandboxExec>(workers(), o_.exec_capacity, o_.exec_delay);
    }
    if (o_.start_sandbox) sandbox_ = std::make_unique<FakeSandboxService>(workers());
    std::set<std::string> want = {"task", "llm"};
    if (o_.start_exec) want.insert("exec");
    if (o_.start_sandbox) want.insert({"sandbox", "sandbox.fake"});
    if (!nv::test::wait_until([&] { return services_present(want); }, 20s, 100ms)) {
      throw std::runtime_error("the stack did not come up:\norchestrator: " + orch_->stderr_text() +
                               "\ngateway: " + gw_->stderr_text());
    }
  }
  ~Stack() {
    exec_.reset();
    sandbox_.reset();
    if (gw_) gw_->terminate(5s);
    if (orch_) orch_->terminate(5s);
  }

  const TempDir& rt() const { return rt_; }
  std::string clients() const { return nv::bus::ipc_endpoint(rt_.file("clients.sock")); }
  std::string events() const { return nv::bus::ipc_endpoint(rt_.file("events.sock")); }
  std::string workers() const { return nv::bus::ipc_endpoint(rt_.file("workers.sock")); }
  FakeSandboxExec& exec() { return *exec_; }
  FakeSandboxService& sandbox() { return *sandbox_; }
  Process& orchestrator() { return *orch_; }
  Process& gateway() { return *gw_; }
  std::string logs() {
    return "orchestrator:\n" + orch_->stderr_text() + "\ngateway:\n" + gw_->stderr_text();
  }

  bool services_present(const std::set<std::string>& want) {
    nv::Client c(test_zmq(), {clients(), {}, {}, {}});
    capnp::MallocMessageBuilder mb;
    nv::bus::init_body<s::StatusRequest>(mb);
    auto r = c.call("nv.status", &mb, 1000ms);
    if (!r) return false;
    auto st = r->body.root<s::StatusReply>();
    if (!st) return false;
    std::set<std::string> have;
    for (auto svc : st->getServices()) have.insert(str(svc.getService()));
    for (auto& w : want) {
      if (!have.count(w)) return false;
    }
    return true;
  }

  // The chat requests the fake model received (parsed JSON lines), oldest first.
  std::vector<std::shared_ptr<rapidjson::Document>> chat_requests(
      const std::string& containing = {}) {
    std::vector<std::shared_ptr<rapidjson::Document>> out;
    std::ifstream in(rt_.file("requests.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      if (!containing.empty() && line.find(containing) == std::string::npos) continue;
      auto d = std::make_shared<rapidjson::Document>();
      d->Parse(line.c_str());
      if (d->HasParseError() || !d->IsObject() || !(*d)["path"].IsString()) continue;
      std::string path = (*d)["path"].GetString();
      if (path != "/api/chat" && path != "/v1/chat/completions") continue;
      out.push_back(d);
    }
    return out;
  }

  // The connections the gateway closed while the fake model stalled or paced an answer
  // (fake_llm.py's hang-up records), oldest first.
  std::vector<std::shared_ptr<rapidjson::Document>> hangups() {
    std::vector<std::shared_ptr<rapidjson::Document>> out;
    std::ifstream in(rt_.file("requests.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      auto d = std::make_shared<rapidjson::Document>();
      d->Parse(line.c_str());
      if (d->HasParseError() || !d->IsObject() || !d->HasMember("path") ||
          !(*d)["path"].IsString() || std::string((*d)["path"].GetString()) != "/_hangup") {
        continue;
      }
      out.push_back(d);
    }
    return out;
  }

 private:
  StackOptions o_;
  TempDir rt_{"nv-agent-test"};
  std::optional<Process> fake_, orch_, gw_;
  std::unique_ptr<FakeSandboxExec> exec_;
  std::unique_ptr<FakeSandboxService> sandbox_;
};

// What one task produced, as seen by its client.
struct Outcome {
  std::optional<nv::Error> bus_error;  // the task service answered with an Error
  s::TaskStatus status = s::TaskStatus::UNSET;
  std::string answer, error, error_code, trace;
  uint32_t iterations = 0, tool_calls = 0;
  double total_ms = 0, llm_ms = 0, exec_ms = 0, load_ms = 0;
  uint64_t completion_tokens = 0;
  double first_token_ms = 0;
  std::string streamed_text, streamed_thinking;  // modelDelta / thinkingDelta pieces joined
  size_t text_deltas = 0;
  std::vector<std::string> notices;
  std::vector<std::string> kinds;  // progress kinds in order
  std::vector<std::string> stdout_chunks, tool_errors, codes;
  std::vector<std::string> tools, paths, tool_results;  // per toolCall / toolResult
  std::vector<bool> timed_out;                          // per execResult
  std::set<std::string> progress_traces;
  std::string describe() const {
    std::string k;
    for (auto& x : kinds) k += x + " ";
    return "status=" + nv::agent::status_name(status) + " error=" + error_code + ": " + error +
           " answer=" + answer + " progress=" + k +
           (bus_error ? " bus_error=" + bus_error->to_string() : "");
  }
};

inline Outcome submit(const std::string& endpoint, const std::string& prompt,
                      uint32_t max_iterations = 0, uint32_t timeout_ms = 0,
                      const std::string& model = {},
                      const std::vector<nv::sandbox::Mount>& mounts = {}) {
  nv::Client c(test_zmq(), {endpoint, {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  auto t = nv::bus::init_body<s::SubmitTask>(mb);
  t.setPrompt(prompt);
  nv::sandbox::mounts_to_capnp(mounts, t.initMounts(static_cast<unsigned>(mounts.size())));
  t.setMaxIterations(max_iterations);
  t.setTimeoutMs(timeout_ms);
  t.setModel(model);
  Outcome o;
  auto r = c.call("task", &mb, 120s, [&](nv::Client::Incoming& in) {
    auto p = in.body.root<s::TaskProgress>();
    ASSERT_TRUE(p) << p.error().message;
    o.progress_traces.insert(str(p->getTraceId()));
    switch (p->which()) {
      case s::TaskProgress::THINKING:
        o.kinds.push_back("thinking");
        break;
      case s::TaskProgress::MODEL_TEXT:
        o.kinds.push_back("modelText");
        break;
      case s::TaskProgress::TOOL_CALL:
        o.kinds.push_back("toolCall");
        o.codes.push_back(str(p->getToolCall().getCode()));
        o.tools.push_back(str(p->getToolCall().getTool()));
        o.paths.push_back(str(p->getToolCall().getPath()));
        break;
      case s::TaskProgress::TOOL_RESULT:
        o.kinds.push_back("toolResult");
        o.tool_results.push_back(str(p->getToolResult()));
        break;
      case s::TaskProgress::OUTPUT:
        o.kinds.push_back(p->getOutput().getStream() == s::Stream::STATUS ? "status" : "output");
        if (p->getOutput().getStream() == s::Stream::STDOUT) {
          o.stdout_chunks.push_back(str(p->getOutput().getData()));
        }
        break;
      case s::TaskProgress::EXEC_RESULT:
        o.kinds.push_back("execResult");
        o.timed_out.push_back(p->getExecResult().getTimedOut());
        break;
      case s::TaskProgress::TOOL_ERROR:
        o.kinds.push_back("toolError");
        o.tool_errors.push_back(str(p->getToolError().getMessage()));
        break;
      case s::TaskProgress::MODEL_DELTA:
        if (o.kinds.empty() || o.kinds.back() != "modelDelta") o.kinds.push_back("modelDelta");
        o.streamed_text += str(p->getModelDelta());
        ++o.text_deltas;
        break;
      case s::TaskProgress::THINKING_DELTA:
        if (o.kinds.empty() || o.kinds.back() != "thinkingDelta") {
          o.kinds.push_back("thinkingDelta");
        }
        o.streamed_thinking += str(p->getThinkingDelta());
        break;
      case s::TaskProgress::NOTICE:
        o.kinds.push_back("notice");
        o.notices.push_back(str(p->getNotice()));
        break;
    }
  });
  if (!r) {
    o.bus_error = r.error();
    return o;
  }
  auto res = r->body.root<s::TaskResult>();
  EXPECT_TRUE(res) << res.error().message;
  if (!res) return o;
  o.status = res->getStatus();
  o.answer = str(res->getAnswer());
  if (res->hasError()) {
    o.error = str(res->getError().getMessage());
    o.error_code = nv::code_name(res->getError().getCode());
  }
  o.trace = str(res->getTraceId());
  o.iterations = res->getIterations();
  o.tool_calls = res->getToolCalls();
  o.total_ms = res->getTotalMs();
  o.llm_ms = res->getLlmMs();
  o.exec_ms = res->getExecMs();
  o.load_ms = res->getModelLoadMs();
  o.completion_tokens = res->getCompletionTokens();
  o.first_token_ms = res->getFirstTokenMs();
  return o;
}

inline nv::test::RunResult run_submit(const std::string& runtime_dir,
                                      std::vector<std::string> args) {
  return nv::test::run(service_process(nv::test::bin("nv-submit"), std::move(args),
                                       {{"NV_RUNTIME_DIR", runtime_dir}}),
                       120s);
}

// The content of the messages of `role` in a recorded chat request.
inline std::vector<std::string> contents(const rapidjson::Document& d, const std::string& role) {
  std::vector<std::string> out;
  const auto& msgs = d["body"]["messages"];
  for (const auto& m : msgs.GetArray()) {
    if (m["role"].IsString() && role == m["role"].GetString() && m.HasMember("content") &&
        m["content"].IsString()) {
      out.push_back(m["content"].GetString());
    }
  }
  return out;
}

inline std::string header(const rapidjson::Document& d, const std::string& name) {
  for (const auto& h : d["headers"].GetObject()) {
    if (strcasecmp(h.name.GetString(), name.c_str()) == 0) return h.value.GetString();
  }
  return {};
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);  // run by hand: this build's binaries
    for (auto b : {"nv-orchestrator", "nv-llm-gateway", "nv-submit"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        const char* dir = getenv("NV_BIN_DIR");
        GTEST_SKIP() << b << " is not built (NV_BIN_DIR=" << (dir ? dir : "") << ")";
      }
    }
  }
};

}  // namespace nv::agent_harness
