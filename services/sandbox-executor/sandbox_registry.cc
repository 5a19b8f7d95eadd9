#include "sandbox_registry.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>

namespace nv::exec {

Result<std::unique_ptr<SandboxRegistry>> SandboxRegistry::open(const std::string& path) {
  auto db =
      sqlite::Db::open(path, {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                              "CREATE TABLE IF NOT EXISTS sandboxes ("
                              " id TEXT PRIMARY KEY, owner TEXT NOT NULL, state INTEGER NOT NULL,"
                              " lease_vm_id TEXT NOT NULL, idle_timeout_ms INTEGER NOT NULL,"
                              " max_deadline_unix_ms INTEGER NOT NULL,"
                              " ended_unix_ms INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,"
                              " info BLOB NOT NULL)",
                              "CREATE TABLE IF NOT EXISTS sandbox_mounts ("
                              " id TEXT PRIMARY KEY, state BLOB NOT NULL)"});
  if (!db) return db.error();
  return std::unique_ptr<SandboxRegistry>(new SandboxRegistry(std::move(db.value())));
}

Status SandboxRegistry::put(const SandboxRecord& r) {
  capnp::MallocMessageBuilder mb;
  sandbox::to_capnp(r.info, mb.initRoot<schema::SandboxInfo>());
  auto words = capnp::messageToFlatArray(mb);
  auto blob = words.asBytes();
  std::lock_guard lock(mu_);
  sqlite::Stmt st(*db_,
                  "INSERT OR REPLACE INTO sandboxes (id, owner, state, lease_vm_id,"
                  " idle_timeout_ms, max_deadline_unix_ms, ended_unix_ms, created_unix_ms,"
                  " info) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  if (!st.ok()) return db_->error("prepare put");
  st.text(1, r.info.sandbox_id);
  st.text(2, r.info.owner);
  st.i64(3, static_cast<int64_t>(r.info.state));
  st.text(4, r.lease_vm_id);
  st.i64(5, r.idle_timeout_ms);
  st.i64(6, r.max_deadline_unix_ms);
  st.i64(7, r.ended_unix_ms);
  st.i64(8, r.info.created_unix_ms);
  st.blob(9, blob.begin(), blob.size());
  if (!st.done()) return db_->error("put " + r.info.sandbox_id);
  if (r.mount_state.empty()) return {};
  sqlite::Stmt m(*db_, "INSERT OR REPLACE INTO sandbox_mounts (id, state) VALUES (?1, ?2)");
  if (!m.ok()) return db_->error("prepare put mounts");
  m.text(1, r.info.sandbox_id);
  m.blob(2, r.mount_state.data(), r.mount_state.size());
  if (!m.done()) return db_->error("put mounts " + r.info.sandbox_id);
  return {};
}

Status SandboxRegistry::remove(const std::string& id) {
  std::lock_guard lock(mu_);
  sqlite::Stmt st(*db_, "DELETE FROM sandboxes WHERE id = ?1");
  if (!st.ok()) return db_->error("prepare remove");
  st.text(1, id);
  if (!st.done()) return db_->error("remove " + id);
  sqlite::Stmt m(*db_, "DELETE FROM sandbox_mounts WHERE id = ?1");
  if (!m.ok()) return db_->error("prepare remove mounts");
  m.text(1, id);
  if (!m.done()) return db_->error("remove mounts " + id);
  return {};
}

Result<std::vector<SandboxRecord>> SandboxRegistry::load() {
  std::lock_guard lock(mu_);
  sqlite::Stmt st(*db_,
                  "SELECT s.lease_vm_id, s.idle_timeout_ms, s.max_deadline_unix_ms,"
                  " s.ended_unix_ms, s.info, m.state FROM sandboxes s"
                  " LEFT JOIN sandbox_mounts m ON m.id = s.id ORDER BY s.created_unix_ms, s.id");
  if (!st.ok()) return db_->error("prepare load");
  std::vector<SandboxRecord> out;
  int rc;
  while ((rc = st.step()) == sqlite::Stmt::kRow) {
    SandboxRecord r;
    r.lease_vm_id = st.col_text(0);
    r.idle_timeout_ms = static_cast<uint32_t>(st.col_i64(1));
    r.max_deadline_unix_ms = st.col_i64(2);
    r.ended_unix_ms = st.col_i64(3);
    auto mounts = st.col_blob(5);
    r.mount_state.assign(mounts.data(), mounts.size());
    auto blob = st.col_blob(4);
    if (blob.empty() || blob.size() % sizeof(capnp::word) != 0) continue;  // not ours: skipped
    // An aligned copy: SQLite's buffer carries no alignment promise.
    auto words = kj::heapArray<capnp::word>(blob.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), blob.data(), blob.size());
    try {
      capnp::FlatArrayMessageReader reader(words);
      r.info = sandbox::from_capnp(reader.getRoot<schema::SandboxInfo>());
    } catch (const kj::Exception&) {
      continue;  // a corrupt row cannot be served; it is left for inspection
    }
    out.push_back(std::move(r));
  }
  if (rc != sqlite::Stmt::kDone) return db_->error("load");
  return out;
}

}  // namespace nv::exec
