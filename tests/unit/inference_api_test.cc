// The inference bridge's HTTP side (services/sandbox-executor/inference_api.h, inference_bridge.h
// serve()): request parsing and validation, the policy (403 / 429), and the answers in the wire
// formats of the APIs' own docs. Request bodies are the docs' examples:
//   Ollama  docs/api.md "Generate a chat completion": {"model": "llama3.2", "messages": [{"role":
//           "user", "content": "why is the sky blue?"}]} (streams by default)
//   OpenAI  API reference, Chat → Create: {"model": "gpt-4o", "messages": [{"role": "developer",
//           "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]}
#include <gtest/gtest.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nv/schema/guest.capnp.h>

#include "guest/protocol/frame.h"

#include "inference_api.h"
#include "inference_bridge.h"

namespace nv::exec {
namespace {

using inference::Api;
using inference::ChatCall;
using inference::HttpAnswer;

constexpr const char* kOllamaExample =
    R"({"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]})";
constexpr const char* kOpenAiExample =
    R"({"model": "gpt-4o", "messages": [{"role": "developer", "content": "You are a helpful )"
    R"(assistant."}, {"role": "user", "content": "Hello!"}]})";

rapidjson::Document json(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.c_str());
  EXPECT_FALSE(d.HasParseError()) << s;
  return d;
}

TEST(InferenceApi, OllamaDocExampleParsesAndStreamsByDefault) {
  ChatCall c;
  HttpAnswer err;
  ASSERT_TRUE(inference::parse_chat(Api::ollama, kOllamaExample, c, err)) << err.body;
  EXPECT_EQ(c.model, "llama3.2");
  ASSERT_EQ(c.messages.size(), 1u);
  EXPECT_EQ(c.messages[0].role, "user");
  EXPECT_EQ(c.messages[0].content, "why is the sky blue?");
  EXPECT_TRUE(c.stream);
  EXPECT_EQ(c.max_tokens, 0u);
  EXPECT_LT(c.temperature, 0);
  ASSERT_TRUE(inference::parse_chat(
      Api::ollama,
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":false,)"
      R"("options":{"temperature":0.5,"num_predict":42}})",
      c, err));
  EXPECT_FALSE(c.stream);
  EXPECT_DOUBLE_EQ(c.temperature, 0.5);
  EXPECT_EQ(c.max_tokens, 42u);
}

TEST(InferenceApi, OpenAiDocExampleParsesDeveloperAsSystemAndDoesNotStream) {
  ChatCall c;
  HttpAnswer err;
  ASSERT_TRUE(inference::parse_chat(Api::openai, kOpenAiExample, c, err)) << err.body;
  EXPECT_EQ(c.model, "gpt-4o");
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[0].role, "system");
  EXPECT_EQ(c.messages[0].content, "You are a helpful assistant.");
  EXPECT_EQ(c.messages[1].content, "Hello!");
  EXPECT_FALSE(c.stream);
  // Content parts (type "text") are joined; max_completion_tokens and stream_options read.
  ASSERT_TRUE(
      inference::parse_chat(Api::openai,
                            R"({"model":"m","stream":true,"stream_options":{"include_usage":true},)"
                            R"("max_completion_tokens":7,"messages":[{"role":"user","content":[)"
                            R"({"type":"text","text":"a"},{"type":"text","text":"b"}]}]})",
                            c, err));
  EXPECT_EQ(c.messages[0].content, "ab");
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_EQ(c.max_tokens, 7u);
}

