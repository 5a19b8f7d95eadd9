// files.cc — see files.h.
#include "guest/agent/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nv/schema/common.capnp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

#include "guest/agent/session.h"

namespace nv::guest::agent {

namespace {

using schema::GuestMessage;
using ErrorCode = schema::Error::Code;

std::string errno_text(const std::string& call, int err) {
  return call + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

uint16_t code_for(int err) {
  return static_cast<uint16_t>(err == ENOENT ? ErrorCode::NOT_FOUND : ErrorCode::BAD_REQUEST);
}
constexpr auto kBadRequest = static_cast<uint16_t>(ErrorCode::BAD_REQUEST);

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

// The directory holding `path` (below `root`, or below "/" when root is empty), walked one
// component at a time without following any symlink; with `create`, missing directories are
// made (owned by the run user). Returns the directory fd and the last component, or -1 with
// `error` set (errno in `err`).
int open_parent(const AgentConfig& cfg, const std::string& path, const std::string& root,
                bool create, std::string& leaf, std::string& error, int& err) {
  const std::string base = root.empty() ? "/" : root;
  Fd cur(::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cur.get() < 0) {
    err = errno;
    error = errno_text("open(" + base + ")", err);
    return -1;
  }
  size_t i = root.empty() ? 1 : root.size() + 1;
  for (;;) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) break;
    std::string part = path.substr(i, j - i);
    std::string so_far = path.substr(0, j);
    if (create && ::mkdirat(cur.get(), part.c_str(), 0755) == 0 && cfg.run_uid >= 0) {
      if (::fchownat(cur.get(), part.c_str(), cfg.run_uid, cfg.run_gid, AT_SYMLINK_NOFOLLOW) < 0) {
        err = errno;
        error = errno_text("chown(" + so_far + ")", err);
        return -1;
      }
    }
    int next = ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      err = errno;
      error = errno_text("open(" + so_far + ")", err);
      if (err == ELOOP || err == ENOTDIR) {
        error += ": a path component is a symlink or not a directory (links are not followed)";
      }
      return -1;
    }
    cur.reset(next);
    i = j + 1;
  }
  leaf = path.substr(i);
  return cur.release();
}

schema::FileType type_of(mode_t m) {
  if (S_ISREG(m)) return schema::FileType::FILE;
  if (S_ISDIR(m)) return schema::FileType::DIRECTORY;
  if (S_ISLNK(m)) return schema::FileType::SYMLINK;
  return schema::FileType::OTHER;
}

struct Entry {
  std::string path;
  struct stat st {};
  std::string link;
};

// lstat-style: the entry of `path` itself (dirfd + name: without following a final symlink).
bool entry_at(int dirfd, const std::string& name, const std::string& path, Entry& e, int& err) {
  if (::fstatat(dirfd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) < 0) {
    err = errno;
    return false;
  }
  e.path = path;
  if (S_ISLNK(e.st.st_mode)) {
    char buf[4096];
    ssize_t n = ::readlinkat(dirfd, name.c_str(), buf, sizeof buf);
    if (n > 0) e.link.assign(buf, static_cast<size_t>(n));
  }
  return true;
}

void fill(schema::FileEntry::Builder b, const Entry& e) {
  b.setPath(e.path);
  b.setType(type_of(e.st.st_mode));
  b.setSize(static_cast<uint64_t>(e.st.st_size));
  b.setMode(e.st.st_mode & 07777);
  b.setMtimeUnixMs(static_cast<int64_t>(e.st.st_mtim.tv_sec) * 1000 +
                   e.st.st_mtim.tv_nsec / 1000000);
  b.setLinkTarget(e.link);
}

// Bytes an entry takes in a message (struct, pointers, padded texts): to keep answers in a frame.
size_t encoded_bytes(const Entry& e) {
  auto text = [](size_t n) { return (n + 1 + 7) / 8 * 8; };
  return 24 + 16 + text(e.path.size()) + text(e.link.size());
}

