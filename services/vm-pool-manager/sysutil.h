// sysutil.h — small syscall helpers shared by the backends: owned fds, errors that carry the
// call and errno, whole-file reads/writes, pidfd waits, random ids, recursive removal.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace nv::vm {

// An owned file descriptor; closes on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// "open(/sys/fs/cgroup/x) failed: EACCES (Permission denied)" with the given code.
Error sys_error(std::string_view call, int err, ErrorCode code = ErrorCode::INTERNAL);
// "EACCES (Permission denied)".
std::string errno_text(int err);

Result<std::string> read_file(const std::string& path, size_t max_bytes = 1 << 20);
// Writes `data` with one write(2) (cgroup files need that); no O_CREAT.
Status write_file(const std::string& path, std::string_view data);
// First line of a file without the newline, or "" when unreadable.
std::string read_line(const std::string& path);

// pidfd_open(2) / pidfd_send_signal(2) (raw syscalls: glibc 2.36 has no wrappers).
int pidfd_open(pid_t pid);
int pidfd_send_signal(int pidfd, int sig);
// Waits until `fd` is readable or the deadline passes; true when readable.
bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline);

// Lower-case hex of n random bytes from getrandom(2).
std::string random_hex(size_t n_bytes);
// n random bytes from getrandom(2).
std::string random_bytes(size_t n);

// Removes `path` and everything under it without crossing into other filesystems (so a bind
// mount left behind by mistake is never descended into). Missing path = success.
Status remove_tree(const std::string& path);
// mkdir -p with the given mode for created dirs.
Status make_dirs(const std::string& path, mode_t mode);

// The names in a directory, without "." and ".." (empty when unreadable).
std::vector<std::string> list_dir(const std::string& path);
// The first process whose command line holds `arg` as one whole argument (QEMU's
// "-name nv-<vm id>" names a VMM), or -1. For tests and benchmarks.
pid_t find_process_by_arg(const std::string& arg);

// "exited with status 3" / "killed by signal 9" from a wait status.
std::string describe_wait_status(int status);

}  // namespace nv::vm
