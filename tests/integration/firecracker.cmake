# FirecrackerBackend against the request-checking fake (tests/fixtures/fake_firecracker.py).
nv_add_gtest(NAME firecracker_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/firecracker_test.cc
  LIBS nv_vm
  LABELS integration
  TIMEOUT 120)
