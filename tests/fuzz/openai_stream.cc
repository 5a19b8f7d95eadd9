// openai_stream — fuzzes the openai streaming reply parser (services/llm-gateway/openai_api.cc).
//
// Input: one streamed response body, SSE (`data: {chunk}` events, `data: [DONE]` last).
// Checked (stream_check.h): no crash, leak or UB, and the same outcome whether the body is fed
// whole or in small pieces.
#include "stream_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto api = nv::llm::wire::make_openai_api();
  nv::fuzz::check_stream(*api, data, size);
  return 0;
}
