#include "sandbox_registry.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <sqlite3.h>

namespace nv::exec {

namespace {

Error db_error(sqlite3* db, const std::string& what) {
  return make_error(ErrorCode::INTERNAL,
                    "sandbox registry: " + what + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}

// A prepared statement, finalized on every path.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

Result<std::unique_ptr<SandboxRegistry>> SandboxRegistry::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    auto e = db_error(db, "cannot open " + path);
    sqlite3_close(db);
    return e;
  }
  std::unique_ptr<SandboxRegistry> reg(new SandboxRegistry(db, path));
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                          "CREATE TABLE IF NOT EXISTS sandboxes ("
                          " id TEXT PRIMARY KEY, owner TEXT NOT NULL, state INTEGER NOT NULL,"
                          " lease_vm_id TEXT NOT NULL, idle_timeout_ms INTEGER NOT NULL,"
                          " max_deadline_unix_ms INTEGER NOT NULL,"
                          " ended_unix_ms INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,"
                          " info BLOB NOT NULL)"}) {
    if (auto st = reg->exec(sql); !st) return st.error();
  }
  return reg;
}

SandboxRegistry::~SandboxRegistry() { sqlite3_close(db_); }

Status SandboxRegistry::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : "?";
    sqlite3_free(msg);
    return make_error(ErrorCode::INTERNAL, std::string("sandbox registry: ") + sql + ": " + m);
  }
  return {};
}

Status SandboxRegistry::put(const SandboxRecord& r) {
  capnp::MallocMessageBuilder mb;
  sandbox::to_capnp(r.info, mb.initRoot<schema::SandboxInfo>());
  auto words = capnp::messageToFlatArray(mb);
  auto blob = words.asBytes();
  std::lock_guard lock(mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_,
                         "INSERT OR REPLACE INTO sandboxes (id, owner, state, lease_vm_id,"
                         " idle_timeout_ms, max_deadline_unix_ms, ended_unix_ms, created_unix_ms,"
                         " info) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(db_, "prepare put");
  }
  sqlite3_bind_text(st.s, 1, r.info.sandbox_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, r.info.owner.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st.s, 3, static_cast<int>(r.info.state));
  sqlite3_bind_text(st.s, 4, r.lease_vm_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.s, 5, r.idle_timeout_ms);
  sqlite3_bind_int64(st.s, 6, r.max_deadline_unix_ms);
  sqlite3_bind_int64(st.s, 7, r.ended_unix_ms);
  sqlite3_bind_int64(st.s, 8, r.info.created_unix_ms);
  sqlite3_bind_blob(st.s, 9, blob.begin(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(st.s) != SQLITE_DONE) return db_error(db_, "put " + r.info.sandbox_id);
  return {};
}

Status SandboxRegistry::remove(const std::string& id) {
  std::lock_guard lock(mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_, "DELETE FROM sandboxes WHERE id = ?1", -1, &st.s, nullptr) !=
      SQLITE_OK) {
    return db_error(db_, "prepare remove");
  }
  sqlite3_bind_text(st.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.s) != SQLITE_DONE) return db_error(db_, "remove " + id);
  return {};
}

Result<std::vector<SandboxRecord>> SandboxRegistry::load() {
  std::lock_guard lock(mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT lease_vm_id, idle_timeout_ms, max_deadline_unix_ms,"
                         " ended_unix_ms, info FROM sandboxes ORDER BY created_unix_ms, id",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(db_, "prepare load");
  }
  std::vector<SandboxRecord> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    SandboxRecord r;
    const auto* vm = sqlite3_column_text(st.s, 0);
    r.lease_vm_id = vm ? reinterpret_cast<const char*>(vm) : "";
    r.idle_timeout_ms = static_cast<uint32_t>(sqlite3_column_int64(st.s, 1));
    r.max_deadline_unix_ms = sqlite3_column_int64(st.s, 2);
    r.ended_unix_ms = sqlite3_column_int64(st.s, 3);
    const void* blob = sqlite3_column_blob(st.s, 4);
    auto size = static_cast<size_t>(sqlite3_column_bytes(st.s, 4));
    if (blob == nullptr || size % sizeof(capnp::word) != 0) continue;  // not ours: skipped
    // An aligned copy: SQLite's buffer carries no alignment promise.
    kj::Array<capnp::word> words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
    std::memcpy(words.begin(), blob, size);
    try {
      capnp::FlatArrayMessageReader reader(words);
      r.info = sandbox::from_capnp(reader.getRoot<schema::SandboxInfo>());
    } catch (const kj::Exception&) {
      continue;  // a corrupt row cannot be served; it is left for inspection
    }
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return db_error(db_, "load");
  return out;
}

}  // namespace nv::exec
