// exec_json.cc — exec fields and results as JSON (see exec_json.h).
#include "exec_json.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/enum_name.h"
#include "common/sandbox_json.h"
#include "common/utf8.h"

namespace nv::api {
namespace {

std::string bytes(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

void text(JsonWriter& w, const char* key, std::string_view s) { write_text(w, key, s); }

}  // namespace

std::vector<FieldSpec> exec_fields(std::vector<FieldSpec> extra) {
  std::vector<FieldSpec> f = {{"language", JType::string, true}, {"code", JType::string, true},
                              {"stdin", JType::string},          {"env", JType::object},
                              {"timeoutMs", JType::uint32},      {"outputCapBytes", JType::uint32},
                              {"tailBytes", JType::uint32}};
  f.insert(f.end(), extra.begin(), extra.end());
  return f;
}

bool parse_language(const std::string& s, schema::Language* out) {
  using L = schema::Language;
  if (s == "python" || s == "python3" || s == "py")
    *out = L::PYTHON;
  else if (s == "bash")
    *out = L::BASH;
  else if (s == "sh")
    *out = L::SH;
  else if (s == "javascript" || s == "node" || s == "nodejs" || s == "js")
    *out = L::JAVASCRIPT;
  else
    return false;
  return true;
}

bool parse_tier(const std::string& s, schema::SizeTier* out) {
  using T = schema::SizeTier;
  if (s == "small")
    *out = T::SMALL;
  else if (s == "medium")
    *out = T::MEDIUM;
  else if (s == "large")
    *out = T::LARGE;
  else
    return false;
  return true;
}

Status parse_env(const rapidjson::Value& doc,
                 std::vector<std::pair<std::string, std::string>>* out) {
  auto it = doc.FindMember("env");
  if (it == doc.MemberEnd()) return {};
  if (it->value.MemberCount() > 256) {
    return make_error(ErrorCode::BAD_REQUEST, "env has more than 256 variables");
  }
  for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
    std::string name(m->name.GetString(), m->name.GetStringLength());
    if (name.empty() || name.size() > 255 || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos) {
      return make_error(ErrorCode::BAD_REQUEST,
                        "env: variable names are 1..255 bytes without '=' or NUL");
    }
    if (!m->value.IsString()) {
      return make_error(ErrorCode::BAD_REQUEST,
                        "env." + utf8::sanitize(name) + " must be a string");
    }
    out->emplace_back(name, std::string(m->value.GetString(), m->value.GetStringLength()));
  }
  return {};
}

std::string exec_chunk_json(schema::ExecChunk::Reader c, std::string* type) {
  *type = stream_name(c.getStream());
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  w.Key("event");
  w.String(type->c_str());
  text(w, "data", bytes(c.getData()));
  w.EndObject();
  return sb.GetString();
}

std::string exec_result_json(schema::ExecResult::Reader r, const std::string& trace_id) {
  return exec_result_json(sandbox::from_capnp(r), trace_id);
}

std::string exec_result_json(const sandbox::ExecResult& r, const std::string& trace_id) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  sandbox::write_exec_result_fields(w, r);
  text(w, "traceId", trace_id);
  w.EndObject();
  return sb.GetString();
}

std::string stream_name(schema::Stream s) { return enum_name(s); }

}  // namespace nv::api
