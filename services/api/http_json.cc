// http_json.cc — error shape, status table and strict body parsing (see http_json.h).
#include "common/sandbox_json.h"
#include "http_json.h"

#include <httplib.h>

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

#include "common/json_depth.h"
#include "common/utf8.h"

namespace nv::api {

int http_status(ErrorCode code) {
  using C = ErrorCode;
  switch (code) {
    case C::BAD_REQUEST:
    case C::UNKNOWN_TIER:
      return 400;
    case C::UNAUTHORIZED:
      return 401;
    case C::MOUNT_REFUSED:
      return 403;  // this host directory is not the tenant's to mount
    case C::MOUNT_QUOTA:
      return 507;  // RFC 4918 §11.5 Insufficient Storage: the mount's quota is used up
    case C::UNKNOWN_SANDBOX:
    case C::UNKNOWN_SNAPSHOT:
    case C::NOT_FOUND:
    case C::UNKNOWN_LEASE:
      return 404;
    case C::SANDBOX_STATE:
      return 409;
    case C::OVERSIZED_FRAME:
      return 413;
    case C::OVERLOADED:
    case C::RATE_LIMITED:
    case C::SANDBOX_LIMIT:
      return 429;
    case C::CANCELLED:
      return 499;  // nginx's "client closed request": only ever logged, the caller is gone
    case C::MALFORMED_MESSAGE:
    case C::UNSUPPORTED_VERSION:
    case C::WORKER_LOST:
    case C::VM_FAILED:
    case C::GUEST_PROTOCOL:
    case C::LLM_UNREACHABLE:
    case C::MODEL_NOT_FOUND:
    case C::LLM_BAD_RESPONSE:
    case C::LLM_REPLY_CUT:
      return 502;
    case C::UNKNOWN_SERVICE:
    case C::NO_WORKER:
    case C::POOL_EXHAUSTED:
    case C::SHUTTING_DOWN:
    case C::BROKER_LOST:
    case C::TIER_UNAVAILABLE:
    case C::EGRESS_UNENFORCED:
      return 503;
    case C::TIMED_OUT:
    case C::LLM_TIMED_OUT:
      return 504;
    default:
      return 500;
  }
}

std::string json_string(std::string_view text) {
  std::string clean = utf8::sanitize(text);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.String(clean.data(), static_cast<rapidjson::SizeType>(clean.size()));
  return sb.GetString();
}

void write_text(JsonWriter& w, const char* key, std::string_view text) {
  sandbox::write_json_text(w, key, text);
}

std::string error_json(std::string_view code, std::string_view message, std::string_view trace_id) {
  return "{\"error\":{\"code\":" + json_string(code) + ",\"message\":" + json_string(message) +
         ",\"traceId\":" + json_string(trace_id) + "}}";
}

void send_error(httplib::Response& res, int status, std::string_view code, std::string_view message,
                std::string_view trace_id, double retry_after_s) {
  res.status = status;
  if (retry_after_s > 0) {
    res.set_header("Retry-After", std::to_string(static_cast<long>(std::ceil(retry_after_s))));
  }
  res.set_content(error_json(code, message, trace_id) + "\n", "application/json");
}

void send_bus_error(httplib::Response& res, const Error& e, std::string_view trace_id) {
  double retry = 0;
  if (e.code == ErrorCode::OVERLOADED || e.code == ErrorCode::POOL_EXHAUSTED ||
      e.code == ErrorCode::TIER_UNAVAILABLE || e.code == ErrorCode::NO_WORKER) {
    retry = std::max(1.0, e.estimated_wait_ms / 1000.0);
  }
  send_error(res, http_status(e.code), code_name(e.code), e.message, trace_id, retry);
}

namespace {

const char* type_name(JType t) {
  switch (t) {
    case JType::string:
      return "a string";
    case JType::boolean:
      return "a boolean";
    case JType::uint32:
      return "an integer from 0 to 4294967295";
    case JType::int32:
      return "a 32-bit integer";
    case JType::uint64:
      return "a non-negative integer";
    case JType::object:
      return "an object";
    case JType::array:
      return "an array";
  }
  return "?";
}

bool has_type(const rapidjson::Value& v, JType t) {
  switch (t) {
    case JType::string:
      return v.IsString();
    case JType::boolean:
      return v.IsBool();
    case JType::uint32:
      return v.IsUint();
    case JType::int32:
      return v.IsInt();
    case JType::uint64:
      return v.IsUint64();
    case JType::object:
      return v.IsObject();
    case JType::array:
      return v.IsArray();
  }
  return false;
}

}  // namespace

Status check_object(const rapidjson::Value& v, const std::vector<FieldSpec>& fields,
                    const std::string& where) {
  if (!v.IsObject()) return make_error(ErrorCode::BAD_REQUEST, where + " must be a JSON object");
  for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
    std::string name(m->name.GetString(), m->name.GetStringLength());
    const FieldSpec* spec = nullptr;
    for (const auto& f : fields) {
      if (name == f.name) spec = &f;
    }
    std::string path = where.empty() ? name : where + "." + name;
    if (!spec) {
      std::string known;
      for (const auto& f : fields) known += (known.empty() ? "" : ", ") + std::string(f.name);
      return make_error(ErrorCode::BAD_REQUEST,
                        "unknown field '" + utf8::sanitize(path) + "' (known: " + known + ")");
    }
    if (!has_type(m->value, spec->type)) {
      return make_error(ErrorCode::BAD_REQUEST,
                        "field '" + path + "' must be " + type_name(spec->type));
    }
  }
  for (const auto& f : fields) {
    if (f.required && !v.HasMember(f.name)) {
      std::string path = where.empty() ? f.name : where + "." + f.name;
      return make_error(ErrorCode::BAD_REQUEST, "field '" + path + "' is required");
    }
  }
  return {};
}

Status parse_object(std::string_view body, const std::vector<FieldSpec>& fields,
                    rapidjson::Document* doc) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    doc->SetObject();
    return check_object(*doc, fields, "");
  }
  if (json_nesting_exceeds(body)) {
    return make_error(ErrorCode::BAD_REQUEST, "the JSON body nests deeper than " +
                                                  std::to_string(kMaxJsonDepth) + " levels");
  }
  doc->Parse<rapidjson::kParseValidateEncodingFlag>(body.data(), body.size());
  if (doc->HasParseError()) {
    return make_error(ErrorCode::BAD_REQUEST,
                      std::string("the body is not valid JSON: ") +
                          rapidjson::GetParseError_En(doc->GetParseError()) + " at byte " +
                          std::to_string(doc->GetErrorOffset()));
  }
  if (!doc->IsObject()) return make_error(ErrorCode::BAD_REQUEST, "the body must be a JSON object");
  return check_object(*doc, fields, "");
}

std::string get_string(const rapidjson::Value& o, const char* name, std::string def) {
  auto it = o.FindMember(name);
  if (it == o.MemberEnd() || !it->value.IsString()) return def;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

uint32_t get_uint32(const rapidjson::Value& o, const char* name, uint32_t def) {
  auto it = o.FindMember(name);
  if (it == o.MemberEnd() || !it->value.IsUint()) return def;
  return it->value.GetUint();
}

bool get_bool(const rapidjson::Value& o, const char* name, bool def) {
  auto it = o.FindMember(name);
  if (it == o.MemberEnd() || !it->value.IsBool()) return def;
  return it->value.GetBool();
}

}  // namespace nv::api
