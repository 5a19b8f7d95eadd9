// mount_copier.cc — see mount_copier.h.
#include "mount_copier.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "landlock.h"
#include "mount_wire.h"

namespace nv::mounts {

namespace {

std::string errno_text(const std::string& what, int err) {
  return what + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Why a non-directory, non-regular or multiply linked entry is not copied ("" = it is copied).
std::string skip_reason(const struct stat& st) {
  if (S_ISLNK(st.st_mode)) return "symlink (not followed)";
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) return "device node";
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (S_ISSOCK(st.st_mode)) return "socket";
  if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
    return "hard link (" + std::to_string(st.st_nlink) + " links)";
  }
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return "not a file or directory";
  return "";
}

int64_t mtime_ns(const struct stat& st) {
  return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

struct CopyIn {
  int root = -1, out = -1;
  CopyInLimits limits;
  uint64_t bytes = 0, files = 0;
  std::string error;  // set: stop
  uint64_t code = kErrInternal;
  bool dry = false;    // the counting pass: no records
  uint64_t pages = 0;  // bytes rounded up to 4 KiB pages (what the guest's tmpfs needs)

  bool emit(const std::string& rec) {
    if (dry) return error.empty();
    if (!write_all(out, rec)) error = "the executor closed the pipe";
    return error.empty();
  }
  void skip(const std::string& rel, const std::string& why) {
    emit(RecordWriter('S').text(rel + ": " + why).done());
  }
  bool count(uint64_t more_bytes) {
    ++files;
    bytes += more_bytes;
    if (files > limits.max_files || bytes > limits.max_bytes) {
      code = kErrQuota;
      error = "the host directory holds more than the copy-in limit of " +
              std::to_string(limits.max_files) + " files and " + std::to_string(limits.max_bytes) +
              " bytes";
      return false;
    }
    return true;
  }

  void file(int dirfd, const std::string& name, const std::string& rel, const struct stat& st) {
    Fd fd(open_beneath(dirfd, name, O_RDONLY));
    struct stat now {};
    if (fd.get() < 0 || ::fstat(fd.get(), &now) < 0) return skip(rel, errno_text("open", errno));
    // Swapped since the directory was read: judge what was opened.
    if (auto why = skip_reason(now); !why.empty()) return skip(rel, why);
    if (now.st_ino != st.st_ino) return skip(rel, "replaced while copying");
    if (!count(uint64_t(now.st_size))) return;
    pages += (uint64_t(now.st_size) + 4095) / 4096 * 4096;
    if (dry) return;
    if (!emit(RecordWriter('F').text(rel).u64(now.st_mode & 07777).done())) return;
    std::string buf(kDataChunk, '\0');
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = errno_text("read(" + rel + ")", errno);
        return;
      }
      if (n == 0) break;
      if (!emit(RecordWriter('C').text(std::string_view(buf.data(), size_t(n))).done())) return;
    }
    struct stat end {};
    ::fstat(fd.get(), &end);
    emit(RecordWriter('e')
             .u64(uint64_t(end.st_size))
             .u64(uint64_t(mtime_ns(end)))
             .u64(end.st_ino)
             .done());
  }

  void dir(const std::string& rel) {  // rel "" = the root
    Fd d(rel.empty() ? ::fcntl(root, F_DUPFD_CLOEXEC, 0)
                     : open_beneath(root, rel, O_RDONLY | O_DIRECTORY));
    if (d.get() < 0) return skip(rel, errno_text("open", errno));
    int list_fd = ::dup(d.get());
    DIR* dp = list_fd >= 0 ? ::fdopendir(list_fd) : nullptr;
    if (!dp) {
      if (list_fd >= 0) ::close(list_fd);
      return skip(rel, errno_text("opendir", errno));
    }
    ::rewinddir(dp);  // a dup shares the offset: the counting pass read this directory already
    std::vector<std::string> names;
    while (auto* e = ::readdir(dp)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    ::closedir(dp);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      if (!error.empty()) return;
      std::string child = rel.empty() ? n : rel + "/" + n;
      struct stat st {};
      if (::fstatat(d.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        skip(child, errno_text("stat", errno));
        continue;
      }
      if (auto why = skip_reason(st); !why.empty()) {
        skip(child, why);
        continue;
      }
      if (S_ISDIR(st.st_mode)) {
        if (!count(0)) return;
        if (!emit(RecordWriter('D')
                      .text(child)
                      .u64(st.st_mode & 07777)
                      .u64(uint64_t(mtime_ns(st)))
                      .u64(st.st_ino)
                      .done()))
          return;
        dir(child);
      } else {
        file(d.get(), n, child, st);
      }
    }
  }
};

struct Manifest {
  bool dir = false;
  uint64_t size = 0, ino = 0;
  int64_t mtime = 0;
};

// Splits "a/b/c" into the parent fd (opened beneath root) and "c". -1 + errno when it cannot.
int open_parent(int root, const std::string& rel, std::string& leaf) {
  auto slash = rel.rfind('/');
  leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
  if (slash == std::string::npos) return ::fcntl(root, F_DUPFD_CLOEXEC, 0);
  return open_beneath(root, rel.substr(0, slash), O_RDONLY | O_DIRECTORY);
}

bool clean_rel(const std::string& rel) {
  if (rel.empty() || rel.size() > 4096 || rel.front() == '/' || rel.back() == '/') return false;
  if (rel.find('\0') != std::string::npos) return false;
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    std::string_view part(rel.data() + i, j - i);
    if (part.empty() || part == "." || part == "..") return false;
    i = j + 1;
  }
  return true;
}

