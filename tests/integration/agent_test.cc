// agent_test.cc — the agent loop end to end on the host, with real processes and sockets:
//
//   nv-submit / nv::Client ──▶ nv-orchestrator (broker + agent loop, child process)
//                                  ├──▶ nv-llm-gateway (child) ──HTTP──▶ fake_llm.py (child)
//                                  └──▶ FakeSandboxExec (in this test: a test double of
//                                       nv-sandbox-executor that runs nothing; it answers
//                                       from a table of known programs)
//
// Every test gets a fresh runtime dir and its own stack. The scripted model asks for code whose
// output depends on a nonce in the task; the fixture records every request it receives, so the
// tests check that the model's next request really carried the (computed) output.
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
#include "support/process.h"

namespace {

namespace s = nv::schema;
using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::TempDir;

using nv::test::source_dir;

std::string nonce_hex() {
  std::random_device rd;
  std::mt19937_64 g(rd());
  char buf[16];
  std::snprintf(buf, sizeof buf, "%012llx",
                static_cast<unsigned long long>(g() & 0xffffffffffffULL) | 0x100000000000ULL);
  return buf;
}

// The value the "model" asks to compute for a nonce: int(nonce, 16) * 7.
std::string times7(const std::string& hex) {
  return std::to_string(std::stoull(hex, nullptr, 16) * 7);
}

std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
std::string str(capnp::Data::Reader d) {
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

zmq::context_t& test_zmq() {
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
    std::set<std::string> want = {"task", "llm"};
    if (o_.start_exec) want.insert("exec");
    if (!nv::test::wait_until([&] { return services_present(want); }, 20s, 100ms)) {
      throw std::runtime_error("the stack did not come up:\norchestrator: " + orch_->stderr_text() +
                               "\ngateway: " + gw_->stderr_text());
    }
  }
  ~Stack() {
    exec_.reset();
    if (gw_) gw_->terminate(5s);
    if (orch_) orch_->terminate(5s);
  }

  const TempDir& rt() const { return rt_; }
  std::string clients() const { return nv::bus::ipc_endpoint(rt_.file("clients.sock")); }
  std::string events() const { return nv::bus::ipc_endpoint(rt_.file("events.sock")); }
  std::string workers() const { return nv::bus::ipc_endpoint(rt_.file("workers.sock")); }
  FakeSandboxExec& exec() { return *exec_; }
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
  std::vector<bool> timed_out;  // per execResult
  std::set<std::string> progress_traces;
  std::string describe() const {
    std::string k;
    for (auto& x : kinds) k += x + " ";
    return "status=" + nv::agent::status_name(status) + " error=" + error_code + ": " + error +
           " answer=" + answer + " progress=" + k +
           (bus_error ? " bus_error=" + bus_error->to_string() : "");
  }
};

Outcome submit(const std::string& endpoint, const std::string& prompt, uint32_t max_iterations = 0,
               uint32_t timeout_ms = 0, const std::string& model = {}) {
  nv::Client c(test_zmq(), {endpoint, {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  auto t = nv::bus::init_body<s::SubmitTask>(mb);
  t.setPrompt(prompt);
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

nv::test::RunResult run_submit(const std::string& runtime_dir, std::vector<std::string> args) {
  return nv::test::run(service_process(nv::test::bin("nv-submit"), std::move(args),
                                       {{"NV_RUNTIME_DIR", runtime_dir}}),
                       120s);
}

const char* kNonceScript = R"js({
  "captures": {"nonce": "nonce ([0-9a-f]{12})"},
  "turns": [
    {"say": "Let me compute that.",
     "tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                     "code": "print(int('{{nonce}}', 16) * 7)"}}]},
    {"say": "The value is {{last_tool_output|strip}}."}
  ]})js";

// The content of the messages of `role` in a recorded chat request.
std::vector<std::string> contents(const rapidjson::Document& d, const std::string& role) {
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

std::string header(const rapidjson::Document& d, const std::string& name) {
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

// ================================================================================== the tests

// The main flow through nv-submit and Ollama's wire format: the model asks for code whose
// output depends on the nonce, the (test double) sandbox answers, the model's next request
// carries that output, and the answer with stats reaches the user.
TEST_F(AgentTest, OllamaNonceFlowThroughNvSubmit) {
  Stack stack({.script_json = kNonceScript});
  std::string nonce = nonce_hex();
  std::string want = times7(nonce);
  auto r = run_submit(stack.rt().path(), {"Multiply the nonce " + nonce + " by seven."});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err << stack.logs();
  std::printf("--- what nv-submit printed ---\n%s------------------------------\n", r.out.c_str());
  EXPECT_NE(r.out.find("▶ iteration 1: asking the model…"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("⚙ execute_code (python)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("│ print(int('" + nonce + "', 16) * 7)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("✓ exit 0 in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("▶ iteration 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("═ answer ═\nThe value is " + want + "."), std::string::npos) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m,
                                std::regex("iterations 2 · tool calls 1 · model load [0-9.]+ s · "
                                           "total [0-9.]+ s · trace ([0-9a-f-]{36})")))
      << r.out;
  std::string trace = m[1];
  EXPECT_TRUE(nv::is_uuid_v7(trace)) << trace;

  // The model's second request carried the real output as a tool message.
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  auto tools = contents(*reqs[1], "tool");
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0], want + "\n");
  // The trace id went out as an HTTP header and to the executor in the bus header and body.
  EXPECT_EQ(header(*reqs[0], "X-Trace-Id"), trace);
  EXPECT_EQ(header(*reqs[1], "X-Trace-Id"), trace);
  auto seen = stack.exec().seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header_trace, trace);
  EXPECT_EQ(seen[0].body_trace, trace);
  EXPECT_EQ(seen[0].language, s::Language::PYTHON);
  EXPECT_EQ(seen[0].timeout_ms, 30000u);
  // The tool was offered to the model with its schema.
  {
    const auto& tl = (*reqs[0])["body"]["tools"];
    ASSERT_TRUE(tl.IsArray());
    ASSERT_EQ(tl.Size(), 1u);
    EXPECT_STREQ(tl[0]["function"]["name"].GetString(), "execute_code");
  }
}

// The same through the OpenAI wire format, observed through the bus: the progress stream has
// the documented shape and the tool result answers the model's call id.
TEST_F(AgentTest, OpenAiNonceFlowThroughTheBus) {
  Stack stack({.script_json = kNonceScript, .api = "openai"});
  nv::EventSubscriber events(test_zmq(), stack.events(), {"task.", "llm.call"});
  std::this_thread::sleep_for(300ms);  // let the subscription reach the hub
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Multiply the nonce " + nonce + " by seven.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "The value is " + times7(nonce) + ".");
  EXPECT_EQ(o.iterations, 2u);
  EXPECT_EQ(o.tool_calls, 1u);
  // The model's text streams (modelDelta) before the whole text comes with the tool call.
  std::vector<std::string> want = {"thinking", "modelDelta", "modelText", "toolCall",  "status",
                                   "output",   "execResult", "thinking",  "modelDelta"};
  EXPECT_EQ(o.kinds, want);
  EXPECT_EQ(o.streamed_text, "Let me compute that.The value is " + times7(nonce) + ".");
  EXPECT_GT(o.first_token_ms, 0);
  ASSERT_EQ(o.stdout_chunks.size(), 1u);
  EXPECT_EQ(o.stdout_chunks[0], times7(nonce) + "\n");
  EXPECT_EQ(o.progress_traces, std::set<std::string>{o.trace});
  EXPECT_GT(o.llm_ms, 0);
  EXPECT_GT(o.exec_ms, 0);
  EXPECT_GE(o.total_ms, o.llm_ms + o.exec_ms);
  EXPECT_GT(o.completion_tokens, 0u);

  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  const auto& msgs = (*reqs[1])["body"]["messages"];
  std::string call_id, answered_id;
  for (const auto& m : msgs.GetArray()) {
    std::string role = m["role"].GetString();
    if (role == "assistant" && m.HasMember("tool_calls")) {
      call_id = m["tool_calls"][0]["id"].GetString();
    }
    if (role == "tool") {
      answered_id = m["tool_call_id"].GetString();
      EXPECT_EQ(std::string(m["content"].GetString()), times7(nonce) + "\n");
    }
  }
  EXPECT_FALSE(call_id.empty());
  EXPECT_EQ(call_id, answered_id);
  EXPECT_EQ(header(*reqs[1], "X-Trace-Id"), o.trace);

  // The events of this task: started, two iterations, two model calls, finished.
  std::vector<std::string> topics;
  int llm_ok = 0;
  std::string finished_status;
  auto end = std::chrono::steady_clock::now() + 5s;
  while (finished_status.empty() || llm_ok < 2) {
    if (std::chrono::steady_clock::now() > end) break;
    auto e = events.receive(200ms);
    if (!e || str(e->event.getTraceId()) != o.trace) continue;
    topics.push_back(e->topic);
    if (e->event.isLlmCall()) {
      auto c = e->event.getLlmCall();
      EXPECT_EQ(str(c.getApi()), "openai");
      EXPECT_EQ(str(c.getModel()), "fake-model");
      EXPECT_GT(c.getDurationMs(), 0);
      llm_ok += str(c.getOutcome()) == "ok" ? 1 : 0;
    }
    if (e->event.isTaskFinished()) {
      finished_status = str(e->event.getTaskFinished().getStatus());
      EXPECT_EQ(e->event.getTaskFinished().getIterations(), 2u);
      EXPECT_EQ(e->event.getTaskFinished().getToolCalls(), 1u);
    }
  }
  EXPECT_EQ(llm_ok, 2);
  EXPECT_EQ(finished_status, "completed");
  EXPECT_EQ(std::count(topics.begin(), topics.end(), "task.started"), 1);
  EXPECT_EQ(std::count(topics.begin(), topics.end(), "task.iteration"), 2);
}

// The gateway on its own: invalid requests get typed errors, streaming requests get ChatDelta
// partials that add up to the reply, and it keeps serving after each.
TEST_F(AgentTest, GatewayValidatesRequestsAndStreamsDeltas) {
  Stack stack({.script_json = R"js({"turns": [{"say": "one two three four"}]})js",
               .gateway_args = {"--rate", "0.2", "--rate-burst", "2"},
               .start_exec = false});
  nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
  auto ask = [&](const std::function<void(s::ChatRequest::Builder)>& fill,
                 std::vector<std::string>* deltas = nullptr,
                 std::chrono::milliseconds deadline = 20s) {
    capnp::MallocMessageBuilder mb;
    auto r = nv::bus::init_body<s::ChatRequest>(mb);
    auto m = r.initMessages(1);
    m[0].setRole(s::Role::USER);
    m[0].setContent("hello");
    fill(r);
    return c.call("llm", &mb, deadline, [&](nv::Client::Incoming& in) {
      auto d = in.body.root<s::ChatDelta>();
      ASSERT_TRUE(d) << d.error().message;
      if (deltas) deltas->push_back(str(d->getContent()));
    });
  };
  auto r = ask([](s::ChatRequest::Builder b) { b.setVersion(99); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::UNSUPPORTED_VERSION);
  r = ask([](s::ChatRequest::Builder b) { b.getMessages()[0].setRole(static_cast<s::Role>(9)); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(r.error().message.find("messages[0].role"), std::string::npos) << r.error().message;
  r = ask([](s::ChatRequest::Builder b) { b.initMessages(0); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  r = ask(
      [](s::ChatRequest::Builder b) { b.getMessages()[0].setContent(std::string(2u << 20, 'x')); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(r.error().message.find("cap"), std::string::npos) << r.error().message;

  std::vector<std::string> deltas;
  r = ask([](s::ChatRequest::Builder b) { b.setStream(true); }, &deltas);
  ASSERT_TRUE(r) << r.error().to_string();
  auto reply = r->body.root<s::ChatReply>();
  ASSERT_TRUE(reply);
  EXPECT_EQ(str(reply->getMessage().getContent()), "one two three four");
  EXPECT_GE(deltas.size(), 2u);
  std::string joined;
  for (auto& d : deltas) joined += d;
  EXPECT_EQ(joined, "one two three four");
  deltas.clear();
  r = ask([](s::ChatRequest::Builder) {}, &deltas);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(deltas.empty());
  // The two-request burst is spent (invalid requests take no token): one more with a deadline
  // shorter than the refill is refused with rateLimited, and a patient one still gets through.
  r = ask([](s::ChatRequest::Builder) {}, nullptr, 150ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::RATE_LIMITED) << r.error().to_string();
  EXPECT_NE(r.error().message.find("--rate"), std::string::npos) << r.error().message;
  r = ask([](s::ChatRequest::Builder) {});
  EXPECT_TRUE(r) << r.error().to_string();
}

// Misbehaviour, one stack, the same conversation submitted three times (the fixture counts
// misbehaviour per conversation and turn): HTTP 500 twice is retried away; then a truncated
// JSON answer fails the task clearly; then a stall past the gateway's timeout ends it as
// timedOut; and the third run, on the same services, completes.
TEST_F(AgentTest, MisbehavingModelGivesClearResultsAndTheServicesKeepServing) {
  const char* script = R"js({
    "captures": {"nonce": "nonce ([0-9a-f]{12})"},
    "turns": [
      {"error": {"status": 500, "times": 2},
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "print(int('{{nonce}}', 16) * 7)"}}]},
      {"malformed": {"kind": "truncated", "times": 1},
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "echo {{last_tool_output|strip}}"}}]},
      {"stall": {"seconds": 6, "times": 1}, "say": "final {{last_tool_output|strip}}"}
    ]})js";
  Stack stack(
      {.script_json = script, .gateway_args = {"--llm-timeout", "1.5", "--llm-retries", "2"}});
  std::string nonce = nonce_hex();
  std::string prompt = "Multiply the nonce " + nonce + " by seven.";

  auto bad = submit(stack.clients(), prompt);
  EXPECT_EQ(bad.status, s::TaskStatus::FAILED) << bad.describe();
  EXPECT_EQ(bad.error_code, "llmBadResponse") << bad.describe();
  EXPECT_EQ(bad.iterations, 2u);
  EXPECT_EQ(bad.tool_calls, 1u);  // the 500s of turn 0 were retried away

  auto slow = submit(stack.clients(), prompt);
  EXPECT_EQ(slow.status, s::TaskStatus::TIMED_OUT) << slow.describe();
  EXPECT_EQ(slow.error_code, "llmTimedOut") << slow.describe();
  EXPECT_NE(slow.error.find("--llm-timeout"), std::string::npos) << slow.error;
  EXPECT_EQ(slow.iterations, 3u);

  auto good = submit(stack.clients(), prompt);
  ASSERT_EQ(good.status, s::TaskStatus::COMPLETED) << good.describe() << stack.logs();
  EXPECT_EQ(good.answer, "final " + times7(nonce));

  // What the fixture saw for turn 0 of this conversation: two 500s, then the answer.
  int errors = 0;
  for (auto& d : stack.chat_requests(nonce)) {
    if ((*d)["turn"].IsInt() && (*d)["turn"].GetInt() == 0 && (*d)["answer"].IsString() &&
        std::string((*d)["answer"].GetString()) == "error 500") {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 2);
}

// A model without native tool calls writes them in its text; the fallback parser finds them
// (a fenced JSON call, then an XML <tool_call>), and the loop runs them like native ones.
TEST_F(AgentTest, ToolCallsWrittenInTextUseTheFallbackParser) {
  Stack stack({.script_file = source_dir() + "/tests/fixtures/fake_llm_text_tool_calls.json"});
  auto o = submit(stack.clients(), "What is 2+2? Use the sandbox.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "Done: 4");
  EXPECT_EQ(o.tool_calls, 2u);
  ASSERT_EQ(o.codes.size(), 2u);
  EXPECT_EQ(o.codes[0], "print(2+2)");
  EXPECT_EQ(o.codes[1], "echo 4");
  auto seen = stack.exec().seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].language, s::Language::PYTHON);
  EXPECT_EQ(seen[1].language, s::Language::BASH);
  auto reqs = stack.chat_requests("2+2? Use");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(contents(*reqs[2], "tool").back(), "4\n");
}

// The text parser on its own, on the forms models are seen to write.
TEST(TextToolCalls, ParsesTheCommonForms) {
  using nv::agent::parse_text_tool_calls;
  auto one = [](const std::string& text) {
    auto calls = parse_text_tool_calls(text);
    EXPECT_EQ(calls.size(), 1u) << text;
    return calls.empty() ? nv::agent::ParsedCall{} : calls[0];
  };
  auto c =
      one("Sure.\n```json\n{\"name\": \"execute_code\", \"arguments\": {\"language\": "
          "\"python\", \"code\": \"print(1)\"}}\n```");
  EXPECT_EQ(c.name, "execute_code");
  EXPECT_EQ(c.arguments_json, R"js({"language":"python","code":"print(1)"})js");
  c = one(R"({"name": "execute_code", "parameters": {"language": "bash", "code": "ls"}})");
  EXPECT_EQ(c.arguments_json, R"({"language":"bash","code":"ls"})");
  c =
      one("<tool_call>\n{\"name\": \"execute_code\", \"arguments\": \"{\\\"language\\\": "
          "\\\"python\\\", \\\"code\\\": \\\"x=1\\\"}\"}\n</tool_call>");
  EXPECT_EQ(c.arguments_json, R"({"language": "python", "code": "x=1"})");
  c =
      one("<execute_code language=\"python\">\nfor i in range(3):\n    print(i &lt; 2)\n"
          "</execute_code>");
  std::string why;
  auto args = nv::agent::parse_code_args(c.arguments_json, &why);
  ASSERT_TRUE(args) << why;
  EXPECT_EQ(args->language, s::Language::PYTHON);
  EXPECT_EQ(args->code, "for i in range(3):\n    print(i < 2)");
  c =
      one("<tool_call><name>execute_code</name><arguments><language>javascript</language>"
          "<code>console.log(1)</code></arguments></tool_call>");
  args = nv::agent::parse_code_args(c.arguments_json, &why);
  ASSERT_TRUE(args) << why;
  EXPECT_EQ(args->language, s::Language::JAVASCRIPT);
  EXPECT_EQ(args->code, "console.log(1)");
  // Two calls keep their order; a plain code block or prose with braces is not a call.
  auto two = parse_text_tool_calls(
      "<execute_code language=\"bash\">echo a</execute_code> then "
      "{\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", "
      "\"code\": \"echo b\"}}");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NE(two[0].arguments_json.find("echo a"), std::string::npos);
  EXPECT_NE(two[1].arguments_json.find("echo b"), std::string::npos);
  EXPECT_TRUE(parse_text_tool_calls("```python\nprint({'a': 1})\n```\nThe set {1, 2}.").empty());
  EXPECT_FALSE(nv::agent::parse_code_args(R"({"language": "cobol", "code": "x"})", &why));
  EXPECT_NE(why.find("cobol"), std::string::npos);
}

// Tool failures go back to the model as tool results: an execution that times out, and an
// executor that answers with an error. The task still completes.
TEST_F(AgentTest, ToolTimeoutsAndErrorsGoBackToTheModel) {
  const char* script = R"js({"turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "import time; time.sleep(999)"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "crash the vm"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "cobol",
                       "code": "DISPLAY 1"}}]},
      {"say": "I saw: {{last_tool_output}}"}]})js";
  Stack stack({.script_json = script});
  auto o = submit(stack.clients(), "Try things that fail.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  ASSERT_EQ(o.timed_out.size(), 1u);
  EXPECT_TRUE(o.timed_out[0]);
  ASSERT_EQ(o.tool_errors.size(), 2u) << o.describe();
  EXPECT_NE(o.tool_errors[0].find("the VM died"), std::string::npos) << o.tool_errors[0];
  EXPECT_NE(o.tool_errors[1].find("cobol"), std::string::npos) << o.tool_errors[1];
  EXPECT_NE(o.answer.find("cobol"), std::string::npos) << o.answer;
  auto reqs = stack.chat_requests("Try things that fail.");
  ASSERT_EQ(reqs.size(), 4u);
  auto tools = contents(*reqs[3], "tool");
  ASSERT_EQ(tools.size(), 3u);
  EXPECT_NE(tools[0].find("time limit"), std::string::npos) << tools[0];
  EXPECT_NE(tools[1].find("the VM died"), std::string::npos) << tools[1];
  EXPECT_NE(tools[2].find("language \"cobol\" is not available"), std::string::npos) << tools[2];
}

