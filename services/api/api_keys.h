// api_keys.h — API keys of nv-api: made by `nv-keygen --api`, stored hashed, each bound to one
// tenant and a set of scopes.
//
// Key text (what a caller sends as `Authorization: Bearer <key>`):
//   nvk_<id>_<secret>   id: 16 lowercase hex digits (public, names the key in logs and the file)
//                       secret: 64 lowercase hex digits (32 random bytes, libsodium randombytes)
// Key file (--keys-file, one key a line, '#' comments; written 0600 by nv-keygen):
//   <id> <tenant> <scopes> <hash>
//   tenant: 1..64 bytes [a-zA-Z0-9._-]; scopes: comma-separated of sandbox, task, admin;
//   hash: BLAKE2b-256 (libsodium crypto_generichash, keyed with the id) of the secret, hex.
// A 256-bit random secret needs no slow password hash: it cannot be guessed, and a stolen file
// gives no key back. Only the hash is ever stored; the key is printed once by nv-keygen.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/error.h"

namespace nv::api {

enum Scope : uint8_t { kScopeSandbox = 1, kScopeTask = 2, kScopeAdmin = 4 };

struct KeyRecord {
  std::string id;
  std::string tenant;
  uint8_t scopes = 0;  // Scope bits
  std::string hash_hex;
};

// "sandbox,task" → bits; false on an unknown or empty name.
bool parse_scopes(std::string_view text, uint8_t* out);
std::string scopes_text(uint8_t scopes);
bool valid_tenant(std::string_view tenant);

// The key file nv-api and nv-keygen use when none is given: $NV_STATE_DIR/api-keys; else, for
// root with no NV_RUNTIME_DIR and an installed /var/lib/neurovisor, /var/lib/neurovisor/api-keys
// (what the systemd unit's NV_STATE_DIR names); else RUNTIME/state/api-keys.
std::string default_keys_file(const std::string& runtime_dir);

// A new key: returns the key text and fills `record` (the line to store).
Result<std::string> generate_key(const std::string& tenant, uint8_t scopes, KeyRecord* record);
std::string record_line(const KeyRecord& r);

// The keys of a key file, reloaded when the file's mtime or size changes. Thread-safe.
class KeyStore {
 public:
  explicit KeyStore(std::string path) : path_(std::move(path)) {}
  // Reads the file now; a missing file is an empty store (every request then gets 401).
  Status load();
  // The record of `key` when it is well formed, known and its secret matches.
  std::optional<KeyRecord> verify(std::string_view key);
  size_t size();
  const std::string& path() const { return path_; }

 private:
  Status reload_if_changed();
  std::string path_;
  std::mutex mu_;
  int64_t mtime_ns_ = -1;
  int64_t size_ = -1;
  std::unordered_map<std::string, KeyRecord> by_id_;
};

}  // namespace nv::api
