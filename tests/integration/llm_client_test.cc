// llm_client_test.cc — nv_llm_client against tests/fixtures/fake_llm.py over loopback HTTP.
//
// Every test starts its own fake model server (a python3 child on an ephemeral 127.0.0.1 port)
// with the script it needs, talks to it through the real client, and checks both what came back
// and what the server recorded. Backoff sleeps and the rate limiter's clock are injected, so no
// test waits for a retry delay; only the timeout tests wait (for less than a second).
#include "llm_client.h"

#include <arpa/inet.h>
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http.h"

extern char** environ;

namespace nv::llm {
namespace {

using namespace std::chrono_literals;

std::string source_dir() {
  const char* env = std::getenv("NV_SOURCE_DIR");
  return env ? env : NV_TEST_SOURCE_DIR;
}

// A fake_llm.py child process serving one script; killed at destruction.
class FakeLlm {
 public:
  // `script` is the JSON text itself, or with from_file the path of a script file.
  explicit FakeLlm(const std::string& script, bool from_file = false) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::string fixture = source_dir() + "/tests/fixtures/fake_llm.py";
    std::vector<std::string> args = {"/usr/bin/python3", fixture,
                                     from_file ? "--script" : "--script-json", script, "--quiet"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    if (rc != 0) throw std::runtime_error("posix_spawn python3 failed");
    // The fixture prints its port alone on one line once it listens.
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + 15s;
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[64];
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    port_ = std::atoi(line.c_str());
    if (port_ <= 0) throw std::runtime_error("fake_llm.py did not report a port: " + line);
  }
  ~FakeLlm() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Every chat/model request the fixture received, oldest first.
  rapidjson::Document requests() const { return get_array("/_requests"); }
  // Every connection a client closed while the fixture stalled or paced an answer.
  rapidjson::Document hangups() const { return get_array("/_hangups"); }

 private:
  rapidjson::Document get_array(const std::string& path) const {
    HttpClient http;
    HttpRequest r;
    r.method = "GET";
    r.url = url() + path;
    HttpResponse resp = http.perform(r);
    rapidjson::Document d;
    d.Parse(resp.body.c_str());
    if (d.HasParseError() || !d.IsArray()) throw std::runtime_error("bad " + path + " answer");
    return d;
  }

  pid_t pid_ = -1;
  int port_ = 0;
};

// Collects what the client logs and what it asks to sleep, and owns a settable clock. Clients on
// several threads may share one Harness (TwentyClientsAtOnceAllServed: a retried call logs), so
// the collections are guarded: unguarded push_backs from 20 threads corrupted the heap (an abort
// and a hang, once each in CI-like runs).
struct Harness {
  std::mutex mu;
  std::vector<std::string> logs;
  std::vector<long> sleeps_ms;
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();

  ClientDeps deps() {
    ClientDeps d;
    d.clock = [this] { return now; };
    d.sleep = [this](std::chrono::milliseconds ms) {
      std::lock_guard lock(mu);
      sleeps_ms.push_back(ms.count());
    };
    d.jitter = [] { return 0.999; };
    return d;
  }
  LlmConfig config(const FakeLlm& fake, Api api) {
    LlmConfig c;
    c.base_url = fake.url();
    c.api = api;
    c.default_model = "m";
    c.timeout_ms = 10'000;
    c.log = [this](LogLevel, const std::string& msg, const std::string& trace) {
      std::lock_guard lock(mu);
      logs.push_back(trace + " " + msg);
    };
    return c;
  }
};

ChatRequest simple_request(bool stream = false) {
  ChatRequest r;
  r.trace_id = "0193c0de-0000-7000-8000-000000000001";
  r.stream = stream;
  r.messages.push_back({Role::system, "You run code.", {}, "", "", ""});
  r.messages.push_back({Role::user, "Compute 6*7 with python", {}, "", "", ""});
  r.tools.push_back({"execute_code", "Run code in a microVM",
                     R"({"type":"object","properties":{"language":{"type":"string"},)"
                     R"("code":{"type":"string"}},"required":["language","code"]})"});
  return r;
}

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

std::string header(const rapidjson::Value& req, const char* name) {
  const auto& h = req["headers"];
  for (auto it = h.MemberBegin(); it != h.MemberEnd(); ++it) {
    if (strcasecmp(it->name.GetString(), name) == 0) return it->value.GetString();
  }
  return "";
}

constexpr const char* kToolTurn = R"J({"say": "Let me run that.", "tool_calls": [
  {"name": "execute_code", "arguments": {"language": "python",
   "code": "x = \"quoted\"\nprint(6*7)"}}]})J";

// ---- happy paths ----------------------------------------------------------------------------

TEST(LlmClientOllama, NonStreamingTextWithCountsAndDurations) {
  FakeLlm fake(R"({"models": ["m"], "turns": [{"say": "Hello there, human.", "usage":
    {"prompt_tokens": 11, "completion_tokens": 7, "load_duration_ns": 123456789,
     "total_duration_ns": 987654321}}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama), h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.reply->message.content, "Hello there, human.");
  EXPECT_EQ(r.reply->message.role, Role::assistant);
  EXPECT_TRUE(r.reply->message.tool_calls.empty());
  EXPECT_EQ(r.reply->done_reason, "stop");
  EXPECT_EQ(r.reply->prompt_tokens, 11u);
  EXPECT_EQ(r.reply->completion_tokens, 7u);
  EXPECT_EQ(r.reply->load_duration_ns, 123456789u);
  EXPECT_EQ(r.reply->total_duration_ns, 987654321u);
  EXPECT_EQ(r.reply->model, "m");
  EXPECT_EQ(r.reply->attempts, 1u);
  EXPECT_GT(r.reply->wall_ms, 0.0);

  auto reqs = fake.requests();
  ASSERT_EQ(reqs.Size(), 1u);
  const auto& q = reqs[0];
  EXPECT_STREQ(q["path"].GetString(), "/api/chat");
  EXPECT_EQ(header(q, "X-Trace-Id"), "0193c0de-0000-7000-8000-000000000001");
  EXPECT_EQ(header(q, "Authorization"), "");
  const auto& body = q["body"];
  EXPECT_FALSE(body["stream"].GetBool());
  EXPECT_STREQ(body["model"].GetString(), "m");
  ASSERT_EQ(body["messages"].Size(), 2u);
  EXPECT_STREQ(body["messages"][0]["role"].GetString(), "system");
  EXPECT_STREQ(body["messages"][1]["content"].GetString(), "Compute 6*7 with python");
  // Tools go out as OpenAI-style function specs with the schema as an object.
  const auto& fn = body["tools"][0]["function"];
  EXPECT_STREQ(body["tools"][0]["type"].GetString(), "function");
  EXPECT_STREQ(fn["name"].GetString(), "execute_code");
  EXPECT_TRUE(fn["parameters"].IsObject());
  EXPECT_STREQ(fn["parameters"]["required"][1].GetString(), "code");
}