struct SyncOut {
  int root = -1, in = -1, out = -1;
  std::map<std::string, Manifest> manifest;
  uint64_t counter = 0;

  void say(const std::string& rec) { (void)write_all(out, rec); }
  void skip(const std::string& rel, const std::string& why) {
    say(RecordWriter('S').text(rel + ": " + why).done());
  }
  // "" when the host's entry is what the copy-in saw (or absent and unknown), else why not.
  std::string host_changed(int parent, const std::string& leaf, const std::string& rel,
                           bool want_dir) {
    struct stat st {};
    bool exists = ::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    auto it = manifest.find(rel);
    if (!exists) {
      return it == manifest.end() ? "" : "conflict: removed on the host since the copy-in";
    }
    if (want_dir) return S_ISDIR(st.st_mode) ? "" : "conflict: not a directory on the host";
    if (auto why = skip_reason(st); !why.empty()) return "conflict: on the host a " + why;
    if (S_ISDIR(st.st_mode)) return "conflict: a directory on the host";
    if (it == manifest.end()) return "conflict: created on the host since the copy-in";
    const auto& m = it->second;
    if (m.dir || m.size != uint64_t(st.st_size) || m.mtime != mtime_ns(st) || m.ino != st.st_ino) {
      return "conflict: changed on both sides (the host's copy is kept)";
    }
    return "";
  }

