// net_policy.cc — network policy validation (network.h): CIDR[:port] and domain entries, the
// always-deny list and the overlap check that refuses an allow entry inside it.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "net_policy.h"

namespace nv::vm {
namespace {

bool parse_uint(const std::string& s, uint32_t max, uint32_t& out) {
  if (s.empty() || s.size() > 5) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > max) return false;
  out = v;
  return true;
}

void mask_bits(Prefix& p) {
  const int total = p.v6 ? 128 : 32;
  for (int i = p.len; i < total; ++i) p.addr[i / 8] &= static_cast<uint8_t>(~(0x80u >> (i % 8)));
}

}  // namespace

std::optional<Prefix> parse_prefix(const std::string& text) {
  Prefix p;
  std::string addr = text;
  int len = -1;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    uint32_t l = 0;
    addr = text.substr(0, slash);
    if (!parse_uint(text.substr(slash + 1), 128, l)) return std::nullopt;
    len = static_cast<int>(l);
  }
  if (inet_pton(AF_INET, addr.c_str(), p.addr.data()) == 1) {
    p.v6 = false;
  } else if (inet_pton(AF_INET6, addr.c_str(), p.addr.data()) == 1) {
    p.v6 = true;
  } else {
    return std::nullopt;
  }
  const int total = p.v6 ? 128 : 32;
  if (len > total) return std::nullopt;
  p.len = len < 0 ? total : len;
  mask_bits(p);
  return p;
}

std::string Prefix::text() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof buf);
  return std::string(buf) + "/" + std::to_string(len);
}

bool Prefix::overlaps(const Prefix& o) const {
  if (v6 != o.v6) return false;
  const int n = std::min(len, o.len);
  for (int i = 0; i < n; ++i) {
    const uint8_t bit = static_cast<uint8_t>(0x80u >> (i % 8));
    if ((addr[i / 8] & bit) != (o.addr[i / 8] & bit)) return false;
  }
  return true;
}

std::optional<AllowCidr> parse_allow_cidr(const std::string& entry) {
  std::string host = entry;
  uint32_t port = 0;
  if (!entry.empty() && entry[0] == '[') {  // "[2001:db8::1]:443" (RFC 3986 §3.2.2)
    auto close = entry.find(']');
    if (close == std::string::npos || close + 1 >= entry.size() || entry[close + 1] != ':') {
      return std::nullopt;
    }
    host = entry.substr(1, close - 1);
    if (!parse_uint(entry.substr(close + 2), 65535, port) || port == 0) return std::nullopt;
  } else if (std::count(entry.begin(), entry.end(), ':') == 1) {  // "198.51.100.7:443"
    auto colon = entry.find(':');
    host = entry.substr(0, colon);
    if (!parse_uint(entry.substr(colon + 1), 65535, port) || port == 0) return std::nullopt;
  }
  auto p = parse_prefix(host);
  if (!p) return std::nullopt;
  if (p->v6 && host.find(':') == std::string::npos) return std::nullopt;
  AllowCidr c;
  c.v6 = p->v6;
  c.cidr = p->text();
  c.port = static_cast<uint16_t>(port);
  return c;
}

bool valid_domain(const std::string& name) {
  // RFC 1035 §2.3.1 (letters, digits, hyphens; labels 1..63, not starting or ending with '-'),
  // at most 253 characters, at least two labels; "*." only as the whole first label.
  std::string n = name;
  if (n.rfind("*.", 0) == 0) n = n.substr(2);
  if (n.empty() || n.size() > 253 || n.find('.') == std::string::npos) return false;
  size_t start = 0;
  while (start <= n.size()) {
    size_t dot = n.find('.', start);
    if (dot == std::string::npos) dot = n.size();
    const std::string label = n.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    start = dot + 1;
  }
  // A top-level label is never all digits (RFC 3696 §2): "300.1.1.1" is a bad address.
  const std::string tld = n.substr(n.rfind('.') + 1);
  return tld.find_first_not_of("0123456789") != std::string::npos;
}

