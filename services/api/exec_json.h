// exec_json.h — code runs as JSON: the fields an exec takes and the result it gives, shared by
// /v1/exec and /v1/sandboxes/{id}/exec.
//
// Request fields: language ("python" | "bash" | "sh" | "javascript", aliases py, python3,
// node, js), code, stdin (text), env ({"NAME": "value"}), timeoutMs, outputCapBytes, tailBytes.
// Result: {exitCode, signal, timedOut, truncated, stdout, stderr, stdoutTail, stderrTail,
// stdoutBytes, stderrBytes, durationMs, wallMs, vmId, hostKilled, note, traceId}; program bytes
// are text with each ill-formed UTF-8 sequence as U+FFFD (common/utf8.h).
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <rapidjson/document.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "common/sandbox_client.h"
#include "http_json.h"

namespace nv::api {

// The exec fields (plus `extra`), for parse_object.
std::vector<FieldSpec> exec_fields(std::vector<FieldSpec> extra = {});
bool parse_language(const std::string& s, schema::Language* out);
bool parse_tier(const std::string& s, schema::SizeTier* out);
// env {"NAME":"value"} → checks names (1..255 bytes, no '=' or NUL) and values are strings.
Status parse_env(const rapidjson::Value& doc,
                 std::vector<std::pair<std::string, std::string>>* out);

std::string exec_result_json(const sandbox::ExecResult& r, const std::string& trace_id);
std::string exec_result_json(schema::ExecResult::Reader r, const std::string& trace_id);
// A streamed chunk: {"event":"stdout|stderr|status","data":"..."}.
std::string exec_chunk_json(schema::ExecChunk::Reader c, std::string* type);
std::string stream_name(schema::Stream s);

}  // namespace nv::api
