#include "registry.h"

#include <sqlite3.h>

namespace nv::vm {
namespace {

using sqlite::Stmt;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS leases (
  vm_id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, owner TEXT NOT NULL, tier INTEGER NOT NULL,
  vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, state INTEGER NOT NULL,
  lease_ms INTEGER NOT NULL, expires_unix_ms INTEGER NOT NULL, note TEXT NOT NULL,
  state_dir TEXT NOT NULL, network TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS snapshots (
  owner TEXT NOT NULL, name TEXT NOT NULL, tier INTEGER NOT NULL, vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL, source_vm_id TEXT NOT NULL, source_sandbox_id TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL, memory_bytes INTEGER NOT NULL, state_bytes INTEGER NOT NULL,
  dir TEXT NOT NULL, PRIMARY KEY (owner, name));
)";

constexpr const char* kLeaseCols =
    "vm_id, sandbox_id, owner, tier, vcpus, memory_mib, state, lease_ms, expires_unix_ms, note, "
    "state_dir, network";
constexpr const char* kSnapCols =
    "owner, name, tier, vcpus, memory_mib, source_vm_id, source_sandbox_id, created_unix_ms, "
    "memory_bytes, state_bytes, dir";

LeaseRecord lease_row(Stmt& s) {
  LeaseRecord r;
  r.vm_id = s.col_text(0);
  r.sandbox_id = s.col_text(1);
  r.owner = s.col_text(2);
  r.tier = static_cast<schema::SizeTier>(s.col_i64(3));
  r.vcpus = static_cast<uint32_t>(s.col_i64(4));
  r.memory_mib = static_cast<uint32_t>(s.col_i64(5));
  r.state = static_cast<schema::LeaseState>(s.col_i64(6));
  r.lease_ms = static_cast<uint32_t>(s.col_i64(7));
  r.expires_unix_ms = s.col_i64(8);
  r.note = s.col_text(9);
  r.state_dir = s.col_text(10);
  r.network = s.col_text(11);
  return r;
}

SnapshotRecordRow snap_row(Stmt& s) {
  SnapshotRecordRow r;
  r.owner = s.col_text(0);
  r.name = s.col_text(1);
  r.tier = static_cast<schema::SizeTier>(s.col_i64(2));
  r.vcpus = static_cast<uint32_t>(s.col_i64(3));
  r.memory_mib = static_cast<uint32_t>(s.col_i64(4));
  r.source_vm_id = s.col_text(5);
  r.source_sandbox_id = s.col_text(6);
  r.created_unix_ms = s.col_i64(7);
  r.memory_bytes = static_cast<uint64_t>(s.col_i64(8));
  r.state_bytes = static_cast<uint64_t>(s.col_i64(9));
  r.dir = s.col_text(10);
  return r;
}

}  // namespace

Result<std::unique_ptr<Registry>> Registry::open(const std::string& path) {
  auto db =
      sqlite::Db::open(path, {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=NORMAL;", kSchema});
  if (!db) return db.error();
  // A registry written before leases had a network column: added (fails harmlessly when there).
  (void)db.value()->exec("ALTER TABLE leases ADD COLUMN network TEXT NOT NULL DEFAULT '';");
  return std::unique_ptr<Registry>(new Registry(std::move(db.value())));
}

Status Registry::put_lease(const LeaseRecord& r) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, (std::string("INSERT OR REPLACE INTO leases (") + kLeaseCols +
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")
                   .c_str());
  if (!s.ok()) return db_error("put_lease");
  s.text(1, r.vm_id);
  s.text(2, r.sandbox_id);
  s.text(3, r.owner);
  s.i64(4, static_cast<int64_t>(r.tier));
  s.i64(5, r.vcpus);
  s.i64(6, r.memory_mib);
  s.i64(7, static_cast<int64_t>(r.state));
  s.i64(8, r.lease_ms);
  s.i64(9, r.expires_unix_ms);
  s.text(10, r.note);
  s.text(11, r.state_dir);
  s.text(12, r.network);
  if (s.step() != SQLITE_DONE) return db_error("put_lease");
  return {};
}

Status Registry::remove_lease(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, "DELETE FROM leases WHERE vm_id = ?1");
  if (!s.ok()) return db_error("remove_lease");
  s.text(1, vm_id);
  if (s.step() != SQLITE_DONE) return db_error("remove_lease");
  return {};
}

Result<std::optional<LeaseRecord>> Registry::lease(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, (std::string("SELECT ") + kLeaseCols + " FROM leases WHERE vm_id = ?1").c_str());
  if (!s.ok()) return db_error("lease");
  s.text(1, vm_id);
  int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<LeaseRecord>(lease_row(s));
  if (rc != SQLITE_DONE) return db_error("lease");
  return std::optional<LeaseRecord>();
}