TEST(LlmClientOllama, StreamingDeliversDeltasAndToolCall) {
  FakeLlm fake(std::string(R"({"turns": [)") + kToolTurn + "]}");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama), h.deps());
  std::vector<std::string> deltas;
  ChatResult r = client.chat(simple_request(true),
                             [&](std::string_view d, DeltaKind) { deltas.emplace_back(d); });
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_GE(deltas.size(), 3u);  // "Let ", "me ", "run ", "that."
  std::string joined;
  for (auto& d : deltas) joined += d;
  EXPECT_EQ(joined, "Let me run that.");
  EXPECT_EQ(r.reply->message.content, "Let me run that.");
  ASSERT_EQ(r.reply->message.tool_calls.size(), 1u);
  const ToolCall& tc = r.reply->message.tool_calls[0];
  EXPECT_EQ(tc.name, "execute_code");
  EXPECT_EQ(tc.id, "");  // Ollama gives no call id
  auto args = parse(tc.arguments_json);
  EXPECT_STREQ(args["language"].GetString(), "python");
  EXPECT_STREQ(args["code"].GetString(), "x = \"quoted\"\nprint(6*7)");
  EXPECT_EQ(r.reply->done_reason, "tool_calls");
  EXPECT_GT(r.reply->completion_tokens, 0u);
  EXPECT_GT(r.reply->total_duration_ns, 0u);
  auto reqs = fake.requests();
  EXPECT_TRUE(reqs[0]["body"]["stream"].GetBool());
}

TEST(LlmClientOllama, ToolResultGoesBackAndConnectionIsReused) {
  // Turn 1 echoes the tool output it received: proves the request carried it.
  FakeLlm fake(std::string(R"({"turns": [)") + kToolTurn +
               R"(, {"say": "The output was {{last_tool_output|strip}}."}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama), h.deps());
  ChatRequest req = simple_request();
  ChatResult first = client.chat(req);
  ASSERT_TRUE(first.ok()) << first.error->message;
  req.messages.push_back(first.reply->message);
  req.messages.push_back({Role::tool, "42\n", {}, "", "execute_code", ""});
  ChatResult second = client.chat(req);
  ASSERT_TRUE(second.ok()) << second.error->message;
  EXPECT_EQ(second.reply->message.content, "The output was 42.");

  auto reqs = fake.requests();
  ASSERT_EQ(reqs.Size(), 2u);
  const auto& msgs = reqs[1]["body"]["messages"];
  ASSERT_EQ(msgs.Size(), 4u);
  // Ollama wants arguments as an object and the tool's name on the tool message.
  EXPECT_TRUE(msgs[2]["tool_calls"][0]["function"]["arguments"].IsObject());
  EXPECT_STREQ(msgs[3]["role"].GetString(), "tool");
  EXPECT_STREQ(msgs[3]["tool_name"].GetString(), "execute_code");
  // Same client port on both requests: the libcurl handle kept the connection.
  EXPECT_EQ(reqs[0]["peer_port"].GetInt(), reqs[1]["peer_port"].GetInt());
}

TEST(LlmClientOpenAi, NonStreamingToolCallWithBearerKeyNeverLogged) {
  const std::string key = "sk-test-5ecret-val";
  setenv("NV_TEST_LLM_KEY", key.c_str(), 1);
  FakeLlm fake(std::string(R"({"api_key": ")") + key + R"(", "turns": [)" + kToolTurn + "]}");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::openai);
  cfg.api_key_env = "NV_TEST_LLM_KEY";
  LlmClient client(cfg, h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_TRUE(r.ok()) << r.error->message;
  ASSERT_EQ(r.reply->message.tool_calls.size(), 1u);
  const ToolCall& tc = r.reply->message.tool_calls[0];
  EXPECT_EQ(tc.id, "call_0_0");
  EXPECT_EQ(tc.name, "execute_code");
  EXPECT_STREQ(parse(tc.arguments_json)["code"].GetString(), "x = \"quoted\"\nprint(6*7)");
  EXPECT_EQ(r.reply->message.content, "Let me run that.");
  EXPECT_EQ(r.reply->done_reason, "tool_calls");
  EXPECT_GT(r.reply->prompt_tokens, 0u);
  EXPECT_EQ(r.reply->completion_tokens, 4u + 20u);  // fixture: words + 20 per call

  auto reqs = fake.requests();
  ASSERT_EQ(reqs.Size(), 1u);
  EXPECT_STREQ(reqs[0]["path"].GetString(), "/v1/chat/completions");
  EXPECT_EQ(header(reqs[0], "Authorization"), "Bearer " + key);
  EXPECT_EQ(header(reqs[0], "X-Trace-Id"), "0193c0de-0000-7000-8000-000000000001");

  // A refused key: typed, actionable, and the key appears in no message or log line.
  LlmConfig wrong = cfg;
  setenv("NV_TEST_LLM_KEY_WRONG", "sk-wrong-5ecret", 1);
  wrong.api_key_env = "NV_TEST_LLM_KEY_WRONG";
  LlmClient bad(wrong, h.deps());
  ChatResult denied = bad.chat(simple_request());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error->code, ErrorCode::UNAUTHORIZED);
  EXPECT_EQ(denied.error->http_status, 401);
  EXPECT_NE(denied.error->message.find("NV_TEST_LLM_KEY_WRONG"), std::string::npos);
  EXPECT_EQ(denied.error->message.find("sk-wrong-5ecret"), std::string::npos);
  ASSERT_FALSE(h.logs.empty());
  for (const std::string& line : h.logs) {
    EXPECT_EQ(line.find(key), std::string::npos) << line;
    EXPECT_EQ(line.find("sk-wrong-5ecret"), std::string::npos) << line;
  }
}

TEST(LlmClientOpenAi, SseStreamingAssemblesToolCallDeltasAndUsage) {
  FakeLlm fake(R"J({"turns": [{"say": "Two calls coming.", "tool_calls": [
    {"name": "execute_code", "arguments": {"language": "python", "code": "print('a, b')"}},
    {"name": "execute_code", "id": "call_second", "arguments": {"language": "bash",
     "code": "echo {\"k\": [1, 2]}"}}],
    "usage": {"prompt_tokens": 31, "completion_tokens": 17}}]})J");
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  std::string streamed;
  int pieces = 0;
  ChatResult r = client.chat(simple_request(true), [&](std::string_view d, DeltaKind) {
    streamed += d;
    ++pieces;
  });
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_GE(pieces, 3);
  EXPECT_EQ(streamed, "Two calls coming.");
  EXPECT_EQ(r.reply->message.content, "Two calls coming.");
  ASSERT_EQ(r.reply->message.tool_calls.size(), 2u);
  EXPECT_EQ(r.reply->message.tool_calls[0].id, "call_0_0");
  EXPECT_EQ(r.reply->message.tool_calls[1].id, "call_second");
  EXPECT_STREQ(parse(r.reply->message.tool_calls[0].arguments_json)["code"].GetString(),
               "print('a, b')");
  auto second = parse(r.reply->message.tool_calls[1].arguments_json);
  EXPECT_STREQ(second["language"].GetString(), "bash");
  EXPECT_STREQ(second["code"].GetString(), "echo {\"k\": [1, 2]}");
  EXPECT_EQ(r.reply->done_reason, "tool_calls");
  EXPECT_EQ(r.reply->prompt_tokens, 31u);
  EXPECT_EQ(r.reply->completion_tokens, 17u);

  auto reqs = fake.requests();
  const auto& body = reqs[0]["body"];
  EXPECT_TRUE(body["stream"].GetBool());
  EXPECT_TRUE(body["stream_options"]["include_usage"].GetBool());
  EXPECT_EQ(header(reqs[0], "Accept"), "text/event-stream");
}

