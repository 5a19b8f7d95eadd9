// llm_client_wire.cc — JSON helpers shared by the Ollama and OpenAI protocol code.
#include "llm_client_wire.h"

#include <algorithm>

#include <rapidjson/error/en.h>

#include "services/common/json_depth.h"

namespace nv::llm::wire {

LlmError bad_response(std::string message) {
  LlmError e;
  e.code = ErrorCode::LLM_BAD_RESPONSE;
  e.message = std::move(message);
  return e;
}

LlmError bad_request(std::string message) {
  LlmError e;
  e.code = ErrorCode::BAD_REQUEST;
  e.message = std::move(message);
  return e;
}

const char* parse_json(rapidjson::Document& d, std::string_view text) {
  if (json_nesting_exceeds(text)) {
    d.SetNull();
    return "nested deeper than 128 levels";
  }
  d.Parse(text.data(), text.size());
  return d.HasParseError() ? rapidjson::GetParseError_En(d.GetParseError()) : nullptr;
}

bool write_raw_json(JsonWriter& w, std::string_view text) {
  rapidjson::Document d;
  if (parse_json(d, text)) return false;
  return d.Accept(w);
}

void write_string(JsonWriter& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

const rapidjson::Value* get_member(const rapidjson::Value& obj, const char* key) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd()) return nullptr;
  return &it->value;
}

std::string get_string(const rapidjson::Value& obj, const char* key, std::string fallback) {
  const rapidjson::Value* v = get_member(obj, key);
  if (!v || !v->IsString()) return fallback;
  return std::string(v->GetString(), v->GetStringLength());
}

uint64_t saturate_u64(double v) {
  if (!(v > 0)) return 0;
  if (v >= 18446744073709551616.0) return UINT64_MAX;  // 2^64
  return static_cast<uint64_t>(v);
}

uint64_t get_uint(const rapidjson::Value& obj, const char* key, uint64_t fallback, uint64_t max) {
  const rapidjson::Value* v = get_member(obj, key);
  if (!v) return fallback;
  if (v->IsUint64()) return std::min(v->GetUint64(), max);
  if (v->IsDouble() && v->GetDouble() >= 0) return std::min(saturate_u64(v->GetDouble()), max);
  return fallback;
}

std::string to_json_text(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  JsonWriter w(sb);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string excerpt(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "...";
}

void write_tools(JsonWriter& w, const std::vector<ToolSpec>& tools, std::optional<LlmError>* err) {
  w.Key("tools");
  w.StartArray();
  for (const ToolSpec& t : tools) {
    w.StartObject();
    w.Key("type");
    w.String("function");
    w.Key("function");
    w.StartObject();
    w.Key("name");
    write_string(w, t.name);
    w.Key("description");
    write_string(w, t.description);
    w.Key("parameters");
    if (!write_raw_json(w,
                        t.parameters_json.empty() ? R"({"type":"object"})" : t.parameters_json)) {
      *err = bad_request("tool '" + t.name + "' has a parameters schema that is not JSON");
      w.Null();
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
}

}  // namespace nv::llm::wire
