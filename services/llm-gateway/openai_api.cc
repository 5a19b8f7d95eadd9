// openai_api.cc — the OpenAI-compatible /v1/chat/completions wire protocol.
//
// Request:  {"model","messages":[{"role","content","reasoning_content","tool_calls":[{"id",
//            "type":"function",
//            "function":{"name","arguments":"<JSON text>"}}],"tool_call_id"}],
//            "tools":[{"type":"function","function":{...}}],"stream":bool,
//            "stream_options":{"include_usage":true},"temperature","max_tokens"}
// Answer:   {"choices":[{"message":{...},"finish_reason"}],"usage":{...}}, or (stream) SSE
//           events `data: {chunk}` whose choices[].delta carries content pieces and tool-call
//           fragments keyed by index (id and name first, then argument text in pieces), a
//           usage-only chunk (empty choices) when asked for, and `data: [DONE]` last; lines
//           end in LF or CRLF and `: keep-alive` comment lines may come between events.
// Reasoning: message/delta "reasoning_content" (DeepSeek, vLLM, llama.cpp) or "reasoning"
//           (OpenRouter, some gpt-oss servers), kept apart from content.
// Errors:   {"error":{"message","type","code"}} ("model_not_found", "invalid_api_key", ...).
//           llama.cpp adds "timings":{"prompt_ms","predicted_ms"}, read for total_duration.
#include <rapidjson/error/en.h>

#include <map>

#include "llm_client_wire.h"

namespace nv::llm::wire {
namespace {

using rapidjson::Value;

LlmError inband_error(const Value& err) {
  LlmError e;
  e.code = ErrorCode::LLM_BAD_RESPONSE;
  std::string text = err.IsString() ? err.GetString() : get_string(err, "message");
  std::string code = err.IsObject() ? get_string(err, "code") : "";
  if (code == "model_not_found" || (text.find("model") != std::string::npos &&
                                    (text.find("does not exist") != std::string::npos ||
                                     text.find("not found") != std::string::npos))) {
    e.code = ErrorCode::MODEL_NOT_FOUND;
  }
  e.message = "the server reported an error: " + (text.empty() ? to_json_text(err) : text);
  return e;
}

void read_usage(const Value& d, ChatReply& acc) {
  const Value* usage = get_member(d, "usage");
  if (usage && usage->IsObject()) {
    acc.prompt_tokens = static_cast<uint32_t>(get_uint(*usage, "prompt_tokens", 0, UINT32_MAX));
    acc.completion_tokens =
        static_cast<uint32_t>(get_uint(*usage, "completion_tokens", 0, UINT32_MAX));
  }
  // llama.cpp's server reports its own timings in milliseconds.
  const Value* timings = get_member(d, "timings");
  if (timings && timings->IsObject()) {
    double ms = 0;
    for (const char* k : {"prompt_ms", "predicted_ms"}) {
      const Value* v = get_member(*timings, k);
      if (v && v->IsNumber()) ms += v->GetDouble();
    }
    if (ms > 0) acc.total_duration_ns = saturate_u64(ms * 1e6);
  }
  if (std::string m = get_string(d, "model"); !m.empty()) acc.model = m;
}

std::string arguments_text(const Value* args) {
  if (!args || args->IsNull()) return "";
  if (args->IsString()) return std::string(args->GetString(), args->GetStringLength());
  return to_json_text(*args);  // some servers send the object itself
}

void normalise(ChatReply& r) {
  r.message.role = Role::assistant;
  for (ToolCall& tc : r.message.tool_calls) {
    if (tc.arguments_json.empty()) tc.arguments_json = "{}";
  }
  if (!r.message.tool_calls.empty() && (r.done_reason.empty() || r.done_reason == "stop")) {
    r.done_reason = "tool_calls";
  }
}

// The reasoning text of a message or delta: reasoning_content, else reasoning ("" = none).
std::string_view reasoning_of(const Value& m) {
  for (const char* key : {"reasoning_content", "reasoning"}) {
    const Value* v = get_member(m, key);
    if (v && v->IsString() && v->GetStringLength() > 0) {
      return {v->GetString(), v->GetStringLength()};
    }
  }
  return {};
}

const Value* first_choice(const Value& d) {
  const Value* choices = get_member(d, "choices");
  if (!choices || !choices->IsArray() || choices->Empty()) return nullptr;
  return &(*choices)[0];
}

class OpenAiStream final : public StreamParser {
 public:
  explicit OpenAiStream(DeltaFn on_delta) : on_delta_(std::move(on_delta)) {}

