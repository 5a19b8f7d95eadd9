// stream_check.h — the shared body of the two stream targets (ollama_stream, openai_stream).
//
// The body is parsed twice: fed whole, and fed in pieces of 1, 2, 3, ... 17 bytes (splits land
// mid-line, mid-UTF-8 and mid-event). Both runs must agree exactly (the same error code and
// message, or the same reply and the same concatenated text deltas): a stream parser's answer
// may not depend on how TCP cut the body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "llm_client_wire.h"

namespace nv::fuzz {

struct StreamOutcome {
  std::optional<llm::LlmError> error;
  llm::ChatReply reply;
  std::string deltas;    // the content pieces, concatenated
  std::string thinking;  // the reasoning pieces, concatenated
};

inline StreamOutcome run_stream(const llm::wire::WireApi& api, std::string_view body, bool split) {
  StreamOutcome out;
  auto parser = api.stream_parser([&](std::string_view d, llm::DeltaKind kind) {
    (kind == llm::DeltaKind::thinking ? out.thinking : out.deltas).append(d);
  });
  size_t piece = 1;
  for (size_t i = 0; i < body.size() && !out.error;) {
    size_t n = split ? std::min(piece, body.size() - i) : body.size();
    out.error = parser->feed(body.substr(i, n));
    i += n;
    piece = piece % 17 + 1;
  }
  if (!out.error) out.error = parser->finish(out.reply);
  return out;
}

inline bool same_calls(const std::vector<llm::ToolCall>& a, const std::vector<llm::ToolCall>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].id != b[i].id || a[i].name != b[i].name ||
        a[i].arguments_json != b[i].arguments_json) {
      return false;
    }
  }
  return true;
}

inline void check_stream(const llm::wire::WireApi& api, const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  StreamOutcome whole = run_stream(api, body, false);
  StreamOutcome pieces = run_stream(api, body, true);
  if (whole.error.has_value() != pieces.error.has_value()) std::abort();
  if (whole.error) {
    if (whole.error->message.empty()) std::abort();
    if (whole.error->code != pieces.error->code) std::abort();
    if (whole.error->message != pieces.error->message) std::abort();
    return;
  }
  const auto &a = whole.reply, &b = pieces.reply;
  if (a.message.content != b.message.content ||
      !same_calls(a.message.tool_calls, b.message.tool_calls) || a.model != b.model ||
      a.done_reason != b.done_reason || a.prompt_tokens != b.prompt_tokens ||
      a.completion_tokens != b.completion_tokens) {
    std::abort();
  }
  if (a.message.thinking != b.message.thinking) std::abort();
  if (whole.deltas != pieces.deltas || whole.thinking != pieces.thinking) std::abort();
}

}  // namespace nv::fuzz
