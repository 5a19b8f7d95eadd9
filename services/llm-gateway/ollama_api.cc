// ollama_api.cc — the Ollama /api/chat wire protocol.
//
// Request:  {"model","messages":[{"role","content","thinking","tool_calls":[{"function":{"name",
//            "arguments":{...}}}],"tool_name"}],"tools":[{"type":"function","function":{...}}],
//            "stream":bool,"options":{"temperature","num_predict"}}
// Answer:   one object, or (stream) NDJSON objects each carrying a piece of message.content
//           (or of message.thinking, a reasoning model's thinking),
//           tool calls in whichever chunk they complete in, and the last one `"done": true` with
//           done_reason, prompt_eval_count, eval_count, load_duration, total_duration (ns).
// Errors:   {"error":"model \"x\" not found, try pulling it first"} (HTTP 404), or an error
//           object as an NDJSON line in the middle of a 200 stream.
#include <rapidjson/error/en.h>

#include "llm_client_wire.h"

namespace nv::llm::wire {
namespace {

using rapidjson::Value;

// Ollama reports a missing model as "model 'x' not found" (older) or
// "model \"x\" not found, try pulling it first" (newer).
bool is_model_not_found(std::string_view text) {
  return text.find("model") != std::string_view::npos &&
         text.find("not found") != std::string_view::npos;
}

LlmError inband_error(const std::string& text) {
  LlmError e;
  e.code = is_model_not_found(text) ? ErrorCode::MODEL_NOT_FOUND : ErrorCode::LLM_BAD_RESPONSE;
  e.message = "Ollama reported an error: " + text;
  return e;
}

// Reads message.content / message.tool_calls and the final statistics of one answer object
// (a whole reply, or one NDJSON chunk) into `acc`. Content and thinking are appended; `*delta`
// and `*thinking` get the new text.
std::optional<LlmError> apply_chunk(const Value& d, ChatReply& acc, std::string* delta,
                                    std::string* thinking) {
  if (!d.IsObject()) return bad_response("Ollama answer is not a JSON object");
  if (const Value* err = get_member(d, "error")) {
    return inband_error(err->IsString() ? err->GetString() : to_json_text(*err));
  }
  const Value* msg = get_member(d, "message");
  if (msg && !msg->IsObject()) return bad_response("Ollama answer: \"message\" is not an object");
  if (msg) {
    if (const Value* c = get_member(*msg, "content"); c && !c->IsNull()) {
      if (!c->IsString()) return bad_response("Ollama answer: message.content is not a string");
      delta->assign(c->GetString(), c->GetStringLength());
      acc.message.content += *delta;
    }
    if (const Value* t = get_member(*msg, "thinking"); t && !t->IsNull()) {
      if (!t->IsString()) return bad_response("Ollama answer: message.thinking is not a string");
      thinking->assign(t->GetString(), t->GetStringLength());
      acc.message.thinking += *thinking;
    }
    if (const Value* calls = get_member(*msg, "tool_calls"); calls && !calls->IsNull()) {
      if (!calls->IsArray()) return bad_response("Ollama answer: tool_calls is not an array");
      for (const Value& call : calls->GetArray()) {
        const Value* fn = get_member(call, "function");
        if (!fn || !fn->IsObject()) {
          return bad_response("Ollama answer: a tool call has no \"function\" object");
        }
        ToolCall tc;
        tc.id = get_string(call, "id");
        tc.name = get_string(*fn, "name");
        if (tc.name.empty()) return bad_response("Ollama answer: a tool call has no name");
        const Value* args = get_member(*fn, "arguments");
        if (!args || args->IsNull()) {
          tc.arguments_json = "{}";
        } else if (args->IsString()) {  // some models put the object in a string
          tc.arguments_json.assign(args->GetString(), args->GetStringLength());
        } else {
          tc.arguments_json = to_json_text(*args);
        }
        acc.message.tool_calls.push_back(std::move(tc));
      }
    }
  } else if (!get_member(d, "done")) {
    return bad_response("Ollama answer has neither \"message\" nor \"done\"");
  }
  if (std::string m = get_string(d, "model"); !m.empty()) acc.model = m;
  if (const Value* done = get_member(d, "done"); done && done->IsBool() && done->GetBool()) {
    acc.done_reason = get_string(d, "done_reason", "stop");
    acc.prompt_tokens = static_cast<uint32_t>(get_uint(d, "prompt_eval_count", 0, UINT32_MAX));
    acc.completion_tokens = static_cast<uint32_t>(get_uint(d, "eval_count", 0, UINT32_MAX));
    acc.load_duration_ns = get_uint(d, "load_duration");
    acc.total_duration_ns = get_uint(d, "total_duration");
  }
  return std::nullopt;
}

bool is_done(const Value& d) {
  const Value* done = get_member(d, "done");
  return done && done->IsBool() && done->GetBool();
}

void normalise(ChatReply& r) {
  r.message.role = Role::assistant;
  if (!r.message.tool_calls.empty() && (r.done_reason.empty() || r.done_reason == "stop")) {
    r.done_reason = "tool_calls";
  }
}

class OllamaStream final : public StreamParser {
 public:
  explicit OllamaStream(DeltaFn on_delta) : on_delta_(std::move(on_delta)) {}

  std::optional<LlmError> feed(std::string_view bytes) override {
    std::optional<LlmError> err;
    lines_.feed(bytes, [&](std::string_view line) {
      err = line_in(line);
      return !err;
    });
    return err;
  }

