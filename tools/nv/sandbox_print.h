// sandbox_print.h — what `nv sandbox` prints: tables and lines for people, and with --json one
// JSON object per command (common/json.h: the schema's camelCase names, enums by name) — a
// SandboxInfo, {"sandboxes": [...]}, {"entries": [...]}, {"processes": [...]}, a SnapshotInfo,
// {"snapshots": [...]}, an exec result, {"copied": ...}, {"done": ...}, {"synced": [...]} or
// {"error": {...}}.
#pragma once

#include <nv/schema/common.capnp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/sandbox_client.h"

namespace nv::launcher {

class Printer {
 public:
  explicit Printer(bool json) : json_(json) {}

  // A typed error: stderr ("nv sandbox: unknownSandbox: ..."), or {"error": {...}} on stdout.
  void error(const Error& e);
  // create: the new id alone on a line (for ID=$(nv sandbox create)).
  void created(const sandbox::Info& info);
  // get, pause, resume, keepalive, rm: the state after the command.
  void info(const sandbox::Info& info, const std::string& command);
  // ls-all (a table), fork (ids only, one a line).
  void infos(const std::vector<sandbox::Info>& infos, bool ids_only = false);
  // exec: one live output chunk (stdout/stderr as they come; status lines with --verbose).
  void chunk(schema::Stream stream, std::string_view data, bool verbose);
  // exec: how it ended. Output past the cap: the tail after a line saying how much is missing.
  void exec_result(const sandbox::ExecResult& r, const std::string& id, int status, bool background,
                   uint32_t timeout_ms);
  void copied(const std::string& from, const std::string& to, uint64_t bytes, size_t requests);
  void entries(const std::vector<sandbox::FileEntry>& entries);
  void processes(const std::vector<sandbox::Process>& processes);
  // snapshot (one: the SnapshotInfo itself), snapshots (a table).
  void snapshots(const std::vector<sandbox::Snapshot>& snapshots, bool one);
  // kill, snapshot-rm.
  void done(const std::string& what);
  // sync: a line per read-write mount, or {"synced": [...]} (common/sandbox_json.h's shape,
  // the same as nv-api's POST /v1/sandboxes/{id}/sync).
  void synced(const std::vector<sandbox::MountSync>& synced);

 private:
  bool json_;
};

// "2026-11-30T02:09:09Z" (UTC) for unix milliseconds; "-" for 0.
std::string utc_time(int64_t unix_ms);

}  // namespace nv::launcher