  std::optional<LlmError> feed(std::string_view bytes) override {
    // A body that starts with "{" is plain JSON, not SSE: the server did not stream. Leading
    // blanks are kept until the first other byte decides, so the answer does not depend on
    // where the body was cut.
    if (!started_) {
      lead_.append(bytes);
      size_t first = lead_.find_first_not_of(" \t\r\n");
      if (first == std::string::npos) return std::nullopt;
      started_ = true;
      whole_ = lead_[first] == '{';
      std::string all = std::move(lead_);
      lead_.clear();
      return take(all);
    }
    return take(bytes);
  }

  std::optional<LlmError> take(std::string_view bytes) {
    if (whole_) {
      body_.append(bytes);
      return std::nullopt;
    }
    std::optional<LlmError> err;
    lines_.feed(bytes, [&](std::string_view line) {
      err = line_in(line);
      return !err;
    });
    return err;
  }

  std::optional<LlmError> finish(ChatReply& reply) override {
    if (whole_) {  // the server ignored "stream": one JSON body
      if (auto err = make_openai_api()->parse_chat_reply(body_, reply)) return err;
      if (!reply.message.thinking.empty() && on_delta_) {
        on_delta_(reply.message.thinking, DeltaKind::thinking);
      }
      if (!reply.message.content.empty() && on_delta_) {
        on_delta_(reply.message.content, DeltaKind::content);
      }
      return std::nullopt;
    }
    if (!lines_.rest().empty()) {
      std::string tail = lines_.rest();
      if (auto err = line_in(tail)) return err;
    }
    if (auto err = dispatch()) return err;  // an event not closed by a blank line
    if (!done_ && !finished_) {
      return bad_response("SSE stream ended without `data: [DONE]` or a finish_reason after " +
                          std::to_string(events_) + " events");
    }
    for (auto& [index, tc] : calls_) acc_.message.tool_calls.push_back(std::move(tc));
    normalise(acc_);
    reply = std::move(acc_);
    return std::nullopt;
  }

 private:
  // SSE: "data:" lines accumulate until a blank line ends the event; ":" lines are comments.
  std::optional<LlmError> line_in(std::string_view line) {
    if (line.empty()) return dispatch();
    if (line.front() == ':') return std::nullopt;
    if (line.starts_with("data:")) {
      std::string_view v = line.substr(5);
      if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      if (!data_.empty()) data_ += '\n';
      data_.append(v);
      has_data_ = true;
      return std::nullopt;
    }
    if (line.starts_with("event:") || line.starts_with("id:") || line.starts_with("retry:")) {
      return std::nullopt;
    }
    // Not SSE at all: most likely a plain JSON error body or a proxy's HTML page.
    return bad_response("the answer is not an SSE stream; got: " + excerpt(line));
  }