TEST(InferenceApi, MalformedBodiesAre400AndOversizedIs413) {
  ChatCall c;
  HttpAnswer err;
  for (const char* bad : {"{\"model\": \"m\", \"messages\": [", "[]", "{\"messages\":[]}",
                          R"({"model":"m","messages":[]})",
                          R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})",
                          R"({"model":"m","messages":[{"role":"user","content":5}]})",
                          R"({"model":"m","messages":[{"role":"user"}],"stream":"yes"})"}) {
    EXPECT_FALSE(inference::parse_chat(Api::ollama, bad, c, err)) << bad;
    EXPECT_EQ(err.status, 400) << bad;
    auto d = json(err.body);
    ASSERT_TRUE(d.IsObject() && d.HasMember("error") && d["error"].IsString()) << err.body;
  }
  EXPECT_FALSE(inference::parse_chat(Api::openai, "{\"model\": 1}", c, err));
  EXPECT_EQ(err.status, 400);
  auto d = json(err.body);
  EXPECT_STREQ(d["error"]["type"].GetString(), "invalid_request_error");
  // A deep nest is refused before RapidJSON recurses into it.
  EXPECT_FALSE(inference::parse_chat(Api::openai, std::string(100000, '['), c, err));
  EXPECT_EQ(err.status, 400);
  std::string big = R"({"model":"m","messages":[{"role":"user","content":")" +
                    std::string(inference::kMaxBodyBytes, 'x') + "\"}]}";
  EXPECT_FALSE(inference::parse_chat(Api::openai, big, c, err));
  EXPECT_EQ(err.status, 413);
}

TEST(InferenceApi, PolicyRefusesOtherModels403AndSpentBudget429) {
  ChatCall c;
  HttpAnswer err;
  ASSERT_TRUE(inference::parse_chat(Api::openai, kOpenAiExample, c, err));
  sandbox::Inference pol{true, {"llama3.2", "qwen3"}, 100};
  std::string model;
  EXPECT_FALSE(inference::admit(c, pol, 0, model, err));
  EXPECT_EQ(err.status, 403);
  auto d = json(err.body);
  EXPECT_STREQ(d["error"]["code"].GetString(), "model_not_found");
  ASSERT_TRUE(inference::parse_chat(Api::ollama, kOllamaExample, c, err));
  EXPECT_TRUE(inference::admit(c, pol, 99, model, err));
  EXPECT_EQ(model, "llama3.2");
  EXPECT_FALSE(inference::admit(c, pol, 100, model, err));
  EXPECT_EQ(err.status, 429);
  EXPECT_EQ(json(err.body)["error"].GetString(),
            std::string("the sandbox's inference token budget of 100 tokens is spent (100 used)"));
  // An empty allow-list: every call goes to the gateway's default model ("").
  pol.models.clear();
  EXPECT_TRUE(inference::admit(c, pol, 0, model, err));
  EXPECT_EQ(model, "");
}

TEST(InferenceApi, RoutesAndMethods) {
  Api api;
  HttpAnswer err;
  EXPECT_EQ(inference::route("POST", "/api/chat", api, err), inference::Route::chat);
  EXPECT_EQ(api, Api::ollama);
  EXPECT_EQ(inference::route("POST", "/v1/chat/completions", api, err), inference::Route::chat);
  EXPECT_EQ(api, Api::openai);
  EXPECT_EQ(inference::route("GET", "/v1/models", api, err), inference::Route::models);
  EXPECT_EQ(inference::route("GET", "/api/tags", api, err), inference::Route::models);
  EXPECT_EQ(inference::route("GET", "/api/chat", api, err), inference::Route::error);
  EXPECT_EQ(err.status, 405);
  EXPECT_EQ(inference::route("POST", "/api/generate", api, err), inference::Route::error);
  EXPECT_EQ(err.status, 404);
}

