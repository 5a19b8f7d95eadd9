// inference_request — fuzzes the inference bridge's request side
// (services/sandbox-executor/inference_api.cc): the HTTP body a program in the guest sends, for
// both APIs, through parse_chat and (when it parses) the policy check; the path through route().
// Corpus: the Ollama and OpenAI docs' chat examples. Checked: no crash, leak or UB; a refusal
// always carries a 4xx status and a JSON error body.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "inference_api.h"

namespace inf = nv::exec::inference;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (auto api : {inf::Api::ollama, inf::Api::openai}) {
    inf::ChatCall call;
    inf::HttpAnswer err;
    if (inf::parse_chat(api, text, call, err)) {
      std::string model;
      nv::sandbox::Inference policy{true, {"llama3.2"}, 100};
      if (!inf::admit(call, policy, 0, model, err) && err.status != 403) std::abort();
    } else if (err.status != 400 && err.status != 413) {
      std::abort();
    }
    if (!err.body.empty() && err.body.front() != '{') std::abort();
  }
  inf::Api api;
  inf::HttpAnswer err;
  (void)inf::route(text.size() > 8 ? text.substr(0, 8) : text, text, api, err);
  return 0;
}
