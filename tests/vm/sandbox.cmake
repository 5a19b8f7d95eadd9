# The agent's sandbox operations (files, a 100 MiB file in /home/agent, background processes and
# signals, python and node contexts) in one real microVM (QEMU TCG, 512 MiB) shared by every
# case. Skips when the image or QEMU is missing (tools/setup.sh builds the image).
nv_add_gtest(NAME sandbox_vm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/sandbox_vm_test.cc
  LIBS nv_guest_channel
  LABELS vm TIMEOUT 900)