  // One 'W': the chunks up to 'e' are read whatever happens (the stream stays in step).
  bool write_file(const std::string& rel, uint32_t mode) {
    std::string leaf, why, tmp;
    Fd parent(clean_rel(rel) ? open_parent(root, rel, leaf) : (errno = EINVAL, -1));
    if (parent.get() < 0) why = errno_text("open parent", errno);
    if (why.empty()) why = host_changed(parent.get(), leaf, rel, false);
    Fd fd;
    if (why.empty()) {
      tmp = ".nv-sync-" + leaf.substr(0, 64) + "-" + std::to_string(::getpid()) + "-" +
            std::to_string(++counter);
      int f = ::openat(parent.get(), tmp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (f < 0) why = errno_text("create temp file", errno);
      fd.reset(f);
    }
    uint64_t bytes = 0;
    for (;;) {
      std::string body, error;
      bool ok = read_record(in, body, error);
      RecordReader r(body);
      char k = ok ? r.kind() : '\0';
      if (k == 'e') break;
      if (k == 'a') {  // the guest file could not be read to its end: nothing is replaced
        if (fd.get() >= 0) ::unlinkat(parent.get(), tmp.c_str(), 0);
        skip(rel, r.text());
        return true;
      }
      if (k != 'C') {  // the executor went away mid-file: no temp file is left behind
        if (fd.get() >= 0) ::unlinkat(parent.get(), tmp.c_str(), 0);
        return false;
      }
      std::string data = r.text();
      if (fd.get() < 0 || !why.empty()) continue;
      if (!write_all(fd.get(), data)) why = errno_text("write", errno);
      bytes += data.size();
    }
    struct stat st {};
    if (why.empty() && ::fchmod(fd.get(), mode & 0777) < 0) why = errno_text("chmod", errno);
    if (why.empty() && ::fsync(fd.get()) < 0) why = errno_text("fsync", errno);
    if (why.empty() && ::fstat(fd.get(), &st) < 0) why = errno_text("fstat", errno);
    // Checked again right before the rename: a host change meanwhile wins.
    if (why.empty()) why = host_changed(parent.get(), leaf, rel, false);
    if (why.empty() && ::renameat(parent.get(), tmp.c_str(), parent.get(), leaf.c_str()) < 0) {
      why = errno_text("rename", errno);
    }
    if (!why.empty()) {
      if (fd.get() >= 0) ::unlinkat(parent.get(), tmp.c_str(), 0);
      skip(rel, why);
      return true;
    }
    ::fsync(parent.get());  // the rename itself survives a host crash
    manifest[rel] = Manifest{false, uint64_t(st.st_size), st.st_ino, mtime_ns(st)};
    say(RecordWriter('w').text(rel).u64(bytes).u64(uint64_t(mtime_ns(st))).u64(st.st_ino).done());
    return true;
  }

  void make_dir(const std::string& rel, uint32_t mode) {
    std::string leaf;
    Fd parent(clean_rel(rel) ? open_parent(root, rel, leaf) : (errno = EINVAL, -1));
    if (parent.get() < 0) return skip(rel, errno_text("open parent", errno));
    if (::mkdirat(parent.get(), leaf.c_str(), (mode & 0777) | 0700) < 0 && errno != EEXIST) {
      return skip(rel, errno_text("mkdir", errno));
    }
    if (auto why = host_changed(parent.get(), leaf, rel, true); !why.empty()) return skip(rel, why);
    struct stat st {};
    if (::fstatat(parent.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      return skip(rel, errno_text("stat", errno));
    }
    manifest[rel] = Manifest{true, 0, st.st_ino, mtime_ns(st)};
    say(RecordWriter('k').text(rel).u64(uint64_t(mtime_ns(st))).u64(st.st_ino).done());
  }

  void remove(const std::string& rel) {
    auto it = manifest.find(rel);
    std::string leaf;
    Fd parent(clean_rel(rel) ? open_parent(root, rel, leaf) : (errno = EINVAL, -1));
    if (it == manifest.end()) return skip(rel, "not copied in: not removed");
    if (parent.get() < 0) {
      if (errno == ENOENT) return (void)manifest.erase(rel);
      return skip(rel, errno_text("open parent", errno));
    }
    bool dir = it->second.dir;
    if (auto why = host_changed(parent.get(), leaf, rel, dir); !why.empty()) {
      if (why.find("removed on the host") != std::string::npos) return (void)manifest.erase(rel);
      return skip(rel, why + ": not removed");
    }
    if (::unlinkat(parent.get(), leaf.c_str(), dir ? AT_REMOVEDIR : 0) < 0) {
      return skip(rel, errno_text("remove", errno));
    }
    manifest.erase(rel);
    say(RecordWriter('x').text(rel).done());
  }

  int run() {
    std::string body, error;
    for (;;) {
      if (!read_record(in, body, error)) {
        say(RecordWriter('E').u64(kErrInternal).text("sync stream: " + error).done());
        return 1;
      }
      RecordReader r(body);
      char k = r.kind();
      if (k == 'Z') break;
      std::string rel = r.text();
      if (k == 'M') {
        Manifest m;
        m.dir = r.u64() != 0;
        m.size = r.u64();
        m.mtime = int64_t(r.u64());
        m.ino = r.u64();
        manifest[rel] = m;
      } else if (k == 'K') {
        make_dir(rel, uint32_t(r.u64()));
      } else if (k == 'W') {
        if (!write_file(rel, uint32_t(r.u64()))) {
          say(RecordWriter('E').u64(kErrInternal).text("sync stream broke in " + rel).done());
          return 1;
        }
      } else if (k == 'X') {
        remove(rel);
      } else {
        say(RecordWriter('E').u64(kErrInternal).text("unknown sync record").done());
        return 1;
      }
      if (r.bad()) {
        say(RecordWriter('E').u64(kErrInternal).text("short sync record").done());
        return 1;
      }
    }
    say(RecordWriter('Z').done());
    return 0;
  }
};

}  // namespace

int open_beneath(int dirfd, const std::string& path, int flags, unsigned mode) {
  struct open_how how {};
  how.flags = uint64_t(flags | O_CLOEXEC | O_NOFOLLOW);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  for (;;) {
    long fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    if (fd < 0 && errno == EAGAIN) continue;  // a rename raced the lookup: try again
    return int(fd);
  }
}

bool write_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

namespace {
bool read_exact(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}
}  // namespace

bool read_record(int fd, std::string& body, std::string& error) {
  unsigned char len[4];
  if (!read_exact(fd, reinterpret_cast<char*>(len), 4)) {
    error = "end of stream";
    return false;
  }
  uint32_t n =
      uint32_t(len[0]) | uint32_t(len[1]) << 8 | uint32_t(len[2]) << 16 | uint32_t(len[3]) << 24;
  if (n == 0 || n > kMaxRecord) {
    error = "record of " + std::to_string(n) + " bytes";
    return false;
  }
  body.resize(n);
  if (!read_exact(fd, body.data(), n)) {
    error = "end of stream inside a record";
    return false;
  }
  return true;
}

int copy_in(int root_fd, const CopyInLimits& limits, int out_fd) {
  CopyIn c;
  c.root = root_fd, c.out = out_fd, c.limits = limits;
  c.dry = true;
  c.dir("");
  if (c.error.empty()) {
    const uint64_t pages = c.pages, files = c.files;
    c = CopyIn();
    c.root = root_fd, c.out = out_fd, c.limits = limits;
    c.emit(RecordWriter('T').u64(pages).u64(files).done());
    // The second pass may see more (the host changed meanwhile): the limits still hold.
    c.dir("");
  }
  if (!c.error.empty()) {
    (void)write_all(out_fd, RecordWriter('E').u64(c.code).text(c.error).done());
    return 1;
  }
  return write_all(out_fd, RecordWriter('Z').done()) ? 0 : 1;
}

int sync_out(int root_fd, int in_fd, int out_fd) {
  SyncOut s;
  s.root = root_fd, s.in = in_fd, s.out = out_fd;
  return s.run();
}

std::string confine(const std::string& dir, bool write) {
  landlock::Ruleset rules;
  (write ? rules.read_write : rules.read_only).push_back(dir);
  auto outcome = landlock::restrict_self(rules);
  if (!outcome.ok) return "Landlock: " + outcome.text();
  return "";
}

}  // namespace nv::mounts
