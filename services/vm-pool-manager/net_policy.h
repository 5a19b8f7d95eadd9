// net_policy.h — validation of a sandbox's NetworkPolicy (sandbox.capnp) against the pool's
// always-deny list (network.h describes where it is enforced).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "network.h"

namespace nv::vm {

constexpr size_t kMaxAllowEntries = 64;

// An IPv4 or IPv6 prefix, host bits cleared.
struct Prefix {
  bool v6 = false;
  std::array<uint8_t, 16> addr{};
  int len = 0;
  std::string text() const;  // "198.51.100.0/24"
  bool overlaps(const Prefix& o) const;
};

// "198.51.100.0/24", "198.51.100.7" (/32), "2001:db8::/32"; nullopt when malformed.
std::optional<Prefix> parse_prefix(const std::string& text);
// A CIDR allow entry with an optional port: "198.51.100.7:443", "[2001:db8::1]:443".
std::optional<AllowCidr> parse_allow_cidr(const std::string& entry);
// "example.org", "*.example.org" (lower case; RFC 1035 labels).
bool valid_domain(const std::string& name);

struct DenyEntry {
  Prefix prefix;
  std::string why;  // "link-local/metadata", "operator deny 198.51.100.66/32", ...
};
// The always-deny list of this pool: fixed ranges, private ranges unless allowed, the pool's
// range, the host's addresses (getifaddrs in the caller's namespace), the operator's entries.
std::vector<DenyEntry> always_deny_list(const NetworkConfig& cfg);

// network.h NetworkManager::parse, with the deny list given.
Result<ParsedPolicy> parse_policy(const NetworkConfig& cfg, const std::vector<DenyEntry>& deny,
                                  bool allow, const std::vector<std::string>& entries,
                                  uint32_t max_connections, uint64_t bandwidth);

}  // namespace nv::vm
