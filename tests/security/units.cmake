# The systemd units in deploy/systemd keep their exposure low: `systemd-analyze security` fails a
# unit whose overall exposure is above --threshold (its 0-10 figure times ten). Every unit there is
# checked: services that run as an unprivileged user at most 2.0; the two that start as root for
# VMMs (cgroups, namespaces, jails) and BPF at most 4.5, with each remaining exposure explained
# in the unit itself.
file(GLOB NV_UNITS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/deploy/systemd/nv-*.service)
foreach(path IN LISTS NV_UNITS)
  get_filename_component(unit ${path} NAME_WE)
  string(REGEX REPLACE "^nv-" "" unit ${unit})
  file(STRINGS ${path} runs_as_root REGEX "^User=root$")
  file(STRINGS ${path} user REGEX "^User=")
  if(user STREQUAL "" OR NOT runs_as_root STREQUAL "")
    set(threshold 45)
  else()
    set(threshold 20)
  endif()
  add_test(NAME systemd_unit_${unit}
    COMMAND systemd-analyze security --offline=true --threshold=${threshold} ${path})
  set_tests_properties(systemd_unit_${unit} PROPERTIES LABELS security TIMEOUT 60)
endforeach()
