// sandbox_network.cc — a leased VM joins the network its policy allows (network.h): the host
// side first (veth, addresses, nftables), then the guest's eth0 through a Reseed.
#include <sstream>

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

std::string encode_policy(const ParsedPolicy& p) {
  std::string out = std::to_string(p.max_connections) + " " + std::to_string(p.bandwidth) + "\n";
  for (const auto& e : p.entries) out += e + "\n";
  return out;
}

Status Pool::attach_or_release(LeaseInfo& li, const ParsedPolicy& policy,
                               const std::string& trace_id) {
  auto net = attach_network(li.vm.vm_id, policy, li.sandbox_id, trace_id);
  if (!net.ok()) {
    (void)release(li.vm.vm_id, "network setup failed");
    return net.error();
  }
  li.network = net.value();
  return {};
}

Result<VmNetInfo> Pool::reattach_network(const std::string& vm_id, const std::string& encoded,
                                         const std::string& sandbox_id) {
  if (encoded.empty()) return VmNetInfo{};
  if (!opt_.network) {
    return make_error(ErrorCode::EGRESS_DENIED,
                      "the paused sandbox had a network policy but networking is off in this pool");
  }
  std::istringstream in(encoded);
  uint32_t max_connections = 0;
  uint64_t bandwidth = 0;
  in >> max_connections >> bandwidth;
  std::vector<std::string> entries;
  std::string line;
  std::getline(in, line);  // the rest of the first line
  while (std::getline(in, line)) {
    if (!line.empty()) entries.push_back(line);
  }
  // Parsed again: the operator's deny list of THIS pool applies (it may have changed).
  auto policy = opt_.network->parse(true, entries, max_connections, bandwidth);
  if (!policy.ok()) return policy.error();
  return attach_network(vm_id, policy.value(), sandbox_id, "");
}

}  // namespace nv::vm
