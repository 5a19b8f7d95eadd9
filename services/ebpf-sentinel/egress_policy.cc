#include "egress_policy.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdlib>

namespace nv::sentinel {

const std::vector<EgressRule>& default_egress_rules() {
  using A = EgressAction;
  static const std::vector<EgressRule> rules = {
      // Link-local: 169.254.169.254 is the metadata/credential service of AWS, GCP, Azure,
      // OpenStack; the rest of the range is never a legitimate destination for a sandbox.
      {"169.254.0.0/16", A::kDeny, "IPv4 link-local, includes cloud metadata 169.254.169.254"},
      {"fd00:ec2::254/128", A::kDeny, "AWS IMDS over IPv6"},
      {"fe80::/10", A::kDeny, "IPv6 link-local"},
      // RFC 1918 / RFC 4193: the operator's internal networks.
      {"10.0.0.0/8", A::kDeny, "RFC 1918 private network"},
      {"172.16.0.0/12", A::kDeny, "RFC 1918 private network"},
      {"192.168.0.0/16", A::kDeny, "RFC 1918 private network"},
      {"fc00::/7", A::kDeny, "RFC 4193 unique local IPv6 (private)"},
      // Carrier-grade NAT space is internal infrastructure in many clouds (e.g. Tailscale).
      {"100.64.0.0/10", A::kDeny, "RFC 6598 shared address space (CGNAT, internal)"},
  };
  return rules;
}

std::vector<EgressRule> EgressPolicy::effective() const {
  std::vector<EgressRule> out;
  if (include_defaults) out = default_egress_rules();
  out.insert(out.end(), rules.begin(), rules.end());
  return out;
}

Status parse_cidr(const std::string& text, Cidr* out) {
  Cidr c;
  std::string addr = text;
  int prefix = -1;
  size_t slash = text.find('/');
  if (slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    char* end = nullptr;
    long v = strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v < 0)
      return Status::Fail("parse_cidr(" + text + ")", EINVAL, "bad prefix length");
    prefix = static_cast<int>(v);
  }
  if (inet_pton(AF_INET, addr.c_str(), c.addr.data()) == 1) {
    c.family = 4;
    if (prefix < 0) prefix = 32;
    if (prefix > 32) return Status::Fail("parse_cidr(" + text + ")", EINVAL, "prefix > 32");
  } else if (inet_pton(AF_INET6, addr.c_str(), c.addr.data()) == 1) {
    c.family = 6;
    if (prefix < 0) prefix = 128;
    if (prefix > 128) return Status::Fail("parse_cidr(" + text + ")", EINVAL, "prefix > 128");
  } else {
    return Status::Fail("parse_cidr(" + text + ")", EINVAL, "not an IPv4 or IPv6 address");
  }
  c.prefix = prefix;
  int bits = c.family == 4 ? 32 : 128;
  for (int i = prefix; i < bits; ++i) c.addr[i / 8] &= static_cast<uint8_t>(~(0x80u >> (i % 8)));
  *out = c;
  return Status::Ok();
}

std::string address_text(int family, const uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, sizeof(buf))) return "?";
  return buf;
}

std::string Cidr::text() const {
  return address_text(family, addr.data()) + "/" + std::to_string(prefix);
}

}  // namespace nv::sentinel
