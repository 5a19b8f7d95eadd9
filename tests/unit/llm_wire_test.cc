// llm_wire_test.cc — the Ollama and OpenAI reply parsers (services/llm-gateway/*_api.cc) on the
// inputs the fuzz targets (tests/fuzz) found faults with, and on a second input of each kind.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "llm_client_wire.h"

namespace nv::llm::wire {
namespace {

std::string corpus_file(const std::string& rel) {
  std::ifstream in(std::string(std::getenv("NV_SOURCE_DIR") ? std::getenv("NV_SOURCE_DIR")
                                                            : NV_TEST_SOURCE_DIR) +
                       "/tests/fuzz/corpus/" + rel,
                   std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Streamed {
  std::optional<LlmError> error;
  ChatReply reply;
};

// Feeds `body` to a stream parser cut at the given sizes (the rest in one piece), then finish().
Streamed stream(const WireApi& api, std::string_view body, std::vector<size_t> cuts) {
  Streamed out;
  auto p = api.stream_parser(nullptr);
  size_t at = 0;
  for (size_t n : cuts) {
    if (!out.error) out.error = p->feed(body.substr(at, n));
    at += n;
  }
  if (!out.error && at < body.size()) out.error = p->feed(body.substr(at));
  if (!out.error) out.error = p->finish(out.reply);
  return out;
}

// ---- numbers past the target type: a cast of an out-of-range double is undefined behaviour;
//      the parsers saturate instead.

TEST(LlmWire, OllamaDurationPastUint64Saturates) {
  // tests/fuzz/corpus/ollama_chat/crash-duration-past-uint64 (found by ollama_chat).
  ChatReply r;
  auto err =
      make_ollama_api()->parse_chat_reply(corpus_file("ollama_chat/crash-duration-past-uint64"), r);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(r.total_duration_ns, UINT64_MAX);
  EXPECT_EQ(r.message.content, "Hello! How are you today?");
}

TEST(LlmWire, OllamaCountsSaturateAtUint32) {
  ChatReply r;
  auto err = make_ollama_api()->parse_chat_reply(
      R"({"model":"m","message":{"role":"assistant","content":"x"},"done":true,)"
      R"("prompt_eval_count":4294967301,"eval_count":1e300,"load_duration":-5})",
      r);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(r.prompt_tokens, UINT32_MAX);  // 2^32 + 5 was 5 before
  EXPECT_EQ(r.completion_tokens, UINT32_MAX);
  EXPECT_EQ(r.load_duration_ns, 0u);  // negative: the fallback
}

TEST(LlmWire, OllamaStreamNumberPastUint64Saturates) {
  // tests/fuzz/corpus/ollama_stream/crash-number-past-uint64 (found by ollama_stream).
  auto body = corpus_file("ollama_stream/crash-number-past-uint64");
  auto s = stream(*make_ollama_api(), body, {});
  ASSERT_FALSE(s.error) << s.error->message;
  EXPECT_EQ(s.reply.done_reason, "tool_calls");
  ASSERT_EQ(s.reply.message.tool_calls.size(), 1u);
}

TEST(LlmWire, OpenAiTimingsAndUsagePastRangeSaturate) {
  ChatReply r;
  auto err = make_openai_api()->parse_chat_reply(
      R"({"choices":[{"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":1e20,"completion_tokens":7},)"
      R"("timings":{"prompt_ms":1e300,"predicted_ms":1.5}})",
      r);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(r.total_duration_ns, UINT64_MAX);
  EXPECT_EQ(r.prompt_tokens, UINT32_MAX);
  EXPECT_EQ(r.completion_tokens, 7u);
}

// ---- a streamed answer may not depend on where the body was cut (openai_stream found that
//      leading blank pieces were dropped before the parser knew SSE from plain JSON).

TEST(LlmWire, OpenAiStreamLeadingBlankPieceIsKept) {
  // tests/fuzz/corpus/openai_stream/crash-split-leading-blank: two spaces, then not SSE.
  auto body = corpus_file("openai_stream/crash-split-leading-blank");
  auto whole = stream(*make_openai_api(), body, {});
  auto cut = stream(*make_openai_api(), body, {1, 2});
  ASSERT_TRUE(whole.error);
  ASSERT_TRUE(cut.error);
  EXPECT_EQ(whole.error->code, ErrorCode::LLM_BAD_RESPONSE);
  EXPECT_EQ(whole.error->message, R"(the answer is not an SSE stream; got:   "id"event: error)");
  EXPECT_EQ(cut.error->message, whole.error->message);
}

TEST(LlmWire, OpenAiStreamBlankFirstLineThenIndentedDataIsRefusedEitherWay) {
  // "\n " arrives alone; the next line is " data: ..." (indented: not an SSE field).
  std::string body =
      "\n data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
  auto whole = stream(*make_openai_api(), body, {});
  auto cut = stream(*make_openai_api(), body, {2});
  ASSERT_TRUE(whole.error);
  ASSERT_TRUE(cut.error) << "the cut body was read as SSE: " << cut.reply.message.content;
  EXPECT_EQ(cut.error->message, whole.error->message);
  EXPECT_EQ(whole.error->message.rfind("the answer is not an SSE stream; got:  data: ", 0), 0u)
      << whole.error->message;
}

TEST(LlmWire, OpenAiStreamLeadingBlanksBeforeJsonBody) {
  // A non-streamed JSON body after blank pieces is still read whole.
  std::string body =
      "\r\n  {\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},"
      "\"finish_reason\":\"stop\"}]}";
  auto cut = stream(*make_openai_api(), body, {1, 1, 2});
  ASSERT_FALSE(cut.error) << cut.error->message;
  EXPECT_EQ(cut.reply.message.content, "ok");
  EXPECT_EQ(cut.reply.done_reason, "stop");
}

// ---- nesting: RapidJSON recurses once per level; a reply of a million '[' overflowed the
//      gateway's stack (found by ollama_chat: tests/fuzz/corpus/ollama_chat/crash-deep-nesting).

TEST(LlmWire, OllamaDeeplyNestedReplyIsABadResponse) {
  ChatReply r;
  std::string body = R"({"model":"m","message":)" + std::string(1'000'000, '[');
  auto err = make_ollama_api()->parse_chat_reply(body, r);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code, ErrorCode::LLM_BAD_RESPONSE);
  EXPECT_EQ(err->message.rfind(
                R"(Ollama answer is not JSON (nested deeper than 128 levels): {"model":"m",)", 0),
            0u)
      << err->message;
}

TEST(LlmWire, OpenAiDeeplyNestedStreamEventIsABadResponse) {
  std::string body = "data: {\"choices\":" + std::string(1'000'000, '{') + "\n\n";
  auto s = stream(*make_openai_api(), body, {});
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->code, ErrorCode::LLM_BAD_RESPONSE);
  EXPECT_EQ(s.error->message.rfind("SSE event 1 is not a JSON object: {\"choices\":{{{", 0), 0u)
      << s.error->message;
}

TEST(LlmWire, NestingAtTheBoundIsRead) {
  // 128 levels in all: the reply object, message, tool_calls, the call, function, arguments
  // (6), then 122 nested arrays in one argument.
  std::string deep = std::string(122, '[') + std::string(122, ']');
  ChatReply r;
  auto err = make_ollama_api()->parse_chat_reply(
      R"({"message":{"role":"assistant","content":"","tool_calls":[{"function":)"
      R"({"name":"f","arguments":{"x":)" +
          deep + "}}}]},\"done\":true}",
      r);
  ASSERT_FALSE(err) << err->message;
  ASSERT_EQ(r.message.tool_calls.size(), 1u);
  EXPECT_EQ(r.message.tool_calls[0].arguments_json, "{\"x\":" + deep + "}");
  // One level more is refused.
  err = make_ollama_api()->parse_chat_reply(
      R"({"message":{"role":"assistant","content":"","tool_calls":[{"function":)"
      R"({"name":"f","arguments":{"x":[)" +
          deep + "]}}}]},\"done\":true}",
      r);
  ASSERT_TRUE(err);
  EXPECT_NE(err->message.find("nested deeper than 128 levels"), std::string::npos);
}

}  // namespace
}  // namespace nv::llm::wire
