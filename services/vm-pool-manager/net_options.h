// net_options.h — nv-vm-pool-manager's guest-networking options (--net*) and its
// security.egress_denied events (network.h).
#pragma once

#include "common/config.h"
#include "common/events.h"
#include "network.h"

namespace nv::vm {

// Registers --net, --net-uplink-netns, --net-range, --net-deny, --net-allow-private,
// --net-no-filter, --net-max-connections, --net-bandwidth (each with its default and help).
void add_network_options(nv::Config& c);
// The NetworkConfig those options describe; `uplink_fd` is the uplink namespace opened before
// the privilege drop.
NetworkConfig network_config(const nv::Config& c, int uplink_fd);
// Publishes the denials collected since the last call (topic security.egress_denied, severity
// alert, the sandbox's trace id).
void publish_denied(NetworkManager& net, nv::EventPublisher& events);

}  // namespace nv::vm