// A model that never stops calling tools ends with maxIterations, through the bus and through
// nv-submit (exit code 6).
TEST_F(AgentTest, MaxIterationsEndsTheTaskWithThatStatus) {
  Stack stack({.script_file = source_dir() + "/tests/fixtures/fake_llm_max_iterations.json"});
  auto o = submit(stack.clients(), "Loop forever.", 3);
  EXPECT_EQ(o.status, s::TaskStatus::MAX_ITERATIONS) << o.describe();
  EXPECT_EQ(o.iterations, 3u);
  EXPECT_EQ(o.tool_calls, 2u);  // the third answer's call would never be read: not run
  EXPECT_NE(o.error.find("--max-iterations"), std::string::npos) << o.error;

  auto r = run_submit(stack.rt().path(), {"--max-iterations", "2", "Loop again."});
  EXPECT_EQ(r.status.code, 6) << r.out << r.err;
  EXPECT_NE(r.out.find("═ maxIterations ═"), std::string::npos) << r.out;
}

// Model not found: a clear error naming the fix, exit code 4 from nv-submit; the services keep
// serving a task that names a model the server has. (The gateway finds the server through
// OLLAMA_HOST in Ollama's host:port form here.)
TEST_F(AgentTest, ModelNotFoundIsClearAndTheServicesKeepServing) {
  Stack stack({.script_json = R"({"models": ["other-model"], "turns": [{"say": "hello"}]})",
               .url_in_ollama_host = true});
  auto o = submit(stack.clients(), "Say hello.");
  EXPECT_EQ(o.status, s::TaskStatus::MODEL_UNREACHABLE) << o.describe();
  EXPECT_EQ(o.error_code, "modelNotFound");
  EXPECT_NE(o.error.find("ollama pull fake-model"), std::string::npos) << o.error;

  auto r = run_submit(stack.rt().path(), {"Say hello."});
  EXPECT_EQ(r.status.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("ollama pull fake-model"), std::string::npos) << r.err;

  auto ok = submit(stack.clients(), "Say hello.", 0, 0, "other-model");
  EXPECT_EQ(ok.status, s::TaskStatus::COMPLETED) << ok.describe();
  EXPECT_EQ(ok.answer, "hello");
}

