#include "log.h"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <mutex>

namespace nv::log {
namespace {

std::mutex g_mu;
std::string g_service = "neurovisor";
std::atomic<int> g_min{static_cast<int>(Level::info)};
thread_local std::string t_trace_id;

const char* level_name(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

void timestamp(char* buf, size_t n) {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  size_t len = std::strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + len, n - len, ".%03dZ", static_cast<int>(ms.count()));
}

}  // namespace

void init(std::string service, Level min_level) {
  std::lock_guard lock(g_mu);
  g_service = std::move(service);
  g_min = static_cast<int>(min_level);
}

bool parse_level(std::string_view text, Level* out) {
  static constexpr std::pair<std::string_view, Level> kLevels[] = {{"debug", Level::debug},
                                                                   {"info", Level::info},
                                                                   {"warn", Level::warn},
                                                                   {"error", Level::error}};
  for (auto& [name, level] : kLevels) {
    if (text == name) {
      *out = level;
      return true;
    }
  }
  return false;
}

void write(Level level, std::string_view msg, std::initializer_list<Field> fields,
           std::string_view trace_id) {
  if (static_cast<int>(level) < g_min.load(std::memory_order_relaxed)) return;
  char ts[40];
  timestamp(ts, sizeof ts);
  std::string service;
  {
    std::lock_guard lock(g_mu);
    service = g_service;
  }
  if (trace_id.empty()) trace_id = t_trace_id;

  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  auto str = [&w](std::string_view s) { w.String(s.data(), static_cast<unsigned>(s.size())); };
  w.StartObject();
  w.Key("ts");
  str(ts);
  w.Key("level");
  str(level_name(level));
  w.Key("service");
  str(service);
  w.Key("pid");
  w.Int(static_cast<int>(getpid()));
  if (!trace_id.empty()) {
    w.Key("trace_id");
    str(trace_id);
  }
  w.Key("msg");
  str(msg);
  for (const auto& f : fields) {
    w.Key(f.key.data(), static_cast<unsigned>(f.key.size()));
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, std::string_view>)
            str(v);
          else if constexpr (std::is_same_v<V, std::string>)
            str(v);
          else if constexpr (std::is_same_v<V, int64_t>)
            w.Int64(v);
          else if constexpr (std::is_same_v<V, uint64_t>)
            w.Uint64(v);
          else if constexpr (std::is_same_v<V, double>)
            w.Double(v);
          else if constexpr (std::is_same_v<V, bool>)
            w.Bool(v);
        },
        f.value);
  }
  w.EndObject();
  std::string line(sb.GetString(), sb.GetSize());
  line.push_back('\n');
  // One write(2) per line keeps lines whole when threads and processes share stderr.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

void syscall_error(std::string_view call, int err, std::initializer_list<Field> f) {
  std::string msg =
      std::string(call) + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
  write(Level::error, msg, f);
}

TraceScope::TraceScope(std::string trace_id) : previous_(std::move(t_trace_id)) {
  t_trace_id = std::move(trace_id);
}
TraceScope::~TraceScope() { t_trace_id = std::move(previous_); }

const std::string& current_trace_id() { return t_trace_id; }

}  // namespace nv::log
