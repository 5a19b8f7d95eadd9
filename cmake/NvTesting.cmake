# nv_add_gtest(NAME <name> SOURCES <files...> [LIBS <targets...>] LABELS <labels...>
#              [TIMEOUT <seconds>] [ENV <VAR=value...>])
#
# One GoogleTest binary = one ctest test, so fixtures that are costly to set up (a booted VM, a
# running stack) are shared by every case in the binary. Labels: unit, integration, vm, security.
function(nv_add_gtest)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ENV" ${ARGN})
  if(NOT T_NAME OR NOT T_SOURCES OR NOT T_LABELS)
    message(FATAL_ERROR "nv_add_gtest needs NAME, SOURCES and LABELS")
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  nv_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main
                        Threads::Threads)
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} --gtest_color=no)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "NV_BIN_DIR=${CMAKE_BINARY_DIR}/bin;NV_SOURCE_DIR=${CMAKE_SOURCE_DIR};NV_BUILD_DIR=${CMAKE_BINARY_DIR};${T_ENV}")
endfunction()
