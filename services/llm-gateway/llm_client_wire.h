// llm_client_wire.h — internal: what differs between the Ollama and OpenAI wire protocols.
//
// LlmClient (llm_client.cc) owns transport, retries and error policy; a WireApi only builds
// request bodies and reads answers. Parsers return LlmError with a message that describes the
// problem in the body; the client adds the URL and what to do.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm_client.h"

namespace nv::llm::wire {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Incremental reader of a streamed 2xx body.
class StreamParser {
 public:
  virtual ~StreamParser() = default;
  // Takes the next bytes (any split: mid-line, mid-UTF-8). An error ends the stream.
  virtual std::optional<LlmError> feed(std::string_view bytes) = 0;
  // The body ended; fills `reply` or reports a stream cut short / malformed.
  virtual std::optional<LlmError> finish(ChatReply& reply) = 0;
};

class WireApi {
 public:
  virtual ~WireApi() = default;
  virtual std::string_view chat_path() const = 0;    // e.g. "/api/chat"
  virtual std::string_view models_path() const = 0;  // e.g. "/api/tags"
  // A badRequest error when a message's arguments or a tool's schema is not valid JSON.
  virtual std::optional<LlmError> build_chat_body(const ChatRequest& req, const std::string& model,
                                                  bool stream_usage, std::string* out) const = 0;
  virtual std::optional<LlmError> parse_chat_reply(std::string_view body,
                                                   ChatReply& reply) const = 0;
  virtual std::unique_ptr<StreamParser> stream_parser(const DeltaFn& on_delta) const = 0;
  virtual std::optional<LlmError> parse_models(std::string_view body,
                                               std::vector<std::string>* out) const = 0;
  // The server's own error text in a failed answer ("" when there is none).
  virtual std::string error_text(std::string_view body) const = 0;
};

std::unique_ptr<WireApi> make_ollama_api();
std::unique_ptr<WireApi> make_openai_api();

// ---- JSON helpers shared by both protocols (llm_client_wire.cc) ---------------------------

LlmError bad_response(std::string message);
LlmError bad_request(std::string message);

// Parses `text` as JSON and writes it through `w`; false when it is not valid JSON.
bool write_raw_json(JsonWriter& w, std::string_view text);
void write_string(JsonWriter& w, std::string_view s);
// "tools": [{"type":"function","function":{name, description, parameters}}] — the same shape in
// Ollama's /api/chat and OpenAI's /v1/chat/completions. A schema that is not JSON sets *err.
void write_tools(JsonWriter& w, const std::vector<ToolSpec>& tools, std::optional<LlmError>* err);

// Member accessors that tolerate absence and wrong types (return the fallback).
std::string get_string(const rapidjson::Value& obj, const char* key, std::string fallback = {});
// A non-negative number, integral or not, saturated at `max` (a server may send 1e30).
uint64_t get_uint(const rapidjson::Value& obj, const char* key, uint64_t fallback = 0,
                  uint64_t max = UINT64_MAX);
// A non-negative double as uint64_t, saturated: 0 for v <= 0, UINT64_MAX from 2^64 on (a plain
// cast of an out-of-range double is undefined behaviour).
uint64_t saturate_u64(double v);
const rapidjson::Value* get_member(const rapidjson::Value& obj, const char* key);

// Parses `text` into `d`. Returns nullptr on success, else why not (RapidJSON's message, or that
// it nests deeper than kMaxJsonDepth, which is refused before parsing: services/common/
// json_depth.h).
const char* parse_json(rapidjson::Document& d, std::string_view text);

// Serialises a JSON value back to compact text.
std::string to_json_text(const rapidjson::Value& v);
// The first `max` bytes of `s` for quoting in an error message, with an ellipsis when cut.
std::string excerpt(std::string_view s, size_t max = 200);

// Splits a byte stream into lines ("\n" or "\r\n"), keeping an incomplete tail across feeds.
class LineSplitter {
 public:
  // Appends bytes; calls fn(line) for every complete line. Stops early when fn returns false.
  template <class Fn>
  bool feed(std::string_view bytes, Fn&& fn) {
    buf_.append(bytes);
    size_t start = 0;
    for (;;) {
      size_t nl = buf_.find('\n', start);
      if (nl == std::string::npos) break;
      std::string_view line(buf_.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      start = nl + 1;
      if (!fn(line)) {
        buf_.erase(0, start);
        return false;
      }
    }
    buf_.erase(0, start);
    return true;
  }
  const std::string& rest() const { return buf_; }

 private:
  std::string buf_;
};

}  // namespace nv::llm::wire