// 20 tasks at once against an executor that takes 2 at a time: they queue, none fails.
TEST_F(AgentTest, TwentyConcurrentTasksQueueOnTwoExecutorSlots) {
  Stack stack({.script_json = kNonceScript, .exec_capacity = 2, .exec_delay = 150ms});
  std::vector<std::string> nonces;
  for (int i = 0; i < 20; ++i) nonces.push_back(nonce_hex());
  std::vector<Outcome> outs(20);
  std::vector<std::thread> threads;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      outs[i] = submit(stack.clients(), "Multiply the nonce " + nonces[i] + " by seven.");
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> traces;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(outs[i].status, s::TaskStatus::COMPLETED) << i << ": " << outs[i].describe();
    EXPECT_EQ(outs[i].answer, "The value is " + times7(nonces[i]) + ".");
    traces.insert(outs[i].trace);
  }
  EXPECT_EQ(traces.size(), 20u);
  EXPECT_EQ(stack.exec().seen().size(), 20u);
  EXPECT_LE(stack.exec().max_concurrent(), 2);
  EXPECT_EQ(stack.exec().max_concurrent(), 2);  // they really overlapped
}

// The task's own deadline: a model slower than --timeout ends the task as timedOut (nv-submit
// exit code 7), and the services keep serving.
TEST_F(AgentTest, TaskDeadlineEndsWithTimedOut) {
  Stack stack({.script_json = R"js({"turns": [{"stall": {"seconds": 4, "times": 1},
                                                "say": "done"}]})js"});
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_submit(stack.rt().path(), {"--timeout", "1", "Be slow."});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status.code, 7) << r.out << r.err;
  EXPECT_NE(r.out.find("═ timedOut ═"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("task deadline (1000 ms)"), std::string::npos) << r.err;
  EXPECT_LT(took, 4s);
  auto o = submit(stack.clients(), "Be slow.");  // the stall was used up: served at once
  EXPECT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "done");
}

