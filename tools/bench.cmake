# nv-bench: benchmarks, one subcommand per concern (`nv-bench bus|vm|fork|exec|output|...`).
# bench/main.cc dispatches; bench/bus_bench.cc is the bus. The others are written with their
# services: a part is built in when its nv_bench_<part>_lib target exists (the service defines
# it with its own dependencies) or, failing that, when tools/bench/<part>_bench.cc exists; a part
# that is neither prints "not built yet" at run time instead of breaking the build.
if(NOT TARGET benchmark::benchmark)
  return()
endif()
add_executable(nv-bench ${CMAKE_CURRENT_LIST_DIR}/bench/main.cc
                        ${CMAKE_CURRENT_LIST_DIR}/bench/bus_bench.cc
                        ${CMAKE_CURRENT_LIST_DIR}/bench/load_bench.cc)
target_link_libraries(nv-bench PRIVATE nv_broker benchmark::benchmark)
target_include_directories(nv-bench PRIVATE ${PROJECT_SOURCE_DIR}/services)
nv_warnings(nv-bench)

# Libraries a bench source compiled straight into nv-bench links, when they exist.
set(NV_BENCH_LIBS_vm nv_vm)
set(NV_BENCH_LIBS_exec nv_exec_executor)
set(NV_BENCH_LIBS_fork nv_exec_executor nv_vm)
set(NV_BENCH_LIBS_sandbox nv_exec_executor nv_common)
set(NV_BENCH_LIBS_mount nv_exec_executor nv_common)
set(NV_BENCH_LIBS_output nv_common)
set(NV_BENCH_LIBS_agent nv_agent nv_llm_client)
set(NV_BENCH_LIBS_sentinel nv_sentinel_core)
set(NV_BENCH_LIBS_api nv_api)
set(NV_BENCH_LIBS_dns nv_vm)
set(NV_BENCH_LIBS_net nv_exec_executor nv_common)
foreach(part vm fork exec output agent sentinel sandbox api mount dns net)
  string(TOUPPER ${part} PART)
  set(src ${CMAKE_CURRENT_LIST_DIR}/bench/${part}_bench.cc)
  if(TARGET nv_bench_${part}_lib)
    target_link_libraries(nv-bench PRIVATE nv_bench_${part}_lib)
    target_compile_definitions(nv-bench PRIVATE NV_HAVE_${PART}_BENCH)
  elseif(EXISTS ${src})
    target_sources(nv-bench PRIVATE ${src})
    target_compile_definitions(nv-bench PRIVATE NV_HAVE_${PART}_BENCH)
    foreach(lib IN LISTS NV_BENCH_LIBS_${part})
      if(TARGET ${lib})
        target_link_libraries(nv-bench PRIVATE ${lib})
      endif()
    endforeach()
  endif()
endforeach()
