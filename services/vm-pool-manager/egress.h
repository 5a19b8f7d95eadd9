// egress.h — what a host-side service that serves a networked VM (the DNS responder of issue
// 16) gets from the pool manager: where to listen, which names the VM's policy allows, and the
// handle that adds resolved addresses to the VM's allow set.
//
// Topology of one networked VM (net_topology.md in the README; all of it built by netns.cc):
//
//   guest eth0 (virtio-net, ipv4 = base+2/30, default route + resolver = gateway)
//     │ TAP fd given to QEMU (the VMM itself stays in its own empty network namespace)
//   VM namespace "nv-<vm id>":  tap "nvtap" = gateway (base+1/30)
//                               veth "nvup"  = base+6/30 ── masquerade ──┐
//                               nftables table "inet nv_egress" (the policy; the guest cannot
//                               reach it: it lives outside the VM)         │
//   uplink namespace (--net-uplink-netns, the host's own by default):      │
//                               veth "nv<n>" = base+5/30 ◄─────────────────┘
//
// The DNS responder binds UDP and TCP port 53 on `gateway` INSIDE the VM namespace: enter it
// with in_netns(netns_fd, ...) (setns(2) on a short-lived thread), create and bind the sockets
// there, then serve them from any thread (a socket keeps the namespace it was made in). The
// policy's nftables input chain accepts only port 53 to the gateway from the guest.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"

namespace nv::vm {

// The VM's dynamic allow set: addresses a DNS answer for an allowed name returned. Entries
// expire on their own (nftables set timeouts, RFC 1035 §3.2.1 TTL semantics); connections to
// them still obey the always-deny list (metadata, the host, private ranges, the pool's range),
// which is checked first.
class EgressSet {
 public:
  virtual ~EgressSet() = default;
  // Allows new connections from the guest to `ip` (an IPv4 or IPv6 literal, "198.51.100.10")
  // on every port for `ttl` (clamped to 1 s .. 1 day; 0 = 1 s). Adding an address again extends
  // its timeout. Errors: BAD_REQUEST for a malformed literal, INTERNAL when the kernel refuses
  // (the message carries libnftables' text). Thread-safe.
  virtual Status allow_address(const std::string& ip, std::chrono::seconds ttl) = 0;
};

// One networked VM as the pool manager sees it while its network is up.
struct VmNetworkView {
  std::string vm_id;
  std::string sandbox_id;
  std::string trace_id;
  int netns_fd = -1;                 // the VM namespace (valid until network_down returns)
  std::string gateway;               // "10.213.0.1": bind the resolver here, port 53
  std::string guest_ipv4;            // "10.213.0.2" (without the prefix)
  std::vector<std::string> domains;  // the policy's domain entries: "example.org",
                                     // "*.example.org" (lower case, no trailing dot)
  std::shared_ptr<EgressSet> egress;
};

// Implemented by the DNS responder and registered with the pool (NetworkManager::set_observer).
// Called on the pool manager's threads; must not block for long.
class NetworkObserver {
 public:
  virtual ~NetworkObserver() = default;
  // The VM's network is configured (before the lease is answered).
  virtual void network_up(const VmNetworkView& vm) = 0;
  // The VM goes: close every socket made in its namespace.
  virtual void network_down(const std::string& vm_id) = 0;
};

// Runs `fn` on a new thread that first joins the network namespace `netns_fd` (setns(2),
// CLONE_NEWNET), and waits for it. Sockets `fn` creates stay in that namespace.
Status in_netns(int netns_fd, const std::function<Status()>& fn);

}  // namespace nv::vm
