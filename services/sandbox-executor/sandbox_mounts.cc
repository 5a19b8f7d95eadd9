// sandbox_mounts.cc — see sandbox_mounts.h. The copier runs as a child process per copy-in/sync
// (posix_spawn, pipes); its answers are read on a thread so neither side blocks on a full pipe.
#include "sandbox_mounts.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <set>
#include <thread>

#include "common/log.h"
#include "exec_limits.h"
#include "mount_copier.h"
#include "mount_wire.h"

extern char** environ;

namespace nv::exec {

namespace {

using mounts::RecordReader;
using mounts::RecordWriter;

constexpr const char* kHome = "/home/agent";
constexpr size_t kMaxMounts = 8;
constexpr uint64_t kPage = 4096;

std::string roots_text(const std::vector<std::string>& roots) {
  if (roots.empty()) return "none: the executor has no --mount-root, so every mount is refused";
  std::string out;
  for (const auto& r : roots) out += (out.empty() ? "" : ", ") + r;
  return out;
}

bool under(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          path[root.size()] == '/');
}

// A copier child with its stdin (ours to write) and stdout (ours to read).
struct Copier {
  pid_t pid = -1;
  int to = -1, from = -1;

  std::string start(const std::string& program, const std::vector<std::string>& args) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) < 0) return "pipe: " + std::string(std::strerror(errno));
    if (::pipe2(out, O_CLOEXEC) < 0) {
      ::close(in[0]), ::close(in[1]);
      return "pipe: " + std::string(std::strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    // Nothing else of the executor's (bus sockets, guest channels) reaches the copier.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    to = in[1];
    from = out[0];
    if (rc != 0) {
      pid = -1;
      return "spawn " + program + ": " + std::strerror(rc);
    }
    return "";
  }
  void close_input() {
    if (to >= 0) ::close(to);
    to = -1;
  }
  // Waits for the exit; "" = exit 0.
  std::string finish(bool kill_it = false) {
    close_input();
    if (from >= 0) ::close(from);
    from = -1;
    if (pid < 0) return "not started";
    if (kill_it) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    pid = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
    if (WIFEXITED(status)) {
      int code = WEXITSTATUS(status);
      return code == 3 ? "nv-mount-copier could not confine itself with Landlock (exit 3)"
                       : "nv-mount-copier exited " + std::to_string(code);
    }
    return "nv-mount-copier killed by signal " + std::to_string(WTERMSIG(status));
  }
  ~Copier() {
    if (pid >= 0) finish(true);
  }
};

Error copier_error(uint64_t code, const std::string& text) {
  auto ec = code == mounts::kErrQuota ? ErrorCode::MOUNT_QUOTA : ErrorCode::INTERNAL;
  return make_error(ec, text);
}

// A channel failure: the caller maps `ce` (guest_failed); this error is the fallback.
Error chan(const guest::ChannelError& ce) { return make_error(ErrorCode::VM_FAILED, ce.message); }

std::string rel_of(const std::string& guest_root, const std::string& path) {
  if (path.size() <= guest_root.size() + 1 || path.compare(0, guest_root.size(), guest_root) ||
      path[guest_root.size()] != '/') {
    return "";
  }
  return path.substr(guest_root.size() + 1);
}

}  // namespace

bool has_rw_mounts(const std::vector<MountState>& mounts) {
  for (const auto& m : mounts) {
    if (!m.mount.read_only) return true;
  }
  return false;
}

std::string default_copier() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "nv-mount-copier";
  std::string self(buf, size_t(n));
  return self.substr(0, self.rfind('/') + 1) + "nv-mount-copier";
}