// SIGTERM while a task waits for a stalled model: the task ends at once with a clear error that
// reaches its client, and the orchestrator exits 0 without waiting for the model.
TEST_F(AgentTest, OrchestratorSigtermEndsRunningTasksCleanly) {
  Stack stack({.script_json = R"js({"turns": [{"stall": 60, "say": "late"}]})js",
               .gateway_args = {"--llm-timeout", "120"}});
  Outcome o;
  std::thread client([&] { o = submit(stack.clients(), "Take your time."); });
  // Wait until the model has the request, then stop the orchestrator.
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 20s));
  auto t0 = std::chrono::steady_clock::now();
  auto exit = stack.orchestrator().terminate(20s);
  auto took = std::chrono::steady_clock::now() - t0;
  client.join();
  EXPECT_TRUE(exit.clean()) << exit.describe() << stack.logs();
  EXPECT_LT(took, 10s);
  // Whoever answers first — the agent ending the task, or the broker failing what is still
  // pending as it stops — the client learns the orchestrator is shutting down.
  if (o.bus_error) {
    EXPECT_EQ(o.bus_error->code, nv::ErrorCode::SHUTTING_DOWN) << o.describe();
  } else {
    EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
    EXPECT_EQ(o.error_code, "shuttingDown") << o.describe();
  }
}