TEST(LlmClientOpenAi, ToolMessagesCarryCallIdsAndArgumentStrings) {
  FakeLlm fake(std::string(R"({"turns": [)") + kToolTurn +
               R"(, {"say": "got {{last_tool_output}}"}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  ChatRequest req = simple_request();
  ChatResult first = client.chat(req);
  ASSERT_TRUE(first.ok()) << first.error->message;
  req.messages.push_back(first.reply->message);
  req.messages.push_back({Role::tool, "42", {}, first.reply->message.tool_calls[0].id, "", ""});
  ChatResult second = client.chat(req);
  ASSERT_TRUE(second.ok()) << second.error->message;
  EXPECT_EQ(second.reply->message.content, "got 42");
  const auto reqs = fake.requests();
  const auto& msgs = reqs[1]["body"]["messages"];
  EXPECT_TRUE(msgs[2]["tool_calls"][0]["function"]["arguments"].IsString());
  EXPECT_STREQ(msgs[2]["tool_calls"][0]["id"].GetString(), "call_0_0");
  EXPECT_STREQ(msgs[3]["tool_call_id"].GetString(), "call_0_0");
}

TEST(LlmClientOpenAi, ServerThatIgnoresStreamStillAnswers) {
  FakeLlm fake(R"({"turns": [{"say": "whole answer", "ignore_stream": true}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  std::string seen;
  ChatResult r =
      client.chat(simple_request(true), [&](std::string_view d, DeltaKind) { seen += d; });
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.reply->message.content, "whole answer");
  EXPECT_EQ(seen, "whole answer");  // delivered as one delta
}

TEST(LlmClient, ListsModels) {
  FakeLlm fake(R"({"models": ["qwen2.5:0.5b", "m"], "turns": []})");
  Harness h;
  for (Api api : {Api::ollama, Api::openai}) {
    LlmClient client(h.config(fake, api), h.deps());
    ModelsResult m = client.list_models("trace-1");
    ASSERT_TRUE(m.ok()) << m.error->message;
    EXPECT_EQ(m.models, (std::vector<std::string>{"qwen2.5:0.5b", "m"}));
  }
}

// ---- retries --------------------------------------------------------------------------------

TEST(LlmClientRetry, Http500TwiceThenSuccess) {
  FakeLlm fake(R"({"turns": [{"error": {"status": 500, "times": 2}, "say": "recovered"}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::ollama);
  cfg.max_attempts = 3;
  cfg.backoff_initial_ms = 200;
  LlmClient client(cfg, h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.reply->message.content, "recovered");
  EXPECT_EQ(r.reply->attempts, 3u);
  EXPECT_EQ(fake.requests().Size(), 3u);
  // Exponential: ~200 ms then ~400 ms (jitter pinned at the top of its 50..100% range).
  ASSERT_EQ(h.sleeps_ms.size(), 2u);
  EXPECT_NEAR(h.sleeps_ms[0], 200, 2);
  EXPECT_NEAR(h.sleeps_ms[1], 400, 2);
}

TEST(LlmClientRetry, PersistentServerErrorGivesUp) {
  FakeLlm fake(R"({"turns": [{"error": {"status": 503, "message": "model is loading"}}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::openai);
  cfg.max_attempts = 2;
  LlmClient client(cfg, h.deps());
  ChatResult r = client.chat(simple_request(true));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_BAD_RESPONSE);
  EXPECT_TRUE(r.error->retryable);
  EXPECT_EQ(r.error->http_status, 503);
  EXPECT_EQ(r.error->attempts, 2u);
  EXPECT_NE(r.error->message.find("model is loading"), std::string::npos) << r.error->message;
  EXPECT_NE(r.error->message.find("gave up after 2 attempts"), std::string::npos);
}

TEST(LlmClientRetry, Http429HonoursRetryAfterThenRateLimitedError) {
  FakeLlm fake(R"({"turns": [{"error": {"status": 429, "times": 1, "retry_after": 2},
                              "say": "after the wait"}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.reply->attempts, 2u);
  ASSERT_EQ(h.sleeps_ms.size(), 1u);
  EXPECT_EQ(h.sleeps_ms[0], 2000);  // Retry-After: 2, not the 250 ms default backoff

  FakeLlm always(R"({"turns": [{"error": {"status": 429}}]})");
  LlmConfig cfg = h.config(always, Api::ollama);
  cfg.max_attempts = 2;
  LlmClient limited(cfg, h.deps());
  ChatResult e = limited.chat(simple_request());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error->code, ErrorCode::RATE_LIMITED);
  EXPECT_TRUE(e.error->retryable);
  EXPECT_EQ(e.error->attempts, 2u);

  // A Retry-After longer than we are willing to wait ends the call at once.
  FakeLlm slow(R"({"turns": [{"error": {"status": 429, "retry_after": 3600}}]})");
  LlmClient patient(h.config(slow, Api::ollama), h.deps());
  h.sleeps_ms.clear();
  ChatResult p = patient.chat(simple_request());
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error->code, ErrorCode::RATE_LIMITED);
  EXPECT_EQ(p.error->attempts, 1u);
  EXPECT_TRUE(h.sleeps_ms.empty());
  EXPECT_NE(p.error->message.find("3600 s"), std::string::npos) << p.error->message;
}

