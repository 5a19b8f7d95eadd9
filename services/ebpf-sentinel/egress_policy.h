// Egress policy as data: CIDR rules with an action and a reason each. The most specific rule
// that matches a destination decides; a destination no rule matches is allowed. So an allow rule
// punches a hole in a wider deny (allow 10.1.2.3/32 inside the default deny of 10.0.0.0/8), and
// "deny everything except ..." is a 0.0.0.0/0 + ::/0 deny plus allow rules.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace nv::sentinel {

enum class EgressAction : uint8_t { kAllow = 1, kDeny = 2 };

struct EgressRule {
  std::string cidr;  // "169.254.0.0/16", "fd00:ec2::254/128", "127.0.0.2" (= /32)
  EgressAction action = EgressAction::kDeny;
  std::string reason;  // why; reported with every denial this rule causes
};

// Applied to every VM cgroup unless a policy opts out (EgressPolicy::include_defaults).
// Cloud metadata services and private ranges: a guest that could reach them could read host
// credentials or talk to the operator's internal network.
const std::vector<EgressRule>& default_egress_rules();

struct EgressPolicy {
  bool include_defaults = true;   // start from default_egress_rules()
  std::vector<EgressRule> rules;  // added after the defaults; same CIDR replaces the default

  // The effective rule list (defaults first, then `rules`).
  std::vector<EgressRule> effective() const;
};

// A parsed CIDR.
struct Cidr {
  int family = 0;                  // 4 or 6
  std::array<uint8_t, 16> addr{};  // network byte order; v4 uses the first 4 bytes
  int prefix = 0;                  // 0..32 or 0..128
  std::string text() const;        // canonical "a.b.c.d/n" / "x::y/n"
};
// Parses "addr" or "addr/prefix"; host bits beyond the prefix are cleared.
Status parse_cidr(const std::string& text, Cidr* out);

// Text form of an address of the given family (4: first 4 bytes used).
std::string address_text(int family, const uint8_t* addr);

}  // namespace nv::sentinel
