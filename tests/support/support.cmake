# nv_test_support: helpers shared by the test suites — child processes (process.h) and a plain
# HTTP GET (http.h), connects from inside a cgroup (egress_probe.h), a VM test's build paths (vm_paths.h). Link it and include "support/process.h".
add_library(nv_test_support STATIC ${CMAKE_CURRENT_LIST_DIR}/process.cc
                                   ${CMAKE_CURRENT_LIST_DIR}/http.cc
                                   ${CMAKE_CURRENT_LIST_DIR}/egress_probe.cc
                                   ${CMAKE_CURRENT_LIST_DIR}/vm_paths.cc)
target_include_directories(nv_test_support PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
target_link_libraries(nv_test_support PUBLIC Threads::Threads)
# source_dir()'s fallback when ctest's NV_SOURCE_DIR is not set (a test binary run by hand).
target_compile_definitions(nv_test_support PRIVATE NV_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
nv_warnings(nv_test_support)
