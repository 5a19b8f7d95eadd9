// http_json.h — nv-api's JSON on the wire: the one error shape, the bus error → HTTP status
// table, and strict parsing of request bodies.
//
// Error body (every 4xx/5xx answer of nv-api):
//   {"error": {"code": "<code>", "message": "<what happened, what to do>", "traceId": "<id>"}}
// `code` is common.capnp's Error.Code name for errors from the bus (unknownSandbox, timedOut,
// ...) and, for errors of the HTTP layer itself: notFound, payloadTooLarge, unauthorized,
// forbidden, rateLimited, badRequest, unsupportedMediaType.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace httplib {
struct Response;
}

namespace nv::api {

// The HTTP status for a bus error code (the table in services/api/README.md).
int http_status(ErrorCode code);

// Sets status, the JSON error body, and Retry-After (seconds, rounded up) when retry_after_s > 0.
void send_error(httplib::Response& res, int status, std::string_view code, std::string_view message,
                std::string_view trace_id, double retry_after_s = 0);
// A bus error: status from http_status(); Retry-After from an overloaded answer's estimate.
void send_bus_error(httplib::Response& res, const Error& e, std::string_view trace_id);
// {"error":{...}} as text (for streams, where the status line is already sent).
std::string error_json(std::string_view code, std::string_view message, std::string_view trace_id);

enum class JType { string, boolean, uint32, int32, object, array, uint64 };
struct FieldSpec {
  const char* name;
  JType type;
  bool required = false;
};

// Parses `body` as one JSON object whose members are all in `fields` with the right types
// (unknown members, wrong types, missing required ones, more than 128 levels of nesting,
// trailing text: badRequest naming the field). An empty body is {} when nothing is required.
Status parse_object(std::string_view body, const std::vector<FieldSpec>& fields,
                    rapidjson::Document* doc);
// Checks that `v` (an object) has only members in `fields` with the right types; `where` names
// it in messages ("env", "files[2]").
Status check_object(const rapidjson::Value& v, const std::vector<FieldSpec>& fields,
                    const std::string& where);

// Member helpers for a checked object (absent → the default).
std::string get_string(const rapidjson::Value& o, const char* name, std::string def = {});
uint32_t get_uint32(const rapidjson::Value& o, const char* name, uint32_t def = 0);
bool get_bool(const rapidjson::Value& o, const char* name, bool def = false);

// `text` as a JSON string value; bytes that are not UTF-8 become U+FFFD (common/utf8.h).
std::string json_string(std::string_view text);

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;
// Writes `"key": "<text>"` (only the value when key is null), text sanitized as json_string.
void write_text(JsonWriter& w, const char* key, std::string_view text);

}  // namespace nv::api
