// inference_api.cc — see inference_api.h.
#include "inference_api.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <ctime>

#include "common/json_depth.h"
#include "common/sandbox_json.h"

namespace nv::exec::inference {

namespace {

using sandbox::JsonOut;
using sandbox::write_json_text;

std::string_view sv(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

// OpenAI's "type" and "code" of an error status.
std::pair<const char*, const char*> openai_kind(int status) {
  switch (status) {
    case 400:
    case 413:
      return {"invalid_request_error", nullptr};
    case 403:
      return {"invalid_request_error", "model_not_found"};
    case 404:
      return {"invalid_request_error", "unknown_url"};
    case 429:
      return {"insufficient_quota", "insufficient_quota"};
    default:
      return {"api_error", nullptr};
  }
}

void write_error_object(JsonOut& w, Api api, int status, const std::string& message) {
  w.StartObject();
  if (api == Api::ollama) {
    write_json_text(w, "error", message);
  } else {
    w.Key("error");
    w.StartObject();
    write_json_text(w, "message", message);
    auto [type, code] = openai_kind(status);
    w.Key("type");
    w.String(type);
    w.Key("param");
    w.Null();
    w.Key("code");
    if (code) {
      w.String(code);
    } else {
      w.Null();
    }
    w.EndObject();
  }
  w.EndObject();
}

bool bad(Api api, HttpAnswer& error, const std::string& message, int status = 400) {
  error = error_answer(api, status, message);
  return false;
}

// OpenAI content: a string, or an array of parts of which the "text" ones are joined.
bool content_text(const rapidjson::Value& v, std::string& out) {
  if (v.IsString()) {
    out.assign(v.GetString(), v.GetStringLength());
    return true;
  }
  if (v.IsNull()) return true;  // assistant messages that only carried tool calls
  if (!v.IsArray()) return false;
  for (const auto& part : v.GetArray()) {
    if (!part.IsObject()) return false;
    auto t = part.FindMember("type");
    auto x = part.FindMember("text");
    if (t == part.MemberEnd() || !t->value.IsString() || sv(t->value) != "text") return false;
    if (x == part.MemberEnd() || !x->value.IsString()) return false;
    out.append(x->value.GetString(), x->value.GetStringLength());
  }
  return true;
}

// The members every OpenAI chat object starts with, up to the "choices" key.
void write_openai_head(JsonOut& w, const std::string& id, const char* object, int64_t created,
                       const std::string& model) {
  write_json_text(w, "id", id);
  w.Key("object");
  w.String(object);
  w.Key("created");
  w.Int64(created);
  write_json_text(w, "model", model);
  w.Key("choices");
}

// OpenAI's "usage" member.
void write_usage(JsonOut& w, const ChatAnswer& a) {
  w.Key("usage");
  w.StartObject();
  w.Key("prompt_tokens");
  w.Uint(a.prompt_tokens);
  w.Key("completion_tokens");
  w.Uint(a.completion_tokens);
  w.Key("total_tokens");
  w.Uint64(uint64_t{a.prompt_tokens} + a.completion_tokens);
  w.EndObject();
}

std::string done(rapidjson::StringBuffer& b) { return std::string(b.GetString(), b.GetSize()); }

}  // namespace

Route route(std::string_view method, std::string_view path, Api& api, HttpAnswer& error) {
  api = path.rfind("/v1/", 0) == 0 ? Api::openai : Api::ollama;
  struct R {
    std::string_view path, method;
    Route route;
  };
  static const R kRoutes[] = {
      {"/api/chat", "POST", Route::chat},  {"/v1/chat/completions", "POST", Route::chat},
      {"/api/tags", "GET", Route::models}, {"/v1/models", "GET", Route::models},
      {"/", "GET", Route::root},
  };
  for (const auto& r : kRoutes) {
    if (r.path != path) continue;
    if (r.method == method) return r.route;
    error = error_answer(api, 405,
                         "method " + std::string(method) + " not allowed on " + std::string(path) +
                             " (use " + std::string(r.method) + ")");
    return Route::error;
  }
  error = error_answer(api, 404,
                       "no endpoint " + std::string(path) +
                           " (the bridge serves POST /api/chat, POST /v1/chat/completions, GET "
                           "/api/tags, GET /v1/models)");
  return Route::error;
}

HttpAnswer error_answer(Api api, int status, const std::string& message) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  write_error_object(w, api, status, message);
  return {status, "application/json", done(b)};
}

bool parse_chat(Api api, std::string_view body, ChatCall& out, HttpAnswer& error) {
  out = ChatCall{};
  out.api = api;
  out.stream = api == Api::ollama;  // Ollama streams unless told not to; OpenAI the opposite
  if (body.size() > kMaxBodyBytes) {
    return bad(api, error,
               "request body of " + std::to_string(body.size()) + " bytes is above the limit of " +
                   std::to_string(kMaxBodyBytes),
               413);
  }
  if (json_nesting_exceeds(body)) return bad(api, error, "request body nests too deeply");
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  if (d.HasParseError()) {
    return bad(api, error,
               std::string("request body is not JSON: ") +
                   rapidjson::GetParseError_En(d.GetParseError()) + " at offset " +
                   std::to_string(d.GetErrorOffset()));
  }
  if (!d.IsObject()) return bad(api, error, "request body must be a JSON object");
  auto m = d.FindMember("model");
  if (m == d.MemberEnd() || !m->value.IsString() || m->value.GetStringLength() == 0) {
    return bad(api, error, "\"model\" is required (a non-empty string)");
  }
  if (m->value.GetStringLength() > kMaxModelName) {
    return bad(api, error, "\"model\" is longer than " + std::to_string(kMaxModelName) + " bytes");
  }
  out.model.assign(m->value.GetString(), m->value.GetStringLength());
  auto msgs = d.FindMember("messages");
  if (msgs == d.MemberEnd() || !msgs->value.IsArray() || msgs->value.Empty()) {
    return bad(api, error, "\"messages\" is required (a non-empty array)");
  }
  if (msgs->value.Size() > kMaxMessages) {
    return bad(api, error, "more than " + std::to_string(kMaxMessages) + " messages");
  }
  for (rapidjson::SizeType i = 0; i < msgs->value.Size(); ++i) {
    const auto& v = msgs->value[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!v.IsObject()) return bad(api, error, at + " is not an object");
    auto role = v.FindMember("role");
    if (role == v.MemberEnd() || !role->value.IsString()) {
      return bad(api, error, at + ".role is required");
    }
    ChatMessage cm;
    cm.role.assign(role->value.GetString(), role->value.GetStringLength());
    if (api == Api::openai && cm.role == "developer") cm.role = "system";
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant" && cm.role != "tool") {
      return bad(api, error,
                 at + ".role \"" + cm.role.substr(0, 32) + "\" is not one of system, " +
                     "user, assistant, tool" + (api == Api::openai ? ", developer" : ""));
    }
    auto content = v.FindMember("content");
    if (content != v.MemberEnd()) {
      if (api == Api::ollama ? !content->value.IsString()
                             : !content_text(content->value, cm.content)) {
        return bad(api, error,
                   at + ".content must be a string" +
                       (api == Api::openai ? " or an array of text parts" : ""));
      }
      if (api == Api::ollama) cm.content.assign(sv(content->value));
    }
    if (v.HasMember("images")) return bad(api, error, at + ".images are not supported");
    out.messages.push_back(std::move(cm));
  }
  if (d.HasMember("tools")) return bad(api, error, "\"tools\" are not supported by the bridge");
  if (auto s = d.FindMember("stream"); s != d.MemberEnd() && !s->value.IsNull()) {
    if (!s->value.IsBool()) return bad(api, error, "\"stream\" must be a boolean");
    out.stream = s->value.GetBool();
  }
  // Numbers: temperature (OpenAI top level, Ollama options), the completion cap.
  const rapidjson::Value* opts = &d;
  if (api == Api::ollama) {
    auto o = d.FindMember("options");
    opts = (o != d.MemberEnd() && o->value.IsObject()) ? &o->value : nullptr;
  }
  if (opts) {
    if (auto t = opts->FindMember("temperature"); t != opts->MemberEnd() && !t->value.IsNull()) {
      if (!t->value.IsNumber() || t->value.GetDouble() < 0 || t->value.GetDouble() > 2) {
        return bad(api, error, "\"temperature\" must be a number in 0..2");
      }
      out.temperature = t->value.GetDouble();
    }
    for (const char* key : {"num_predict", "max_tokens", "max_completion_tokens"}) {
      if ((api == Api::ollama) != (std::string_view(key) == "num_predict")) continue;
      auto n = opts->FindMember(key);
      if (n == opts->MemberEnd() || n->value.IsNull()) continue;
      if (!n->value.IsUint() || n->value.GetUint() == 0) {
        // Ollama's num_predict -1 means "no limit".
        if (api == Api::ollama && n->value.IsInt() && n->value.GetInt() == -1) continue;
        return bad(api, error, "\"" + std::string(key) + "\" must be a positive integer");
      }
      out.max_tokens = n->value.GetUint();
    }
  }
  if (api == Api::openai) {
    if (auto so = d.FindMember("stream_options"); so != d.MemberEnd() && so->value.IsObject()) {
      auto iu = so->value.FindMember("include_usage");
      out.include_usage = iu != so->value.MemberEnd() && iu->value.IsBool() && iu->value.GetBool();
    }
  }
  return true;
}

