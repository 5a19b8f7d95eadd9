// sandbox_print.cc — `nv sandbox` output: text for people, JSON for programs.
#include "sandbox_print.h"

#include <capnp/message.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>
#include <ctime>
#include <iostream>

#include "common/enum_name.h"
#include "common/sandbox_json.h"
#include "common/json.h"
#include "common/utf8.h"

namespace nv::launcher {

namespace s = nv::schema;
namespace sb = nv::sandbox;

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put(Writer& w, const char* key, std::string_view v) {
  std::string clean = utf8::sanitize(v);
  w.Key(key);
  w.String(clean.c_str(), static_cast<rapidjson::SizeType>(clean.size()));
}

// [json(a), json(b), ...] of every item, through its schema struct.
template <class Schema, class T>
std::string json_list(const std::vector<T>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    capnp::MallocMessageBuilder mb;
    auto b = mb.initRoot<Schema>();
    sb::to_capnp(items[i], b);
    out += (i ? "," : "") + to_json(b.asReader());
  }
  return out + "]";
}

template <class Schema, class T>
std::string json_one(const T& item) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<Schema>();
  sb::to_capnp(item, b);
  return to_json(b.asReader());
}

std::string tier_name(s::SizeTier t) { return t == s::SizeTier::UNSET ? "-" : enum_name(t); }

std::string labels_text(const std::vector<sb::Label>& labels) {
  std::string out;
  for (auto& l : labels) out += (out.empty() ? "" : ",") + l.key + "=" + l.value;
  return out.empty() ? "-" : out;
}

std::string mode_text(s::FileType type, uint32_t mode) {
  std::string out(1, type == s::FileType::DIRECTORY ? 'd'
                     : type == s::FileType::SYMLINK ? 'l'
                     : type == s::FileType::OTHER   ? '?'
                                                    : '-');
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) out += (mode & (0400u >> i)) ? rwx[i] : '-';
  return out;
}

std::string bytes_text(uint64_t n) {
  char buf[32];
  if (n >= (1u << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(n) / (1u << 30));
  } else if (n >= (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1u << 20));
  } else if (n >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  }
  return buf;
}

void write_all(FILE* f, std::string_view data) {
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) {
    // A reader that went away (closed pipe): nothing left to do with the output.
  }
  std::fflush(f);
}

}  // namespace

