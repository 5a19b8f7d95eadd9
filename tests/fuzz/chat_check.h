// chat_check.h — the shared body of the two whole-reply targets (ollama_chat, openai_chat).
//
// One response body goes through the three readers of a WireApi: the chat answer, the model
// list and the error text. Each must return; a failed parse is a typed LlmError with a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "llm_client_wire.h"

namespace nv::fuzz {

inline void check_chat(const llm::wire::WireApi& api, const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  llm::ChatReply reply;
  if (auto err = api.parse_chat_reply(body, reply); err && err->message.empty()) std::abort();
  std::vector<std::string> models;
  if (auto err = api.parse_models(body, &models); err && err->message.empty()) std::abort();
  (void)api.error_text(body);
}

}  // namespace nv::fuzz
