// sandbox_json.h — sandbox values as JSON, one shape for every tool that prints them (nv-api's
// /v1/sandboxes/{id}/exec and /v1/exec, `nv sandbox exec --json`; mounts and sync results in
// nv-api and `nv sandbox ... --json`): the field names of the schema (exec.capnp ExecResult,
// sandbox.capnp Mount and MountSync) in lowerCamelCase; text fields as JSON strings with each
// ill-formed UTF-8 subsequence replaced by U+FFFD (common/utf8.h).
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string_view>
#include <vector>

#include "error.h"

#include "sandbox_client.h"

namespace nv::sandbox {

using JsonOut = rapidjson::Writer<rapidjson::StringBuffer>;

// Writes `key` (unless null: an array element) and `text`, sanitized to UTF-8.
void write_json_text(JsonOut& w, const char* key, std::string_view text);
// Writes the result's fields into the open object `w` (the caller starts and ends it and may add
// its own fields): exitCode signal timedOut truncated hostKilled note vmId durationMs wallMs
// stdout stderr stdoutTail stderrTail stdoutBytes stderrBytes.
void write_exec_result_fields(JsonOut& w, const ExecResult& r);

// One mount: {"hostPath", "guestPath", "readOnly", "quotaBytes", "quotaFiles"}.
void write_mount(JsonOut& w, const Mount& m);
// One sync result: {"guestPath", "hostPath", "filesWritten", "bytesWritten", "filesRemoved",
// "skipped": ["<path>: <why>", ...]}.
void write_mount_sync(JsonOut& w, const MountSync& s);

// A JSON array of mount objects in write_mount's shape, as a client sends it: hostPath and
// guestPath strings (required), readOnly bool, quotaBytes and quotaFiles non-negative integers
// (optional, default false/0); unknown members are refused. Shapes only (at most 8 mounts,
// strings at most 4096 bytes): the sandbox service checks the paths and roots. badRequest
// naming the element and member otherwise.
Result<std::vector<Mount>> mounts_from_json(const rapidjson::Value& v);

}  // namespace nv::sandbox
