# Guest protocol and agent logic, on the build host (no VM): frame codec edge cases, the host
# channel against fake peers on a socketpair, the exec core against /bin/sh, and the agent's
# Session end to end with the host channel.
nv_add_gtest(NAME guest_protocol_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/guest_protocol_test.cc
  LIBS nv_guest_channel nv_guest_agent_core
  LABELS unit TIMEOUT 120)
nv_add_gtest(NAME guest_agent_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/guest_agent_test.cc
  LIBS nv_guest_channel nv_guest_agent_core
  LABELS unit TIMEOUT 120)
# Sandbox operations of the agent (files, processes, background programs, code contexts) through
# the host channel, on the build host.
nv_add_gtest(NAME guest_sandbox_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/guest_sandbox_test.cc
  LIBS nv_guest_channel nv_guest_agent_core
  LABELS unit TIMEOUT 300)
