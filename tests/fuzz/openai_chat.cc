// openai_chat — fuzzes the openai reply parsers (services/llm-gateway/openai_api.cc) with a whole
// HTTP body: the chat answer, the model list and the error text read from the same bytes.
//
// Input: one response body as a model server sends it (corpus: the API docs' examples).
// Checked: no crash, leak or UB; a failed parse is a typed LlmError with a message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "llm_client_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto api = nv::llm::wire::make_openai_api();
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  nv::llm::ChatReply reply;
  if (auto err = api->parse_chat_reply(body, reply); err && err->message.empty()) std::abort();
  std::vector<std::string> models;
  if (auto err = api->parse_models(body, &models); err && err->message.empty()) std::abort();
  (void)api->error_text(body);
  return 0;
}
