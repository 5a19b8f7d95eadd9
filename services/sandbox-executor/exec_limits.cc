#include "exec_limits.h"

#include <string_view>
#include <vector>

namespace nv::exec {

void add_limit_options(Config& c) {
  ExecLimits d;
  c.add_int("max-code-bytes", d.max_code_bytes, "largest ExecRequest.code accepted");
  c.add_int("max-stdin-bytes", d.max_stdin_bytes, "largest ExecRequest.stdin accepted");
  c.add_int("max-env", d.max_env, "most environment variables per request");
  c.add_int("max-env-bytes", d.max_env_bytes, "bytes of all environment names and values");
  c.add_int("max-put-files", d.max_put_files, "most files written into the guest per request");
  c.add_int("max-put-bytes", d.max_put_bytes, "bytes of all files written into the guest");
  c.add_int("max-get-files", d.max_get_files, "most files read back from the guest per request");
  c.add_int("default-timeout-ms", d.default_timeout_ms, "program timeout when a request sets 0");
  c.add_int("max-timeout-ms", d.max_timeout_ms, "longest program timeout a request may ask for");
  c.add_int("default-output-cap", d.default_output_cap,
            "stdout+stderr bytes kept when a request sets 0");
  c.add_int("max-output-cap", d.max_output_cap, "largest output cap a request may ask for");
}

ExecLimits limits_from(const Config& c) {
  auto u = [&](const char* name) { return static_cast<uint32_t>(c.integer(name)); };
  ExecLimits l;
  l.max_code_bytes = u("max-code-bytes");
  l.max_stdin_bytes = u("max-stdin-bytes");
  l.max_env = u("max-env");
  l.max_env_bytes = u("max-env-bytes");
  l.max_put_files = u("max-put-files");
  l.max_put_bytes = u("max-put-bytes");
  l.max_get_files = u("max-get-files");
  l.default_timeout_ms = u("default-timeout-ms");
  l.max_timeout_ms = u("max-timeout-ms");
  l.default_output_cap = u("default-output-cap");
  l.max_output_cap = u("max-output-cap");
  return l;
}

std::string language_name(schema::Language language) {
  switch (language) {
    case schema::Language::PYTHON:
      return "python";
    case schema::Language::BASH:
      return "bash";
    case schema::Language::SH:
      return "sh";
    case schema::Language::JAVASCRIPT:
      return "javascript";
    case schema::Language::UNSET:
      return "unset";
  }
  return "language" + std::to_string(static_cast<unsigned>(language));
}

bool valid_env_name(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  for (char ch : n) {
    bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_';
    if (!ok) return false;
  }
  return true;
}

// Absolute, no NUL, no "." or ".." component: the agent checks the root it may write under.
std::string path_problem(std::string_view p, uint32_t max_bytes) {
  if (p.empty()) return "is empty";
  if (p.size() > max_bytes) return "is longer than " + std::to_string(max_bytes) + " bytes";
  if (p[0] != '/') return "is not absolute";
  if (p.find('\0') != std::string_view::npos) return "contains a NUL byte";
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    auto part = p.substr(i, j - i);
    if (part == "." || part == "..") return "has a '.' or '..' component";
    i = j + 1;
  }
  return {};
}

std::string quote(std::string_view s) {
  std::string out = "'";
  for (char ch : s.substr(0, 64)) out += (ch >= 0x20 && ch < 0x7f) ? ch : '?';
  if (s.size() > 64) out += "...";
  return out + "'";
}

void Problems::over(const std::string& what, uint64_t got, uint64_t limit) {
  if (got > limit) {
    list.push_back(what + " is " + std::to_string(got) + ", the limit is " + std::to_string(limit));
  }
}

Error Problems::error(const std::string& what) const {
  std::string msg = "invalid " + what + ": ";
  for (size_t i = 0; i < list.size(); ++i) msg += (i ? "; " : "") + list[i];
  return make_error(ErrorCode::BAD_REQUEST, msg);
}

void check_language(schema::Language language, Problems& p) {
  auto lang = static_cast<uint16_t>(language);
  if (lang == 0 || lang > static_cast<uint16_t>(schema::Language::JAVASCRIPT)) {
    p.add("language " + std::to_string(lang) +
          " is not one of python(1), bash(2), sh(3), javascript(4)");
  }
}

