// sandbox_network.cc — a leased VM joins the network its policy allows (network.h): the host
// side first (veth, addresses, nftables), then the guest's eth0 through a Reseed.
#include "common/log.h"
#include "pool.h"

namespace nv::vm {

Result<VmNetInfo> Pool::attach_network(const std::string& vm_id, const ParsedPolicy& policy,
                                       const std::string& sandbox_id, const std::string& trace_id) {
  VmNetInfo none;
  if (!policy.allow) return none;
  if (!opt_.network) {
    return make_error(ErrorCode::EGRESS_DENIED, "networking is off in this pool");
  }
  std::shared_ptr<RunningVm> vm;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) return make_error(ErrorCode::UNKNOWN_LEASE, "no VM " + vm_id);
    vm = it->second.vm;
  }
  auto net = opt_.network->attach(vm_id, policy, sandbox_id, trace_id);
  if (!net.ok()) return net.error();
  if (Status s = guest_.configure_network(vm->info(), random_bytes(opt_.reseed_bytes), vm_id,
                                          net.value(), Clock::now() + opt_.boot_timeout);
      !s.ok()) {
    return s.error();
  }
  {
    std::lock_guard lock(mu_);
    if (auto it = vms_.find(vm_id); it != vms_.end()) it->second.net = net.value();
  }
  log::info("sandbox network up", {{"vm_id", vm_id},
                                   {"sandbox_id", sandbox_id},
                                   {"ipv4", net.value().ipv4},
                                   {"mac", net.value().mac}});
  return net;
}

}  // namespace nv::vm