  std::optional<LlmError> dispatch() {
    if (!has_data_) return std::nullopt;
    std::string data = std::move(data_);
    data_.clear();
    has_data_ = false;
    ++events_;
    if (done_) return std::nullopt;
    if (data == "[DONE]") {
      done_ = true;
      return std::nullopt;
    }
    rapidjson::Document d;
    const char* why = parse_json(d, data);
    if (why || !d.IsObject()) {
      return bad_response("SSE event " + std::to_string(events_) +
                          " is not a JSON object: " + excerpt(data));
    }
    if (const Value* err = get_member(d, "error")) return inband_error(*err);
    read_usage(d, acc_);
    const Value* choices = get_member(d, "choices");
    if (!choices || !choices->IsArray()) {
      return bad_response("SSE event " + std::to_string(events_) + " has no \"choices\" array");
    }
    if (choices->Empty()) return std::nullopt;  // the usage-only chunk
    const Value& choice = (*choices)[0];
    if (const Value* fr = get_member(choice, "finish_reason"); fr && fr->IsString()) {
      acc_.done_reason = fr->GetString();
      finished_ = true;
    }
    const Value* delta = get_member(choice, "delta");
    if (!delta) return std::nullopt;
    if (!delta->IsObject()) return bad_response("SSE chunk: choices[0].delta is not an object");
    if (std::string_view r = reasoning_of(*delta); !r.empty()) {
      acc_.message.thinking.append(r);
      if (on_delta_) on_delta_(r, DeltaKind::thinking);
    }
    if (const Value* c = get_member(*delta, "content"); c && c->IsString()) {
      std::string_view piece(c->GetString(), c->GetStringLength());
      acc_.message.content.append(piece);
      if (!piece.empty() && on_delta_) on_delta_(piece, DeltaKind::content);
    }
    if (const Value* calls = get_member(*delta, "tool_calls"); calls && !calls->IsNull()) {
      if (!calls->IsArray()) return bad_response("SSE chunk: delta.tool_calls is not an array");
      for (const Value& frag : calls->GetArray()) {
        const Value* idx = get_member(frag, "index");
        // Servers that omit the index send each call whole: give it its own slot.
        int index = idx && idx->IsInt() ? idx->GetInt() : static_cast<int>(1000 + calls_.size());
        std::string id = get_string(frag, "id");
        // Servers that give every call index 0 start a new call with a new id.
        if (auto it = calls_.find(index);
            it != calls_.end() && !id.empty() && !it->second.id.empty() && it->second.id != id) {
          index = static_cast<int>(2000 + calls_.size());
        }
        ToolCall& tc = calls_[index];
        if (!id.empty()) tc.id = id;
        if (const Value* fn = get_member(frag, "function"); fn && fn->IsObject()) {
          // The name comes once; servers that repeat it in every fragment are not appended.
          if (std::string name = get_string(*fn, "name"); !name.empty() && name != tc.name) {
            tc.name += name;
          }
          tc.arguments_json += arguments_text(get_member(*fn, "arguments"));
        }
      }
    }
    return std::nullopt;
  }

