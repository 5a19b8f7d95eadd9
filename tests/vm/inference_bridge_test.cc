// inference_bridge_test — the inference bridge end to end (issue 16 item 5): nv-orchestrator
// (broker), nv-vm-pool-manager (TCG), nv-sandbox-executor and nv-llm-gateway as children, the
// scripted model tests/fixtures/fake_llm.py behind the gateway. Python's own urllib inside the
// guest (no network device, no pip packages) is the client; it reaches 127.0.0.1:11434 through
// the nv.inference virtio-serial port. Two VMs, shared by the cases (file order):
//   A. the env presets; Ollama /api/chat (stream false and the default stream) and OpenAI
//      /v1/chat/completions (plain and "stream": true) answer the scripted text exactly, in the
//      APIs' wire formats (NDJSON lines ending "done": true; SSE data: lines ending [DONE]);
//      /api/tags and /v1/models list the allow-list;
//   B. a model not on the allow-list → 403 (OpenAI and Ollama error shapes); malformed JSON →
//      400; a 2 MiB body → 413; the bridge still answers afterwards;
//   C. the tokens the model reported are charged (SandboxInfo.inferenceTokensUsed), the budget
//      spent → 429; the model server saw the sandbox's trace id (X-Trace-Id) on every call;
//   D. a fork, a paused-then-resumed sandbox and a restarted executor keep the endpoint, the
//      policy and the count;
//   E. a sandbox without inference (fresh, or restored from a snapshot of one with it): no env
//      presets, connection refused on 11434.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include <rapidjson/document.h>

#include "common/frames.h"
#include "common/sandbox_client.h"
#include "support/http.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::schema::Language;
using nv::test::Process;
namespace sbx = nv::sandbox;

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

constexpr const char* kOwner = "uid:4343";
constexpr const char* kCreateTrace = "inference-e2e-create-7f3a";
constexpr const char* kExecTrace = "inference-e2e-exec-91c2";
// Each answer reports 30 + 20 tokens; the budget holds exactly four answers.
constexpr const char* kScript = R"({"turns": [{"say": "Scripted answer to: {{last_user}}",
  "usage": {"prompt_tokens": 30, "completion_tokens": 20}}]})";
constexpr uint64_t kBudget = 200;

// The python helpers every case's program starts with.
constexpr const char* kPrelude = R"PY(
import json, os, socket, urllib.request, urllib.error
OLLAMA = os.environ.get("OLLAMA_HOST", "")
OPENAI = os.environ.get("OPENAI_BASE_URL", "")
def call(url, obj=None, raw=None, method=None):
    data = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()
def ok(s, b):  # a failed call shows its answer instead of a KeyError
    if s != 200:
        raise SystemExit("HTTP %s: %s" % (s, b[:2000]))
def chat(text, stream=None, model="fake-model"):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream is not None:
        body["stream"] = stream
    return body
)PY";

