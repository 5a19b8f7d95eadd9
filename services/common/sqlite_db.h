// sqlite_db.h — one SQLite database file (libsqlite3, https://sqlite.org/c3ref/intro.html) with
// typed errors: open with setup statements (pragmas, CREATE TABLE IF NOT EXISTS), exec, and
// prepared statements that finalize themselves. Errors are `internal` with the file, what was
// done and SQLite's message. Thread-safe as SQLite's serialized mode is (SQLITE_OPEN_FULLMUTEX);
// a caller that runs several statements as one unit locks around them itself.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace nv::sqlite {

class Db {
 public:
  // Opens (creating) `path`, sets a 5 s busy timeout and runs each of `setup` in order.
  static Result<std::unique_ptr<Db>> open(const std::string& path,
                                          std::initializer_list<const char*> setup);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Status exec(const char* sql);
  // internal "<path>: <what>: <SQLite's last message>".
  Error error(const std::string& what) const;
  sqlite3* handle() { return db_; }
  const std::string& path() const { return path_; }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
};

// A prepared statement, finalized on scope exit. Indexes: binds from 1, columns from 0.
class Stmt {
 public:
  Stmt(Db& db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return ok_; }
  void text(int i, std::string_view v);
  void i64(int i, int64_t v);
  void blob(int i, const void* data, size_t size);
  static constexpr int kRow = 100, kDone = 101;  // SQLITE_ROW, SQLITE_DONE
  int step();                                    // kRow, kDone or another SQLite result code
  bool done() { return step() == kDone; }
  std::string col_text(int i);
  int64_t col_i64(int i);
  std::string_view col_blob(int i);  // valid until the next step

 private:
  sqlite3_stmt* st_ = nullptr;
  bool ok_ = false;
};

}  // namespace nv::sqlite