std::vector<DenyEntry> always_deny_list(const NetworkConfig& cfg) {
  std::vector<DenyEntry> out;
  auto add = [&out](const std::string& cidr, const std::string& why) {
    if (auto p = parse_prefix(cidr)) out.push_back({*p, why});
  };
  // Link-local and cloud metadata (AWS/GCP/Azure 169.254.169.254, AWS IPv6 fd00:ec2::254).
  add("169.254.0.0/16", "link-local/metadata");
  add("fd00:ec2::254/128", "metadata");
  add("fe80::/10", "link-local");
  // Never a destination: this host, unspecified, multicast, reserved, broadcast.
  add("0.0.0.0/8", "this network");
  add("127.0.0.0/8", "loopback");
  add("224.0.0.0/3", "multicast/reserved");
  add("::/128", "unspecified");
  add("::1/128", "loopback");
  add("ff00::/8", "multicast");
  add("::ffff:0:0/96", "IPv4-mapped");
  // The pool's own range: other sandboxes and the uplink side of every veth.
  add(cfg.range, "sandbox range");
  if (!cfg.allow_private) {
    add("10.0.0.0/8", "private (RFC 1918)");
    add("172.16.0.0/12", "private (RFC 1918)");
    add("192.168.0.0/16", "private (RFC 1918)");
    add("100.64.0.0/10", "shared address space (RFC 6598)");
    add("fc00::/7", "unique local (RFC 4193)");
  }
  // The host's own addresses (the namespace the pool manager runs in).
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) == 0) {
    for (ifaddrs* i = ifa; i; i = i->ifa_next) {
      if (!i->ifa_addr) continue;
      char buf[INET6_ADDRSTRLEN] = {};
      if (i->ifa_addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
      } else if (i->ifa_addr->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, buf,
                  sizeof buf);
      } else {
        continue;
      }
      add(buf, std::string("host address (") + i->ifa_name + ")");
    }
    freeifaddrs(ifa);
  }
  for (const auto& d : cfg.deny) add(d, "operator deny " + d);
  return out;
}

Result<ParsedPolicy> parse_policy(const NetworkConfig& cfg, const std::vector<DenyEntry>& deny,
                                  bool allow, const std::vector<std::string>& entries,
                                  uint32_t max_connections, uint64_t bandwidth) {
  ParsedPolicy p;
  p.allow = allow;
  if (!allow) return p;
  if (!cfg.enabled) {
    return make_error(ErrorCode::EGRESS_DENIED,
                      "networking is off in this pool (nv-vm-pool-manager --net-uplink-netns)");
  }
  if (entries.size() > kMaxAllowEntries) {
    return make_error(
        ErrorCode::BAD_REQUEST,
        "network.allow holds " + std::to_string(entries.size()) + " entries; at most 64");
  }
  for (std::string e : entries) {
    if (e.size() > 260) return make_error(ErrorCode::BAD_REQUEST, "network.allow entry too long");
    std::transform(e.begin(), e.end(), e.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!e.empty() && e.back() == '.') e.pop_back();
    p.entries.push_back(e);
    if (auto c = parse_allow_cidr(e)) {
      auto pre = parse_prefix(c->cidr);
      // An entry wholly inside the always-deny list is refused here; one that only overlaps it
      // (198.51.100.0/24 around a denied 198.51.100.66) is accepted, and the deny set, checked
      // first on the wire, still drops the denied part.
      for (const auto& d : deny) {
        if (d.prefix.len <= pre->len && pre->overlaps(d.prefix)) {
          return make_error(ErrorCode::EGRESS_DENIED, "network.allow '" + e +
                                                          "' is always denied: " + d.why + " (" +
                                                          d.prefix.text() + ")");
        }
      }
      p.cidrs.push_back(*c);
    } else if (valid_domain(e)) {
      p.domains.push_back(e);
    } else {
      return make_error(ErrorCode::BAD_REQUEST,
                        "network.allow '" + e.substr(0, 80) +
                            "' is neither CIDR[:port] nor a domain name (RFC 1035)");
    }
  }
  p.max_connections = max_connections ? max_connections : cfg.default_max_connections;
  p.bandwidth = bandwidth ? bandwidth : cfg.default_bandwidth;
  if (p.max_connections > 65536) {
    return make_error(ErrorCode::BAD_REQUEST, "network.maxConnections above 65536");
  }
  if (p.bandwidth < 1000) {
    return make_error(ErrorCode::BAD_REQUEST, "network.bandwidthBytesPerS below 1000");
  }
  return p;
}

}  // namespace nv::vm