class InferenceBridge : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    kernel_ = build + "/guest/vmlinux";
    rootfs_ = build + "/guest/rootfs.ext4";
    if (::geteuid() != 0) {
      skip_ = "needs root (the pool manager's jails and cgroups)";
      return;
    }
    for (auto name :
         {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor", "nv-llm-gateway"}) {
      if (!exists(nv::test::bin(name))) {
        skip_ = std::string(name) + " is not built ($NV_BIN_DIR=" + nv::test::bin("") + ")";
        return;
      }
    }
    if (!exists(kernel_) || !exists(rootfs_)) {
      skip_ = "guest image missing (" + kernel_ + ", " + rootfs_ + ")";
      return;
    }
    rt_ = std::make_unique<nv::test::TempDir>("nv-inference-e2e");
    std::ofstream(rt_->file("script.json")) << kScript;
    fake_ = std::make_unique<Process>(Process::start(nv::test::service_process(
        "/usr/bin/python3",
        {nv::test::source_dir() + "/tests/fixtures/fake_llm.py", "--script",
         rt_->file("script.json"), "--port-file", rt_->file("llm.port"), "--quiet"},
        {})));
    if (!nv::test::wait_until([&] { return exists(rt_->file("llm.port")); }, 20s)) {
      setup_error_ = "fake_llm.py did not start: " + fake_->stderr_text();
      return;
    }
    std::ifstream(rt_->file("llm.port")) >> llm_port_;
    env_ = {{"NV_RUNTIME_DIR", rt_->path()}, {"NV_LOG_LEVEL", "info"}};
    orch_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-orchestrator"), .args = {}, .env = env_}));
    gateway_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-llm-gateway"),
                        .args = {"--llm-url", "http://127.0.0.1:" + std::to_string(llm_port_),
                                 "--llm-api", "ollama", "--model", "fake-model"},
                        .env = env_}));
    pool_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-vm-pool-manager"),
                        .args = {"--kernel", kernel_, "--rootfs", rootfs_, "--size", "small",
                                 "--warm", "1", "--max", "4", "--accel", "tcg", "--boot-timeout-ms",
                                 "180000", "--no-require-egress"},
                        .env = env_}));
    start_executor();
    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("clients.sock")), {}, {}, {}});
    creator_ = std::make_unique<sbx::SandboxClient>(*client_, kOwner,
                                                    sbx::ClientCallOptions{300s, kCreateTrace});
    sbx_ = std::make_unique<sbx::SandboxClient>(*client_, kOwner,
                                                sbx::ClientCallOptions{300s, kExecTrace});
    if (!nv::test::wait_until([&] { return sbx_->list().ok(); }, 120s, 500ms)) {
      setup_error_ = "the sandbox service never answered" + logs();
      return;
    }
    sbx::Spec spec;
    spec.inference = {true, {"fake-model"}, kBudget};
    auto s = creator_->create(spec);
    if (!s.ok()) {
      setup_error_ = "create with inference: " + s.error().to_string() + logs();
      return;
    }
    with_ = s->sandbox_id;
  }
  static void TearDownTestSuite() {
    sbx_.reset();
    creator_.reset();
    client_.reset();
    zmq_.reset();
    for (auto* p : {&exec_, &pool_, &gateway_, &orch_, &fake_}) {
      if (*p) (*p)->terminate(30s);
      p->reset();
    }
    rt_.reset();
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static void start_executor() {
    exec_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-sandbox-executor"),
                        .args = {"--executor-name", "inf", "--connect-timeout-ms", "60000",
                                 "--max-lease-wait-ms", "200000"},
                        .env = env_}));
  }
  static std::string logs() {
    std::string out;
    if (exec_) out += "\n--- executor:\n" + exec_->stderr_text().substr(0, 20000);
    if (gateway_) out += "\n--- gateway:\n" + gateway_->stderr_text().substr(0, 8000);
    if (pool_) out += "\n--- pool:\n" + pool_->stderr_text().substr(0, 8000);
    return out;
  }
  // Runs python (the prelude, then `code`) in sandbox `id`; stdout or "ERROR: ...".
  static std::string py(const std::string& id, const std::string& code) {
    sbx::ExecSpec e;
    e.language = Language::PYTHON;
    e.code = std::string(kPrelude) + code;
    e.timeout_ms = 280000;
    auto r = sbx_->exec(id, e);
    if (!r.ok()) return "ERROR: " + r.error().to_string();
    if (r->exit_code != 0) {
      return "ERROR: exit " + std::to_string(r->exit_code) + ": " + r->stderr_data + r->note;
    }
    return r->stdout_data;
  }

  static inline std::string skip_, setup_error_, kernel_, rootfs_, with_;
  static inline int llm_port_ = 0;
  static inline std::map<std::string, std::string> env_;
  static inline std::unique_ptr<nv::test::TempDir> rt_;
  static inline std::unique_ptr<Process> fake_, orch_, gateway_, pool_, exec_;
  static inline std::unique_ptr<zmq::context_t> zmq_;
  static inline std::unique_ptr<nv::Client> client_;
  static inline std::unique_ptr<sbx::SandboxClient> creator_, sbx_;
};

