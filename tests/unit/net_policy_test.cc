// Network policy validation (net_policy.h): the entries a sandbox may list and what the
// always-deny list refuses whatever a policy says. No namespaces, no root.
#include "net_policy.h"

#include <gtest/gtest.h>

namespace nv::vm {
namespace {

NetworkConfig config(std::vector<std::string> deny = {}, bool allow_private = false) {
  NetworkConfig c;
  c.enabled = true;
  c.deny = std::move(deny);
  c.allow_private = allow_private;
  return c;
}

Result<ParsedPolicy> parse(const NetworkConfig& c, std::vector<std::string> entries) {
  return parse_policy(c, always_deny_list(c), true, entries, 0, 0);
}

TEST(NetPolicy, CidrEntriesAreCanonicalWithTheirPorts) {
  auto p = parse_allow_cidr("198.51.100.7:443");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->cidr, "198.51.100.7/32");
  EXPECT_EQ(p->port, 443);
  p = parse_allow_cidr("198.51.100.77/24");  // host bits cleared
  ASSERT_TRUE(p);
  EXPECT_EQ(p->cidr, "198.51.100.0/24");
  EXPECT_EQ(p->port, 0);
  p = parse_allow_cidr("[2001:db8::1]:443");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->v6);
  EXPECT_EQ(p->cidr, "2001:db8::1/128");
  EXPECT_EQ(p->port, 443);
  p = parse_allow_cidr("2001:db8::/32");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->cidr, "2001:db8::/32");
  for (const char* bad : {"300.1.1.1", "198.51.100.0/33", "198.51.100.1:0", "198.51.100.1:65536",
                          "[2001:db8::1]", "2001:db8::/129", "198.51.100.1/24/1", ""}) {
    EXPECT_FALSE(parse_allow_cidr(bad)) << bad;
  }
}

TEST(NetPolicy, DomainsFollowRfc1035) {
  for (const char* ok : {"example.org", "*.example.org", "a-b.c0.example", "xn--bcher-kva.ch"}) {
    EXPECT_TRUE(valid_domain(ok)) << ok;
  }
  for (const char* bad : {"org", "*.org", "exa_mple.org", "-a.org", "a-.org", "a..org", "300.1.1.1",
                          "a.*.org", "*example.org"}) {
    EXPECT_FALSE(valid_domain(bad)) << bad;
  }
}

TEST(NetPolicy, AlwaysDeniedEntriesAreRefusedWhateverThePolicySays) {
  auto c = config({"198.51.100.66/32"});
  for (const char* e :
       {"169.254.169.254", "169.254.0.0/16", "169.254.169.254:80", "[fd00:ec2::254]:80", "10.1.2.3",
        "192.168.0.0/24", "127.0.0.1", "10.213.5.2", "198.51.100.66", "198.51.100.66:8080"}) {
    auto r = parse(c, {e});
    ASSERT_FALSE(r.ok()) << e;
    EXPECT_EQ(r.error().code, ErrorCode::EGRESS_DENIED) << e << ": " << r.error().message;
  }
  // The operator may allow private ranges, never the pool's own range or metadata.
  auto priv = config({}, true);
  EXPECT_TRUE(parse(priv, {"192.168.0.0/24"}).ok());
  EXPECT_FALSE(parse(priv, {"10.213.0.0/24"}).ok());
  EXPECT_FALSE(parse(priv, {"169.254.169.254"}).ok());
  // A range around a denied address is accepted: the deny set, first on the wire, drops it.
  auto wide = parse(c, {"198.51.100.0/24", "example.org", "*.Example.COM."});
  ASSERT_TRUE(wide.ok()) << wide.error().message;
  EXPECT_EQ(wide.value().cidrs.size(), 1u);
  EXPECT_EQ(wide.value().domains, (std::vector<std::string>{"example.org", "*.example.com"}));
  EXPECT_EQ(wide.value().max_connections, 64u);
  EXPECT_EQ(wide.value().bandwidth, 10'000'000u);
}

TEST(NetPolicy, MalformedPoliciesAreBadRequests) {
  auto c = config();
  std::vector<std::string> many(65, "198.51.100.1");
  EXPECT_EQ(parse(c, many).error().code, ErrorCode::BAD_REQUEST);
  EXPECT_EQ(parse(c, {"not a host"}).error().code, ErrorCode::BAD_REQUEST);
  EXPECT_EQ(parse_policy(c, always_deny_list(c), true, {}, 70000, 0).error().code,
            ErrorCode::BAD_REQUEST);
  EXPECT_EQ(parse_policy(c, always_deny_list(c), true, {}, 0, 10).error().code,
            ErrorCode::BAD_REQUEST);
  // Networking off: an allow policy is refused, mode none is fine.
  NetworkConfig off;
  EXPECT_EQ(parse_policy(off, {}, true, {"198.51.100.1"}, 0, 0).error().code,
            ErrorCode::EGRESS_DENIED);
  EXPECT_TRUE(parse_policy(off, {}, false, {}, 0, 0).ok());
}

}  // namespace
}  // namespace nv::vm
