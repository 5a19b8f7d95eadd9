#include "sandbox_requests.h"

#include <cstdio>

namespace nv::vm {
namespace {
Error bad(const std::string& msg) { return make_error(ErrorCode::BAD_REQUEST, msg); }
bool printable(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}
}  // namespace

Status check_snapshot_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxSnapshotNameBytes) {
    return bad("snapshot name must be 1..63 bytes, got " + std::to_string(name.size()));
  }
  if (name[0] == '.') return bad("snapshot name must not start with '.'");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return bad("snapshot name may hold only [a-zA-Z0-9._-]");
  }
  return {};
}

Status check_owner(const std::string& owner, bool optional) {
  if (owner.empty()) return optional ? Status{} : Status(bad("owner is required"));
  if (owner.size() > kMaxOwnerBytes) {
    return bad("owner is " + std::to_string(owner.size()) + " bytes; at most 128");
  }
  if (!printable(owner) || owner.find('/') != std::string::npos) {
    return bad("owner must be printable ASCII without '/'");
  }
  return {};
}

Status check_sandbox_id(const std::string& id) {
  if (id.size() > kMaxSandboxIdBytes) {
    return bad("sandbox id is " + std::to_string(id.size()) + " bytes; at most 128");
  }
  if (!printable(id)) return bad("sandbox id must be printable ASCII");
  return {};
}

Status check_vm_id(const std::string& id) {
  if (id.empty() || id.size() > kMaxVmIdBytes) return bad("vmId must be 1..48 bytes");
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return bad("vmId may hold only [a-z0-9-]");
    }
  }
  return {};
}

Status check_fork(uint32_t count, const std::vector<std::string>& sandbox_ids) {
  if (count < 1 || count > kMaxForks) {
    return bad("fork count must be 1..16, got " + std::to_string(count));
  }
  if (!sandbox_ids.empty() && sandbox_ids.size() != count) {
    return bad("sandboxIds lists " + std::to_string(sandbox_ids.size()) + " ids for " +
               std::to_string(count) + " forks (give one per fork, or none)");
  }
  for (const auto& id : sandbox_ids) {
    if (Status s = check_sandbox_id(id); !s.ok()) return s;
  }
  return {};
}

Status check_tier(schema::SizeTier tier) {
  switch (tier) {
    case schema::SizeTier::UNSET:
    case schema::SizeTier::SMALL:
    case schema::SizeTier::MEDIUM:
    case schema::SizeTier::LARGE:
      return {};
  }
  return bad("tier " + std::to_string(static_cast<int>(tier)) + " is not a SizeTier");
}

std::string owner_dir_name(const std::string& owner) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : owner) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

Error shutting_down() { return make_error(ErrorCode::SHUTTING_DOWN, "vm pool is stopping"); }

Result<std::chrono::milliseconds> sandbox_lifetime(std::chrono::milliseconds asked,
                                                   std::chrono::milliseconds fallback,
                                                   std::chrono::milliseconds max) {
  if (asked.count() <= 0) asked = fallback;
  if (asked > max) {
    return make_error(ErrorCode::BAD_REQUEST, "leaseMs " + std::to_string(asked.count()) +
                                                  " is above the maximum sandbox lifetime " +
                                                  std::to_string(max.count()) +
                                                  " ms (--max-sandbox-ttl-ms)");
  }
  return asked;
}
}  // namespace nv::vm
