#include "mount_arg.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

namespace nv::sandbox {

namespace {

namespace fs = std::filesystem;

Error bad(std::string_view arg, const std::string& why) {
  return make_error(ErrorCode::BAD_REQUEST,
                    "--mount '" + std::string(arg) + "': " + why +
                        " (the form is HOST:GUEST[:ro|:rw], e.g. ~/proj:proj:rw)");
}

// `p` (absolute) without "." and ".." components and trailing or repeated slashes.
std::string normal(const std::string& p) {
  std::string s = fs::path(p).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

Result<Mount> parse_mount_arg(std::string_view arg, const std::string& home,
                              const std::string& cwd) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t colon = arg.find(':', start);
    parts.emplace_back(arg.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() < 2) return bad(arg, "no ':' between the host and the guest directory");
  if (parts.size() > 3) return bad(arg, "too many ':' (paths with ':' cannot be mounted here)");
  Mount m;
  m.read_only = true;  // the default: nothing the guest does reaches the host
  if (parts.size() == 3) {
    if (parts[2] == "rw") {
      m.read_only = false;
    } else if (parts[2] != "ro") {
      return bad(arg, "unknown mode '" + parts[2] + "' (ro or rw)");
    }
  }
  const std::string& host = parts[0];
  const std::string& guest = parts[1];
  if (host.empty()) return bad(arg, "the host directory is empty");
  if (guest.empty()) return bad(arg, "the guest directory is empty");
  if (host.find('\0') != std::string::npos || guest.find('\0') != std::string::npos) {
    return bad(arg, "a NUL byte in a path");
  }
  std::string h;
  if (host == "~" || host.rfind("~/", 0) == 0) {
    if (home.empty() || home[0] != '/') return bad(arg, "'~' but no home directory is known");
    h = home + "/" + host.substr(1);
  } else if (host[0] == '~') {
    return bad(arg, "'~user' is not supported: give the path");
  } else if (host[0] == '/') {
    h = host;
  } else {
    if (cwd.empty() || cwd[0] != '/') return bad(arg, "a relative host path but no current dir");
    h = cwd + "/" + host;
  }
  m.host_path = normal(h);
  std::string g = normal(guest[0] == '/' ? guest : std::string(kGuestHome) + "/" + guest);
  std::string prefix = std::string(kGuestHome) + "/";
  if (g.rfind(prefix, 0) != 0 || g.size() == prefix.size()) {
    return bad(
        arg, "the guest directory must be under " + std::string(kGuestHome) + " (it is " + g + ")");
  }
  m.guest_path = g;
  return m;
}

Result<Mount> parse_mount_arg(std::string_view arg) {
  std::string home;
  if (const char* h = std::getenv("HOME"); h && *h) {
    home = h;
  } else if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) {
    home = pw->pw_dir;
  }
  std::error_code ec;
  std::string cwd = fs::current_path(ec).string();
  return parse_mount_arg(arg, home, ec ? std::string() : cwd);
}

}  // namespace nv::sandbox
