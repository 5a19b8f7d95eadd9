#include "sandbox_json.h"

#include <string>

#include "utf8.h"

namespace nv::sandbox {

void write_json_text(JsonOut& w, const char* key, std::string_view text) {
  std::string clean = utf8::sanitize(text);
  if (key) w.Key(key);
  w.String(clean.data(), static_cast<rapidjson::SizeType>(clean.size()));
}

void write_exec_result_fields(JsonOut& w, const ExecResult& r) {
  w.Key("exitCode");
  w.Int(r.exit_code);
  w.Key("signal");
  w.Int(r.signal);
  w.Key("timedOut");
  w.Bool(r.timed_out);
  w.Key("truncated");
  w.Bool(r.truncated);
  w.Key("hostKilled");
  w.Bool(r.host_killed);
  write_json_text(w, "note", r.note);
  write_json_text(w, "vmId", r.vm_id);
  w.Key("durationMs");
  w.Double(r.duration_ms);
  w.Key("wallMs");
  w.Double(r.wall_ms);
  write_json_text(w, "stdout", r.stdout_data);
  write_json_text(w, "stderr", r.stderr_data);
  write_json_text(w, "stdoutTail", r.stdout_tail);
  write_json_text(w, "stderrTail", r.stderr_tail);
  w.Key("stdoutBytes");
  w.Uint64(r.stdout_bytes);
  w.Key("stderrBytes");
  w.Uint64(r.stderr_bytes);
}

}  // namespace nv::sandbox
