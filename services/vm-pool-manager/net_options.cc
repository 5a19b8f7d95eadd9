// net_options.cc — see net_options.h.
#include "net_options.h"

#include <algorithm>
#include <sstream>

#include <nv/schema/events.capnp.h>

#include "common/log.h"

namespace nv::vm {

void add_network_options(nv::Config& c) {
  // Guest networking (issue 16, network.h).
  c.add_bool("net", false,
             "guest networking: every VM gets a virtio-net NIC on a TAP in its own network "
             "namespace; sandboxes whose policy is `allow` get a veth to the uplink under nftables "
             "(adds cap_net_admin to --keep-caps)");
  c.add_string("net-uplink-netns", "",
               "network namespace file the sandboxes' veths go to (/proc/PID/ns/net, "
               "/run/netns/NAME); default: this process's own, with masquerade");
  c.add_string("net-range", "10.213.0.0/16", "IPv4 range cut into one /29 per networked VM");
  c.add_string("net-deny", "",
               "comma-separated CIDRs always denied whatever a policy allows (besides "
               "link-local/metadata, this host's addresses, private ranges)");
  c.add_bool("net-allow-private", false,
             "policies may allow private ranges (RFC 1918, RFC 6598, ULA); the pool's range stays "
             "denied");
  c.add_bool("net-no-filter", false,
             "benchmarks only (nv-bench net's baseline): sandboxes get NAT but NO policy; never "
             "use it to serve tenants");
  c.add_int("net-max-connections", 64, "concurrent connections per sandbox when the policy sets 0");
  c.add_int("net-bandwidth", 10000000, "egress bytes/s per sandbox when the policy sets 0");
  c.add_string("net-dns-upstream", "",
               "IP[:port] of the resolver the sandboxes' DNS responders forward allowed names to "
               "(reached from this process's namespace); each networked VM's resolver (its "
               "gateway, port 53) answers only names its policy allows and opens their addresses "
               "for the record's TTL; empty: no responder, domain entries never resolve (adds "
               "cap_net_bind_service to --keep-caps)");
}

NetworkConfig network_config(const nv::Config& c, int uplink_fd) {
  nv::vm::NetworkConfig nc;
  nc.enabled = true;
  nc.uplink_netns = c.str("net-uplink-netns");
  nc.uplink_fd = uplink_fd;
  nc.range = c.str("net-range");
  std::stringstream deny(c.str("net-deny"));
  for (std::string d; std::getline(deny, d, ',');) {
    if (!d.empty()) nc.deny.push_back(d);
  }
  nc.allow_private = c.boolean("net-allow-private");
  nc.no_filter = c.boolean("net-no-filter");
  if (nc.no_filter) nv::log::warn("--net-no-filter: sandbox egress is NOT filtered", {});
  nc.default_max_connections =
      static_cast<uint32_t>(std::clamp<int64_t>(c.integer("net-max-connections"), 1, 65536));
  nc.default_bandwidth = static_cast<uint64_t>(std::max<int64_t>(1000, c.integer("net-bandwidth")));
  return nc;
}

void publish_denied(NetworkManager& net, nv::EventPublisher& events) {
  for (const auto& r : net.take_denied()) {
    events.publish(
        "security.egress_denied",
        [&](schema::Event::Builder e) {
          auto d = e.initEgressDenied();
          d.setSandboxId(r.sandbox_id);
          d.setVmId(r.vm_id);
          d.setDestination(r.destination);
          d.setRule(r.rule);
          d.setCount(r.count);
        },
        r.trace_id, schema::Severity::ALERT);
  }
}

}  // namespace nv::vm