TEST(InferenceApi, AnswersHaveTheDocsShapes) {
  inference::ChatAnswer a;
  a.model = "llama3.2";
  a.content = "Hello! How are you today?";
  a.done_reason = "stop";
  a.prompt_tokens = 26;
  a.completion_tokens = 298;
  a.total_duration_ns = 5191566416;
  a.load_duration_ns = 2154458;
  EXPECT_EQ(inference::ollama_reply(a, "2023-12-12T14:13:43.416799000Z"),
            R"({"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799000Z",)"
            R"("message":{"role":"assistant","content":"Hello! How are you today?"},)"
            R"("done":true,"done_reason":"stop","total_duration":5191566416,)"
            R"("load_duration":2154458,"prompt_eval_count":26,"eval_count":298})");
  a.model = "gpt-4o-mini";
  a.content = "\n\nHello there, how may I assist you today?";
  a.prompt_tokens = 9;
  a.completion_tokens = 12;
  EXPECT_EQ(inference::openai_reply(a, "chatcmpl-123", 1677652288),
            R"({"id":"chatcmpl-123","object":"chat.completion","created":1677652288,)"
            R"("model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",)"
            R"("content":"\n\nHello there, how may I assist you today?"},"logprobs":null,)"
            R"("finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,)"
            R"("total_tokens":21}})");
  EXPECT_EQ(inference::openai_chunk("chatcmpl-123", 1694268190, "gpt-4o-mini", "", "Hello", ""),
            "data: "
            R"({"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,)"
            R"("model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},)"
            R"("logprobs":null,"finish_reason":null}]})"
            "\n\n");
  EXPECT_EQ(inference::openai_chunk("c", 1, "m", "", "", "stop"),
            "data: "
            R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":)"
            R"([{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})"
            "\n\n");
  EXPECT_EQ(inference::ollama_delta("llama3.2", "2023-08-04T08:52:19.385406455Z", "The", ""),
            R"({"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455Z",)"
            R"("message":{"role":"assistant","content":"The"},"done":false})"
            "\n");
  EXPECT_EQ(inference::rfc3339(1691139139385406455), "2023-08-04T08:52:19.385406455Z");
}

// serve(): the whole request path with a fake llm (exact frames, token charging).
struct Fake {
  sandbox::Inference policy{true, {"llama3.2"}, 1000};
  uint64_t used = 0;
  InferenceAccount account() {
    InferenceAccount a;
    a.policy = policy;
    a.used = [this] { return used; };
    a.charge = [this](uint64_t n) { used += n; };
    return a;
  }
  LlmRequest seen;
  LlmCall llm() {
    return [this](const LlmRequest& r, const LlmDelta& delta) -> Result<inference::ChatAnswer> {
      seen = r;
      if (r.stream && delta) {
        delta("Hel", "");
        delta("lo", "");
      }
      inference::ChatAnswer a;
      a.model = "llama3.2";
      a.content = "Hello";
      a.prompt_tokens = 10;
      a.completion_tokens = 5;
      a.done_reason = "stop";
      return a;
    };
  }
};

struct Frame {
  int status;
  std::string ctype, data;
  bool last;
};

std::vector<Frame> serve(Fake& f, const std::string& method, const std::string& path,
                         const std::string& body) {
  std::vector<Frame> out;
  auto acc = f.account();
  InferenceBridge::serve(method, path, body, "trace-abc", acc, f.llm(),
                         [&](int s, const std::string& ct, const std::string& d, bool last) {
                           out.push_back({s, ct, d, last});
                           return true;
                         });
  return out;
}

TEST(InferenceBridgeServe, StreamsOllamaNdjsonAndChargesTokens) {
  Fake f;
  auto frames = serve(f, "POST", "/api/chat", kOllamaExample);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].status, 200);
  EXPECT_EQ(frames[0].ctype, "application/x-ndjson");
  EXPECT_EQ(frames[1].status, 0);
  EXPECT_TRUE(frames[2].last);
  EXPECT_EQ(json(frames[0].data)["message"]["content"].GetString(), std::string("Hel"));
  EXPECT_EQ(json(frames[1].data)["message"]["content"].GetString(), std::string("lo"));
  auto fin = json(frames[2].data);
  EXPECT_TRUE(fin["done"].GetBool());
  EXPECT_EQ(fin["eval_count"].GetUint(), 5u);
  EXPECT_EQ(f.used, 15u);
  EXPECT_EQ(f.seen.trace_id, "trace-abc");
  EXPECT_EQ(f.seen.model, "llama3.2");
  EXPECT_EQ(f.seen.max_tokens, 1000u);  // what is left of the budget (below 4096)
}