Result<std::vector<LeaseRecord>> Registry::leases(const std::string& owner) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, (std::string("SELECT ") + kLeaseCols +
                " FROM leases WHERE ?1 = '' OR owner = ?1 ORDER BY vm_id")
                   .c_str());
  if (!s.ok()) return db_error("leases");
  s.text(1, owner);
  std::vector<LeaseRecord> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(lease_row(s));
  if (rc != SQLITE_DONE) return db_error("leases");
  return out;
}

Result<std::vector<LeaseRecord>> Registry::mark_running_lost(const std::string& note) {
  auto all = leases("");
  if (!all.ok()) return all.error();
  std::vector<LeaseRecord> changed;
  for (auto r : all.value()) {
    if (r.state != schema::LeaseState::RUNNING) continue;
    r.state = schema::LeaseState::LOST;
    r.note = note;
    if (Status s = put_lease(r); !s.ok()) return s.error();
    changed.push_back(r);
  }
  return changed;
}

Status Registry::add_snapshot(const SnapshotRecordRow& r) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, (std::string("INSERT INTO snapshots (") + kSnapCols +
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
                   .c_str());
  if (!s.ok()) return db_error("add_snapshot");
  s.text(1, r.owner);
  s.text(2, r.name);
  s.i64(3, static_cast<int64_t>(r.tier));
  s.i64(4, r.vcpus);
  s.i64(5, r.memory_mib);
  s.text(6, r.source_vm_id);
  s.text(7, r.source_sandbox_id);
  s.i64(8, r.created_unix_ms);
  s.i64(9, static_cast<int64_t>(r.memory_bytes));
  s.i64(10, static_cast<int64_t>(r.state_bytes));
  s.text(11, r.dir);
  int rc = s.step();
  if (rc == SQLITE_CONSTRAINT) {
    return make_error(ErrorCode::BAD_REQUEST, "owner '" + r.owner +
                                                  "' already has a snapshot named '" + r.name +
                                                  "' (delete it first or pick another name)");
  }
  if (rc != SQLITE_DONE) return db_error("add_snapshot");
  return {};
}

Status Registry::remove_snapshot(const std::string& owner, const std::string& name) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, "DELETE FROM snapshots WHERE owner = ?1 AND name = ?2");
  if (!s.ok()) return db_error("remove_snapshot");
  s.text(1, owner);
  s.text(2, name);
  if (s.step() != SQLITE_DONE) return db_error("remove_snapshot");
  return {};
}

Result<std::optional<SnapshotRecordRow>> Registry::snapshot(const std::string& owner,
                                                            const std::string& name) {
  std::lock_guard lock(mu_);
  Stmt s(*db_,
         (std::string("SELECT ") + kSnapCols + " FROM snapshots WHERE owner = ?1 AND name = ?2")
             .c_str());
  if (!s.ok()) return db_error("snapshot");
  s.text(1, owner);
  s.text(2, name);
  int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<SnapshotRecordRow>(snap_row(s));
  if (rc != SQLITE_DONE) return db_error("snapshot");
  return std::optional<SnapshotRecordRow>();
}

Result<std::vector<SnapshotRecordRow>> Registry::snapshots(const std::string& owner) {
  std::lock_guard lock(mu_);
  Stmt s(*db_, (std::string("SELECT ") + kSnapCols +
                " FROM snapshots WHERE ?1 = '' OR owner = ?1 ORDER BY owner, name")
                   .c_str());
  if (!s.ok()) return db_error("snapshots");
  s.text(1, owner);
  std::vector<SnapshotRecordRow> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(snap_row(s));
  if (rc != SQLITE_DONE) return db_error("snapshots");
  return out;
}

}  // namespace nv::vm
