// sandbox_json.h — a sandbox exec's result as JSON, one shape for every tool that prints it
// (nv-api's /v1/sandboxes/{id}/exec and /v1/exec, `nv sandbox exec --json`): the field names of
// exec.capnp ExecResult in lowerCamelCase; text fields (stdout, stderr, their tails, vmId, note)
// as JSON strings with each ill-formed UTF-8 subsequence replaced by U+FFFD (common/utf8.h).
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string_view>

#include "sandbox_client.h"

namespace nv::sandbox {

using JsonOut = rapidjson::Writer<rapidjson::StringBuffer>;

// Writes `key` (unless null: an array element) and `text`, sanitized to UTF-8.
void write_json_text(JsonOut& w, const char* key, std::string_view text);
// Writes the result's fields into the open object `w` (the caller starts and ends it and may add
// its own fields): exitCode signal timedOut truncated hostKilled note vmId durationMs wallMs
// stdout stderr stdoutTail stderrTail stdoutBytes stderrBytes.
void write_exec_result_fields(JsonOut& w, const ExecResult& r);

}  // namespace nv::sandbox