TEST(InferenceBridgeServe, OpenAiSseEndsWithDoneAnd403For429) {
  Fake f;
  f.policy.models = {"gpt-4o"};
  auto frames =
      serve(f, "POST", "/v1/chat/completions",
            R"({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]})");
  ASSERT_EQ(frames.size(), 5u);  // role chunk, 2 content chunks, finish chunk, [DONE]
  EXPECT_EQ(frames[0].ctype, "text/event-stream");
  EXPECT_EQ(frames[4].data, "data: [DONE]\n\n");
  EXPECT_TRUE(frames[4].last);
  std::string text;
  for (size_t i = 1; i <= 2; ++i) {
    auto d = json(frames[i].data.substr(6));
    text += d["choices"][0]["delta"]["content"].GetString();
  }
  EXPECT_EQ(text, "Hello");
  EXPECT_EQ(f.used, 15u);
  frames = serve(f, "POST", "/v1/chat/completions", kOllamaExample);  // model llama3.2
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].status, 403);
  f.used = 1000;
  frames = serve(f, "POST", "/v1/chat/completions",
                 R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].status, 429);
  EXPECT_EQ(f.used, 1000u);
}

// The host end over a real Unix socket (the VMM's side played by the test): a request frame is
// answered with response frames; a frame the decoder refuses (length 0) ends the bridge's
// thread without touching the process, and the bridge still stops cleanly.
class BridgeSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/tmp/nv-inference-unit-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path_.c_str());
    lfd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    ASSERT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(lfd_, 1), 0);
  }
  void TearDown() override {
    if (cfd_ >= 0) ::close(cfd_);
    ::close(lfd_);
    ::unlink(path_.c_str());
  }
  std::unique_ptr<InferenceBridge> start(Fake& f) {
    auto b = InferenceBridge::start(path_, "trace-sock", f.account(), f.llm(),
                                    std::chrono::milliseconds(2000));
    EXPECT_TRUE(b.ok());
    cfd_ = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
    EXPECT_GE(cfd_, 0);
    return b.ok() ? std::move(b.value()) : nullptr;
  }
  std::string path_;
  int lfd_ = -1, cfd_ = -1;
};

TEST_F(BridgeSocket, RequestFrameGetsResponseFrames) {
  Fake f;
  auto bridge = start(f);
  ASSERT_TRUE(bridge);
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto r = m.initInferenceRequest();
  r.setId(7);
  r.setMethod("GET");
  r.setPath("/api/tags");
  std::string frame = guest::encode_frame(mb);
  ASSERT_EQ(::write(cfd_, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  guest::FrameDecoder dec(1u << 20);
  kj::Array<capnp::word> words;
  char buf[4096];
  while (dec.next(words) != guest::FrameDecoder::Status::frame) {
    ssize_t n = ::read(cfd_, buf, sizeof buf);
    ASSERT_GT(n, 0);
    dec.feed(buf, static_cast<size_t>(n));
  }
  std::string err;
  auto msg = guest::ParsedMessage::parse(std::move(words), err);
  ASSERT_TRUE(msg) << err;
  auto resp = msg->root<schema::HostMessage>().getInferenceResponse();
  EXPECT_EQ(resp.getId(), 7u);
  EXPECT_EQ(resp.getStatus(), 200);
  EXPECT_TRUE(resp.getLast());
  auto d = resp.getData();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.begin()), d.size()),
            R"({"models":[{"name":"llama3.2","model":"llama3.2"}]})");
}

TEST_F(BridgeSocket, BrokenFrameEndsTheBridgeNotTheProcess) {
  Fake f;
  auto bridge = start(f);
  ASSERT_TRUE(bridge);
  const char zero[4] = {0, 0, 0, 0};  // N == 0: the stream is unusable
  ASSERT_EQ(::write(cfd_, zero, 4), 4);
  // The bridge stops reading; our end sees no answer, and the bridge object still ends cleanly.
  pollfd p{cfd_, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 500), 0);
  bridge.reset();
  EXPECT_EQ(f.used, 0u);
}

}  // namespace
}  // namespace nv::exec
