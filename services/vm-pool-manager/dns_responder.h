// dns_responder.h — the host-side DNS resolver of networked sandboxes (issue 16 item 3).
//
// One UDP socket and one TCP listener (RFC 7766: length-prefixed messages, pipelining) per
// networked VM, bound to the VM's gateway address port 53 inside the VM's network namespace (a
// thread that setns(2)'d into it creates them; a socket stays in the namespace it was made in),
// all served by one thread polling every socket. A query for a name on the sandbox's
// allow list is forwarded to the operator's upstream resolver (--net-dns-upstream); each A/AAAA
// address of the answer is added to the VM's allow set for the record's TTL (clamped, see
// dns_message.h TtlLimits) BEFORE the guest gets the answer, so the connection that follows the
// lookup finds its address open. Every other name gets NXDOMAIN and a security.egress_denied
// event ("nxdomain: not on the allow list"), folded per VM to at most one event per
// `denial_interval` (EgressDenied.count says how many). Messages: dns_message.h.
//
// Bounds: queries over 1232 octets get FORMERR; at most `max_pending_per_vm` forwarded queries
// per VM and `max_pending` in all wait for the upstream (more get SERVFAIL at once); each waits
// at most `upstream_timeout` (then SERVFAIL); a VM's socket is read at most 16 datagrams per
// round so one flooding guest cannot starve the others. TCP: at most 4 connections per VM (more
// are closed at once), closed after 10 s idle, when a length prefix exceeds 1232 octets, or when
// 256 KiB of answers stay unread. Per-VM memory is the sockets' kernel buffers, ~300 octets per
// pending query and at most 4 x (1234 + 256 KiB) for TCP. The thread never blocks on a socket (all
// non-blocking); the allow-set callback and the denial sink run on it.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
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
#include "dns_message.h"
#include "sysutil.h"

namespace nv::vm::dns {

// An IPv4 or IPv6 socket address.
struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text() const;  // "198.51.100.1:53", "[2001:db8::1]:53"
};
// "IP", "IP:port", "[IPv6]:port" or a bare IPv6 address; nullopt when malformed. Port 0 is
// kept (a listen address "any port", for tests); an upstream needs a real one.
std::optional<Endpoint> parse_endpoint(const std::string& text, uint16_t default_port);

// Adds `ip` ("198.51.100.10", "2001:db8::10") to the VM's allow set for `ttl_s` seconds (the
// data path's nft timeout set); false when it could not (the guest then gets SERVFAIL).
using AllowAddress = std::function<bool(const std::string& ip, uint32_t ttl_s)>;

// One security.egress_denied event's content (events.capnp EgressDenied).
struct Denial {
  std::string sandbox_id;
  std::string vm_id;
  std::string trace_id;
  std::string name;  // the last queried name folded into this event ("other.test")
  std::string rule;  // "nxdomain: not on the allow list"
  uint64_t count = 0;
};
using DenialSink = std::function<void(const Denial&)>;

inline constexpr const char* kDenyRule = "nxdomain: not on the allow list";

struct ResponderOptions {
  Endpoint upstream;  // the operator's resolver, reached from the responder's own namespace
  TtlLimits ttl;
  std::chrono::milliseconds upstream_timeout{2000};
  size_t max_pending_per_vm = 32;
  size_t max_pending = 1024;
  std::chrono::milliseconds denial_interval{1000};
};

struct VmDnsConfig {
  std::string vm_id{};
  std::string sandbox_id{};
  std::string trace_id{};            // stamped on the VM's denial events
  std::vector<std::string> allow{};  // NetworkPolicy.allow; only domain entries matter here
  std::string netns_path{};          // "/run/netns/nv-…" or "/proc/<pid>/ns/net"; "" = ours
  int netns_fd = -1;  // or the namespace as an open fd (used when >= 0; borrowed: read only
                      // during add_vm)
  Endpoint listen{};  // the VM's gateway address, port 53
  AllowAddress allow_address{};
};

// Per-VM counters (monotonic).
struct VmDnsStats {
  uint64_t queries = 0;            // datagrams received from the guest
  uint64_t forwarded = 0;          // sent upstream
  uint64_t answered = 0;           // upstream answers relayed (any rcode)
  uint64_t addresses_allowed = 0;  // allow-set insertions
  uint64_t denied = 0;             // NXDOMAIN for names not on the list
  uint64_t errors = 0;             // FORMERR/NOTIMP/REFUSED answers and dropped datagrams
  uint64_t servfail = 0;           // upstream failed, timed out, or the allow set refused
};

class Responder {
 public:
  // Opens the upstream socket and starts the thread. Errors: INTERNAL naming the syscall.
  static Result<std::unique_ptr<Responder>> start(ResponderOptions options, DenialSink denials);
  ~Responder();  // stops the thread, closes every socket
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // Starts answering for one VM. Errors: BAD_REQUEST for a malformed domain entry (the text
  // names it), INTERNAL when the socket cannot be made (setns/bind with errno), ALREADY_EXISTS
  // style INTERNAL when the vm_id is served already.
  Status add_vm(VmDnsConfig config);
  // Stops answering for the VM and closes its socket (queries in flight are dropped). No-op for
  // an unknown id.
  void remove_vm(const std::string& vm_id);
  std::optional<VmDnsStats> stats(const std::string& vm_id) const;
  // The address the VM's socket is bound to (getsockname: the port when `listen` had port 0).
  std::optional<Endpoint> local_endpoint(const std::string& vm_id) const;
  size_t vm_count() const;

 private:
  struct Vm;
  struct Pending;
  struct TcpConn;
  struct ReplyTo;
  Responder(ResponderOptions options, DenialSink denials, UniqueFd upstream, UniqueFd wake);
  void loop();
  void read_guest(const std::shared_ptr<Vm>& vm);
  void accept_tcp(Vm& vm);
  void serve_tcp(const std::shared_ptr<Vm>& vm, const std::shared_ptr<TcpConn>& c, short events);
  void handle_query(const std::shared_ptr<Vm>& vm, std::string_view msg, ReplyTo to);
  void reply(Vm& vm, const std::string& bytes, const ReplyTo& to);
  void read_upstream();
  void expire_and_flush(std::chrono::steady_clock::time_point now);
  void note_denial(Vm& vm, const std::string& name, std::chrono::steady_clock::time_point now);
  void wake();

  ResponderOptions options_;
  DenialSink denials_;
  UniqueFd upstream_;
  UniqueFd wake_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Vm>> vms_;  // guarded by mu_
  uint64_t generation_ = 0;                         // guarded by mu_: bumps on add/remove
  std::map<uint16_t, Pending> pending_;             // loop thread only: by upstream message id
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace nv::vm::dns
