// dns_service.h — the DNS responder as the pool manager runs it (issue 16 item 3): started by
// --net-dns-upstream, fed by the network manager's observer callbacks (egress.h: a VM's network
// up/down), its denials published as security.egress_denied events (events.capnp
// EgressDenied, severity WARNING, the VM's trace id).
#pragma once

#include <memory>
#include <string>

#include "common/error.h"
#include "common/events.h"
#include "dns_responder.h"
#include "egress.h"

namespace nv::vm::dns {

// Publishes one folded denial as security.egress_denied.
void publish_denial(nv::EventPublisher& events, const Denial& d);

// The pool's responder: `upstream` is the --net-dns-upstream value ("IP[:port]", port 53 by
// default). Errors: BAD_REQUEST naming the flag for a malformed value or port 0; INTERNAL when
// the upstream socket cannot be made.
Result<std::unique_ptr<Responder>> start_pool_responder(const std::string& upstream,
                                                        nv::EventPublisher& events);

// The network manager's observer (egress.h): a networked VM's responder comes and goes with its
// network; resolved addresses go into the VM's EgressSet. A VM whose responder cannot start is
// logged: its guest then has no resolver (lookups fail; nothing is opened).
class PoolDnsObserver : public NetworkObserver {
 public:
  explicit PoolDnsObserver(std::shared_ptr<Responder> responder)
      : responder_(std::move(responder)) {}
  void network_up(const VmNetworkView& vm) override;
  void network_down(const std::string& vm_id) override { responder_->remove_vm(vm_id); }

 private:
  std::shared_ptr<Responder> responder_;
};

}  // namespace nv::vm::dns