// Lists the directory `dirfd` (at `path`) into `out`, sorted by name; descends into
// subdirectories (never into symlinks) when recursive. False when past `cap` entries.
bool list_into(int dirfd, const std::string& path, bool recursive, size_t cap,
               std::vector<Entry>& out, std::string& error) {
  int dup = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) {
    error = errno_text("open(" + path + ")", errno);
    return false;
  }
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    error = errno_text("fdopendir(" + path + ")", errno);
    return false;
  }
  std::vector<std::string> names;
  while (dirent* de = ::readdir(d)) {
    if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
    names.emplace_back(de->d_name);
  }
  std::sort(names.begin(), names.end());
  const std::string prefix = path == "/" ? "/" : path + "/";
  bool ok = true;
  for (const auto& name : names) {
    Entry e;
    int err = 0;
    if (!entry_at(::dirfd(d), name, prefix + name, e, err)) continue;  // vanished meanwhile
    const bool is_dir = S_ISDIR(e.st.st_mode);
    out.push_back(std::move(e));
    if (out.size() > cap) {
      error = "more than " + std::to_string(cap) + " entries below " + path +
              "; list a subdirectory or without recursion";
      ok = false;
      break;
    }
    if (recursive && is_dir) {
      Fd sub(::openat(::dirfd(d), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.get() < 0) continue;  // unreadable or replaced by a link: listed, not entered
      if (!list_into(sub.get(), prefix + name, true, cap, out, error)) {
        ok = false;
        break;
      }
    }
  }
  ::closedir(d);
  return ok;
}

// Removes `name` in `dirfd` and, for a directory, everything below it (links are removed, never
// followed).
bool remove_tree(int dirfd, const std::string& name, const std::string& path, std::string& error,
                 int& err) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    err = errno;
    error = errno_text("lstat(" + path + ")", err);
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      error = errno_text("open(" + path + ")", err);
      return false;
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      err = errno;
      ::close(fd);
      error = errno_text("fdopendir(" + path + ")", err);
      return false;
    }
    std::vector<std::string> names;
    while (dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) {
        names.emplace_back(de->d_name);
      }
    }
    bool ok = true;
    for (const auto& n : names) {
      if (!remove_tree(::dirfd(d), n, path + "/" + n, error, err)) {
        ok = false;
        break;
      }
    }
    ::closedir(d);
    if (!ok) return false;
  }
  if (::unlinkat(dirfd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0) {
    err = errno;
    error = errno_text("remove(" + path + ")", err);
    return false;
  }
  return true;
}

std::string outside_roots(const AgentConfig& cfg, const std::string& path) {
  std::string roots;
  for (const auto& r : cfg.writable_roots) roots += (roots.empty() ? "" : ", ") + r;
  return "path '" + path.substr(0, 256) +
         "' refused: it must be absolute, without '.'/'..' parts, strictly below one of the "
         "writable roots (" +
         roots + ")";
}

}  // namespace

bool path_is_clean(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.size() > 4096 || p.find('\0') != std::string::npos) {
    return false;
  }
  if (p == "/") return true;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string_view part(p.data() + i, j - i);
    if (part.empty() || part == "." || part == "..") return false;
    i = j + 1;
  }
  return true;
}

std::string writable_root_of(const AgentConfig& cfg, const std::string& path) {
  if (!path_is_clean(path)) return "";
  for (const auto& root : cfg.writable_roots) {
    if (path.size() > root.size() + 1 && path.compare(0, root.size(), root) == 0 &&
        path[root.size()] == '/') {
      return root;
    }
  }
  return "";
}

int open_parent_for_write(const AgentConfig& cfg, const std::string& path, std::string& leaf,
                          std::string& error, int& err) {
  const std::string root = writable_root_of(cfg, path);
  if (root.empty()) {
    err = EINVAL;
    error = outside_roots(cfg, path);
    return -1;
  }
  return open_parent(cfg, path, root, /*create=*/true, leaf, error, err);
}