TEST_F(InferenceBridge, A_OllamaAndOpenAiAnswerTheScriptedTextStreamedAndNot) {
  EXPECT_EQ(py(with_, "print(OLLAMA); print(OPENAI)"),
            "http://127.0.0.1:11434\nhttp://127.0.0.1:11434/v1\n");
  // Ollama, stream false: one JSON object.
  EXPECT_EQ(py(with_, R"PY(
s, ct, b = call(OLLAMA + "/api/chat", chat("one", stream=False))
ok(s, b)
d = json.loads(b)
print(s, ct, d["model"], d["done"], d["done_reason"], repr(d["message"]["content"]))
)PY"),
            "200 application/json fake-model True stop 'Scripted answer to: one'\n")
      << logs();
  // Ollama, no "stream": NDJSON lines, every line a JSON object, the last with done true.
  EXPECT_EQ(py(with_, R"PY(
s, ct, b = call(OLLAMA + "/api/chat", chat("two"))
ok(s, b)
lines = [json.loads(l) for l in b.splitlines() if l.strip()]
text = "".join(l["message"]["content"] for l in lines if not l["done"])
print(s, ct, len(lines) > 2, lines[-1]["done"], lines[-1]["eval_count"], repr(text))
)PY"),
            "200 application/x-ndjson True True 20 'Scripted answer to: two'\n");
  // OpenAI, plain: one chat.completion.
  EXPECT_EQ(py(with_, R"PY(
s, ct, b = call(OPENAI + "/chat/completions", chat("three"))
ok(s, b)
d = json.loads(b)
c = d["choices"][0]
print(s, ct, d["object"], c["finish_reason"], d["usage"]["total_tokens"],
      repr(c["message"]["content"]))
)PY"),
            "200 application/json chat.completion stop 50 'Scripted answer to: three'\n");
  // OpenAI, "stream": true: SSE data: events of chat.completion.chunk, then data: [DONE].
  EXPECT_EQ(py(with_, R"PY(
s, ct, b = call(OPENAI + "/chat/completions", chat("four", stream=True))
ok(s, b)
events = [l[len("data: "):] for l in b.split("\n") if l.startswith("data: ")]
chunks = [json.loads(e) for e in events[:-1]]
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
print(s, ct, events[-1], chunks[0]["object"], chunks[0]["choices"][0]["delta"]["role"],
      chunks[-1]["choices"][0]["finish_reason"], repr(text))
)PY"),
            "200 text/event-stream [DONE] chat.completion.chunk assistant stop "
            "'Scripted answer to: four'\n");
  EXPECT_EQ(py(with_, R"PY(
s1, _, b1 = call(OLLAMA + "/api/tags")
s2, _, b2 = call(OPENAI + "/models")
print(s1, [m["name"] for m in json.loads(b1)["models"]], s2,
      [m["id"] for m in json.loads(b2)["data"]])
)PY"),
            "200 ['fake-model'] 200 ['fake-model']\n");
}

TEST_F(InferenceBridge, B_RefusalsAre403_400_413AndTheBridgeLivesOn) {
  EXPECT_EQ(py(with_, R"PY(
s, _, b = call(OPENAI + "/chat/completions", chat("x", model="gpt-4o"))
e = json.loads(b)["error"]
print(s, e["type"], e["code"])
s, _, b = call(OLLAMA + "/api/chat", chat("x", model="llama3.2"))
print(s, "error" in json.loads(b))
s, _, b = call(OLLAMA + "/api/chat", raw=b'{"model": "fake-model", "messages": [')
print(s, json.loads(b)["error"].startswith("request body is not JSON"))
s, _, b = call(OPENAI + "/chat/completions", raw=b'{"model":"fake-model","messages":[{"role":"user","content":"' + b"x" * (2 << 20) + b'"}]}')
print(s)
s, _, b = call(OLLAMA + "/api/generate", chat("x"))
print(s)
c = socket.create_connection(("127.0.0.1", 11434), timeout=60)
c.sendall(b"NOT HTTP AT ALL\r\n\r\n")
print(c.recv(200).split(b"\r\n")[0].decode())
)PY"),
            "403 invalid_request_error model_not_found\n403 True\n400 True\n413\n404\n"
            "HTTP/1.1 400 Bad Request\n")
      << logs();
  auto info = sbx_->get(with_);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->inference_tokens_used, 4u * 50);  // refusals cost nothing
}