schema::SizeTier check_tier(schema::SizeTier tier, Problems& p) {
  auto raw = static_cast<uint16_t>(tier);
  if (raw > static_cast<uint16_t>(schema::SizeTier::LARGE)) {
    p.add("tier " + std::to_string(raw) + " is not one of small(1), medium(2), large(3)");
  }
  return raw == 0 ? schema::SizeTier::SMALL : tier;
}

void check_env(capnp::List<schema::EnvVar>::Reader env, const ExecLimits& l, Problems& p) {
  p.over("env count", env.size(), l.max_env);
  uint64_t env_bytes = 0;
  for (unsigned i = 0; i < env.size() && i <= l.max_env; ++i) {
    auto name = env[i].getName();
    std::string_view n(name.cStr(), name.size());
    env_bytes += name.size() + env[i].getValue().size();
    if (!valid_env_name(n)) {
      p.add("env[" + std::to_string(i) + "] name " + quote(n) +
            " is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)");
    } else if (n.rfind("NEUROVISOR_", 0) == 0) {
      p.add("env[" + std::to_string(i) + "] name " + quote(n) +
            " uses the reserved NEUROVISOR_ prefix");
    }
  }
  p.over("env size in bytes", env_bytes, l.max_env_bytes);
}

void check_run(uint32_t timeout_ms, uint32_t output_cap, uint32_t tail_bytes, const ExecLimits& l,
               Effective& e, Problems& p) {
  uint32_t timeout = timeout_ms == 0 ? l.default_timeout_ms : timeout_ms;
  p.over("timeoutMs", timeout, l.max_timeout_ms);
  e.timeout = std::chrono::milliseconds(timeout);
  e.output_cap = output_cap == 0 ? l.default_output_cap : output_cap;
  p.over("outputCapBytes", e.output_cap, l.max_output_cap);
  e.tail_bytes = tail_bytes == 0 ? guest::kDefaultTailBytes : tail_bytes;
  p.over("tailBytes", e.tail_bytes, guest::kMaxTailBytes);
}

Result<Effective> validate(schema::ExecRequest::Reader r, const ExecLimits& l) {
  Problems problems;
  auto over = [&](const std::string& what, uint64_t got, uint64_t limit) {
    problems.over(what, got, limit);
  };
  Effective e;
  check_language(r.getLanguage(), problems);
  e.language = r.getLanguage();
  e.tier = check_tier(r.getTier(), problems);

  auto code = r.getCode();
  if (code.size() == 0) problems.add("code is empty");
  over("code size in bytes", code.size(), l.max_code_bytes);
  over("stdin size in bytes", r.getStdin().size(), l.max_stdin_bytes);
  check_env(r.getEnv(), l, problems);

  auto puts = r.getPutFiles();
  over("putFiles count", puts.size(), l.max_put_files);
  uint64_t put_bytes = 0;
  for (unsigned i = 0; i < puts.size() && i <= l.max_put_files; ++i) {
    auto path = puts[i].getPath();
    put_bytes += puts[i].getData().size();
    if (auto why = path_problem({path.cStr(), path.size()}, l.max_path_bytes); !why.empty()) {
      problems.add("putFiles[" + std::to_string(i) + "] path " + quote(path.cStr()) + " " + why);
    }
    if (puts[i].getMode() > 07777) {
      problems.add("putFiles[" + std::to_string(i) + "] mode " + std::to_string(puts[i].getMode()) +
                   " is not a permission mode");
    }
  }
  over("putFiles size in bytes", put_bytes, l.max_put_bytes);

  auto gets = r.getGetFiles();
  over("getFiles count", gets.size(), l.max_get_files);
  for (unsigned i = 0; i < gets.size() && i <= l.max_get_files; ++i) {
    auto path = gets[i];
    if (auto why = path_problem({path.cStr(), path.size()}, l.max_path_bytes); !why.empty()) {
      problems.add("getFiles[" + std::to_string(i) + "] " + quote(path.cStr()) + " " + why);
    }
  }
  check_run(r.getTimeoutMs(), r.getOutputCapBytes(), r.getTailBytes(), l, e, problems);
  if (!problems.empty()) return problems.error("ExecRequest");
  return e;
}

}  // namespace nv::exec