  std::optional<LlmError> finish(ChatReply& reply) override {
    if (!lines_.rest().empty()) {
      std::string tail = lines_.rest();
      if (auto err = line_in(tail)) return err;
    }
    if (!done_) {
      return bad_response("Ollama stream ended without its final \"done\": true object after " +
                          std::to_string(lines_seen_) + " lines");
    }
    normalise(acc_);
    reply = std::move(acc_);
    return std::nullopt;
  }

 private:
  std::optional<LlmError> line_in(std::string_view line) {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return std::nullopt;
    ++lines_seen_;
    if (done_) return std::nullopt;  // nothing follows done; ignore trailing noise
    rapidjson::Document d;
    const char* why = parse_json(d, line);
    if (why) {
      return bad_response("Ollama stream line " + std::to_string(lines_seen_) + " is not JSON (" +
                          why + "): " + excerpt(line));
    }
    std::string delta, thinking;
    if (auto err = apply_chunk(d, acc_, &delta, &thinking)) return err;
    if (!thinking.empty() && on_delta_) on_delta_(thinking, DeltaKind::thinking);
    if (!delta.empty() && on_delta_) on_delta_(delta, DeltaKind::content);
    done_ = is_done(d);
    return std::nullopt;
  }

  DeltaFn on_delta_;
  LineSplitter lines_;
  ChatReply acc_;
  bool done_ = false;
  size_t lines_seen_ = 0;
};

void write_message(JsonWriter& w, const Message& m, std::optional<LlmError>* err) {
  w.StartObject();
  w.Key("role");
  write_string(w, role_name(m.role));
  w.Key("content");
  write_string(w, m.content);
  if (m.role == Role::assistant && !m.thinking.empty()) {
    w.Key("thinking");  // the docs' message field for a thinking model's reasoning
    write_string(w, m.thinking);
  }
  if (!m.tool_calls.empty()) {
    w.Key("tool_calls");
    w.StartArray();
    for (const ToolCall& tc : m.tool_calls) {
      w.StartObject();
      w.Key("function");
      w.StartObject();
      w.Key("name");
      write_string(w, tc.name);
      w.Key("arguments");  // an object in Ollama, not a string
      if (!write_raw_json(w, tc.arguments_json.empty() ? "{}" : tc.arguments_json)) {
        *err = bad_request("tool call '" + tc.name +
                           "' has arguments that are not JSON: " + excerpt(tc.arguments_json));
        w.Null();
      }
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }
  if (m.role == Role::tool && !m.tool_name.empty()) {
    w.Key("tool_name");
    write_string(w, m.tool_name);
  }
  w.EndObject();
}

class OllamaApi final : public WireApi {
 public:
  std::string_view chat_path() const override { return "/api/chat"; }
  std::string_view models_path() const override { return "/api/tags"; }

  std::optional<LlmError> build_chat_body(const ChatRequest& req, const std::string& model,
                                          bool /*stream_usage*/, std::string* out) const override {
    std::optional<LlmError> err;
    rapidjson::StringBuffer sb;
    JsonWriter w(sb);
    w.StartObject();
    w.Key("model");
    write_string(w, model);
    w.Key("messages");
    w.StartArray();
    for (const Message& m : req.messages) write_message(w, m, &err);
    w.EndArray();
    w.Key("stream");
    w.Bool(req.stream);
    if (!req.tools.empty()) write_tools(w, req.tools, &err);
    if (req.temperature >= 0 || req.max_tokens > 0) {
      w.Key("options");
      w.StartObject();
      if (req.temperature >= 0) {
        w.Key("temperature");
        w.Double(req.temperature);
      }
      if (req.max_tokens > 0) {
        w.Key("num_predict");
        w.Uint(req.max_tokens);
      }
      w.EndObject();
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
      return bad_response(std::string("Ollama answer is not JSON (") + why + "): " + excerpt(body));
    }
    ChatReply acc;
    std::string delta, thinking;
    if (auto err = apply_chunk(d, acc, &delta, &thinking)) return err;
    if (!get_member(d, "message")) return bad_response("Ollama answer has no \"message\"");
    normalise(acc);
    reply = std::move(acc);
    return std::nullopt;
  }

  std::unique_ptr<StreamParser> stream_parser(const DeltaFn& on_delta) const override {
    return std::make_unique<OllamaStream>(on_delta);
  }

  std::optional<LlmError> parse_models(std::string_view body,
                                       std::vector<std::string>* out) const override {
    rapidjson::Document d;
    const char* why = parse_json(d, body);
    const Value* models = why ? nullptr : get_member(d, "models");
    if (!models || !models->IsArray()) {
      return bad_response("Ollama /api/tags answer has no \"models\" array: " + excerpt(body));
    }
    for (const Value& m : models->GetArray()) {
      std::string name = get_string(m, "name", get_string(m, "model"));
      if (!name.empty()) out->push_back(std::move(name));
    }
    return std::nullopt;
  }

  std::string error_text(std::string_view body) const override {
    rapidjson::Document d;
    const char* why = parse_json(d, body);
    if (why || !d.IsObject()) return excerpt(body);
    return get_string(d, "error", excerpt(body));
  }
};

}  // namespace

std::unique_ptr<WireApi> make_ollama_api() { return std::make_unique<OllamaApi>(); }

}  // namespace nv::llm::wire