// The caller cancels a chat while the model stalls (before answering, or in the middle of a
// stream): the gateway abandons the HTTP call at once — the model server sees its connection
// close within a second, not after the 30 s stall — answers the broker so its only slot
// (--concurrency 1) is free, and serves the next request right away.
TEST_F(AgentTest, CallerCancelClosesTheGatewaysModelConnection) {
  struct Case {
    const char* name;
    bool stream;
    const char* script;
    const char* answer;
  };
  for (Case k : {Case{"stalled before answering", false,
                      R"js({"turns": [{"stall": {"seconds": 30, "times": 1},
                                       "say": "served"}]})js",
                      "served"},
                 Case{"stalled mid-stream", true,
                      R"js({"turns": [{"stall": {"seconds": 30, "after_chunks": 1, "times": 1},
                                       "say": "served at last"}]})js",
                      "served at last"}}) {
    SCOPED_TRACE(k.name);
    Stack stack({.script_json = k.script,
                 .gateway_args = {"--concurrency", "1", "--llm-timeout", "60"},
                 .start_exec = false});
    nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
    auto fill = [&](capnp::MallocMessageBuilder& mb) {
      auto r = nv::bus::init_body<s::ChatRequest>(mb);
      r.setStream(k.stream);
      auto m = r.initMessages(1);
      m[0].setRole(s::Role::USER);
      m[0].setContent("hello");
    };
    capnp::MallocMessageBuilder first;
    fill(first);
    uint64_t id = c.send("llm", &first, 60s);
    ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 10s))
        << stack.logs();
    if (k.stream) {  // the first piece reached the caller; the model stalls after it
      auto in = c.receive(10s);
      ASSERT_TRUE(in) << stack.logs();
      EXPECT_EQ(in->header.kind, nv::bus::Kind::PARTIAL);
    } else {
      std::this_thread::sleep_for(300ms);
    }
    EXPECT_TRUE(stack.hangups().empty());
    auto t0 = std::chrono::steady_clock::now();
    c.cancel(id, "llm");
    ASSERT_TRUE(nv::test::wait_until([&] { return !stack.hangups().empty(); }, 5s, 10ms))
        << "the model server never saw the gateway hang up\n"
        << stack.logs();
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, 1s) << std::chrono::duration<double>(took).count() << " s";
    EXPECT_TRUE(nv::test::wait_until(
        [&] {
          return stack.gateway().stderr_text().find("chat cancelled by the caller") !=
                 std::string::npos;
        },
        5s))
        << stack.logs();
    // The next request takes the same (only) slot and is answered at once.
    auto t1 = std::chrono::steady_clock::now();
    capnp::MallocMessageBuilder second;
    fill(second);
    auto r = c.call("llm", &second, 20s);
    ASSERT_TRUE(r) << r.error().to_string() << stack.logs();
    auto reply = r->body.root<s::ChatReply>();
    ASSERT_TRUE(reply);
    EXPECT_EQ(str(reply->getMessage().getContent()), k.answer);
    EXPECT_LT(std::chrono::steady_clock::now() - t1, 5s);
    EXPECT_EQ(stack.hangups().size(), 1u);
  }
}

// The broker dies (SIGKILL) while the gateway waits on a stalled model: the gateway notices the
// silence within its liveness window (3 × 250 ms here), reconnects, and abandons the orphaned
// call, whose answer has nowhere to go, instead of holding the model for the rest of the stall.
TEST_F(AgentTest, GatewayAbandonsModelCallsWhenTheBrokerIsGone) {
  Stack stack({.script_json = R"js({"turns": [{"stall": 30, "say": "late"}]})js",
               .gateway_args = {"--llm-timeout", "60"},
               .start_exec = false});
  nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  auto r = nv::bus::init_body<s::ChatRequest>(mb);
  auto m = r.initMessages(1);
  m[0].setRole(s::Role::USER);
  m[0].setContent("hello");
  c.send("llm", &mb, 60s);
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 10s))
      << stack.logs();
  auto t0 = std::chrono::steady_clock::now();
  stack.orchestrator().signal(SIGKILL);
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.hangups().empty(); }, 10s, 10ms))
      << "the model server never saw the gateway hang up\n"
      << stack.logs();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_NE(stack.gateway().stderr_text().find("orphaned"), std::string::npos) << stack.logs();
  EXPECT_TRUE(stack.gateway().running());
}

