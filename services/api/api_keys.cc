// api_keys.cc — API key generation, the key file and verification (see api_keys.h).
#include "api_keys.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/log.h"

namespace nv::api {
namespace {

constexpr size_t kIdBytes = 8, kSecretBytes = 32, kHashBytes = 32;

std::string hex(const unsigned char* p, size_t n) {
  std::string out(n * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), p, n);
  out.pop_back();
  return out;
}

bool is_lower_hex(std::string_view s, size_t len) {
  if (s.size() != len) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string hash_secret(std::string_view id, std::string_view secret) {
  unsigned char out[kHashBytes];
  crypto_generichash(out, sizeof out, reinterpret_cast<const unsigned char*>(secret.data()),
                     secret.size(), reinterpret_cast<const unsigned char*>(id.data()), id.size());
  return hex(out, sizeof out);
}

bool init_sodium() {
  static const bool ok = sodium_init() >= 0;
  return ok;
}

}  // namespace

std::string default_keys_file(const std::string& runtime_dir) {
  const char* sd = std::getenv("NV_STATE_DIR");
  if (sd && *sd) return std::string(sd) + "/api-keys";
  const char* rt = std::getenv("NV_RUNTIME_DIR");
  struct stat st {};
  if ((!rt || !*rt) && ::geteuid() == 0 && ::stat("/var/lib/neurovisor", &st) == 0 &&
      S_ISDIR(st.st_mode)) {
    return "/var/lib/neurovisor/api-keys";
  }
  return runtime_dir + "/state/api-keys";
}

bool parse_scopes(std::string_view text, uint8_t* out) {
  uint8_t bits = 0;
  std::string item;
  std::stringstream ss{std::string(text)};
  while (std::getline(ss, item, ',')) {
    if (item == "sandbox")
      bits |= kScopeSandbox;
    else if (item == "task")
      bits |= kScopeTask;
    else if (item == "admin")
      bits |= kScopeAdmin;
    else
      return false;
  }
  if (bits == 0) return false;
  *out = bits;
  return true;
}

std::string scopes_text(uint8_t scopes) {
  std::string s;
  auto add = [&](uint8_t bit, const char* name) {
    if (scopes & bit) s += (s.empty() ? "" : ",") + std::string(name);
  };
  add(kScopeSandbox, "sandbox");
  add(kScopeTask, "task");
  add(kScopeAdmin, "admin");
  return s;
}

bool valid_tenant(std::string_view tenant) {
  if (tenant.empty() || tenant.size() > 64) return false;
  for (char c : tenant) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<std::string> generate_key(const std::string& tenant, uint8_t scopes, KeyRecord* record) {
  if (!init_sodium()) return make_error(ErrorCode::INTERNAL, "sodium_init failed");
  if (!valid_tenant(tenant)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "tenant '" + tenant + "' must be 1..64 bytes of [a-zA-Z0-9._-]");
  }
  unsigned char id[kIdBytes], secret[kSecretBytes];
  randombytes_buf(id, sizeof id);
  randombytes_buf(secret, sizeof secret);
  record->id = hex(id, sizeof id);
  record->tenant = tenant;
  record->scopes = scopes;
  std::string secret_hex = hex(secret, sizeof secret);
  record->hash_hex = hash_secret(record->id, secret_hex);
  sodium_memzero(secret, sizeof secret);
  return "nvk_" + record->id + "_" + secret_hex;
}

std::string record_line(const KeyRecord& r) {
  return r.id + " " + r.tenant + " " + scopes_text(r.scopes) + " " + r.hash_hex + "\n";
}

Status KeyStore::load() {
  std::lock_guard lock(mu_);
  mtime_ns_ = -1;
  return reload_if_changed();
}

Status KeyStore::reload_if_changed() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (mtime_ns_ != 0) log::warn("no API key file: every request needs a key", {{"path", path_}});
    by_id_.clear();
    mtime_ns_ = 0;
    size_ = 0;
    return {};
  }
  int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (mtime == mtime_ns_ && st.st_size == size_) return {};
  if (st.st_mode & 077) {
    log::warn("the API key file is readable by others; chmod 0600 it", {{"path", path_}});
  }
  std::ifstream in(path_);
  std::unordered_map<std::string, KeyRecord> keys;
  std::string line;
  int lineno = 0, bad = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    KeyRecord r;
    std::string scopes, extra;
    ls >> r.id >> r.tenant >> scopes >> r.hash_hex;
    if (!is_lower_hex(r.id, kIdBytes * 2) || !valid_tenant(r.tenant) ||
        !parse_scopes(scopes, &r.scopes) || !is_lower_hex(r.hash_hex, kHashBytes * 2) ||
        (ls >> extra)) {
      log::warn("API key file: line ignored (want: ID TENANT SCOPES HASH)",
                {{"path", path_}, {"line", lineno}});
      ++bad;
      continue;
    }
    keys[r.id] = r;
  }
  by_id_ = std::move(keys);
  mtime_ns_ = mtime;
  size_ = st.st_size;
  log::info("API keys loaded", {{"path", path_}, {"keys", by_id_.size()}, {"ignored", bad}});
  return {};
}

std::optional<KeyRecord> KeyStore::verify(std::string_view key) {
  // nvk_ + 16 hex + _ + 64 hex
  if (key.size() != 4 + kIdBytes * 2 + 1 + kSecretBytes * 2 || key.substr(0, 4) != "nvk_" ||
      key[4 + kIdBytes * 2] != '_') {
    return std::nullopt;
  }
  std::string_view id = key.substr(4, kIdBytes * 2);
  std::string_view secret = key.substr(4 + kIdBytes * 2 + 1);
  if (!is_lower_hex(id, kIdBytes * 2) || !is_lower_hex(secret, kSecretBytes * 2)) {
    return std::nullopt;
  }
  if (!init_sodium()) return std::nullopt;
  std::lock_guard lock(mu_);
  (void)reload_if_changed();
  auto it = by_id_.find(std::string(id));
  if (it == by_id_.end()) return std::nullopt;
  std::string h = hash_secret(id, secret);
  if (sodium_memcmp(h.data(), it->second.hash_hex.data(), h.size()) != 0) return std::nullopt;
  return it->second;
}

size_t KeyStore::size() {
  std::lock_guard lock(mu_);
  return by_id_.size();
}

}  // namespace nv::api
