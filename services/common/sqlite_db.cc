#include "sqlite_db.h"

#include <sqlite3.h>

namespace nv::sqlite {

Result<std::unique_ptr<Db>> Db::open(const std::string& path,
                                     std::initializer_list<const char*> setup) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return make_error(ErrorCode::INTERNAL, path + ": open: " + msg);
  }
  std::unique_ptr<Db> d(new Db(db, path));
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : setup) {
    if (auto st = d->exec(sql); !st) return st.error();
  }
  return d;
}

Db::~Db() { sqlite3_close(db_); }

Status Db::exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : "unknown error";
    sqlite3_free(msg);
    return make_error(ErrorCode::INTERNAL,
                      path_ + ": " + std::string(sql).substr(0, 80) + ": " + m);
  }
  return {};
}

Error Db::error(const std::string& what) const {
  return make_error(ErrorCode::INTERNAL, path_ + ": " + what + ": " + sqlite3_errmsg(db_));
}

Stmt::Stmt(Db& db, const char* sql) {
  ok_ = sqlite3_prepare_v2(db.handle(), sql, -1, &st_, nullptr) == SQLITE_OK;
}
Stmt::~Stmt() { sqlite3_finalize(st_); }
void Stmt::text(int i, std::string_view v) {
  sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
void Stmt::i64(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
void Stmt::blob(int i, const void* data, size_t size) {
  sqlite3_bind_blob(st_, i, data, static_cast<int>(size), SQLITE_TRANSIENT);
}
int Stmt::step() { return sqlite3_step(st_); }
std::string Stmt::col_text(int i) {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(st_, i))) : std::string();
}
int64_t Stmt::col_i64(int i) { return sqlite3_column_int64(st_, i); }
std::string_view Stmt::col_blob(int i) {
  const void* p = sqlite3_column_blob(st_, i);
  auto n = static_cast<size_t>(sqlite3_column_bytes(st_, i));
  return p ? std::string_view(static_cast<const char*>(p), n) : std::string_view();
}

}  // namespace nv::sqlite
