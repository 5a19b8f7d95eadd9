// reasoning.h — the model's reasoning ("thinking") kept apart from its answer text.
//
// Reasoning models send their thinking three ways:
//   - Ollama /api/chat: message.thinking (docs.ollama.com/capabilities/thinking);
//   - OpenAI-compatible servers: message.reasoning_content (DeepSeek, vLLM, llama.cpp) or
//     message.reasoning (OpenRouter, some gpt-oss servers), and the same keys in stream deltas;
//   - inside the text: "<think>…</think>" (qwen3, deepseek-r1 served raw), also "<thinking>".
// The parsers read the first two; this file handles the third, whole or streamed. Thinking is
// never the answer and never parsed for tool calls; callers show it apart.
#pragma once

#include <string>
#include <string_view>

#include "llm_client.h"

namespace nv::llm {

struct SplitText {
  std::string thinking;  // the reasoning, tags removed ("" when there was none)
  std::string content;   // the text outside the tags, trimmed when a block was removed
};

// Splits `content` into reasoning and answer text:
//   "<think>a</think>\n\nB"  → {"a", "B"};  "<think>a" (cut by the token limit) → {"a", ""};
//   "a</think>B" (the template opened the block in the prompt, as qwen3's does) → {"a", "B"};
//   several blocks are joined; text without tags comes back unchanged.
SplitText split_think_tags(std::string_view content);

// The same split over a stream of content pieces (any split, tags cut across pieces): content
// goes to emit(text, DeltaKind::content), reasoning to emit(text, DeltaKind::thinking), in
// order. A piece that may be the start of a tag is held back until the next feed or finish().
// Whitespace right after a closing tag is dropped, as split_think_tags does.
class ThinkTagStream {
 public:
  void feed(std::string_view piece, const DeltaFn& emit);
  void finish(const DeltaFn& emit);  // flushes what was held back

 private:
  void out(std::string_view text, const DeltaFn& emit);
  std::string held_;
  bool in_think_ = false;
  bool skip_space_ = false;  // after a closing tag
};

}  // namespace nv::llm