// ---- failures -------------------------------------------------------------------------------

TEST(LlmClientFailure, StallTimesOutWithinTheTimeout) {
  FakeLlm fake(R"({"turns": [{"stall": 5, "say": "too late"}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::ollama);
  cfg.timeout_ms = 600;
  LlmClient client(cfg, h.deps());
  auto t0 = std::chrono::steady_clock::now();
  ChatResult r = client.chat(simple_request());
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_TIMED_OUT);
  EXPECT_EQ(r.error->attempts, 1u);  // a timeout is not retried: the budget is spent
  EXPECT_GE(ms, 550);
  EXPECT_LT(ms, 2500);
  EXPECT_NE(r.error->message.find("600 ms"), std::string::npos) << r.error->message;
}

TEST(LlmClientFailure, StreamStallAfterDeltasTimesOutWithoutReplay) {
  FakeLlm fake(R"({"turns": [{"say": "one two three four",
                              "stall": {"seconds": 5, "after_chunks": 2}}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::openai);
  cfg.timeout_ms = 700;
  LlmClient client(cfg, h.deps());
  std::string seen;
  ChatResult r =
      client.chat(simple_request(true), [&](std::string_view d, DeltaKind) { seen += d; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_TIMED_OUT);
  EXPECT_EQ(seen, "one two ");  // what arrived before the stall reached the caller
  EXPECT_EQ(r.error->attempts, 1u);
}

TEST(LlmClientFailure, MalformedJsonIsBadResponse) {
  struct Case {
    Api api;
    bool stream;
    const char* kind;
  };
  for (Case c : {Case{Api::ollama, false, "truncated"}, Case{Api::ollama, true, "truncated"},
                 Case{Api::ollama, false, "shape"}, Case{Api::openai, false, "truncated"},
                 Case{Api::openai, true, "garbage"}, Case{Api::openai, false, "shape"}}) {
    SCOPED_TRACE(std::string(api_name(c.api)) + (c.stream ? " stream " : " ") + c.kind);
    FakeLlm fake(std::string(R"({"turns": [{"say": "some words here", "malformed": ")") + c.kind +
                 R"("}]})");
    Harness h;
    LlmClient client(h.config(fake, c.api), h.deps());
    ChatResult r = client.chat(simple_request(c.stream));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, ErrorCode::LLM_BAD_RESPONSE) << r.error->message;
    EXPECT_FALSE(r.error->retryable);
    EXPECT_EQ(r.error->attempts, 1u);
    EXPECT_NE(r.error->message.find("127.0.0.1"), std::string::npos) << r.error->message;
  }
}

TEST(LlmClientFailure, ModelNotFoundSaysWhatToPull) {
  FakeLlm fake(R"({"models": ["m"], "turns": [{"say": "hi"}]})");
  Harness h;
  LlmClient ollama(h.config(fake, Api::ollama), h.deps());
  ChatRequest req = simple_request();
  req.model = "qwen2.5-coder:7b";
  ChatResult r = ollama.chat(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::MODEL_NOT_FOUND);
  EXPECT_EQ(r.error->attempts, 1u);
  EXPECT_NE(r.error->message.find("ollama pull qwen2.5-coder:7b"), std::string::npos)
      << r.error->message;

  LlmClient openai(h.config(fake, Api::openai), h.deps());
  ChatResult o = openai.chat(req);
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.error->code, ErrorCode::MODEL_NOT_FOUND);
  EXPECT_NE(o.error->message.find("does not exist"), std::string::npos) << o.error->message;

  // A missing model reported with another status is still modelNotFound, and not retried.
  FakeLlm odd(R"({"turns": [{"error": {"status": 500, "message": "model 'x' not found"}}]})");
  LlmClient c2(h.config(odd, Api::ollama), h.deps());
  ChatResult m = c2.chat(simple_request());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error->code, ErrorCode::MODEL_NOT_FOUND);
  EXPECT_EQ(m.error->attempts, 1u);

  // Ollama's in-band form: an error object inside a 200 stream.
  FakeLlm inband(R"({"turns": [{"error": {"status": 200}}]})");
  LlmClient c3(h.config(inband, Api::ollama), h.deps());
  ChatResult s = c3.chat(simple_request(true));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error->code, ErrorCode::MODEL_NOT_FOUND);
}

