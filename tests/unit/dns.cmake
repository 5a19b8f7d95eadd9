# The sandboxes' DNS responder (issue 16): ldns messages, the allow-list match, and the responder
# on real UDP sockets with a real upstream (dnsmasq on a loopback port) and a real client
# (drill from ldnsutils; glibc's resolver through getent inside a network namespace the test
# makes). Label security: it proves names off the allow list get NXDOMAIN and no address.
nv_add_gtest(NAME dns_responder_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/dns_message_test.cc ${CMAKE_CURRENT_LIST_DIR}/dns_responder_test.cc
  LIBS nv_vm nv_test_support
  LABELS unit security
  TIMEOUT 180)