// nv-submit's exit codes for an absent stack (3), an unreachable model (4) and bad usage (2).
TEST_F(AgentTest, NvSubmitExitCodes) {
  {
    TempDir empty("nv-agent-empty");
    auto r = run_submit(empty.path(), {"anything"});
    EXPECT_EQ(r.status.code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("./nv up"), std::string::npos) << r.err;
  }
  {
    auto r = run_submit("/nonexistent", {});
    EXPECT_EQ(r.status.code, 2) << r.out << r.err;
    r = run_submit("/nonexistent", {"--tier", "huge", "x"});
    EXPECT_EQ(r.status.code, 2) << r.out << r.err;
  }
  Stack stack({.gateway_args = {"--llm-retries", "0"}, .start_fake = false});
  auto r = run_submit(stack.rt().path(), {"Say hello."});
  EXPECT_EQ(r.status.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("ollama serve"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--llm-url"), std::string::npos) << r.err;
  auto j = run_submit(stack.rt().path(), {"--json", "Say hello."});
  EXPECT_EQ(j.status.code, 4);
  rapidjson::Document d;
  d.Parse(j.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << j.out;
  EXPECT_EQ(d["exitCode"].GetInt(), 4);
  EXPECT_STREQ(d["result"]["status"].GetString(), "modelUnreachable");
  EXPECT_TRUE(d["progress"].IsArray());
}

// ========================================================= replies as real models send them
//
// Issue 10 §1–2: one stack per wire format, shared by every case (fake_llm.py routes each
// conversation to its case's script by the "case:NAME" tag in the task). Each case is a kind of
// reply the happy path did not expect; the exact values are computed by the sandbox double from
// the code it receives (agent_e2e_test runs the same code in real microVMs).

const char* kRepliesScript = R"js({
  "routes": [
    {"match": "case:ids-empty", "turns": [
      {"tool_calls": [
        {"id": "", "name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}},
        {"id": "", "name": "execute_code", "arguments": {"language": "javascript", "code": "console.log(3**5)"}}]},
      {"say": "ok {{last_tool_output|strip}}"}]},
    {"match": "case:ids-dup", "turns": [
      {"tool_calls": [
        {"id": "call_dup", "name": "execute_code", "arguments": {"language": "python", "code": "print(2**10)"}},
        {"id": "call_dup", "name": "execute_code", "arguments": {"language": "python", "code": "print(3**3)"}}]},
      {"say": "ok {{last_tool_output|strip}}"}]},
    {"match": "case:fence-python", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
        "code": "```python\nimport math\nprint(math.factorial(20))\n```"}}]},
      {"say": "20! = {{last_tool_output|strip}}"}]},
    {"match": "case:fence-tilde", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"code": "\n~~~js\n\nconsole.log(3**5)\n~~~\n"}}]},
      {"say": "3**5 = {{last_tool_output|strip}}"}]},
    {"match": "case:cut-twice", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}}]},
      {"say": "", "thinking": "The output is 1048576, so the answer", "done_reason": "length"},
      {"say": "", "done_reason": "length"}]},
    {"match": "case:cut-once", "turns": [
      {"say": "The answer is 10", "done_reason": "length"},
      {"say": "The answer is 1024."}]},
    {"match": "case:empty-once", "turns": [
      {"say": "", "thinking": "only thinking here"},
      {"say": "Fine: 42."}]},
    {"match": "case:think", "turns": [
      {"thinking": "Run it: {\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", \"code\": \"echo thought\"}}",
       "say": "<think>also {\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", \"code\": \"echo tagged\"}}</think>\nI will compute it.",
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}}]},
      {"say": "<think>the tool said {{last_tool_output|strip}}</think>The answer is {{last_tool_output|strip}}."}]},
    {"match": "case:family", "turns": [
      {"tool_calls": [
        {"name": "run_python", "arguments": {"code": "print(1)"}},
        {"name": "execute_code", "arguments": "{\"language\": \"python\", \"code\": \"print(1)"},
        {"name": "execute_code", "arguments": {"language": "py", "code": "print(2**20)", "timeout": 5}},
        {"name": "execute_code", "arguments": {"language": "node", "code": "console.log(3**5)"}}]},
      {"say": "done"}]},
    {"match": "case:slow-stream", "turns": [
      {"say": "one two three four", "stall": {"seconds": 30, "after_chunks": 1}}]},
    {"match": "case:stream", "turns": [
      {"say": "Computing both powers now.", "split_bytes": 7, "crlf": true, "keep_alive": true,
       "chunk_delay": 0.01,
       "tool_calls": [
         {"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}},
         {"name": "execute_code", "arguments": {"language": "javascript", "code": "console.log(3**5)"}}]},
      {"say": "The last result is {{last_tool_output|strip}}.", "split_bytes": 5, "crlf": true,
       "keep_alive": true}]}
  ]})js";

class AgentReplies : public ::testing::TestWithParam<std::string> {
 protected:
  static void TearDownTestSuite() { stacks().clear(); }
  static std::map<std::string, std::unique_ptr<Stack>>& stacks() {
    static std::map<std::string, std::unique_ptr<Stack>> s;
    return s;
  }
  void SetUp() override {
    setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);
    for (auto b : {"nv-orchestrator", "nv-llm-gateway", "nv-submit"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " is not built";
      }
    }
    auto& st = stacks()[GetParam()];
    if (!st) {
      // The OpenAI-format server refuses tool-call ids the way strict servers do (HTTP 400).
      std::string script = kRepliesScript;
      if (GetParam() == "openai") script.insert(1, "\n  \"strict_tool_ids\": true,");
      st = std::make_unique<Stack>(StackOptions{.script_json = script, .api = GetParam()});
    }
    stack_ = st.get();
  }
  bool openai() const { return GetParam() == "openai"; }

  // Runs one case; `tag` goes into the task so fake_llm.py plays that case.
  Outcome run_case(const std::string& tag) {
    nonce_ = nonce_hex();
    return submit(stack_->clients(), "case:" + tag + " nonce " + nonce_ + ": do the task.");
  }
  std::vector<std::shared_ptr<rapidjson::Document>> requests() {
    return stack_->chat_requests(nonce_);
  }
  // The messages of `role` in recorded request `i` (JSON objects).
  std::vector<const rapidjson::Value*> messages(const rapidjson::Document& d,
                                                const std::string& role) {
    std::vector<const rapidjson::Value*> out;
    for (const auto& m : d["body"]["messages"].GetArray()) {
      if (role == m["role"].GetString()) out.push_back(&m);
    }
    return out;
  }
  // The code the sandbox received for this case's task, in order.
  std::vector<std::pair<std::string, s::Language>> ran(const std::string& trace) {
    std::vector<std::pair<std::string, s::Language>> out;
    for (auto& x : stack_->exec().seen()) {
      if (x.body_trace == trace) out.emplace_back(x.code, x.language);
    }
    return out;
  }

  Stack* stack_ = nullptr;
  std::string nonce_;
};