bool admit(const ChatCall& call, const sandbox::Inference& policy, uint64_t used,
           std::string& model_for_llm, HttpAnswer& error) {
  model_for_llm.clear();
  if (!policy.models.empty()) {
    if (std::find(policy.models.begin(), policy.models.end(), call.model) == policy.models.end()) {
      return bad(
          call.api, error,
          "model \"" + call.model + "\" is not allowed in this sandbox (allowed: " +
              [&] {
                std::string s;
                for (const auto& m : policy.models) s += (s.empty() ? "" : ", ") + m;
                return s;
              }() +
              ")",
          403);
    }
    model_for_llm = call.model;
  }
  if (used >= policy.token_budget) {
    return bad(call.api, error,
               "the sandbox's inference token budget of " + std::to_string(policy.token_budget) +
                   " tokens is spent (" + std::to_string(used) + " used)",
               429);
  }
  return true;
}

std::string ollama_reply(const ChatAnswer& a, const std::string& created_at) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  write_json_text(w, "model", a.model);
  write_json_text(w, "created_at", created_at);
  w.Key("message");
  w.StartObject();
  w.Key("role");
  w.String("assistant");
  write_json_text(w, "content", a.content);
  if (!a.thinking.empty()) write_json_text(w, "thinking", a.thinking);
  w.EndObject();
  w.Key("done");
  w.Bool(true);
  write_json_text(w, "done_reason", a.done_reason.empty() ? "stop" : a.done_reason);
  w.Key("total_duration");
  w.Uint64(a.total_duration_ns);
  w.Key("load_duration");
  w.Uint64(a.load_duration_ns);
  w.Key("prompt_eval_count");
  w.Uint(a.prompt_tokens);
  w.Key("eval_count");
  w.Uint(a.completion_tokens);
  w.EndObject();
  return done(b);
}

