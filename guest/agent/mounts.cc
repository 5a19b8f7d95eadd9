// mounts.cc — see mounts.h.
#include "guest/agent/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest/agent/files.h"
#include "guest/agent/session.h"

namespace nv::guest::agent {

namespace {

constexpr const char* kHome = "/home/agent";

std::string err_text(const std::string& what, int err) {
  return what + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

// An O_PATH fd of the directory `path` (made when missing), never through a symlink; -1 + error.
int open_target(const AgentConfig& cfg, const std::string& path, std::string& error) {
  if (writable_root_of(cfg, path) != kHome) {
    error = "mount path '" + path.substr(0, 256) +
            "' refused: it must be absolute, without '.'/'..' parts, strictly below " + kHome;
    return -1;
  }
  std::string leaf;
  int err = 0;
  int dir = open_parent_for_write(cfg, path, leaf, error, err);
  if (dir < 0) return -1;
  if (::mkdirat(dir, leaf.c_str(), 0755) == 0 && cfg.run_uid >= 0) {
    if (::fchownat(dir, leaf.c_str(), cfg.run_uid, cfg.run_gid, AT_SYMLINK_NOFOLLOW) < 0) {
      error = err_text("chown(" + path + ")", errno);
      ::close(dir);
      return -1;
    }
  }
  int fd = ::openat(dir, leaf.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  err = errno;
  ::close(dir);
  if (fd < 0) error = err_text("open(" + path + ") (a symlink or not a directory?)", err);
  return fd;
}

}  // namespace

bool mount_setup(const AgentConfig& cfg, const std::string& path, uint64_t size_bytes,
                 uint64_t inodes, std::string& error) {
  if (size_bytes < 4096 || inodes < 2) {
    error = "mountSetup: sizeBytes must be >= 4096 and inodes >= 2";
    return false;
  }
  int fd = open_target(cfg, path, error);
  if (fd < 0) return false;
  // Through the fd's magic link: the directory checked above is the one mounted on.
  const std::string at = "/proc/self/fd/" + std::to_string(fd);
  std::string data =
      "mode=0755,size=" + std::to_string(size_bytes) + ",nr_inodes=" + std::to_string(inodes);
  if (cfg.run_uid >= 0) {
    data += ",uid=" + std::to_string(cfg.run_uid) +
            ",gid=" + std::to_string(cfg.run_gid >= 0 ? cfg.run_gid : cfg.run_uid);
  }
  int rc = ::mount("nv-mount", at.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data.c_str());
  int err = errno;
  ::close(fd);
  if (rc < 0) {
    error = err_text("mount(tmpfs, " + path + ", " + data + ")", err);
    return false;
  }
  return true;
}

bool mount_seal(const AgentConfig& cfg, const std::string& path, std::string& error) {
  int fd = open_target(cfg, path, error);
  if (fd < 0) return false;
  const std::string at = "/proc/self/fd/" + std::to_string(fd);
  int rc = ::mount(nullptr, at.c_str(), nullptr,
                   MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr);
  int err = errno;
  ::close(fd);
  if (rc < 0) {
    error = err_text("remount read-only(" + path + ")", err);
    return false;
  }
  return true;
}

}  // namespace nv::guest::agent
