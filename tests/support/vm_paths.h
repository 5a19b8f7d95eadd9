// vm_paths.h — where a VM test finds its build: the guest kernel and image, and the binaries.
#pragma once

#include <string>

namespace nv::test {

// Whether `path` exists (lstat: a dangling symlink exists).
bool exists(const std::string& path);
// $name when set and non-empty, else `fallback`.
std::string env_or(const char* name, const std::string& fallback);
// The build dir this test binary belongs to: $NV_BUILD_DIR (ctest sets it), else the parent of
// the binary's own directory (BUILD/tests/<test>), never a fixed path.
std::string build_dir();
// build_dir() + "/guest": vmlinux and rootfs.ext4 (guest/build.sh).
std::string guest_dir();

}  // namespace nv::test