std::string utc_time(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void Printer::error(const Error& e) {
  if (!json_) {
    std::cerr << "nv sandbox: " << e.to_string() << "\n";
    return;
  }
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("error");
  w.StartObject();
  put(w, "code", code_name(e.code));
  put(w, "message", e.message);
  w.Key("retryable");
  w.Bool(e.retryable);
  put(w, "service", e.service);
  w.EndObject();
  w.EndObject();
  std::cout << sb.GetString() << "\n";
}

void Printer::created(const sb::Info& info) {
  if (json_) {
    std::cout << json_one<s::SandboxInfo>(info) << "\n";
  } else {
    std::cout << info.sandbox_id << "\n";
  }
}

void Printer::info(const sb::Info& i, const std::string& command) {
  if (json_) {
    std::cout << json_one<s::SandboxInfo>(i) << "\n";
    return;
  }
  if (command == "pause") {
    std::cout << i.sandbox_id << " " << enum_name(i.state) << " (state on disk, RAM freed)\n";
    return;
  }
  if (command == "resume") {
    std::cout << i.sandbox_id << " " << enum_name(i.state) << " (vm " << i.vm_id << ")\n";
    return;
  }
  if (command == "keepalive") {
    std::cout << i.sandbox_id << " idle deadline " << utc_time(i.idle_deadline_unix_ms)
              << ", lifetime ends " << utc_time(i.deadline_unix_ms) << "\n";
    return;
  }
  if (command == "rm") {
    std::cout << i.sandbox_id << " " << enum_name(i.state) << "\n";
    return;
  }
  auto row = [](const char* k, const std::string& v) {
    if (!v.empty()) std::printf("%-14s %s\n", k, v.c_str());
  };
  row("id", i.sandbox_id);
  row("state", enum_name(i.state));
  row("owner", i.owner);
  row("tier", tier_name(i.tier) + " (" + std::to_string(i.vcpus) + " vCPU, " +
                  std::to_string(i.memory_mib) + " MiB)");
  row("vm", i.vm_id.empty() ? "-" : i.vm_id);
  row("created", utc_time(i.created_unix_ms));
  row("last active", utc_time(i.last_active_unix_ms));
  row("idle deadline", utc_time(i.idle_deadline_unix_ms));
  row("lifetime ends", utc_time(i.deadline_unix_ms));
  row("cwd", i.cwd);
  row("labels", labels_text(i.labels));
  std::string env;
  for (auto& [k, v] : i.env) env += (env.empty() ? "" : " ") + k + "=" + v;
  row("env", env);
  row("parent", i.parent_id);
  row("from snapshot", i.from_snapshot);
  row("end reason", i.end_reason);
  for (const auto& m : i.mounts) {
    row("mount", m.guest_path + " ← " + m.host_path + (m.read_only ? " (ro)" : " (rw)"));
  }
  std::fflush(stdout);
}

void Printer::infos(const std::vector<sb::Info>& infos, bool ids_only) {
  if (json_) {
    std::cout << "{\"sandboxes\":" << json_list<s::SandboxInfo>(infos) << "}\n";
    return;
  }
  if (ids_only) {
    for (auto& i : infos) std::cout << i.sandbox_id << "\n";
    return;
  }
  std::printf("%-38s %-9s %-7s %-22s %-21s %-21s %s\n", "ID", "STATE", "TIER", "VM", "CREATED",
              "IDLE DEADLINE", "LABELS");
  for (auto& i : infos) {
    std::printf("%-38s %-9s %-7s %-22s %-21s %-21s %s\n", i.sandbox_id.c_str(),
                enum_name(i.state).c_str(), tier_name(i.tier).c_str(),
                i.vm_id.empty() ? "-" : i.vm_id.c_str(), utc_time(i.created_unix_ms).c_str(),
                utc_time(i.idle_deadline_unix_ms).c_str(), labels_text(i.labels).c_str());
  }
  std::fflush(stdout);
}

void Printer::chunk(s::Stream stream, std::string_view data, bool verbose) {
  if (json_) return;  // the result carries the output
  if (stream == s::Stream::STDOUT) {
    write_all(stdout, data);
  } else if (stream == s::Stream::STDERR) {
    write_all(stderr, data);
  } else if (verbose) {
    std::fprintf(stderr, "nv sandbox: %.*s\n", static_cast<int>(data.size()), data.data());
  }
}

void Printer::exec_result(const sb::ExecResult& r, const std::string& id, int status,
                          bool background, uint32_t timeout_ms) {
  if (json_) {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    put(w, "sandboxId", id);
    w.Key("background");
    w.Bool(background);
    sandbox::write_exec_result_fields(w, r);
    w.Key("nvStatus");
    w.Int(status);
    w.EndObject();
    std::cout << sb.GetString() << "\n";
    return;
  }
  if (background) {
    std::fprintf(stderr, "nv sandbox: started in the background in %s (nv sandbox processes %s)\n",
                 id.c_str(), id.c_str());
    return;
  }
  struct Stream {
    const std::string& head;
    const std::string& tail;
    uint64_t total;
    FILE* f;
    const char* name;
  };
  for (const Stream& st :
       {Stream{r.stdout_data, r.stdout_tail, r.stdout_bytes, stdout, "stdout"},
        Stream{r.stderr_data, r.stderr_tail, r.stderr_bytes, stderr, "stderr"}}) {
    if (st.tail.empty()) continue;
    uint64_t have = st.head.size() + st.tail.size();
    std::fflush(stdout);
    std::fprintf(stderr, "\nnv sandbox: [… %llu bytes of %s left out …]\n",
                 static_cast<unsigned long long>(st.total > have ? st.total - have : 0), st.name);
    write_all(st.f, st.tail);
  }
  if (r.truncated) {
    std::fprintf(stderr, "nv sandbox: output truncated (the program wrote %llu bytes)\n",
                 static_cast<unsigned long long>(r.stdout_bytes + r.stderr_bytes));
  }
  if (r.timed_out) {
    std::fprintf(stderr, "nv sandbox: timed out after %.1f s\n", timeout_ms / 1000.0);
  } else if (r.host_killed || !r.note.empty()) {
    std::fprintf(stderr, "nv sandbox: %s\n", r.note.c_str());
  }
}

void Printer::copied(const std::string& from, const std::string& to, uint64_t bytes,
                     size_t requests) {
  if (!json_) return;  // quiet, as cp(1)
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  put(w, "from", from);
  put(w, "to", to);
  w.Key("bytes");
  w.Uint64(bytes);
  w.Key("requests");
  w.Uint64(requests);
  w.EndObject();
  std::cout << sb.GetString() << "\n";
}

void Printer::entries(const std::vector<sb::FileEntry>& entries) {
  if (json_) {
    std::cout << "{\"entries\":" << json_list<s::FileEntry>(entries) << "}\n";
    return;
  }
  for (auto& e : entries) {
    std::printf("%s %12llu %s %s%s%s\n", mode_text(e.type, e.mode).c_str(),
                static_cast<unsigned long long>(e.size), utc_time(e.mtime_unix_ms).c_str(),
                e.path.c_str(), e.link_target.empty() ? "" : " -> ", e.link_target.c_str());
  }
  std::fflush(stdout);
}

void Printer::processes(const std::vector<sb::Process>& processes) {
  if (json_) {
    std::cout << "{\"processes\":" << json_list<s::ProcessInfo>(processes) << "}\n";
    return;
  }
  std::printf("%7s %7s %-2s %10s %-21s %-12s %s\n", "PID", "PPID", "S", "RSS", "STARTED", "CONTEXT",
              "COMMAND");
  for (auto& p : processes) {
    // One line each: a command line with newlines (a context's driver) is shown up to the
    // first, and at most 100 bytes of it (--json has it whole).
    std::string cmd = p.command.substr(0, p.command.find('\n'));
    if (cmd.size() > 100 || cmd.size() < p.command.size()) {
      cmd = cmd.substr(0, utf8::complete_prefix(cmd.substr(0, 100))) + " …";
    }
    std::printf("%7d %7d %-2s %10s %-21s %-12s %s\n", p.pid, p.ppid, p.state.c_str(),
                bytes_text(p.rss_bytes).c_str(), utc_time(p.started_unix_ms).c_str(),
                p.context.empty() ? "-" : p.context.c_str(), cmd.c_str());
  }
  std::fflush(stdout);
}

void Printer::snapshots(const std::vector<sb::Snapshot>& snapshots, bool one) {
  if (json_) {
    if (one && snapshots.size() == 1) {
      std::cout << json_one<s::SnapshotInfo>(snapshots[0]) << "\n";
    } else {
      std::cout << "{\"snapshots\":" << json_list<s::SnapshotInfo>(snapshots) << "}\n";
    }
    return;
  }
  std::printf("%-24s %-7s %-38s %-21s %10s %10s\n", "NAME", "TIER", "SOURCE", "CREATED", "MEMORY",
              "STATE");
  for (auto& sn : snapshots) {
    std::printf("%-24s %-7s %-38s %-21s %10s %10s\n", sn.name.c_str(), tier_name(sn.tier).c_str(),
                sn.source_sandbox_id.c_str(), utc_time(sn.created_unix_ms).c_str(),
                bytes_text(sn.memory_bytes).c_str(), bytes_text(sn.state_bytes).c_str());
  }
  std::fflush(stdout);
}

void Printer::done(const std::string& what) {
  if (json_) {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    put(w, "done", what);
    w.EndObject();
    std::cout << sb.GetString() << "\n";
  } else {
    std::cout << what << "\n";
  }
}

void Printer::synced(const std::vector<sb::MountSync>& synced) {
  if (json_) {
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    w.Key("synced");
    w.StartArray();
    for (const auto& m : synced) sb::write_mount_sync(w, m);
    w.EndArray();
    w.EndObject();
    std::cout << buf.GetString() << "\n";
    return;
  }
  if (synced.empty()) std::cout << "no read-write mounts: nothing to copy out\n";
  for (const auto& m : synced) {
    std::cout << m.guest_path << " -> " << m.host_path << ": " << m.files_written
              << " files written (" << bytes_text(m.bytes_written) << "), " << m.files_removed
              << " removed" << (m.skipped.empty() ? "" : ", skipped:") << "\n";
    for (const auto& k : m.skipped) std::cout << "  " << k << "\n";
  }
  std::fflush(stdout);
}

}  // namespace nv::launcher
