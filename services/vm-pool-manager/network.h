// network.h — guest networking under policy (issue 16): one network namespace per VM, owned by
// the pool manager, holding the TAP device QEMU gets as a file descriptor; for networked
// sandboxes also a veth pair to the operator's uplink namespace and the nftables policy.
//
// Why the VMM is not in that namespace: QEMU only reads and writes the TAP fd, so it keeps its
// own empty network namespace (jail.h) and nothing the guest can reach runs next to the policy.
// Every VM has the NIC when networking is on (templates, warm VMs, clones, forks: a restored
// clone needs the device set of its template); a `none` VM's TAP sits alone in its namespace,
// down, without an address or a peer: the guest has no route anywhere, whatever it does to eth0.
//
// Addressing: --net-range (an IPv4 /8../22) is cut into /29 blocks, one per networked VM:
//   base+1 gateway (TAP, the guest's router and DNS), base+2 the guest (/30),
//   base+5 uplink side of the veth, base+6 the VM namespace's side (/30); the VM namespace
//   masquerades to base+6, so the uplink only sees its own link's address.
// Enforcement (table inet nv_egress in the VM namespace, built with libnftables): the
// always-deny set first (link-local/metadata, the host's addresses, private and special ranges
// unless --net-allow-private, the pool's own range, --net-deny), then the policy's CIDR[:port]
// sets and the DNS-filled timeout sets (egress.h), a concurrent-connection limit (ct count) and a
// token bucket on the guest's egress bytes (limit rate over); everything else is dropped and
// counted.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "egress.h"
#include "sysutil.h"

namespace nv::vm {

struct DenyEntry;

struct NetworkConfig {
  bool enabled = false;      // no NIC at all when false (networked leases: egressDenied)
  std::string uplink_netns;  // a namespace file (/proc/PID/ns/net, /run/netns/NAME);
                             // "" = the pool manager's own namespace
  int uplink_fd = -1;        // that namespace opened already (before a privilege drop); dup'ed
  std::string range = "10.213.0.0/16";  // IPv4 CIDR cut into /29 blocks, one per networked VM
  std::vector<std::string> deny;        // operator's always-deny CIDRs (--net-deny)
  bool allow_private = false;           // --net-allow-private: RFC 1918 / ULA may be allowed
  bool no_filter = false;  // --net-no-filter: NAT only, no policy (nv-bench net baseline)
  uint32_t default_max_connections = 64;
  uint64_t default_bandwidth = 10'000'000;  // bytes/s
};

// One allow entry of a policy, validated.
struct AllowCidr {
  bool v6 = false;
  std::string cidr;   // canonical "198.51.100.0/24" / "2001:db8::/32"
  uint16_t port = 0;  // 0 = every port
};

// A NetworkPolicy (sandbox.capnp) after validation.
struct ParsedPolicy {
  bool allow = false;  // false: mode none
  std::vector<AllowCidr> cidrs;
  std::vector<std::string> domains;  // lower case, no trailing dot; "*.x" for wildcards
  std::vector<std::string> entries;  // as given (NetworkInfo.allow)
  uint32_t max_connections = 0;
  uint64_t bandwidth = 0;
};

// What a networked VM got (sandbox.capnp NetworkInfo).
struct VmNetInfo {
  bool allow = false;
  std::vector<std::string> entries;
  std::string mac;      // "02:.."
  std::string ipv4;     // "10.213.0.2/30"
  std::string gateway;  // "10.213.0.1"
};

// A denied connection, for security.egress_denied (folded: `count` since the last report).
struct DeniedReport {
  std::string vm_id, sandbox_id, trace_id, destination, rule;
  uint64_t count = 0;
};

class NetworkManager {
 public:
  // Opens the uplink namespace and reads the host's addresses. Errors: BAD_REQUEST for a bad
  // range/deny entry, INTERNAL when the uplink namespace cannot be opened.
  static Result<std::shared_ptr<NetworkManager>> create(NetworkConfig config);
  ~NetworkManager();

  const NetworkConfig& config() const { return cfg_; }
  // Validates a policy: BAD_REQUEST for malformed entries or limits (more than 64 entries, a
  // CIDR that does not parse, a bad port or name), EGRESS_DENIED for an entry that overlaps the
  // always-deny list (the message names the deny entry), and EGRESS_DENIED for an allow policy
  // while networking is off.
  Result<ParsedPolicy> parse(bool allow, const std::vector<std::string>& entries,
                             uint32_t max_connections, uint64_t bandwidth) const;

  // Every VM (networking on): a fresh namespace with a TAP "nvtap" (down). Returns the TAP fd to
  // pass to the VMM (the manager keeps its own until remove_vm).
  Result<UniqueFd> create_vm(const std::string& vm_id);
  // Connects a VM's namespace to the uplink under `policy` and returns its addresses. Errors:
  // POOL_EXHAUSTED when the range has no free block, INTERNAL when the kernel refuses.
  Result<VmNetInfo> attach(const std::string& vm_id, const ParsedPolicy& policy,
                           const std::string& sandbox_id, const std::string& trace_id);
  // The policy a VM was attached with (forks inherit it), or nullopt.
  std::optional<ParsedPolicy> policy_of(const std::string& vm_id) const;
  // The VM is gone: its namespace (and with it the TAP, veth and nftables table) goes.
  void remove_vm(const std::string& vm_id);

  // The DNS responder (egress.h).
  void set_observer(std::shared_ptr<NetworkObserver> observer);
  // Denied connections since the last call (security.egress_denied): the cleanup thread reads
  // each networked VM's denied_* sets (destination . protocol . port with packet counters) once
  // a second; one report per destination and rule with the packets dropped since the last one,
  // at most 16 per VM per second. Drained by the service's main loop (it owns the publisher).
  std::vector<DeniedReport> take_denied();

 private:
  struct Vm;
  explicit NetworkManager(NetworkConfig config);

  NetworkConfig cfg_;
  UniqueFd uplink_fd_;
  uint32_t range_base_ = 0;  // host order
  uint32_t range_blocks_ = 0;
  std::vector<DenyEntry> deny_;  // the always-deny list (net_policy.h)
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Vm>> vms_;
  std::vector<bool> used_blocks_;
  std::shared_ptr<NetworkObserver> observer_;
  // Veths to delete, then blocks to free (remove_vm runs on filtered threads).
  void cleanup_loop();
  std::deque<std::pair<std::string, int>> cleanup_;
  void poll_denied();
  std::vector<DeniedReport> denied_;
  std::condition_variable cleanup_cv_;
  bool stopping_ = false;
  std::thread cleaner_;
};

}  // namespace nv::vm
