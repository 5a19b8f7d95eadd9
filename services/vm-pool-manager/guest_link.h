// guest_link.h — the pool's GuestLink over nv_guest_channel (guest/host/guest_channel.h).
//
// wait_ready connects to the VM's guest channel, waits for the agent's Hello (the agent says
// Hello on every new host connection) and hangs up again, so the lessee can connect next (a
// virtio-serial port takes one host at a time). reseed does the same with a Reseed request:
// fresh entropy, the VM's new id and the host clock (restored guests wake up with the
// snapshot's clock), and checks that the agent reports the new id back. warm_up runs a short
// program per language the agent offers and checks each exits 0.
#pragma once

#include "pool.h"

namespace nv::guest {
struct GuestNetwork;
}

namespace nv::vm {

class ChannelGuestLink : public GuestLink {
 public:
  Status wait_ready(const VmInfo& vm, Deadline deadline) override;
  Status reseed(const VmInfo& vm, const std::string& entropy, const std::string& vm_id,
                Deadline deadline) override;
  Status warm_up(const VmInfo& vm, Deadline deadline) override;
  Status configure_network(const VmInfo& vm, const std::string& entropy, const std::string& vm_id,
                           const VmNetInfo& net, Deadline deadline) override;

 private:
  Status reseed_with(const VmInfo& vm, const std::string& entropy, const std::string& vm_id,
                     Deadline deadline, const guest::GuestNetwork* network);
};

}  // namespace nv::vm
