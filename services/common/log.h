// log.h — structured JSON log lines on stderr, one object per line, with the trace id.
//
//   {"ts":"2026-11-26T05:59:01.123Z","level":"info","service":"orchestrator","pid":42,
//    "trace_id":"0193…","msg":"worker registered","service_name":"exec"}
//
// The trace id comes from the explicit argument or, when empty, from the calling thread's
// TraceScope. Thread-safe: each line is written with one write(2).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace nv::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

struct Field {
  std::string_view key;
  std::variant<std::string_view, std::string, int64_t, uint64_t, double, bool> value;
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  Field(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, long v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, long long v) : key(k), value(int64_t{v}) {}
  Field(std::string_view k, unsigned v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, unsigned long v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, unsigned long long v) : key(k), value(uint64_t{v}) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

// Sets the service name on every line and the lowest level written (default info).
void init(std::string service, Level min_level = Level::info);
// Parses "debug" | "info" | "warn" | "error"; false when unknown.
bool parse_level(std::string_view text, Level* out);

void write(Level level, std::string_view msg, std::initializer_list<Field> fields = {},
           std::string_view trace_id = {});

inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::error, m, f);
}

// Logs "<call> failed" at error level with errno's number and text (nsjail's PLOG_E).
void syscall_error(std::string_view call, int err, std::initializer_list<Field> f = {});

// Sets the calling thread's trace id for the scope's lifetime.
class TraceScope {
 public:
  explicit TraceScope(std::string trace_id);
  ~TraceScope();
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  std::string previous_;
};

// The calling thread's current trace id ("" if none).
const std::string& current_trace_id();

}  // namespace nv::log