TEST(LlmClientFailure, NothingListeningIsUnreachable) {
  // Bind a loopback port, then close it: connecting there is refused.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  std::string url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port));

  Harness h;
  LlmConfig cfg;
  cfg.base_url = url;
  cfg.default_model = "m";
  cfg.max_attempts = 3;
  LlmClient client(cfg, h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_UNREACHABLE);
  EXPECT_TRUE(r.error->retryable);
  EXPECT_EQ(r.error->attempts, 3u);  // connection errors are retried
  EXPECT_EQ(h.sleeps_ms.size(), 2u);
  EXPECT_NE(r.error->message.find("ollama serve"), std::string::npos) << r.error->message;
  EXPECT_NE(r.error->message.find(url), std::string::npos) << r.error->message;
}

TEST(LlmClientFailure, ResponseOverTheCapFails) {
  std::string words;
  for (int i = 0; i < 400; ++i) words += "word" + std::to_string(i) + " ";
  FakeLlm fake(R"({"turns": [{"say": ")" + words + R"("}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::ollama);
  cfg.max_response_bytes = 2048;
  LlmClient client(cfg, h.deps());
  for (bool stream : {false, true}) {
    ChatResult r = client.chat(simple_request(stream));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, ErrorCode::LLM_BAD_RESPONSE);
    EXPECT_NE(r.error->message.find("2048-byte cap"), std::string::npos) << r.error->message;
  }
}

TEST(LlmClientFailure, MissingKeyFailsBeforeCalling) {
  FakeLlm fake(R"({"api_key": "k", "turns": [{"say": "hi"}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::openai);
  cfg.api_key_env = "NV_TEST_LLM_KEY_UNSET";
  unsetenv("NV_TEST_LLM_KEY_UNSET");
  LlmClient client(cfg, h.deps());
  ChatResult r = client.chat(simple_request());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::UNAUTHORIZED);
  EXPECT_EQ(r.error->attempts, 0u);
  EXPECT_NE(r.error->message.find("NV_TEST_LLM_KEY_UNSET"), std::string::npos);

  LlmConfig none = h.config(fake, Api::openai);  // no key configured at all
  LlmClient anonymous(none, h.deps());
  ChatResult a = anonymous.chat(simple_request());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error->code, ErrorCode::UNAUTHORIZED);
  EXPECT_NE(a.error->message.find("no API key is configured"), std::string::npos);
  EXPECT_EQ(fake.requests().Size(), 1u);  // only the anonymous call reached the server
}

TEST(LlmClientFailure, RateLimiterRefusesTheExcessWithoutCalling) {
  FakeLlm fake(R"({"turns": [{"say": "ok"}]})");
  Harness h;
  LlmConfig cfg = h.config(fake, Api::ollama);
  cfg.rate_per_s = 1;
  cfg.rate_burst = 2;
  LlmClient client(cfg, h.deps());
  EXPECT_TRUE(client.chat(simple_request()).ok());
  EXPECT_TRUE(client.chat(simple_request()).ok());
  ChatResult refused = client.chat(simple_request());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error->code, ErrorCode::RATE_LIMITED);
  EXPECT_EQ(refused.error->attempts, 0u);
  EXPECT_TRUE(refused.error->retryable);
  EXPECT_NE(refused.error->message.find("1/s, burst 2"), std::string::npos)
      << refused.error->message;
  EXPECT_EQ(fake.requests().Size(), 2u);
  h.now += 1100ms;  // one token refilled
  EXPECT_TRUE(client.chat(simple_request()).ok());
  EXPECT_EQ(fake.requests().Size(), 3u);
}

