// dns_service.cc — the pool manager's DNS responder: start-up and events (dns_service.h).
#include "dns_service.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/log.h"

namespace nv::vm::dns {

void publish_denial(nv::EventPublisher& events, const Denial& d) {
  events.publish(
      "security.egress_denied",
      [&](schema::Event::Builder e) {
        auto p = e.initEgressDenied();
        p.setSandboxId(d.sandbox_id);
        p.setVmId(d.vm_id);
        p.setDestination(d.name);
        p.setRule(d.rule);
        p.setCount(d.count);
      },
      d.trace_id, schema::Severity::WARNING);
}

Result<std::unique_ptr<Responder>> start_pool_responder(const std::string& upstream,
                                                        nv::EventPublisher& events) {
  auto ep = parse_endpoint(upstream, 53);
  const bool port0 = ep && (ep->addr.ss_family == AF_INET
                                ? reinterpret_cast<const sockaddr_in*>(&ep->addr)->sin_port == 0
                                : reinterpret_cast<const sockaddr_in6*>(&ep->addr)->sin6_port == 0);
  if (!ep || port0) {
    return make_error(ErrorCode::BAD_REQUEST, "--net-dns-upstream \"" + upstream +
                                                  "\": want IP, IP:port or [IPv6]:port (port "
                                                  "1-65535)");
  }
  ResponderOptions o;
  o.upstream = *ep;
  return Responder::start(o, [&events](const Denial& d) { publish_denial(events, d); });
}

void PoolDnsObserver::network_up(const VmNetworkView& vm) {
  VmDnsConfig c;
  c.vm_id = vm.vm_id;
  c.sandbox_id = vm.sandbox_id;
  c.trace_id = vm.trace_id;
  c.allow = vm.domains;
  c.netns_fd = vm.netns_fd;
  auto at = parse_endpoint(vm.gateway, 53);
  if (!at) {
    log::error("dns: bad gateway address", {{"vm_id", vm.vm_id}, {"gateway", vm.gateway}});
    return;
  }
  c.listen = *at;
  c.allow_address = [egress = vm.egress](const std::string& ip, uint32_t ttl_s) {
    return egress && egress->allow_address(ip, std::chrono::seconds(ttl_s)).ok();
  };
  if (Status s = responder_->add_vm(std::move(c)); !s.ok()) {
    log::error("dns: cannot serve the VM", {{"vm_id", vm.vm_id}, {"error", s.error().message}});
  }
}

}  // namespace nv::vm::dns