  DeltaFn on_delta_;
  bool started_ = false;  // saw the first non-blank byte
  std::string lead_;      // the blank bytes before it
  bool whole_ = false;    // the body is one JSON document, kept in body_
  std::string body_;
  LineSplitter lines_;
  std::string data_;
  bool has_data_ = false;
  bool done_ = false;      // saw [DONE]
  bool finished_ = false;  // saw a finish_reason
  size_t events_ = 0;
  std::map<int, ToolCall> calls_;
  ChatReply acc_;
};

void write_message(JsonWriter& w, const Message& m) {
  w.StartObject();
  w.Key("role");
  write_string(w, role_name(m.role));
  w.Key("content");
  if (m.role == Role::assistant && m.content.empty() && !m.tool_calls.empty()) {
    w.Null();
  } else {
    write_string(w, m.content);
  }
  // DeepSeek's thinking mode answers 400 when a tool-call turn comes back without its
  // reasoning_content; other servers ignore the key. Reasoning of plain answers stays out.
  if (m.role == Role::assistant && !m.thinking.empty() && !m.tool_calls.empty()) {
    w.Key("reasoning_content");
    write_string(w, m.thinking);
  }
  if (!m.tool_calls.empty()) {
    w.Key("tool_calls");
    w.StartArray();
    for (size_t i = 0; i < m.tool_calls.size(); ++i) {
      const ToolCall& tc = m.tool_calls[i];
      w.StartObject();
      w.Key("id");
      write_string(w, tc.id.empty() ? "call_" + std::to_string(i) : tc.id);
      w.Key("type");
      w.String("function");
      w.Key("function");
      w.StartObject();
      w.Key("name");
      write_string(w, tc.name);
      w.Key("arguments");  // a string holding JSON in this protocol
      write_string(w, tc.arguments_json.empty() ? "{}" : tc.arguments_json);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }
  if (m.role == Role::tool) {
    w.Key("tool_call_id");
    write_string(w, m.tool_call_id);
    if (!m.tool_name.empty()) {
      w.Key("name");
      write_string(w, m.tool_name);
    }
  }
  w.EndObject();
}

class OpenAiApi final : public WireApi {
 public:
  std::string_view chat_path() const override { return "/v1/chat/completions"; }
  std::string_view models_path() const override { return "/v1/models"; }

  std::optional<LlmError> build_chat_body(const ChatRequest& req, const std::string& model,
                                          bool stream_usage, std::string* out) const override {
    std::optional<LlmError> err;
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    w.Key("model");
    write_string(w, model);
    w.Key("messages");
    w.StartArray();
    for (const Message& m : req.messages) write_message(w, m);
    w.EndArray();
    w.Key("stream");
    w.Bool(req.stream);
    if (req.stream && stream_usage) {
      w.Key("stream_options");
      w.StartObject();
      w.Key("include_usage");
      w.Bool(true);
      w.EndObject();
    }
    if (!req.tools.empty()) write_tools(w, req.tools, &err);
    if (req.temperature >= 0) {
      w.Key("temperature");
      w.Double(req.temperature);
    }
    if (req.max_tokens > 0) {
      w.Key("max_tokens");
      w.Uint(req.max_tokens);
    }
    w.EndObject();
    if (err) return err;
    out->assign(sb.GetString(), sb.GetSize());
    return std::nullopt;
  }

  std::optional<LlmError> parse_chat_reply(std::string_view body, ChatReply& reply) const override {
    rapidjson::Document d;
    const char* why = parse_json(d, body);
    if (why) {
      return bad_response(std::string("the answer is not JSON (") + why + "): " + excerpt(body));
    }
    if (!d.IsObject()) return bad_response("the answer is not a JSON object");
    if (const Value* err = get_member(d, "error")) return inband_error(*err);
    const Value* choice = first_choice(d);
    if (!choice) return bad_response("the answer has no choices: " + excerpt(body));
    const Value* msg = get_member(*choice, "message");
    if (!msg || !msg->IsObject()) return bad_response("choices[0] has no \"message\" object");
    ChatReply acc;
    if (const Value* c = get_member(*msg, "content"); c && !c->IsNull()) {
      if (!c->IsString()) return bad_response("choices[0].message.content is not a string");
      acc.message.content.assign(c->GetString(), c->GetStringLength());
    }
    acc.message.thinking = std::string(reasoning_of(*msg));
    if (const Value* calls = get_member(*msg, "tool_calls"); calls && !calls->IsNull()) {
      if (!calls->IsArray()) return bad_response("message.tool_calls is not an array");
      for (const Value& call : calls->GetArray()) {
        const Value* fn = get_member(call, "function");
        if (!fn || !fn->IsObject()) return bad_response("a tool call has no \"function\" object");
        ToolCall tc;
        tc.id = get_string(call, "id");
        tc.name = get_string(*fn, "name");
        if (tc.name.empty()) return bad_response("a tool call has no function name");
        tc.arguments_json = arguments_text(get_member(*fn, "arguments"));
        acc.message.tool_calls.push_back(std::move(tc));
      }
    }
    acc.done_reason = get_string(*choice, "finish_reason");
    read_usage(d, acc);
    normalise(acc);
    reply = std::move(acc);
    return std::nullopt;
  }

  std::unique_ptr<StreamParser> stream_parser(const DeltaFn& on_delta) const override {
    return std::make_unique<OpenAiStream>(on_delta);
  }

  std::optional<LlmError> parse_models(std::string_view body,
                                       std::vector<std::string>* out) const override {
    rapidjson::Document d;
    const char* why = parse_json(d, body);
    const Value* data = why ? nullptr : get_member(d, "data");
    if (!data || !data->IsArray()) {
      return bad_response("/v1/models answer has no \"data\" array: " + excerpt(body));
    }
    for (const Value& m : data->GetArray()) {
      if (std::string id = get_string(m, "id"); !id.empty()) out->push_back(std::move(id));
    }
    return std::nullopt;
  }

  std::string error_text(std::string_view body) const override {
    rapidjson::Document d;
    const char* why = parse_json(d, body);
    if (why || !d.IsObject()) return excerpt(body);
    const Value* err = get_member(d, "error");
    if (!err) {  // vLLM: {"object":"error","message":...}; FastAPI: {"detail":...}
      for (const char* k : {"message", "detail"}) {
        if (std::string m = get_string(d, k); !m.empty()) return m;
      }
      return excerpt(body);
    }
    if (err->IsString()) return err->GetString();
    return get_string(*err, "message", to_json_text(*err));
  }
};

}  // namespace

std::unique_ptr<WireApi> make_openai_api() { return std::make_unique<OpenAiApi>(); }

}  // namespace nv::llm::wire
