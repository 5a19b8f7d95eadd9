#include "support/vm_paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace nv::test {

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

namespace {
std::string own_build_dir() {
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "build";
  std::string p(exe, static_cast<size_t>(n));
  p = p.substr(0, p.rfind('/'));  // BUILD/tests
  return p.substr(0, p.rfind('/'));
}
}  // namespace

std::string build_dir() { return env_or("NV_BUILD_DIR", own_build_dir()); }
std::string guest_dir() { return build_dir() + "/guest"; }

}  // namespace nv::test