Status validate_mounts(std::vector<sandbox::Mount>& mounts, const MountOptions& opt) {
  Problems p;
  p.over("mounts count", mounts.size(), kMaxMounts);
  for (size_t i = 0; i < mounts.size() && i < kMaxMounts; ++i) {
    const auto& m = mounts[i];
    std::string at = "mounts[" + std::to_string(i) + "]";
    if (auto why = path_problem(m.host_path, 4096); !why.empty()) {
      p.add(at + ".hostPath " + quote(m.host_path) + " " + why);
    }
    auto why = path_problem(m.guest_path, 4096);
    if (why.empty() &&
        (m.guest_path.size() <= std::string(kHome).size() + 1 || !under(m.guest_path, kHome) ||
         m.guest_path.find("//") != std::string::npos || m.guest_path.back() == '/')) {
      why = "is not a clean path strictly below /home/agent";
    }
    if (!why.empty()) p.add(at + ".guestPath " + quote(m.guest_path) + " " + why);
    for (size_t j = 0; j < i; ++j) {
      if (under(m.guest_path, mounts[j].guest_path) || under(mounts[j].guest_path, m.guest_path)) {
        p.add(at + ".guestPath " + quote(m.guest_path) + " overlaps mounts[" + std::to_string(j) +
              "].guestPath " + quote(mounts[j].guest_path));
      }
    }
    if (m.read_only && (m.quota_bytes || m.quota_files)) {
      p.add(at + ": a read-only mount takes no quota");
    }
  }
  if (!p.empty()) return p.error("mounts");
  for (auto& m : mounts) {
    char buf[PATH_MAX];
    if (!::realpath(m.host_path.c_str(), buf)) {
      return make_error(ErrorCode::MOUNT_REFUSED,
                        "mount " + quote(m.host_path) + " refused: it does not resolve (" +
                            std::strerror(errno) + "); allowed roots: " + roots_text(opt.roots));
    }
    std::string real = buf;
    bool ok = false;
    for (const auto& r : opt.roots) ok = ok || under(real, r);
    if (!ok) {
      return make_error(ErrorCode::MOUNT_REFUSED,
                        "mount " + quote(m.host_path) + " (resolved " + quote(real) +
                            ") refused: a host directory must be a --mount-root or below one; "
                            "allowed roots: " +
                            roots_text(opt.roots));
    }
    struct stat st {};
    if (::stat(real.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
      return make_error(ErrorCode::MOUNT_REFUSED,
                        "mount " + quote(m.host_path) + " refused: not a directory");
    }
    m.host_path = real;
    if (!m.read_only) {
      if (!m.quota_bytes) m.quota_bytes = opt.quota_bytes;
      if (!m.quota_files) m.quota_files = opt.quota_files;
    }
  }
  return {};
}

Result<std::vector<MountState>> copy_in(guest::GuestChannel& ch,
                                        const std::vector<sandbox::Mount>& mounts,
                                        const MountOptions& opt, guest::Deadline deadline,
                                        guest::ChannelError& ce) {
  std::vector<MountState> out;
  const std::string program = opt.copier.empty() ? default_copier() : opt.copier;
  for (const auto& m : mounts) {
    MountState ms;
    ms.mount = m;
    Copier cp;
    if (auto e = cp.start(
            program, {"copy-in", m.host_path, "--max-bytes", std::to_string(opt.max_copy_in_bytes),
                      "--max-files", std::to_string(opt.max_copy_in_files)});
        !e.empty()) {
      return make_error(ErrorCode::INTERNAL, e);
    }
    cp.close_input();
    std::string body, err, rel, data;
    uint32_t mode = 0;
    bool wrote = false;
    guest::FileEntryInfo last;
    for (;;) {
      if (!mounts::read_record(cp.from, body, err)) {
        return make_error(ErrorCode::INTERNAL,
                          "copy-in of " + m.host_path + ": " + err + " (" + cp.finish() + ")");
      }
      RecordReader r(body);
      char k = r.kind();
      if (k == 'Z') break;
      if (k == 'E') {
        uint64_t code = r.u64();
        return copier_error(code, "copy-in of " + m.host_path + ": " + r.text());
      }
      if (k == 'T') {
        uint64_t pages = r.u64(), files = r.u64();
        uint64_t size = pages + (m.read_only ? 0 : m.quota_bytes) + 16 * kPage;
        uint64_t inodes = files + (m.read_only ? 0 : m.quota_files) + 16;
        if ((ce = ch.mount_setup(m.guest_path, size, inodes, deadline))) return chan(ce);
        continue;
      }
      if (k == 'S') {
        log::info("mount copy-in skipped", {{"mount", m.host_path}, {"entry", r.text()}});
        continue;
      }
      if (k == 'D') {
        rel = r.text();
        MountEntry e;
        e.dir = true;
        (void)r.u64();
        e.host_mtime_ns = int64_t(r.u64());
        e.host_ino = r.u64();
        if (auto d = ch.make_dir(m.guest_path + "/" + rel, true, deadline); !d.ok()) {
          ce = d.error();
          return chan(ce);
        }
        ms.entries[rel] = e;
        ++ms.copied_files;
        continue;
      }
      if (k == 'F') {
        rel = r.text();
        mode = uint32_t(r.u64());
        wrote = false;
        continue;
      }
      if (k == 'C' || k == 'e') {
        // Each chunk is one write (the first replaces, the rest append); the entry the last
        // write answers is the guest's baseline for the next sync.
        if (k == 'C' || !wrote) {
          data = k == 'C' ? r.text() : std::string();
          auto w =
              ch.write_file(m.guest_path + "/" + rel, data, mode ? mode : 0644, wrote, deadline);
          if (!w.ok()) {
            ce = w.error();
            return chan(ce);
          }
          last = w.value();
          wrote = true;
        }
        if (k == 'e') {
          MountEntry e;
          e.host_size = r.u64();
          e.host_mtime_ns = int64_t(r.u64());
          e.host_ino = r.u64();
          e.guest_size = last.size;
          e.guest_mtime_ms = last.mtime_unix_ms;
          ms.entries[rel] = e;
          ms.copied_bytes += e.guest_size;
          ++ms.copied_files;
        }
        continue;
      }
      return make_error(ErrorCode::INTERNAL, "copy-in of " + m.host_path + ": unknown record");
    }
    if (auto e = cp.finish(); !e.empty()) return make_error(ErrorCode::INTERNAL, e);
    if (m.read_only && (ce = ch.mount_seal(m.guest_path, deadline))) return chan(ce);
    out.push_back(std::move(ms));
  }
  return out;
}

Result<std::vector<sandbox::MountSync>> sync_out(guest::GuestChannel& ch,
                                                 std::vector<MountState>& mounts,
                                                 const MountOptions& opt, guest::Deadline deadline,
                                                 guest::ChannelError& ce) {
  std::vector<sandbox::MountSync> out;
  const std::string program = opt.copier.empty() ? default_copier() : opt.copier;
  for (auto& ms : mounts) {
    const auto& m = ms.mount;
    if (m.read_only) continue;
    sandbox::MountSync result;
    result.guest_path = m.guest_path;
    result.host_path = m.host_path;
    auto skip = [&](const std::string& s) {
      if (result.skipped.size() < 100) result.skipped.push_back(s);
    };
    auto listed = ch.list_dir(m.guest_path, true, deadline);
    if (!listed.ok()) {
      ce = listed.error();
      return chan(ce);
    }
    // The guest's tree: regular files and directories; the rest is reported.
    std::map<std::string, guest::FileEntryInfo> files;
    std::set<std::string> dirs;
    uint64_t bytes = 0, count = 0;
    for (const auto& e : listed.value()) {
      std::string rel = rel_of(m.guest_path, e.path);
      if (rel.empty()) continue;
      ++count;
      if (e.type == schema::FileType::FILE) {
        bytes += e.size;
        files[rel] = e;
      } else if (e.type == schema::FileType::DIRECTORY) {
        dirs.insert(rel);
      } else if (e.type == schema::FileType::SYMLINK) {
        skip(rel + ": symlink (not copied out)");
      } else {
        skip(rel + ": not a regular file or directory (not copied out)");
      }
    }
    if (bytes > ms.copied_bytes + m.quota_bytes || count > ms.copied_files + m.quota_files) {
      return make_error(ErrorCode::MOUNT_QUOTA,
                        "mount " + m.guest_path + " holds " + std::to_string(bytes) + " bytes in " +
                            std::to_string(count) + " entries; its quota allows " +
                            std::to_string(ms.copied_bytes + m.quota_bytes) + " bytes and " +
                            std::to_string(ms.copied_files + m.quota_files) +
                            " entries (copied in + quota); nothing of it was written");
    }
    Copier cp;
    if (auto e = cp.start(program, {"sync", m.host_path}); !e.empty()) {
      return make_error(ErrorCode::INTERNAL, e);
    }
    // Answers on a thread: the copier may answer while we still write.
    std::vector<std::string> answers;
    std::string answer_error;
    std::thread reader([&] {
      std::string body;
      while (mounts::read_record(cp.from, body, answer_error)) {
        answers.push_back(body);
        if (RecordReader(body).kind() == 'Z' || RecordReader(body).kind() == 'E') break;
      }
    });
    bool sent = true;
    auto send = [&](const std::string& rec) {
      sent = sent && mounts::write_all(cp.to, rec);
      return sent;
    };
    for (const auto& [rel, e] : ms.entries) {
      send(RecordWriter('M')
               .text(rel)
               .u64(e.dir)
               .u64(e.host_size)
               .u64(uint64_t(e.host_mtime_ns))
               .u64(e.host_ino)
               .done());
    }
    for (const auto& d : dirs) {  // sorted: parents first
      if (!ms.entries.count(d)) send(RecordWriter('K').text(d).u64(0755).done());
    }
    for (const auto& [rel, e] : files) {
      auto it = ms.entries.find(rel);
      if (it != ms.entries.end() && !it->second.dir && it->second.guest_size == e.size &&
          it->second.guest_mtime_ms == e.mtime_unix_ms) {
        continue;  // unchanged in the guest
      }
      if (!send(RecordWriter('W').text(rel).u64(e.mode).done())) break;
      uint64_t off = 0;
      std::string abandoned;
      for (;;) {
        auto rr = ch.read_file(e.path, off, mounts::kDataChunk, mounts::kDataChunk, deadline);
        if (!rr.ok() && rr.error().code == guest::ChannelErrc::guest_error) {
          // Changed under the listing (removed, or a path part swapped for a symlink, which the
          // agent does not follow): this file is skipped, the sync goes on.
          abandoned = "not copied out: changed in the guest while read (" +
                      rr.error().message.substr(0, 200) + ")";
          break;
        }
        if (!rr.ok()) {
          ce = rr.error();
          break;
        }
        const auto& range = rr.value();
        if (!range.data.empty()) send(RecordWriter('C').text(range.data).done());
        off += range.data.size();
        if (range.eof || range.data.empty()) break;
      }
      if (ce) break;
      send(abandoned.empty() ? RecordWriter('e').done() : RecordWriter('a').text(abandoned).done());
    }
    if (!ce) {
      std::vector<std::string> gone;
      for (const auto& [rel, e] : ms.entries) {
        if (e.dir ? !dirs.count(rel) : !files.count(rel)) gone.push_back(rel);
      }
      // Files before directories, deeper first: a directory goes once it is empty.
      std::sort(gone.begin(), gone.end(), [&](const std::string& a, const std::string& b) {
        bool da = ms.entries[a].dir, db = ms.entries[b].dir;
        if (da != db) return !da;
        return a.size() != b.size() ? a.size() > b.size() : a < b;
      });
      for (const auto& rel : gone) send(RecordWriter('X').text(rel).done());
      send(RecordWriter('Z').done());
    }
    cp.close_input();  // on a channel failure: the copier sees the end and drops its temp file
    reader.join();
    auto exit = cp.finish();
    if (ce) return chan(ce);
    bool done = false;
    for (const auto& body : answers) {
      RecordReader r(body);
      char k = r.kind();
      if (k == 'Z') done = true;
      if (k == 'E') {
        uint64_t code = r.u64();
        return copier_error(code, "sync of " + m.host_path + ": " + r.text());
      }
      std::string rel = r.text();
      if (k == 'S') skip(rel);
      if (k == 'k') {
        MountEntry e;
        e.dir = true;
        e.host_mtime_ns = int64_t(r.u64());
        e.host_ino = r.u64();
        ms.entries[rel] = e;
      }
      if (k == 'w') {
        MountEntry e;
        e.host_size = r.u64();
        e.host_mtime_ns = int64_t(r.u64());
        e.host_ino = r.u64();
        e.guest_size = files[rel].size;
        e.guest_mtime_ms = files[rel].mtime_unix_ms;
        ms.entries[rel] = e;
        ++result.files_written;
        result.bytes_written += e.host_size;
      }
      if (k == 'x') {
        ms.entries.erase(rel);
        ++result.files_removed;
      }
    }
    if (!done) {
      return make_error(ErrorCode::INTERNAL, "sync of " + m.host_path + " did not finish: " +
                                                 (exit.empty() ? answer_error : exit));
    }
    out.push_back(std::move(result));
  }
  return out;
}

std::string encode_state(const std::vector<MountState>& mounts) {
  std::string out;
  for (const auto& ms : mounts) {
    const auto& m = ms.mount;
    out += RecordWriter('N')
               .text(m.host_path)
               .text(m.guest_path)
               .u64(m.read_only)
               .u64(m.quota_bytes)
               .u64(m.quota_files)
               .u64(ms.copied_bytes)
               .u64(ms.copied_files)
               .done();
    for (const auto& [rel, e] : ms.entries) {
      out += RecordWriter('M')
                 .text(rel)
                 .u64(e.dir)
                 .u64(e.host_size)
                 .u64(uint64_t(e.host_mtime_ns))
                 .u64(e.host_ino)
                 .u64(e.guest_size)
                 .u64(uint64_t(e.guest_mtime_ms))
                 .done();
    }
  }
  return out;
}

std::vector<MountState> decode_state(const std::string& blob) {
  std::vector<MountState> out;
  size_t pos = 0;
  while (pos + 4 <= blob.size()) {
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= uint32_t(static_cast<unsigned char>(blob[pos + i])) << (8 * i);
    if (n == 0 || pos + 4 + n > blob.size()) return {};
    RecordReader r(std::string_view(blob).substr(pos + 4, n));
    pos += 4 + n;
    char k = r.kind();
    if (k == 'N') {
      MountState ms;
      ms.mount.host_path = r.text();
      ms.mount.guest_path = r.text();
      ms.mount.read_only = r.u64() != 0;
      ms.mount.quota_bytes = r.u64();
      ms.mount.quota_files = uint32_t(r.u64());
      ms.copied_bytes = r.u64();
      ms.copied_files = r.u64();
      out.push_back(std::move(ms));
    } else if (k == 'M' && !out.empty()) {
      std::string rel = r.text();
      MountEntry e;
      e.dir = r.u64() != 0;
      e.host_size = r.u64();
      e.host_mtime_ns = int64_t(r.u64());
      e.host_ino = r.u64();
      e.guest_size = r.u64();
      e.guest_mtime_ms = int64_t(r.u64());
      out.back().entries[rel] = e;
    } else {
      return {};
    }
    if (r.bad()) return {};
  }
  return out;
}

}  // namespace nv::exec