// Two calls with empty ids (the issue's input) and two with the same id: every call gets a
// unique non-empty id, the same in the assistant message and in its tool message, so a server
// that checks them (the OpenAI-format fake answers 400 otherwise) accepts the conversation.
TEST_P(AgentReplies, EmptyAndDuplicateToolCallIds) {
  struct Case {
    std::string tag, first, second;
  };
  for (const Case& c :
       {Case{"ids-empty", "1048576\n", "243\n"}, Case{"ids-dup", "1024\n", "27\n"}}) {
    auto o = run_case(c.tag);
    ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << c.tag << " " << o.describe() << stack_->logs();
    EXPECT_EQ(o.answer, "ok " + c.second.substr(0, c.second.size() - 1));
    auto reqs = requests();
    ASSERT_EQ(reqs.size(), 2u) << c.tag;
    auto assistant = messages(*reqs[1], "assistant");
    auto tools = messages(*reqs[1], "tool");
    ASSERT_EQ(assistant.size(), 1u);
    ASSERT_EQ(tools.size(), 2u);
    EXPECT_EQ(std::string((*tools[0])["content"].GetString()), c.first) << c.tag;
    EXPECT_EQ(std::string((*tools[1])["content"].GetString()), c.second) << c.tag;
    if (openai()) {
      const auto& calls = (*assistant[0])["tool_calls"];
      ASSERT_EQ(calls.Size(), 2u);
      std::string id0 = calls[0]["id"].GetString(), id1 = calls[1]["id"].GetString();
      EXPECT_FALSE(id0.empty());
      EXPECT_FALSE(id1.empty());
      EXPECT_NE(id0, id1);
      EXPECT_EQ(std::string((*tools[0])["tool_call_id"].GetString()), id0);
      EXPECT_EQ(std::string((*tools[1])["tool_call_id"].GetString()), id1);
    }
  }
}

// Code wrapped in a markdown fence: the issue's ```python block, and a ~~~js block with blank
// lines and no language argument (the fence's tag gives it).
TEST_P(AgentReplies, CodeInAMarkdownFence) {
  auto o = run_case("fence-python");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "20! = 2432902008176640000");
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);
  EXPECT_EQ(code[0].first, "import math\nprint(math.factorial(20))\n");
  EXPECT_EQ(code[0].second, s::Language::PYTHON);
  EXPECT_EQ(std::string((*messages(*requests()[1], "tool")[0])["content"].GetString()),
            "2432902008176640000\n");

  o = run_case("fence-tilde");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "3**5 = 243");
  code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);
  EXPECT_EQ(code[0].first, "console.log(3**5)\n");
  EXPECT_EQ(code[0].second, s::Language::JAVASCRIPT);
}

// A reply cut at the token limit (done_reason / finish_reason "length") after a tool result,
// with reasoning only and no text, twice: never an answer; the model is asked once more (a
// notice says so), then the task fails with llmReplyCut, naming the cut.
TEST_P(AgentReplies, LengthCutRepliesAreNeverAnswers) {
  auto o = run_case("cut-twice");
  EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
  EXPECT_EQ(o.error_code, "llmReplyCut") << o.describe();
  EXPECT_NE(o.error.find("cut at its token limit (done reason \"length\")"), std::string::npos)
      << o.error;
  EXPECT_EQ(o.answer, "");
  ASSERT_EQ(o.notices.size(), 1u) << o.describe();
  EXPECT_EQ(o.notices[0],
            "the model's reply was cut at its token limit (done reason \"length\"); asking it "
            "once more");
  EXPECT_EQ(o.iterations, 3u);
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 3u);
  auto users = contents(*reqs[2], "user");
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[1], nv::agent::ask_again_message(nv::agent::ReplyKind::cut));

  // Cut once, then a full answer: the second reply is the answer.
  o = run_case("cut-once");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "The answer is 1024.");
  EXPECT_EQ(o.notices.size(), 1u);
  reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(contents(*reqs[1], "assistant"), std::vector<std::string>{"The answer is 10"});

  // An empty reply (reasoning only, done reason "stop") is asked again too.
  o = run_case("empty-once");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "Fine: 42.");
  ASSERT_EQ(o.notices.size(), 1u);
  EXPECT_NE(o.notices[0].find("was empty (done reason \"stop\")"), std::string::npos);
}

// nv-submit ends non-zero (5, failed) on a twice-cut reply and says why.
TEST_P(AgentReplies, NvSubmitExitsNonZeroOnACutReply) {
  if (openai()) GTEST_SKIP() << "the same path as Ollama's; one run is enough";
  auto r = run_submit(stack_->rt().path(), {"case:cut-twice nonce " + nonce_hex() + " go"});
  EXPECT_EQ(r.status.code, 5) << r.out << r.err;
  EXPECT_NE(r.out.find("↻ the model's reply was cut at its token limit"), std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("cut at its token limit (done reason \"length\") again"), std::string::npos)
      << r.err;
}