TEST(LlmClientFailure, ThrowingDeltaCallbackEndsTheCallCleanly) {
  FakeLlm fake(R"({"turns": [{"say": "one two three"}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama), h.deps());
  ChatResult r = client.chat(simple_request(true), [](std::string_view, DeltaKind) {
    throw std::runtime_error("consumer went away");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::INTERNAL);
  EXPECT_NE(r.error->message.find("consumer went away"), std::string::npos);
  EXPECT_TRUE(client.chat(simple_request()).ok());  // the client is still usable
}

TEST(LlmClientFailure, BadRequestsAreRefusedLocally) {
  Harness h;
  LlmConfig cfg;
  cfg.base_url = "127.0.0.1:9";  // never contacted
  LlmClient client(cfg, h.deps());
  ChatRequest req = simple_request();
  ChatResult no_model = client.chat(req);
  ASSERT_FALSE(no_model.ok());
  EXPECT_EQ(no_model.error->code, ErrorCode::BAD_REQUEST);
  req.model = "m";
  req.messages.push_back({Role::assistant, "", {{"", "execute_code", "{not json"}}, "", "", ""});
  ChatResult bad_args = client.chat(req);
  ASSERT_FALSE(bad_args.ok());
  EXPECT_EQ(bad_args.error->code, ErrorCode::BAD_REQUEST);
  req.messages.pop_back();
  req.trace_id = "bad\r\nInjected: yes";
  ChatResult bad_trace = client.chat(req);
  ASSERT_FALSE(bad_trace.ok());
  EXPECT_EQ(bad_trace.error->code, ErrorCode::BAD_REQUEST);
}

// ---- shutdown, threads, configuration helpers -----------------------------------------------

TEST(LlmClient, ShutdownAbandonsTheCallInFlight) {
  FakeLlm fake(R"({"turns": [{"stall": 20, "say": "never"}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama));
  ChatResult r;
  auto t0 = std::chrono::steady_clock::now();
  std::thread caller([&] { r = client.chat(simple_request()); });
  std::this_thread::sleep_for(300ms);
  client.shutdown();
  caller.join();
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::SHUTTING_DOWN);
  EXPECT_TRUE(r.error->retryable);
  EXPECT_LT(ms, 1500);  // the transfer loop asks every 100 ms
  ChatResult later = client.chat(simple_request());
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.error->code, ErrorCode::SHUTTING_DOWN);
  EXPECT_EQ(later.error->attempts, 0u);
}

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The caller's cancel ends a call stalled at the server within ~100 ms (not at the end of the
// stall, not at the next retry) and closes its connection: the server sees the hang-up. The
// same client then serves the next call.
TEST(LlmClient, CallerCancelClosesTheConnectionPromptly) {
  FakeLlm fake(R"({"turns": [{"stall": {"seconds": 20, "times": 1}, "say": "late"}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::ollama));
  std::atomic<bool> cancel{false};
  ChatResult r;
  std::thread caller([&] { r = client.chat(simple_request(), {}, [&] { return cancel.load(); }); });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (fake.requests().Size() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(fake.requests().Size(), 1u);
  std::this_thread::sleep_for(200ms);  // well into the stall
  auto t0 = std::chrono::steady_clock::now();
  double cancelled_at = wall_now();
  cancel = true;
  caller.join();
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::CANCELLED) << r.error->message;
  EXPECT_FALSE(r.error->retryable);
  EXPECT_EQ(r.error->attempts, 1u);
  EXPECT_LT(ms, 1000);
  // The server saw the connection close, well before its 20 s stall ended.
  deadline = std::chrono::steady_clock::now() + 3s;
  while (fake.hangups().Size() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  auto hangups = fake.hangups();
  ASSERT_EQ(hangups.Size(), 1u) << "the server never saw the client hang up";
  EXPECT_LT(hangups[0]["time"].GetDouble() - cancelled_at, 1.0);
  EXPECT_STREQ(hangups[0]["chat_path"].GetString(), "/api/chat");
  // Still usable: the stall is used up, so the same conversation is answered at once.
  auto t1 = std::chrono::steady_clock::now();
  ChatResult again = client.chat(simple_request());
  ASSERT_TRUE(again.ok()) << again.error->message;
  EXPECT_EQ(again.reply->message.content, "late");
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 5s);
  // A cancel that comes first never reaches the server.
  ChatResult before = client.chat(simple_request(), {}, [] { return true; });
  ASSERT_FALSE(before.ok());
  EXPECT_EQ(before.error->code, ErrorCode::CANCELLED);
  EXPECT_EQ(before.error->attempts, 0u);
  EXPECT_EQ(fake.requests().Size(), 2u);
}

// Cancelled mid-stream (here by the delta callback itself, after the first piece): the stream
// stops while the server paces it, and what already arrived is all the caller got.
TEST(LlmClient, CancelMidStreamHangsUpOnTheServer) {
  FakeLlm fake(R"({"turns": [{"say": "one two three four", "chunk_delay": 5}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::openai));
  std::atomic<bool> cancel{false};
  std::string seen;
  auto t0 = std::chrono::steady_clock::now();
  ChatResult r = client.chat(
      simple_request(true),
      [&](std::string_view d, DeltaKind) {
        seen += d;
        if (!seen.empty()) cancel = true;
      },
      [&] { return cancel.load(); });
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::CANCELLED) << r.error->message;
  EXPECT_EQ(seen, "one ");
  EXPECT_LT(ms, 2000);  // not the 5 s pause before "two"
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (fake.hangups().Size() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  auto hangups = fake.hangups();
  ASSERT_EQ(hangups.Size(), 1u) << "the server never saw the client hang up";
  EXPECT_LT(hangups[0]["waited_s"].GetDouble(), 1.5);
}

TEST(LlmClient, OneClientSharedByThreadsSerialisesCalls) {
  FakeLlm fake(R"({"turns": [{"say": "a b c d", "chunk_delay": 0.005}]})");
  Harness h;
  LlmClient client(h.config(fake, Api::openai));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        std::string got;
        ChatResult r = client.chat(simple_request((t + i) % 2 == 0),
                                   [&](std::string_view d, DeltaKind) { got += d; });
        if (r.ok() && r.reply->message.content == "a b c d") ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 20);
  EXPECT_EQ(fake.requests().Size(), 20u);
}

TEST(LlmClient, TwentyClientsAtOnceAllServed) {
  FakeLlm fake(R"({"turns": [{"say": "{{last_user}} done", "chunk_delay": 0.01}]})");
  Harness h;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 20; ++t) {
    threads.emplace_back([&, t] {
      LlmClient client(h.config(fake, t % 2 ? Api::openai : Api::ollama));
      ChatRequest req = simple_request(true);
      req.messages[1].content = "task " + std::to_string(t);
      std::string seen;
      ChatResult r = client.chat(req, [&](std::string_view d, DeltaKind) { seen += d; });
      if (r.ok() && seen == req.messages[1].content + " done") ++ok;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 20);
  EXPECT_EQ(fake.requests().Size(), 20u);
}

TEST(LlmClient, OllamaHostBecomesABaseUrl) {
  EXPECT_EQ(base_url_from_ollama_host(""), "http://localhost:11434");
  EXPECT_EQ(base_url_from_ollama_host("127.0.0.1"), "http://127.0.0.1:11434");
  EXPECT_EQ(base_url_from_ollama_host("gpu-box:8080"), "http://gpu-box:8080");
  EXPECT_EQ(base_url_from_ollama_host("http://gpu-box/"), "http://gpu-box:11434");
  EXPECT_EQ(base_url_from_ollama_host("https://llm.example"), "https://llm.example");
  EXPECT_EQ(base_url_from_ollama_host("[::1]"), "http://[::1]:11434");
  EXPECT_EQ(base_url_from_ollama_host("http://[::1]:9000"), "http://[::1]:9000");
  Api api;
  EXPECT_TRUE(parse_api("openai", &api));
  EXPECT_EQ(api, Api::openai);
  EXPECT_FALSE(parse_api("vllm", &api));
}

// ---- the fixture's example scripts ------------------------------------------------------------

std::string example(const char* name) { return source_dir() + "/tests/fixtures/" + name; }

TEST(FakeLlmExamples, NonceFlowSendsCodeWithTheNonceAndEchoesTheRealOutput) {
  FakeLlm fake(example("fake_llm_nonce.json"), true);
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  ChatRequest req = simple_request();
  req.messages[1].content = "Print the SHA-256 of the nonce 5eed1234abcd in hex";
  ChatResult first = client.chat(req);
  ASSERT_TRUE(first.ok()) << first.error->message;
  ASSERT_EQ(first.reply->message.tool_calls.size(), 1u);
  auto args = parse(first.reply->message.tool_calls[0].arguments_json);
  EXPECT_NE(std::string(args["code"].GetString()).find("b'5eed1234abcd'"), std::string::npos);
  req.messages.push_back(first.reply->message);
  const std::string call_id = first.reply->message.tool_calls[0].id;
  req.messages.push_back({Role::tool, "c0ffee\n", {}, call_id, "", ""});
  ChatResult second = client.chat(req);
  ASSERT_TRUE(second.ok()) << second.error->message;
  EXPECT_EQ(second.reply->message.content, "The SHA-256 of the nonce is c0ffee.");
}

TEST(FakeLlmExamples, ToolCallsWrittenInTextOnly) {
  FakeLlm fake(example("fake_llm_text_tool_calls.json"), true);
  Harness h;
  LlmClient client(h.config(fake, Api::ollama), h.deps());
  ChatRequest req = simple_request(true);
  ChatResult first = client.chat(req, [](std::string_view, DeltaKind) {});
  ASSERT_TRUE(first.ok()) << first.error->message;
  EXPECT_TRUE(first.reply->message.tool_calls.empty());
  EXPECT_EQ(first.reply->done_reason, "stop");
  EXPECT_EQ(first.reply->message.content,
            "Here is the call:\n```json\n{\"name\": \"execute_code\", \"arguments\": "
            "{\"language\": \"python\", \"code\": \"print(2+2)\"}}\n```");
  req.messages.push_back(first.reply->message);
  req.messages.push_back({Role::user, "Tool output: 4", {}, "", "", ""});
  req.messages.push_back({Role::tool, "4\n", {}, "", "execute_code", ""});
  ChatResult second = client.chat(req, [](std::string_view, DeltaKind) {});
  ASSERT_TRUE(second.ok()) << second.error->message;
  EXPECT_EQ(second.reply->message.content,
            "<tool_call><name>execute_code</name><arguments><language>bash</language>"
            "<code>echo 4</code></arguments></tool_call>");
}

TEST(FakeLlmExamples, MisbehaviourScriptIsSurvivedWithRetries) {
  FakeLlm fake(example("fake_llm_misbehave.json"), true);
  Harness h;
  LlmConfig cfg = h.config(fake, Api::ollama);
  cfg.timeout_ms = 400;  // shorter than the 1 s stall
  cfg.max_attempts = 3;
  LlmClient client(cfg, h.deps());
  ChatRequest req = simple_request();
  ChatResult r = client.chat(req);  // 500, 500, then the stall: timed out
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_TIMED_OUT);
  EXPECT_EQ(r.error->attempts, 3u);
  r = client.chat(req);  // the stall was once: now the call
  ASSERT_TRUE(r.ok()) << r.error->message;
  req.messages.push_back(r.reply->message);
  req.messages.push_back({Role::tool, "1\n", {}, "", "execute_code", ""});
  r = client.chat(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, ErrorCode::LLM_BAD_RESPONSE);
  r = client.chat(req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  req.messages.push_back(r.reply->message);
  req.messages.push_back({Role::tool, "2\n", {}, "", "execute_code", ""});
  h.sleeps_ms.clear();
  r = client.chat(req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.reply->message.content, "finished after 2");
  EXPECT_EQ(h.sleeps_ms, std::vector<long>{1000});
}

TEST(FakeLlmExamples, MaxIterationsScriptNeverStops) {
  FakeLlm fake(example("fake_llm_max_iterations.json"), true);
  Harness h;
  LlmClient client(h.config(fake, Api::openai), h.deps());
  ChatRequest req = simple_request();
  for (int i = 0; i < 4; ++i) {
    ChatResult r = client.chat(req);
    ASSERT_TRUE(r.ok()) << r.error->message;
    ASSERT_EQ(r.reply->message.tool_calls.size(), 1u) << "iteration " << i;
    req.messages.push_back(r.reply->message);
    req.messages.push_back({Role::tool, "again\n", {}, r.reply->message.tool_calls[0].id, "", ""});
  }
}

// ---- Cap'n Proto conversions ----------------------------------------------------------------

TEST(LlmClientCapnp, RequestAndReplyRoundTrip) {
  ChatRequest req = simple_request(true);
  req.model = "m";
  req.temperature = 0.25f;
  req.max_tokens = 64;
  req.messages.push_back({Role::assistant, "", {{"c1", "execute_code", R"({"a":1})"}}, "", "", ""});
  req.messages.push_back({Role::tool, "out", {}, "c1", "execute_code", ""});
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<nv::schema::ChatRequest>();
  to_capnp(req, b);
  EXPECT_EQ(b.asReader().getVersion(), nv::schema::SCHEMA_VERSION);
  ChatRequest back = from_capnp(b.asReader());
  EXPECT_EQ(back.trace_id, req.trace_id);
  EXPECT_EQ(back.model, "m");
  EXPECT_TRUE(back.stream);
  EXPECT_FLOAT_EQ(back.temperature, 0.25f);
  EXPECT_EQ(back.max_tokens, 64u);
  ASSERT_EQ(back.messages.size(), 4u);
  EXPECT_EQ(back.messages[2].role, Role::assistant);
  EXPECT_EQ(back.messages[2].tool_calls[0].arguments_json, R"({"a":1})");
  EXPECT_EQ(back.messages[3].tool_call_id, "c1");
  EXPECT_EQ(back.messages[3].tool_name, "execute_code");
  EXPECT_EQ(back.tools[0].parameters_json, req.tools[0].parameters_json);

  ChatReply reply;
  reply.model = "m";
  reply.message = {Role::assistant, "hi", {{"c2", "execute_code", "{}"}}, "", "", ""};
  reply.done_reason = "tool_calls";
  reply.prompt_tokens = 3;
  reply.completion_tokens = 4;
  reply.load_duration_ns = 5;
  reply.total_duration_ns = 6;
  reply.wall_ms = 7.5;
  reply.attempts = 2;
  capnp::MallocMessageBuilder rb;
  auto rbld = rb.initRoot<nv::schema::ChatReply>();
  to_capnp(reply, "trace-9", rbld);
  EXPECT_EQ(std::string(rbld.asReader().getTraceId().cStr()), "trace-9");
  ChatReply rback = from_capnp(rbld.asReader());
  EXPECT_EQ(rback.message.tool_calls[0].id, "c2");
  EXPECT_EQ(rback.done_reason, "tool_calls");
  EXPECT_EQ(rback.completion_tokens, 4u);
  EXPECT_EQ(rback.total_duration_ns, 6u);
  EXPECT_DOUBLE_EQ(rback.wall_ms, 7.5);
  EXPECT_EQ(rback.attempts, 2u);

  capnp::MallocMessageBuilder eb;
  auto err = eb.initRoot<nv::schema::Error>();
  to_capnp(LlmError{ErrorCode::MODEL_NOT_FOUND, "run `ollama pull m`", false, 404, 1, 1.0}, err);
  EXPECT_EQ(err.asReader().getCode(), ErrorCode::MODEL_NOT_FOUND);
  EXPECT_EQ(std::string(err.asReader().getService().cStr()), "llm-gateway");
}

// What real streams contain, over both formats: bodies written 3 bytes at a time (lines and
// JSON cut across reads), CRLF line ends, SSE ": keep-alive" comments, reasoning in the API's
// field and in <think> tags, two tool calls whose arguments arrive in pieces by index, the
// usage chunk with empty choices, [DONE] / Ollama's final done object with its timings.
TEST(LlmClientStreams, RealStreamShapesOverBothFormats) {
  const char* script = R"js({"turns": [{
    "thinking": "2**20 first, then 3**5",
    "say": "<think>tags too</think>\nRunning both.",
    "split_bytes": 3, "crlf": true, "keep_alive": true,
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "load_duration_ns": 5000,
              "total_duration_ns": 9000},
    "tool_calls": [
      {"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}},
      {"name": "execute_code", "arguments": {"language": "javascript", "code": "console.log(3**5)"}}]
  }]})js";
  for (Api api : {Api::ollama, Api::openai}) {
    SCOPED_TRACE(std::string(api_name(api)));
    FakeLlm fake(script);
    Harness h;
    LlmClient client(h.config(fake, api), h.deps());
    std::string text, thinking;
    size_t pieces = 0;
    ChatResult r = client.chat(simple_request(true), [&](std::string_view d, DeltaKind k) {
      (k == DeltaKind::thinking ? thinking : text).append(d);
      ++pieces;
    });
    ASSERT_TRUE(r.ok()) << r.error->message;
    EXPECT_EQ(text, "Running both.");
    EXPECT_EQ(thinking, "2**20 first, then 3**5tags too");
    EXPECT_GE(pieces, 6u);
    EXPECT_EQ(r.reply->message.content, "Running both.");
    EXPECT_EQ(r.reply->message.thinking, "2**20 first, then 3**5\ntags too");
    ASSERT_EQ(r.reply->message.tool_calls.size(), 2u);
    EXPECT_EQ(parse(r.reply->message.tool_calls[0].arguments_json)["code"].GetString(),
              std::string("print(2**20)"));
    EXPECT_EQ(parse(r.reply->message.tool_calls[1].arguments_json)["code"].GetString(),
              std::string("console.log(3**5)"));
    EXPECT_EQ(r.reply->done_reason, "tool_calls");
    EXPECT_EQ(r.reply->prompt_tokens, 11u);
    EXPECT_EQ(r.reply->completion_tokens, 7u);
    if (api == Api::ollama) {
      EXPECT_EQ(r.reply->total_duration_ns, 9000u);
    }
    EXPECT_GT(r.reply->first_token_ms, 0);
    EXPECT_LE(r.reply->first_token_ms, r.reply->wall_ms);
  }
}