std::string ollama_delta(const std::string& model, const std::string& created_at,
                         const std::string& content, const std::string& thinking) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  write_json_text(w, "model", model);
  write_json_text(w, "created_at", created_at);
  w.Key("message");
  w.StartObject();
  w.Key("role");
  w.String("assistant");
  write_json_text(w, "content", content);
  if (!thinking.empty()) write_json_text(w, "thinking", thinking);
  w.EndObject();
  w.Key("done");
  w.Bool(false);
  w.EndObject();
  return done(b) + "\n";
}

std::string ollama_final(const ChatAnswer& a, const std::string& created_at) {
  ChatAnswer last = a;
  last.content.clear();  // every piece was streamed before
  last.thinking.clear();
  return ollama_reply(last, created_at) + "\n";
}

std::string openai_reply(const ChatAnswer& a, const std::string& id, int64_t created) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  write_openai_head(w, id, "chat.completion", created, a.model);
  w.StartArray();
  w.StartObject();
  w.Key("index");
  w.Uint(0);
  w.Key("message");
  w.StartObject();
  w.Key("role");
  w.String("assistant");
  write_json_text(w, "content", a.content);
  if (!a.thinking.empty()) write_json_text(w, "reasoning_content", a.thinking);
  w.EndObject();
  w.Key("logprobs");
  w.Null();
  write_json_text(w, "finish_reason", a.done_reason.empty() ? "stop" : a.done_reason);
  w.EndObject();
  w.EndArray();
  write_usage(w, a);
  w.EndObject();
  return done(b);
}

std::string openai_chunk(const std::string& id, int64_t created, const std::string& model,
                         const std::string& role, const std::string& content,
                         const std::string& finish_reason) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  write_openai_head(w, id, "chat.completion.chunk", created, model);
  w.StartArray();
  w.StartObject();
  w.Key("index");
  w.Uint(0);
  w.Key("delta");
  w.StartObject();
  if (!role.empty()) write_json_text(w, "role", role);
  if (!role.empty() || !content.empty()) write_json_text(w, "content", content);
  w.EndObject();
  w.Key("logprobs");
  w.Null();
  w.Key("finish_reason");
  if (finish_reason.empty()) {
    w.Null();
  } else {
    write_json_text(w, nullptr, finish_reason);
  }
  w.EndObject();
  w.EndArray();
  w.EndObject();
  return "data: " + done(b) + "\n\n";
}

std::string openai_usage_chunk(const ChatAnswer& a, const std::string& id, int64_t created) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  write_openai_head(w, id, "chat.completion.chunk", created, a.model);
  w.StartArray();
  w.EndArray();
  write_usage(w, a);
  w.EndObject();
  return "data: " + done(b) + "\n\n";
}

std::string stream_error(Api api, const std::string& message) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  write_error_object(w, api, 502, message);
  return api == Api::ollama ? done(b) + "\n" : "data: " + done(b) + "\n\n";
}

std::string ollama_tags(const std::vector<std::string>& models) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  w.Key("models");
  w.StartArray();
  for (const auto& m : models) {
    w.StartObject();
    write_json_text(w, "name", m);
    write_json_text(w, "model", m);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return done(b);
}

std::string openai_models(const std::vector<std::string>& models, int64_t created) {
  rapidjson::StringBuffer b;
  JsonOut w(b);
  w.StartObject();
  w.Key("object");
  w.String("list");
  w.Key("data");
  w.StartArray();
  for (const auto& m : models) {
    w.StartObject();
    write_json_text(w, "id", m);
    w.Key("object");
    w.String("model");
    w.Key("created");
    w.Int64(created);
    w.Key("owned_by");
    w.String("neurovisor");
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return done(b);
}

std::string rfc3339(int64_t unix_ns) {
  const time_t secs = static_cast<time_t>(unix_ns / 1000000000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%09lldZ", static_cast<long long>(unix_ns % 1000000000));
  return std::string(buf) + frac;
}

}  // namespace nv::exec::inference
