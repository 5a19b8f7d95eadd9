#include "sysutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <vector>

namespace nv::vm {

std::string errno_text(int err) {
  const char* name = strerrorname_np(err);
  std::string out = name ? name : ("errno " + std::to_string(err));
  out += " (";
  out += strerrordesc_np(err) ? strerrordesc_np(err) : "unknown";
  out += ")";
  return out;
}

Error sys_error(std::string_view call, int err, ErrorCode code) {
  std::string msg(call);
  msg += " failed: ";
  msg += errno_text(err);
  return make_error(code, std::move(msg));
}

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open(" + path + ")", errno);
  std::string out;
  char buf[8192];
  while (out.size() < max_bytes) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read(" + path + ")", errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (out.size() > max_bytes) out.resize(max_bytes);
  return out;
}

Status write_file(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open(" + path + ", O_WRONLY)", errno);
  ssize_t n = ::write(fd.get(), data.data(), data.size());
  if (n < 0) return sys_error("write(" + path + ", \"" + std::string(data) + "\")", errno);
  if (static_cast<size_t>(n) != data.size()) {
    return make_error(ErrorCode::INTERNAL, "short write to " + path);
  }
  return {};
}

std::string read_line(const std::string& path) {
  auto r = read_file(path, 4096);
  if (!r.ok()) return "";
  std::string s = r.value();
  auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int ms = left.count() < 0 ? 0 : static_cast<int>(left.count());
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      // getrandom on Linux >= 3.17 only fails on bad arguments; nothing sane to do.
      std::abort();
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

std::string random_hex(size_t n_bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string raw = random_bytes(n_bytes);
  std::string out;
  out.reserve(n_bytes * 2);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

namespace {

Status remove_at(int dirfd, const char* name, dev_t dev, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return sys_error("fstatat(" + shown + ")", errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
      return sys_error("unlinkat(" + shown + ")", errno);
    }
    return {};
  }
  if (st.st_dev != dev) {
    return make_error(ErrorCode::INTERNAL,
                      "refusing to remove " + shown + ": another filesystem is mounted there");
  }
  int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return sys_error("openat(" + shown + ")", errno);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    int e = errno;
    ::close(fd);
    return sys_error("fdopendir(" + shown + ")", e);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  Status st_all;
  for (const auto& n : names) {
    Status s = remove_at(::dirfd(d), n.c_str(), dev, shown + "/" + n);
    if (!s.ok() && st_all.ok()) st_all = s;
  }
  ::closedir(d);
  if (!st_all.ok()) return st_all;
  if (::unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return sys_error("rmdir(" + shown + ")", errno);
  }
  return {};
}

}  // namespace

Status remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return sys_error("lstat(" + path + ")", errno);
  }
  return remove_at(AT_FDCWD, path.c_str(), st.st_dev, path);
}

Status make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) return {};
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return sys_error("mkdir(" + cur + ")", errno);
    }
  }
  return {};
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) +
           (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
  }
  return "wait status " + std::to_string(status);
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

pid_t find_process_by_arg(const std::string& arg) {
  for (const auto& name : list_dir("/proc")) {
    if (name[0] < '0' || name[0] > '9') continue;
    auto cmd = read_file("/proc/" + name + "/cmdline", 1 << 16);
    if (!cmd.ok()) continue;
    const std::string& c = cmd.value();
    for (size_t pos = 0; pos < c.size();) {
      size_t end = c.find('\0', pos);
      if (end == std::string::npos) end = c.size();
      if (c.compare(pos, end - pos, arg) == 0 && end - pos == arg.size()) {
        return static_cast<pid_t>(std::stol(name));
      }
      pos = end + 1;
    }
  }
  return -1;
}

}  // namespace nv::vm