// The reasoning goes back in the history as each API expects: Ollama's message.thinking; an
// OpenAI reasoning_content only on an assistant message that carries tool calls.
TEST(LlmClientStreams, ReasoningInTheHistory) {
  for (Api api : {Api::ollama, Api::openai}) {
    SCOPED_TRACE(std::string(api_name(api)));
    FakeLlm fake(R"({"turns": [{"say": "ok"}]})");
    Harness h;
    LlmClient client(h.config(fake, api), h.deps());
    ChatRequest req = simple_request(false);
    Message with_call{Role::assistant, "", {{"call_1", "execute_code", "{}"}}, "", "",
                      "why I call it"};
    Message plain{Role::assistant, "an answer", {}, "", "", "why I answer"};
    req.messages.push_back(with_call);
    req.messages.push_back({Role::tool, "1", {}, "call_1", "execute_code", ""});
    req.messages.push_back(plain);
    req.messages.push_back({Role::user, "again", {}, "", "", ""});
    ASSERT_TRUE(client.chat(req).ok());
    auto reqs = fake.requests();
    const auto& msgs = reqs[0]["body"]["messages"];
    const auto& a = msgs[msgs.Size() - 4];
    const auto& b = msgs[msgs.Size() - 2];
    if (api == Api::ollama) {
      EXPECT_STREQ(a["thinking"].GetString(), "why I call it");
      EXPECT_STREQ(b["thinking"].GetString(), "why I answer");
    } else {
      EXPECT_STREQ(a["reasoning_content"].GetString(), "why I call it");
      EXPECT_FALSE(b.HasMember("reasoning_content"));
    }
  }
}

}  // namespace
}  // namespace nv::llm
