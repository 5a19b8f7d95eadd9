# install-files.cmake — run by `cmake --install` (see deploy/CMakeLists.txt) with NV_SOURCE_DIR,
# NV_STAGE_DIR, NV_GUEST_BUILD_DIR, NV_BINDIR, NV_DATADIR and the three optional directories set.
# file(INSTALL) honours DESTDIR, so staged installs (images) work as well as real ones.
set(prefix "${CMAKE_INSTALL_PREFIX}")
foreach(var NV_SYSTEMD_UNIT_DIR:lib/systemd/system NV_SYSUSERS_DIR:lib/sysusers.d
            NV_TMPFILES_DIR:lib/tmpfiles.d)
  string(REPLACE ":" ";" pair "${var}")
  list(GET pair 0 name)
  list(GET pair 1 default)
  if("${${name}}" STREQUAL "")
    set(${name} "${prefix}/${default}")
  endif()
endforeach()
if(IS_ABSOLUTE "${NV_BINDIR}")
  set(bindir "${NV_BINDIR}")
else()
  set(bindir "${prefix}/${NV_BINDIR}")
endif()
set(guestdir "${prefix}/${NV_DATADIR}/neurovisor/guest")

# Units: the tree's units name /usr/local/bin (the default prefix); installed ones name the real
# bindir. neurovisor.target wants every nv-*.service there is.
file(GLOB units "${NV_SOURCE_DIR}/systemd/nv-*.service")
# A scratch dir of this install's own: two installs from one build tree may run at once.
string(RANDOM LENGTH 12 scratch)
set(NV_STAGE_DIR "${NV_STAGE_DIR}/${scratch}")
file(MAKE_DIRECTORY "${NV_STAGE_DIR}")
set(wants "")
foreach(unit IN LISTS units)
  get_filename_component(name "${unit}" NAME)
  file(READ "${unit}" text)
  string(REPLACE "/usr/local/bin/" "${bindir}/" text "${text}")
  string(REPLACE "/usr/local/share/neurovisor/guest" "${guestdir}" text "${text}")
  file(WRITE "${NV_STAGE_DIR}/${name}" "${text}")
  string(APPEND wants " ${name}")
endforeach()
file(READ "${NV_SOURCE_DIR}/systemd/neurovisor.target" text)
string(REGEX REPLACE "\nWants=[^\n]*" "\nWants=${wants}" text "${text}")
file(WRITE "${NV_STAGE_DIR}/neurovisor.target" "${text}")
file(GLOB staged "${NV_STAGE_DIR}/*")
file(INSTALL DESTINATION "${NV_SYSTEMD_UNIT_DIR}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ FILES ${staged})
file(INSTALL DESTINATION "${NV_SYSUSERS_DIR}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${NV_SOURCE_DIR}/sysusers.d/neurovisor.conf")
file(INSTALL DESTINATION "${NV_TMPFILES_DIR}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${NV_SOURCE_DIR}/tmpfiles.d/neurovisor.conf")

# The guest kernel and image: BUILD/guest holds symlinks to content-addressed files
# (guest/build.sh); the files themselves are installed under stable names.
foreach(f vmlinux rootfs.ext4)
  if(NOT EXISTS "${NV_GUEST_BUILD_DIR}/${f}")
    message(FATAL_ERROR "${NV_GUEST_BUILD_DIR}/${f} is missing: run ./nv setup first")
  endif()
  file(REAL_PATH "${NV_GUEST_BUILD_DIR}/${f}" real)
  file(INSTALL DESTINATION "${guestdir}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ FILES "${real}" RENAME "${f}")
endforeach()

# The Debian packages these binaries need at run time (ldd → dpkg -S, plus QEMU): a host or image
# without a build tree installs them with `apt-get install $(cat .../runtime-packages.txt)`.
file(GLOB binaries "${NV_BUILD_BIN_DIR}/nv" "${NV_BUILD_BIN_DIR}/nv-*")
list(FILTER binaries EXCLUDE REGEX "nv-guest-")
execute_process(COMMAND "${NV_SOURCE_DIR}/image/runtime-packages.sh" ${binaries}
                OUTPUT_FILE "${NV_STAGE_DIR}/runtime-packages.txt" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "deploy/image/runtime-packages.sh failed")
endif()
file(INSTALL DESTINATION "${prefix}/${NV_DATADIR}/neurovisor" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${NV_STAGE_DIR}/runtime-packages.txt")
file(REMOVE_RECURSE "${NV_STAGE_DIR}")
