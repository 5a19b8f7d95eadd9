// ollama_chat — fuzzes the ollama reply parsers (services/llm-gateway/ollama_api.cc) with a whole
// HTTP body (corpus: the API docs' examples and the reproducers of faults found).
// Checked (chat_check.h): no crash, leak or UB; a failed parse is a typed LlmError.
#include "chat_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto api = nv::llm::wire::make_ollama_api();
  nv::fuzz::check_chat(*api, data, size);
  return 0;
}
