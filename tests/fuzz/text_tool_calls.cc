// text_tool_calls — fuzzes the agent's parser of tool calls written as text (the fallback for
// models without native tool calling: fenced/bare JSON, <tool_call>, XML; nv::agent in
// services/orchestrator) and the execute_code argument reader it feeds.
//
// Input: one model reply's text. Checked: no crash, leak, UB or quadratic blow-up (libFuzzer's
// -timeout); every call found has a name, and its arguments go through parse_code_args, which
// either gives code or says why not.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "orchestrator/model_reply.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& call : nv::agent::parse_text_tool_calls(text)) {
    std::string why;
    auto args = nv::agent::parse_code_args(call.arguments_json, &why);
    if (!args && why.empty()) std::abort();
  }
  return 0;
}
