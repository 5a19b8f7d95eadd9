#include "sandbox_json.h"

#include <string>
#include <string_view>

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

void write_mount(JsonOut& w, const Mount& m) {
  w.StartObject();
  write_json_text(w, "hostPath", m.host_path);
  write_json_text(w, "guestPath", m.guest_path);
  w.Key("readOnly");
  w.Bool(m.read_only);
  w.Key("quotaBytes");
  w.Uint64(m.quota_bytes);
  w.Key("quotaFiles");
  w.Uint(m.quota_files);
  w.EndObject();
}

void write_mount_sync(JsonOut& w, const MountSync& s) {
  w.StartObject();
  write_json_text(w, "guestPath", s.guest_path);
  write_json_text(w, "hostPath", s.host_path);
  w.Key("filesWritten");
  w.Uint(s.files_written);
  w.Key("bytesWritten");
  w.Uint64(s.bytes_written);
  w.Key("filesRemoved");
  w.Uint(s.files_removed);
  w.Key("skipped");
  w.StartArray();
  for (const auto& k : s.skipped) write_json_text(w, nullptr, k);
  w.EndArray();
  w.EndObject();
}

Result<std::vector<Mount>> mounts_from_json(const rapidjson::Value& v) {
  constexpr size_t kMaxMounts = 8, kMaxPath = 4096;
  auto bad = [](std::string why) { return make_error(ErrorCode::BAD_REQUEST, std::move(why)); };
  if (!v.IsArray()) return bad("mounts must be an array of objects");
  if (v.Size() > kMaxMounts) {
    return bad("mounts has " + std::to_string(v.Size()) + " entries; the limit is " +
               std::to_string(kMaxMounts));
  }
  std::vector<Mount> out;
  for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
    const auto& e = v[i];
    std::string at = "mounts[" + std::to_string(i) + "]";
    if (!e.IsObject()) return bad(at + " must be an object");
    Mount m;
    bool host = false, guest = false;
    for (auto it = e.MemberBegin(); it != e.MemberEnd(); ++it) {
      std::string_view name(it->name.GetString(), it->name.GetStringLength());
      const auto& x = it->value;
      std::string field = at + "." + std::string(name);
      if (name == "hostPath" || name == "guestPath") {
        if (!x.IsString() || x.GetStringLength() == 0 || x.GetStringLength() > kMaxPath) {
          return bad(field + " must be a non-empty string of at most 4096 bytes");
        }
        std::string val(x.GetString(), x.GetStringLength());
        if (val.find('\0') != std::string::npos) return bad(field + " contains a NUL byte");
        (name == "hostPath" ? m.host_path : m.guest_path) = val;
        (name == "hostPath" ? host : guest) = true;
      } else if (name == "readOnly") {
        if (!x.IsBool()) return bad(field + " must be true or false");
        m.read_only = x.GetBool();
      } else if (name == "quotaBytes") {
        if (!x.IsUint64()) return bad(field + " must be a non-negative integer (bytes)");
        m.quota_bytes = x.GetUint64();
      } else if (name == "quotaFiles") {
        if (!x.IsUint()) return bad(field + " must be an integer from 0 to 4294967295");
        m.quota_files = x.GetUint();
      } else {
        return bad(field +
                   " is not a mount field (hostPath, guestPath, readOnly, quotaBytes, "
                   "quotaFiles)");
      }
    }
    if (!host) return bad(at + ".hostPath is required");
    if (!guest) return bad(at + ".guestPath is required");
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace nv::sandbox
