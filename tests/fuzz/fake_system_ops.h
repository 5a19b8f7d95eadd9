// fake_system_ops.h — a SystemOps for the guest agent's Session off a VM: changes nothing,
// answers fixed identity values (the guest_agent target and the seed generator use it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "guest/agent/session.h"

namespace nv::fuzz {

class FakeSystemOps final : public guest::agent::SystemOps {
 public:
  std::string add_entropy(std::string_view) override { return {}; }
  std::string set_clock(int64_t) override { return {}; }
  std::string set_identity(const std::string&) override { return {}; }
  std::string boot_id() override { return "6f1c2d7e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"; }
  uint64_t uptime_ms() override { return 812; }
};

}  // namespace nv::fuzz