struct FileOps::Write {
  std::string path, leaf, temp;
  Fd dir, fd;
  bool append = false;
};

FileOps::FileOps(const AgentConfig& config, SendFn send, ErrorFn error)
    : config_(config), send_(std::move(send)), error_(std::move(error)) {}

FileOps::~FileOps() { abort_write(); }

void FileOps::abort_write() {
  if (!write_) return;
  if (!write_->append && !write_->temp.empty()) {
    ::unlinkat(write_->dir.get(), write_->temp.c_str(), 0);
  }
  delete write_;
  write_ = nullptr;
}

void FileOps::fail_write(uint16_t code, const std::string& message) {
  abort_write();
  error_(code, "write: " + message);
}

void FileOps::write_chunk(schema::FileWriteChunk::Reader chunk) {
  const std::string path = chunk.getPath();
  const bool last = chunk.getLast();
  if (chunk.getFirst()) {
    abort_write();
    failed_path_.clear();
    auto refuse = [&](uint16_t code, const std::string& why) {
      if (!last) failed_path_ = path;  // its later chunks are dropped quietly
      fail_write(code, why);
    };
    const std::string root = writable_root_of(config_, path);
    if (root.empty()) return refuse(kBadRequest, outside_roots(config_, path));
    auto w = std::make_unique<Write>();
    w->path = path;
    w->append = chunk.getAppend();
    std::string error;
    int err = 0;
    w->dir.reset(open_parent(config_, path, root, /*create=*/true, w->leaf, error, err));
    if (w->dir.get() < 0) return refuse(code_for(err), error);
    struct stat st {};
    bool exists = ::fstatat(w->dir.get(), w->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && S_ISLNK(st.st_mode)) {
      return refuse(kBadRequest, "'" + path +
                                     "' is a symlink; the agent does not write through "
                                     "links (remove it first)");
    }
    if (exists && !S_ISREG(st.st_mode)) {
      return refuse(kBadRequest, "'" + path + "' exists and is not a regular file");
    }
    const mode_t mode = chunk.getMode() == 0 ? 0644 : (chunk.getMode() & 07777);
    bool created = !exists;
    if (w->append) {
      w->fd.reset(::openat(w->dir.get(), w->leaf.c_str(),
                           O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode));
      if (w->fd.get() < 0) return refuse(code_for(errno), errno_text("open(" + path + ")", errno));
    } else {
      unsigned char rnd[8];
      if (::getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd) {
        for (auto& b : rnd) b = static_cast<unsigned char>(::getpid() + (&b - rnd));
      }
      char hex[17];
      for (int i = 0; i < 8; ++i) std::snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
      w->temp = "." + w->leaf.substr(0, 200) + ".nv-" + hex;
      w->fd.reset(::openat(w->dir.get(), w->temp.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
      if (w->fd.get() < 0) {
        int e = errno;
        w->temp.clear();
        return refuse(code_for(e), errno_text("create a temp file next to " + path, e));
      }
      created = true;
    }
    write_ = w.release();
    if (created && ::fchmod(write_->fd.get(), mode) < 0) {
      return refuse(kBadRequest, errno_text("fchmod(" + path + ")", errno));
    }
    if (created && config_.run_uid >= 0 &&
        ::fchown(write_->fd.get(), config_.run_uid, config_.run_gid) < 0) {
      return refuse(kBadRequest, errno_text("fchown(" + path + ")", errno));
    }
  } else if (!write_) {
    if (!failed_path_.empty() && failed_path_ == path) {
      if (last) failed_path_.clear();
      return;  // the rest of a write that already got its error
    }
    return error_(kBadRequest, "write: no write of '" + path.substr(0, 256) +
                                   "' in progress (the first chunk must have first set)");
  } else if (write_->path != path) {
    failed_path_ = last ? "" : path;
    return fail_write(kBadRequest, "a chunk for '" + path.substr(0, 256) + "' while '" +
                                       write_->path + "' was being written");
  }
  auto data = chunk.getData();
  const auto* p = reinterpret_cast<const char*>(data.begin());
  size_t left = data.size();
  while (left > 0) {
    ssize_t w = ::write(write_->fd.get(), p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : ENOSPC;
      if (!last) failed_path_ = path;
      return fail_write(kBadRequest, errno_text("write(" + path + ")", e));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (!last) return;
  if (::fsync(write_->fd.get()) < 0) {
    return fail_write(kBadRequest, errno_text("fsync(" + path + ")", errno));
  }
  if (!write_->append) {
    if (::renameat(write_->dir.get(), write_->temp.c_str(), write_->dir.get(),
                   write_->leaf.c_str()) < 0) {
      return fail_write(code_for(errno), errno_text("rename over " + path, errno));
    }
    write_->temp.clear();
  }
  Entry e;
  int err = 0;
  bool have = entry_at(write_->dir.get(), write_->leaf, path, e, err);
  abort_write();
  capnp::MallocMessageBuilder mb;
  auto msg = mb.initRoot<GuestMessage>();
  msg.setVersion(schema::SCHEMA_VERSION);
  auto ack = msg.initAck();
  ack.setWhat("write");
  if (have) fill(ack.initEntry(), e);
  send_(mb);
}

void FileOps::read_range(schema::FileReadRange::Reader range) {
  const std::string path = range.getPath();
  if (!path_is_clean(path)) {
    return error_(kBadRequest, "read: path '" + path.substr(0, 256) +
                                   "' refused: it must be absolute, without '.'/'..' parts");
  }
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    int e = errno;
    return error_(code_for(e), "read: " + errno_text("open(" + path + ")", e) +
                                   (e == ELOOP ? " (a symlink: read its target instead)" : ""));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) {
    return error_(kBadRequest, "read: " + errno_text("fstat(" + path + ")", errno));
  }
  if (!S_ISREG(st.st_mode))
    return error_(kBadRequest, "read: '" + path + "' is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t off = range.getOffset();
  if (off > size) {
    return error_(kBadRequest, "read: offset " + std::to_string(off) + " is past the end of '" +
                                   path + "' (" + std::to_string(size) + " bytes)");
  }
  const uint64_t want = range.getLength();
  const uint64_t end = want == 0 ? size : std::min(size, off + std::min(want, size));
  std::string buf;
  for (;;) {
    const size_t n = static_cast<size_t>(std::min(kReadChunkBytes, end - off));
    buf.resize(n);
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd.get(), buf.data() + got, n - got, static_cast<off_t>(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return error_(kBadRequest, "read: " + errno_text("pread(" + path + ")", errno));
      if (r == 0) break;  // the file shrank meanwhile
      got += static_cast<size_t>(r);
    }
    const bool done = got < n || off + got >= end;
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto c = msg.initFileChunk();
    c.setPath(path);
    c.setOffset(off);
    c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(buf.data()), got));
    c.setSize(size);
    c.setDone(done);
    send_(mb);
    off += got;
    if (done) return;
  }
}

void FileOps::file_op(schema::FileOp::Reader op) {
  const std::string path = op.getPath();
  const bool recursive = op.getRecursive();
  const auto kind = op.getKind();
  if (!path_is_clean(path)) {
    return error_(kBadRequest, "file op: path '" + path.substr(0, 256) +
                                   "' refused: it must be absolute, without '.'/'..' parts");
  }
  auto send_entries = [&](const std::vector<Entry>& entries) {
    size_t bytes = 0;
    for (const auto& e : entries) bytes += encoded_bytes(e);
    if (bytes > kMaxAnswerBytes) {
      return error_(kBadRequest, "list: " + std::to_string(entries.size()) + " entries take " +
                                     std::to_string(bytes) + " bytes, more than one answer (" +
                                     std::to_string(kMaxAnswerBytes) +
                                     "); list a subdirectory or without recursion");
    }
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto list = msg.initEntries(static_cast<unsigned>(entries.size()));
    for (unsigned i = 0; i < entries.size(); ++i) fill(list[i], entries[i]);
    send_(mb);
  };
  auto ack = [&](const char* what, const Entry* e) {
    capnp::MallocMessageBuilder mb;
    auto msg = mb.initRoot<GuestMessage>();
    msg.setVersion(schema::SCHEMA_VERSION);
    auto a = msg.initAck();
    a.setWhat(what);
    if (e) fill(a.initEntry(), *e);
    send_(mb);
  };
  switch (kind) {
    case schema::FileOpKind::STAT:
    case schema::FileOpKind::LIST: {
      const std::string parent =
          path == "/" ? "/" : path.substr(0, std::max<size_t>(1, path.rfind('/')));
      const std::string leaf = path == "/" ? "." : path.substr(path.rfind('/') + 1);
      Fd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      Entry self;
      int err = dir.get() < 0 ? errno : 0;
      if (dir.get() < 0 || !entry_at(dir.get(), leaf, path, self, err)) {
        return error_(code_for(err), errno_text("lstat(" + path + ")", err));
      }
      if (kind == schema::FileOpKind::STAT || !S_ISDIR(self.st.st_mode)) {
        return send_entries({self});  // a file (or link) lists as itself, like ls
      }
      Fd d(::openat(dir.get(), leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (d.get() < 0) return error_(code_for(errno), errno_text("open(" + path + ")", errno));
      std::vector<Entry> out;
      std::string error;
      if (!list_into(d.get(), path, recursive, kMaxListEntries, out, error)) {
        return error_(kBadRequest, "list: " + error);
      }
      return send_entries(out);
    }
    case schema::FileOpKind::REMOVE:
    case schema::FileOpKind::MKDIR: {
      const bool is_mkdir = kind == schema::FileOpKind::MKDIR;
      const std::string root = writable_root_of(config_, path);
      const char* what = is_mkdir ? "mkdir" : "remove";
      if (root.empty())
        return error_(kBadRequest, std::string(what) + ": " + outside_roots(config_, path));
      std::string leaf, error;
      int err = 0;
      Fd dir(open_parent(config_, path, root, is_mkdir && recursive, leaf, error, err));
      if (dir.get() < 0) return error_(code_for(err), std::string(what) + ": " + error);
      if (!is_mkdir) {
        struct stat st {};
        if (::fstatat(dir.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
          return error_(code_for(errno), "remove: " + errno_text("lstat(" + path + ")", errno));
        }
        if (recursive) {
          if (!remove_tree(dir.get(), leaf, path, error, err)) {
            return error_(code_for(err), "remove: " + error);
          }
        } else if (::unlinkat(dir.get(), leaf.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) <
                   0) {
          return error_(code_for(errno), "remove: " + errno_text("remove(" + path + ")", errno));
        }
        return ack("remove", nullptr);
      }
      if (::mkdirat(dir.get(), leaf.c_str(), 0755) == 0) {
        if (config_.run_uid >= 0 && ::fchownat(dir.get(), leaf.c_str(), config_.run_uid,
                                               config_.run_gid, AT_SYMLINK_NOFOLLOW) < 0) {
          return error_(kBadRequest, "mkdir: " + errno_text("chown(" + path + ")", errno));
        }
      } else if (errno != EEXIST || !recursive) {
        return error_(code_for(errno), "mkdir: " + errno_text("mkdir(" + path + ")", errno));
      }
      Entry e;
      if (!entry_at(dir.get(), leaf, path, e, err)) {
        return error_(code_for(err), "mkdir: " + errno_text("lstat(" + path + ")", err));
      }
      if (!S_ISDIR(e.st.st_mode)) {
        return error_(kBadRequest, "mkdir: '" + path + "' exists and is not a directory");
      }
      return ack("mkdir", &e);
    }
    case schema::FileOpKind::UNSET:
      break;
  }
  error_(kBadRequest, "file op kind " + std::to_string(static_cast<int>(kind)) + " is unknown");
}

}  // namespace nv::guest::agent