TEST_F(InferenceBridge, C_BudgetSpentIs429AndEveryCallCarriedTheSandboxTraceId) {
  // A: four answers of 50 tokens = the budget of 200.
  EXPECT_EQ(py(with_, R"PY(
s, _, b = call(OPENAI + "/chat/completions", chat("five"))
print(s, json.loads(b)["error"]["code"])
s, _, b = call(OLLAMA + "/api/chat", chat("six"))
print(s, "budget" in json.loads(b)["error"])
)PY"),
            "429 insufficient_quota\n429 True\n");
  auto info = sbx_->get(with_);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->inference_tokens_used, kBudget);
  EXPECT_TRUE(info->inference.enabled);
  EXPECT_EQ(info->inference.token_budget, kBudget);
  // The model server's view: exactly the four admitted calls, each with the create's trace id.
  auto got = nv::test::http_get("127.0.0.1", llm_port_, "/_requests", 5000ms);
  ASSERT_TRUE(got.has_value());
  rapidjson::Document d;
  d.Parse(got->body.c_str());
  ASSERT_TRUE(d.IsArray()) << got->body;
  int chats = 0;
  for (const auto& r : d.GetArray()) {
    if (std::string(r["path"].GetString()) != "/api/chat") continue;
    ++chats;
    ASSERT_TRUE(r["headers"].HasMember("X-Trace-Id")) << got->body;
    EXPECT_EQ(std::string(r["headers"]["X-Trace-Id"].GetString()), kCreateTrace);
  }
  EXPECT_EQ(chats, 4) << got->body;
}

// A fork (a clone of the parent's RAM and devices), a paused-then-resumed sandbox and one whose
// executor was SIGKILLed and restarted keep the policy, what was spent, and a working endpoint:
// their calls reach their host bridge, which answers 429 (the budget was spent in C).
TEST_F(InferenceBridge, D_ForkAndResumeKeepTheEndpointAndThePolicy) {
  const std::string probe = R"PY(
s, _, b = call(OLLAMA + "/api/chat", chat("seven", stream=False))
print(s, "budget" in json.loads(b)["error"])
)PY";
  auto forks = sbx_->fork(with_, 1);
  ASSERT_TRUE(forks.ok()) << forks.error().to_string() << logs();
  ASSERT_EQ(forks->size(), 1u);
  const std::string child = forks->front().sandbox_id;
  EXPECT_TRUE(forks->front().inference.enabled);
  EXPECT_EQ(forks->front().inference_tokens_used, kBudget);
  EXPECT_EQ(py(child, probe), "429 True\n") << logs();
  EXPECT_TRUE(sbx_->destroy(child).ok());
  ASSERT_TRUE(sbx_->pause(with_).ok());
  ASSERT_TRUE(sbx_->resume(with_).ok());
  EXPECT_EQ(py(with_, probe), "429 True\n") << logs();
  // A SIGKILLed executor, restarted, serves the endpoint again with the count it had saved.
  exec_->signal(SIGKILL);
  exec_->wait(10s);
  start_executor();
  ASSERT_TRUE(nv::test::wait_until([&] { return sbx_->get(with_).ok(); }, 120s, 500ms)) << logs();
  EXPECT_EQ(sbx_->get(with_)->inference_tokens_used, kBudget);
  EXPECT_EQ(py(with_, probe), "429 True\n") << logs();
}

// Without inference: a fresh sandbox, and one restored from a snapshot of the sandbox with
// inference (whose RAM holds a running listener, which the agent is told to end).
TEST_F(InferenceBridge, E_WithoutInferenceNoEnvAndConnectionRefused) {
  const std::string probe = R"PY(
print(repr(OLLAMA), repr(OPENAI))
try:
    socket.create_connection(("127.0.0.1", 11434), timeout=10)
    print("connected")
except ConnectionRefusedError:
    print("refused")
)PY";
  auto s = sbx_->create(sbx::Spec{});
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  EXPECT_EQ(py(s->sandbox_id, probe), "'' ''\nrefused\n");
  EXPECT_TRUE(sbx_->destroy(s->sandbox_id).ok());
  auto snap = sbx_->snapshot(with_, "inference-on");
  ASSERT_TRUE(snap.ok()) << snap.error().to_string() << logs();
  EXPECT_TRUE(sbx_->destroy(with_).ok());
  sbx::Spec from;
  from.from_snapshot = "inference-on";
  auto r = sbx_->create(from);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  EXPECT_FALSE(r->inference.enabled);
  EXPECT_EQ(py(r->sandbox_id, probe), "'' ''\nrefused\n") << logs();
  EXPECT_TRUE(sbx_->destroy(r->sandbox_id).ok());
  EXPECT_TRUE(sbx_->delete_snapshot("inference-on").ok());
}

}  // namespace
