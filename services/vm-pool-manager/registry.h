// registry.h — the pool manager's record of sandbox leases and snapshots, kept on disk so a
// restart neither forgets a paused sandbox nor a snapshot (issue 13 §5).
//
// Storage: one SQLite database ($NV_STATE_DIR/pool.sqlite, WAL journal, synchronous=NORMAL),
// through the Debian-packaged libsqlite3 (https://sqlite.org/c3ref/intro.html). Two tables:
//   leases(vm_id PRIMARY KEY, sandbox_id, owner, tier, vcpus, memory_mib, state, lease_ms,
//          expires_unix_ms, note, state_dir)
//   snapshots(owner, name, tier, vcpus, memory_mib, source_vm_id, source_sandbox_id,
//             created_unix_ms, memory_bytes, state_bytes, dir, PRIMARY KEY(owner, name))
// `state` is vm.capnp LeaseState as its ordinal (running 1, paused 2, lost 3). `state_dir` of a
// paused lease and `dir` of a snapshot hold memory.img (the guest RAM, sparse) and device.state
// (QEMU's device state saved with x-ignore-shared).
//
// Thread-safe (one mutex around the connection). Every call answers a typed error (internal,
// with SQLite's message) instead of throwing.
#pragma once

#include <nv/schema/common.capnp.h>
#include <nv/schema/vm.capnp.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/sqlite_db.h"

namespace nv::vm {

struct LeaseRecord {
  std::string vm_id, sandbox_id, owner;
  schema::SizeTier tier = schema::SizeTier::SMALL;
  uint32_t vcpus = 0, memory_mib = 0;
  schema::LeaseState state = schema::LeaseState::RUNNING;
  uint32_t lease_ms = 0;        // the lifetime last granted
  int64_t expires_unix_ms = 0;  // wall clock (it must mean the same after a restart)
  std::string note;             // lost: why
  std::string state_dir;        // paused: memory.img + device.state
  std::string network;          // the sandbox's allow policy, so a resume re-attaches it:
                                // "<maxConnections> <bandwidth>\n<entry>\n..." ("" = none)
};

struct SnapshotRecordRow {
  std::string name, owner;
  schema::SizeTier tier = schema::SizeTier::SMALL;
  uint32_t vcpus = 0, memory_mib = 0;
  std::string source_vm_id, source_sandbox_id;
  int64_t created_unix_ms = 0;
  uint64_t memory_bytes = 0, state_bytes = 0;  // allocated bytes on disk
  std::string dir;                             // memory.img + device.state
};

class Registry {
 public:
  // Opens (creating when missing) the database at `path`; its directory must exist.
  static Result<std::unique_ptr<Registry>> open(const std::string& path);
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Inserts or replaces the lease with this vm_id.
  Status put_lease(const LeaseRecord& r);
  Status remove_lease(const std::string& vm_id);
  Result<std::optional<LeaseRecord>> lease(const std::string& vm_id);
  // Every lease of `owner` ("" = all), ordered by vm_id.
  Result<std::vector<LeaseRecord>> leases(const std::string& owner);
  // Start-up after a restart: every lease recorded running had its VMM die with the previous
  // pool manager; it becomes lost with `note`. Returns the leases changed.
  Result<std::vector<LeaseRecord>> mark_running_lost(const std::string& note);

  // badRequest when the owner already has a snapshot of that name.
  Status add_snapshot(const SnapshotRecordRow& r);
  Status remove_snapshot(const std::string& owner, const std::string& name);
  Result<std::optional<SnapshotRecordRow>> snapshot(const std::string& owner,
                                                    const std::string& name);
  // Every snapshot of `owner` ("" = all), ordered by owner, name.
  Result<std::vector<SnapshotRecordRow>> snapshots(const std::string& owner);

  const std::string& path() const { return db_->path(); }

 private:
  explicit Registry(std::unique_ptr<sqlite::Db> db) : db_(std::move(db)) {}
  Error db_error(const std::string& what) { return db_->error(what); }

  std::mutex mu_;
  std::unique_ptr<sqlite::Db> db_;
};

}  // namespace nv::vm
