# Security proof tests of the eBPF sentinel, seccomp, capabilities and Landlock (issue 6). Each
# asserts the blocked outcome on the real kernel; a feature the kernel refuses is skipped with the
# reason (errno), never faked. They need root (CAP_BPF, CAP_SYS_ADMIN for cgroups).
nv_add_gtest(NAME security_sentinel_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sentinel_test.cc
  LIBS nv_sentinel_core nv_seccomp
  LABELS security TIMEOUT 120)
nv_add_gtest(NAME security_seccomp_proof_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/seccomp_proof_test.cc
  LIBS nv_seccomp cppzmq
  LABELS security TIMEOUT 60)
nv_add_gtest(NAME security_caps_proof_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/caps_proof_test.cc
  LIBS PkgConfig::LIBCAP
  LABELS security TIMEOUT 60)
nv_add_gtest(NAME security_landlock_proof_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/landlock_proof_test.cc
  LIBS nv_landlock
  LABELS security TIMEOUT 60)