// nv-submit prints the text as it streams, the reasoning apart (a "thinking: " label when stdout
// is not a terminal, dimmed on one), and --no-thinking hides the reasoning.
TEST_P(AgentReplies, NvSubmitShowsThinkingApart) {
  auto r = run_submit(stack_->rt().path(), {"case:think nonce " + nonce_hex() + " go"});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err;
  std::printf("--- what nv-submit printed ---\n%s------------------------------\n", r.out.c_str());
  EXPECT_NE(r.out.find("▶ iteration 1: asking the model…\nthinking: Run it: {\"name\""),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\nI will compute it.\n⚙ execute_code (python)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("thinking: the tool said 1048576\nThe answer is 1048576.\n═ answer ═\n"
                       "The answer is 1048576.\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("first token "), std::string::npos) << r.out;
  auto quiet =
      run_submit(stack_->rt().path(), {"--no-thinking", "case:think nonce " + nonce_hex() + " go"});
  ASSERT_EQ(quiet.status.code, 0) << quiet.out << quiet.err;
  EXPECT_EQ(quiet.out.find("thinking"), std::string::npos) << quiet.out;
  EXPECT_EQ(quiet.out.find("Run it"), std::string::npos) << quiet.out;
  EXPECT_NE(quiet.out.find("I will compute it."), std::string::npos) << quiet.out;
}

// Reasoning in the API's own field (Ollama `thinking`, OpenAI `reasoning_content`) and in
// <think> tags: streamed apart, never executed (both hold a tool call), never the answer, and
// sent back in the history as each API expects.
TEST_P(AgentReplies, ReasoningIsShownNeverRun) {
  auto o = run_case("think");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "The answer is 1048576.");
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);  // not "echo thought", not "echo tagged"
  EXPECT_EQ(code[0].first, "print(2**20)");
  EXPECT_NE(o.streamed_thinking.find("Run it: {\"name\""), std::string::npos)
      << o.streamed_thinking;
  EXPECT_NE(o.streamed_thinking.find("also {\"name\""), std::string::npos) << o.streamed_thinking;
  EXPECT_NE(o.streamed_thinking.find("the tool said 1048576"), std::string::npos);
  EXPECT_EQ(o.streamed_text.find("think>"), std::string::npos) << o.streamed_text;
  EXPECT_EQ(o.streamed_text, "I will compute it.The answer is 1048576.");
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  auto assistant = messages(*reqs[1], "assistant");
  ASSERT_EQ(assistant.size(), 1u);
  const auto& m = *assistant[0];
  EXPECT_EQ(std::string(m["content"].GetString()), "I will compute it.");
  const char* key = openai() ? "reasoning_content" : "thinking";
  ASSERT_TRUE(m.HasMember(key)) << key;
  std::string kept = m[key].GetString();
  EXPECT_TRUE(kept.starts_with("Run it: {\"name\"")) << kept;
  EXPECT_NE(kept.find("also {\"name\""), std::string::npos) << kept;
}

// The rest of the family in one reply: a tool that does not exist, arguments that are not JSON,
// an unknown key with a "py" alias, and a "node" alias. Each call gets a clear tool message; the
// history stays valid for the API (Ollama needs an arguments object).
TEST_P(AgentReplies, UnknownToolsBadArgumentsAndAliases) {
  auto o = run_case("family");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "done");
  ASSERT_EQ(o.tool_errors.size(), 2u) << o.describe();
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  auto tools = contents(*reqs[1], "tool");
  ASSERT_EQ(tools.size(), 4u);
  EXPECT_EQ(tools[0],
            "error: the code did not run: there is no tool named \"run_python\"; the only tool "
            "is execute_code(language, code)");
  EXPECT_TRUE(
      tools[1].starts_with("error: the code did not run: the arguments are not a JSON "
                           "object (got: {\"language\": \"python\", \"code\": "
                           "\"print(1)); execute_code takes"))
      << tools[1];
  EXPECT_EQ(tools[2],
            "note: execute_code takes only \"language\" and \"code\"; ignored \"timeout\"\n"
            "1048576\n");
  EXPECT_EQ(tools[3], "243\n");
  const auto& calls = (*messages(*reqs[1], "assistant")[0])["tool_calls"];
  ASSERT_EQ(calls.Size(), 4u);
  if (openai()) {
    EXPECT_STREQ(calls[1]["function"]["arguments"].GetString(), "{}");
  } else {
    EXPECT_TRUE(calls[1]["function"]["arguments"].IsObject());
  }
}

// The agent asks with stream: true; the text arrives in pieces (bodies written 5–7 bytes at a
// time, CRLF line ends, SSE keep-alive comments, tool-call arguments split across chunks by
// index, a usage chunk and [DONE] for OpenAI; NDJSON and the final done object for Ollama).
TEST_P(AgentReplies, StreamsTheModelsTextAndSplitToolCalls) {
  auto o = run_case("stream");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "The last result is 243.");
  EXPECT_EQ(o.streamed_text, "Computing both powers now.The last result is 243.");
  EXPECT_GE(o.text_deltas, 8u);  // word-sized pieces, not one block
  EXPECT_GT(o.first_token_ms, 0);
  EXPECT_GT(o.completion_tokens, 0u);  // Ollama's done object / OpenAI's usage chunk
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 2u);
  EXPECT_EQ(code[0].first, "print(2**20)");
  EXPECT_EQ(code[1].first, "console.log(3**5)");
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  for (auto& r : reqs) EXPECT_TRUE((*r)["body"]["stream"].GetBool());
  auto tools = contents(*reqs[1], "tool");
  EXPECT_EQ(tools, (std::vector<std::string>{"1048576\n", "243\n"}));
}

// A task cancelled while the model streams: the first piece reached the client, the model
// stalls, the client cancels; the model server sees the hang-up at once (the agent cancels its
// llm call, the gateway closes the HTTP connection).
TEST_P(AgentReplies, CancelStopsAStreamingGeneration) {
  size_t before = stack_->hangups().size();
  nv::Client c(test_zmq(), {stack_->clients(), {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  nv::bus::init_body<s::SubmitTask>(mb).setPrompt("case:slow-stream nonce " + nonce_hex());
  uint64_t id = c.send("task", &mb, 60s);
  std::string first;
  auto until = std::chrono::steady_clock::now() + 20s;
  while (first.empty() && std::chrono::steady_clock::now() < until) {
    auto in = c.receive(500ms);
    if (!in || in->header.request_id != id || in->header.kind != nv::bus::Kind::PARTIAL) continue;
    auto p = in->body.root<s::TaskProgress>();
    if (p && p->which() == s::TaskProgress::MODEL_DELTA) first = str(p->getModelDelta());
  }
  ASSERT_EQ(first, "one ") << stack_->logs();
  auto t0 = std::chrono::steady_clock::now();
  c.cancel(id, "task");
  ASSERT_TRUE(nv::test::wait_until([&] { return stack_->hangups().size() > before; }, 10s, 10ms))
      << "the model server never saw the hang-up\n"
      << stack_->logs();
  auto took = std::chrono::steady_clock::now() - t0;
  // Generous for a loaded machine; the agent polls its cancel every 100 ms, the gateway too.
  EXPECT_LT(took, 3s) << std::chrono::duration<double>(took).count() << " s";
}

INSTANTIATE_TEST_SUITE_P(WireFormats, AgentReplies, ::testing::Values("ollama", "openai"),
                         [](const auto& info) { return info.param; });

}  // namespace
