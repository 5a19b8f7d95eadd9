# One real microVM (QEMU TCG) from ${NV_BUILD_DIR}/guest/{vmlinux,rootfs.ext4}, shared by every
# case: languages, timeout, output cap, files, reseed, reconnect, shutdown. Skips when the image
# or QEMU is missing (./nv setup builds the image).
nv_add_gtest(NAME guest_vm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/guest_vm_test.cc
  LIBS nv_guest_channel
  LABELS vm TIMEOUT 240)
