// sandbox_registry.h — the executor's registry of sandboxes on disk, so a restart of
// nv-sandbox-executor finds every sandbox it served (issue 13 §5).
//
// One SQLite database (libsqlite3, WAL journal) at <state-dir>/executor.sqlite with one table:
//   sandboxes(id TEXT PRIMARY KEY, owner TEXT, state INTEGER, lease_vm_id TEXT,
//             idle_timeout_ms INTEGER, max_deadline_unix_ms INTEGER, ended_unix_ms INTEGER,
//             info BLOB)
//   sandbox_mounts(id TEXT PRIMARY KEY, state BLOB): the host-directory manifests of a sandbox
//     with mounts (issue 15), so a restarted executor still syncs them
// `info` is the sandbox's SandboxInfo (sandbox.capnp) as a Cap'n Proto message (spec, deadlines,
// labels, env, cwd, parent, end reason); the other columns are what queries and the restart need.
// Every change of a sandbox is written before its answer is sent (synchronous=FULL).
// Thread-safe: one connection, serialised by a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/sandbox_client.h"
#include "common/sqlite_db.h"

namespace nv::exec {

struct SandboxRecord {
  sandbox::Info info;
  uint32_t idle_timeout_ms = 0;
  std::string lease_vm_id;           // the pool's id of its VM (kept while paused)
  int64_t max_deadline_unix_ms = 0;  // created + the longest lifetime allowed (keepalive bound)
  int64_t ended_unix_ms = 0;         // destroyed: when
  std::string mount_state;           // the mounts' manifests (sandbox_mounts.h encode_state)
};

class SandboxRegistry {
 public:
  // Opens (creating the directory's file and the table if needed) `path`. internal on failure.
  static Result<std::unique_ptr<SandboxRegistry>> open(const std::string& path);
  SandboxRegistry(const SandboxRegistry&) = delete;
  SandboxRegistry& operator=(const SandboxRegistry&) = delete;

  // Inserts or replaces the row of record.info.sandbox_id.
  Status put(const SandboxRecord& record);
  Status remove(const std::string& id);
  // Every row, in creation order.
  Result<std::vector<SandboxRecord>> load();
  const std::string& path() const { return db_->path(); }

 private:
  explicit SandboxRegistry(std::unique_ptr<sqlite::Db> db) : db_(std::move(db)) {}
  std::unique_ptr<sqlite::Db> db_;
  std::mutex mu_;
};

}  // namespace nv::exec
