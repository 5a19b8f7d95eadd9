// mount_copier_test — the host side of host directories (issue 15) against real temp trees:
// copy-in (what is copied, what is skipped and why), sync (writes by temp file + rename, removes
// only what is unchanged, conflicts), each escape as its own case (a symlink placed on the host,
// one placed by the guest, ".." paths, hard links on both sides, device nodes and fifos, a
// directory swapped for a symlink to outside while sync writes), the Landlock confinement of
// nv-mount-copier, a copier killed mid-file, and the executor's mount policy (validate_mounts).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <set>
#include <thread>

#include "guest/agent/mounts.h"
#include "guest/agent/session.h"
#include "mount_copier.h"
#include "mount_wire.h"
#include "sandbox_mounts.h"
#include "sandbox_registry.h"

namespace {

namespace fs = std::filesystem;
using nv::mounts::RecordReader;
using nv::mounts::RecordWriter;

void put(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}
std::string get(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

class Tree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nv-mount-copier-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    fs::create_directories(root_);
    fs::create_directories(outside_);
    put(outside_ + "/secret.txt", "secret\n");
  }
  void TearDown() override { fs::remove_all(base_); }
  int root_fd() {
    int fd = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    return fd;
  }
  // Runs copy_in; its records as text lines ("T pages files", "D rel", "F rel mode", "C n",
  // "e size", "S why", "Z", "E code text").
  std::vector<std::string> copy_in(nv::mounts::CopyInLimits limits = {}) {
    std::string out = base_ + "/copy.out";
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int root = root_fd();
    nv::mounts::copy_in(root, limits, o);
    ::close(root);
    ::close(o);
    return records(out);
  }
  std::vector<std::string> records(const std::string& file) {
    std::vector<std::string> lines;
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    std::string body, err;
    while (nv::mounts::read_record(fd, body, err)) {
      RecordReader r(body);
      char k = r.kind();
      std::string line(1, k);
      switch (k) {
        case 'T': {
          auto pages = r.u64();
          line += " " + std::to_string(pages) + " " + std::to_string(r.u64());
          break;
        }
        case 'D':
        case 'x':
        case 'k':
          line += " " + r.text();
          break;
        case 'F': {
          auto rel = r.text();
          line += " " + rel + " " + std::to_string(r.u64());
          break;
        }
        case 'C':
          line += " " + r.text();
          break;
        case 'e':
          line += " " + std::to_string(r.u64());
          break;
        case 'w': {
          auto rel = r.text();
          line += " " + rel + " " + std::to_string(r.u64());
          break;
        }
        case 'S':
          line += " " + r.text();
          break;
        case 'E': {
          auto code = r.u64();
          line += " " + std::to_string(code) + " " + r.text();
          break;
        }
        default:
          break;
      }
      lines.push_back(line);
    }
    ::close(fd);
    return lines;
  }
  // Runs sync_out over `input` (records); its answers as text lines.
  std::vector<std::string> sync(const std::string& input) {
    std::string in = base_ + "/sync.in", out = base_ + "/sync.out";
    put(in, input);
    int i = ::open(in.c_str(), O_RDONLY | O_CLOEXEC);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int root = root_fd();
    nv::mounts::sync_out(root, i, o);
    ::close(root);
    ::close(i);
    ::close(o);
    return records(out);
  }
  // The manifest record of `rel` as the host has it now.
  std::string manifest(const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(::lstat((root_ + "/" + rel).c_str(), &st), 0) << rel;
    return RecordWriter('M')
        .text(rel)
        .u64(S_ISDIR(st.st_mode))
        .u64(uint64_t(st.st_size))
        .u64(uint64_t(int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec))
        .u64(st.st_ino)
        .done();
  }
  static std::string write(const std::string& rel, const std::string& data) {
    return RecordWriter('W').text(rel).u64(0644).done() + RecordWriter('C').text(data).done() +
           RecordWriter('e').done();
  }
  static std::string end() { return RecordWriter('Z').done(); }
  // Every file below `dir` (recursive), as paths relative to it.
  static std::vector<std::string> files_under(const std::string& dir) {
    std::vector<std::string> out;
    for (auto& e : fs::recursive_directory_iterator(dir)) {
      out.push_back(fs::relative(e.path(), dir).string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string base_, root_, outside_;
};

TEST_F(Tree, CopyInCopiesFilesAndDirectories) {
  fs::create_directories(root_ + "/src/lib");
  put(root_ + "/a.txt", "hello\n");
  put(root_ + "/src/lib/m.py", "print(1)\n");
  put(root_ + "/empty", "");
  EXPECT_EQ(copy_in(),
            (std::vector<std::string>{"T 8192 5", "F a.txt 420", "C hello\n", "e 6", "F empty 420",
                                      "e 0", "D src", "D src/lib", "F src/lib/m.py 420",
                                      "C print(1)\n", "e 9", "Z"}));
}

TEST_F(Tree, CopyInSkipsAHostSymlinkPointingOutside) {
  put(root_ + "/a.txt", "a\n");
  ASSERT_EQ(::symlink((outside_ + "/secret.txt").c_str(), (root_ + "/link").c_str()), 0);
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/dirlink").c_str()), 0);
  EXPECT_EQ(copy_in(), (std::vector<std::string>{"T 4096 1", "F a.txt 420", "C a\n", "e 2",
                                                 "S dirlink: symlink (not followed)",
                                                 "S link: symlink (not followed)", "Z"}));
}

TEST_F(Tree, CopyInSkipsHardLinksOnTheHost) {
  put(outside_ + "/target", "outside data\n");
  // A hard link to a file outside the mount (the same inode): never read through the mount.
  ASSERT_EQ(::link((outside_ + "/target").c_str(), (root_ + "/hl").c_str()), 0);
  EXPECT_EQ(copy_in(), (std::vector<std::string>{"T 0 0", "S hl: hard link (2 links)", "Z"}));
}

TEST_F(Tree, CopyInSkipsFifosSocketsAndDeviceNodes) {
  ASSERT_EQ(::mkfifo((root_ + "/fifo").c_str(), 0644), 0);
  std::vector<std::string> want = {"T 0 0", "S fifo: fifo"};
  if (::geteuid() == 0 &&
      ::mknod((root_ + "/null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)) == 0) {
    want.push_back("S null: device node");
  }
  want.push_back("Z");
  EXPECT_EQ(copy_in(), want);
}

TEST_F(Tree, CopyInLimitIsMountQuota) {
  put(root_ + "/a", std::string(3000, 'a'));
  put(root_ + "/b", std::string(3000, 'b'));
  auto out = copy_in({.max_bytes = 5000, .max_files = 100});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].rfind("E 34 the host directory holds more than", 0), 0u) << out[0];
}

TEST_F(Tree, SyncWritesByRenameAndReportsWhatItDid) {
  put(root_ + "/old.txt", "old\n");
  put(root_ + "/gone.txt", "gone\n");
  struct stat before {};
  ::stat((root_ + "/old.txt").c_str(), &before);
  auto out = sync(manifest("old.txt") + manifest("gone.txt") +
                  RecordWriter('K').text("new").u64(0755).done() + write("old.txt", "new\n") +
                  write("new/f.bin", std::string("\0\1\2", 3)) +
                  RecordWriter('X').text("gone.txt").done() + end());
  ASSERT_EQ(out.size(), 5u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "k new");
  EXPECT_EQ(out[1], "w old.txt 4");
  EXPECT_EQ(out[2], "w new/f.bin 3");
  EXPECT_EQ(out[3], "x gone.txt");
  EXPECT_EQ(out[4], "Z");
  EXPECT_EQ(get(root_ + "/old.txt"), "new\n");
  EXPECT_EQ(get(root_ + "/new/f.bin"), std::string("\0\1\2", 3));
  EXPECT_FALSE(exists(root_ + "/gone.txt"));
  // Replaced by rename: a new inode, never written through the old file.
  struct stat after {};
  ::stat((root_ + "/old.txt").c_str(), &after);
  EXPECT_NE(before.st_ino, after.st_ino);
  EXPECT_EQ(files_under(root_), (std::vector<std::string>{"new", "new/f.bin", "old.txt"}));
}

TEST_F(Tree, SyncKeepsAFileChangedOnBothSides) {
  put(root_ + "/c.txt", "v1\n");
  auto m = manifest("c.txt");
  put(root_ + "/c.txt", "host v2\n");  // changed on the host after the copy-in
  put(root_ + "/d.txt", "host d\n");
  auto md = manifest("d.txt");
  put(root_ + "/d.txt", "host d2\n");
  auto out = sync(m + md + write("c.txt", "guest v2\n") + RecordWriter('X').text("d.txt").done() +
                  write("fresh.txt", "x") + end());
  put(root_ + "/fresh.txt", "");  // (created after: irrelevant to the answers above)
  ASSERT_EQ(out.size(), 4u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "S c.txt: conflict: changed on both sides (the host's copy is kept)");
  EXPECT_EQ(out[1],
            "S d.txt: conflict: changed on both sides (the host's copy is kept): not removed");
  EXPECT_EQ(out[2], "w fresh.txt 1");
  EXPECT_EQ(out[3], "Z");
  EXPECT_EQ(get(root_ + "/c.txt"), "host v2\n");
  EXPECT_EQ(get(root_ + "/d.txt"), "host d2\n");
}

TEST_F(Tree, SyncNeverWritesThroughAHostSymlink) {
  // A file symlink and a directory symlink placed on the host (after the copy-in).
  ASSERT_EQ(::symlink((outside_ + "/secret.txt").c_str(), (root_ + "/s.txt").c_str()), 0);
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/d").c_str()), 0);
  auto out = sync(write("s.txt", "pwned\n") + write("d/new.txt", "pwned\n") +
                  RecordWriter('K').text("d/sub").u64(0755).done() + end());
  ASSERT_EQ(out.size(), 4u) << ::testing::PrintToString(out);
  EXPECT_EQ(out[0], "S s.txt: conflict: on the host a symlink (not followed)");
  // O_DIRECTORY | O_NOFOLLOW on the symlink: ENOTDIR (openat2 never follows it).
  EXPECT_EQ(out[1], "S d/new.txt: open parent: Not a directory (errno 20)");
  EXPECT_EQ(out[2], "S d/sub: open parent: Not a directory (errno 20)");
  EXPECT_EQ(get(outside_ + "/secret.txt"), "secret\n");
  EXPECT_EQ(files_under(outside_), (std::vector<std::string>{"secret.txt"}));
}

TEST_F(Tree, SyncRefusesDotDotAndAbsolutePaths) {
  for (const std::string rel :
       {"../outside/x.txt", "a/../../outside/x.txt", "/tmp/x.txt", "./x", "a//b", ""}) {
    auto out = sync(write(rel, "pwned\n") + RecordWriter('K').text(rel).u64(0755).done() + end());
    ASSERT_EQ(out.size(), 3u) << rel;
    EXPECT_EQ(out[0], "S " + rel + ": open parent: Invalid argument (errno 22)") << rel;
    EXPECT_EQ(out[1], "S " + rel + ": open parent: Invalid argument (errno 22)") << rel;
  }
  EXPECT_EQ(files_under(outside_), (std::vector<std::string>{"secret.txt"}));
  EXPECT_TRUE(files_under(root_).empty());
}

TEST_F(Tree, SyncDoesNotWriteThroughAHostHardLink) {
  put(outside_ + "/target", "outside\n");
  ASSERT_EQ(::link((outside_ + "/target").c_str(), (root_ + "/hl").c_str()), 0);
  auto out = sync(write("hl", "pwned\n") + end());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], "S hl: conflict: on the host a hard link (2 links)");
  EXPECT_EQ(get(outside_ + "/target"), "outside\n");
}

TEST_F(Tree, AnAbandonedFileReplacesNothing) {
  put(root_ + "/f", "host\n");
  auto out = sync(manifest("f") + RecordWriter('W').text("f").u64(0644).done() +
                  RecordWriter('C').text("partial").done() +
                  RecordWriter('a').text("changed in the guest while read").done() + end());
  EXPECT_EQ(out, (std::vector<std::string>{"S f: changed in the guest while read", "Z"}));
  EXPECT_EQ(get(root_ + "/f"), "host\n");
  EXPECT_EQ(files_under(root_), (std::vector<std::string>{"f"}));
}

TEST_F(Tree, GuestHardLinksBecomeIndependentHostFiles) {
  // The guest lists two paths of one inode as two regular files: the executor sends both.
  auto out = sync(write("one", "same\n") + write("two", "same\n") + end());
  ASSERT_EQ(out.size(), 3u);
  struct stat a {
  }, b{};
  ::stat((root_ + "/one").c_str(), &a);
  ::stat((root_ + "/two").c_str(), &b);
  EXPECT_NE(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 1u);
  EXPECT_EQ(b.st_nlink, 1u);
}

TEST_F(Tree, ADirectorySwappedForASymlinkMidSyncLandsNothingOutside) {
  fs::create_directories(root_ + "/dir");
  std::atomic<bool> stop{false};
  std::thread racer([&] {
    const std::string dir = root_ + "/dir", aside = root_ + "/dir.real";
    while (!stop) {
      // Swap the directory for a symlink to outside, and back.
      if (::rename(dir.c_str(), aside.c_str()) == 0) {
        ::symlink(outside_.c_str(), dir.c_str());
        ::unlink(dir.c_str());
        ::rename(aside.c_str(), dir.c_str());
      }
    }
  });
  std::string input;
  for (int i = 0; i < 300; ++i) input += write("dir/f" + std::to_string(i), "data\n");
  auto out = sync(input + end());
  stop = true;
  racer.join();
  EXPECT_EQ(out.back(), "Z");
  EXPECT_EQ(files_under(outside_), (std::vector<std::string>{"secret.txt"}));
  // Every answer is a write that landed in the real directory or a skip; what landed is exactly
  // what was reported written (how many land depends on the race's timing).
  std::set<std::string> reported;
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    const auto& l = out[i];
    ASSERT_TRUE(l.rfind("w dir/f", 0) == 0 || l.rfind("S dir/f", 0) == 0) << l;
    if (l[0] == 'w') reported.insert(l.substr(2, l.rfind(' ') - 2));
  }
  std::set<std::string> landed;
  for (const auto& f : files_under(root_)) {
    if (f.rfind("dir/f", 0) == 0) {
      landed.insert(f);
      EXPECT_EQ(get(root_ + "/" + f), "data\n");
    }
  }
  EXPECT_EQ(landed, reported);
  for (const auto& f : files_under(root_)) {
    EXPECT_EQ(f.find(".nv-sync-"), std::string::npos) << "a temp file was left: " << f;
  }
}

std::string copier() {
  const char* bin = std::getenv("NV_BIN_DIR");
  return std::string(bin ? bin : ".") + "/nv-mount-copier";
}

TEST_F(Tree, LandlockConfinesTheCopierToItsDirectory) {
  if (!exists(copier())) GTEST_SKIP() << "nv-mount-copier not built";
  std::string why;
  auto probe = [&](std::vector<std::string> args) {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(p[1], 1);
      std::vector<char*> argv;
      std::string bin = copier();
      argv.push_back(bin.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(p[1]);
    char buf[256] = {};
    ssize_t n = ::read(p[0], buf, sizeof buf - 1);
    ::close(p[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3) return std::string("no landlock");
    return std::string(buf, n > 0 ? size_t(n) : 0);
  };
  put(root_ + "/in.txt", "in\n");
  auto inside = probe({"probe", root_, root_ + "/in.txt"});
  if (inside == "no landlock") GTEST_SKIP() << "Landlock is not available on this kernel";
  EXPECT_EQ(inside, "ok\n");
  EXPECT_EQ(probe({"probe", root_, outside_ + "/secret.txt"}), "EACCES\n");
  EXPECT_EQ(probe({"probe", root_, "/etc/passwd"}), "EACCES\n");
  // Read-only confinement (copy-in) cannot create even inside; the sync mode can.
  EXPECT_EQ(probe({"probe", root_, root_ + "/new.txt", "--create"}), "EACCES\n");
  EXPECT_EQ(probe({"probe", root_, root_ + "/new.txt", "--write"}), "ok\n");
  EXPECT_EQ(probe({"probe", root_, outside_ + "/new.txt", "--write"}), "EACCES\n");
  EXPECT_FALSE(exists(outside_ + "/new.txt"));
}

TEST_F(Tree, ACopierKilledMidFileLeavesNoHalfWrittenTarget) {
  if (!exists(copier())) GTEST_SKIP() << "nv-mount-copier not built";
  put(root_ + "/t.txt", "original\n");
  int in[2], out[2];
  ASSERT_EQ(::pipe(in), 0);
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::close(in[1]);
    ::close(out[0]);
    std::string bin = copier();
    ::execl(bin.c_str(), bin.c_str(), "sync", root_.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  // Half a file: 'W' and one chunk, then the copier is killed before 'e'.
  std::string rec = manifest("t.txt") + RecordWriter('W').text("t.txt").u64(0644).done() +
                    RecordWriter('C').text(std::string(1 << 20, 'x')).done();
  ASSERT_TRUE(nv::mounts::write_all(in[1], rec));
  // Wait until the temp file holds the chunk (the copier is mid-file), then SIGKILL.
  bool mid = false;
  for (int i = 0; i < 500 && !mid; ++i) {
    for (const auto& f : files_under(root_)) {
      if (f.rfind(".nv-sync-", 0) == 0 && fs::file_size(root_ + "/" + f) == (1u << 20)) mid = true;
    }
    if (!mid) ::usleep(10000);
  }
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::close(in[1]);
  ::close(out[0]);
  EXPECT_TRUE(mid) << "the copier never started the temp file";
  EXPECT_EQ(get(root_ + "/t.txt"), "original\n");  // untouched
  for (const auto& f : files_under(root_)) {
    EXPECT_TRUE(f == "t.txt" || f.rfind(".nv-sync-t.txt-", 0) == 0) << f;
  }
}

// ---- the executor's mount policy --------------------------------------------------------------

TEST_F(Tree, PolicyRefusesOutsideEveryRootNamingTheRuleAndRoots) {
  nv::exec::MountOptions opt;
  opt.roots = {root_};
  fs::create_directories(root_ + "/proj");
  std::vector<nv::sandbox::Mount> ok = {
      {.host_path = root_ + "/proj/", .guest_path = "/home/agent/proj"}};
  ASSERT_TRUE(nv::exec::validate_mounts(ok, opt).ok());
  EXPECT_EQ(ok[0].host_path, root_ + "/proj");  // resolved
  EXPECT_EQ(ok[0].quota_bytes, 256ull << 20);
  EXPECT_EQ(ok[0].quota_files, 10000u);

  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/esc").c_str()), 0);
  for (const std::string& host : {outside_, root_ + "/esc", std::string("/")}) {
    std::vector<nv::sandbox::Mount> m = {{.host_path = host, .guest_path = "/home/agent/p"}};
    auto st = nv::exec::validate_mounts(m, opt);
    ASSERT_FALSE(st.ok()) << host;
    EXPECT_EQ(st.error().code, nv::ErrorCode::MOUNT_REFUSED) << host;
    EXPECT_NE(st.error().message.find("must be a --mount-root or below one"), std::string::npos);
    EXPECT_NE(st.error().message.find("allowed roots: " + root_), std::string::npos)
        << st.error().message;
  }
  // No roots: everything refused, saying so.
  std::vector<nv::sandbox::Mount> m = ok;
  auto st = nv::exec::validate_mounts(m, nv::exec::MountOptions{});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, nv::ErrorCode::MOUNT_REFUSED);
  EXPECT_NE(st.error().message.find("no --mount-root"), std::string::npos) << st.error().message;
}

TEST_F(Tree, PolicyShapesAreBadRequest) {
  nv::exec::MountOptions opt;
  opt.roots = {root_};
  using M = nv::sandbox::Mount;
  for (const auto& m :
       std::vector<M>{{.host_path = "relative", .guest_path = "/home/agent/a"},
                      {.host_path = root_ + "/proj/../../outside", .guest_path = "/home/agent/a"},
                      {.host_path = root_, .guest_path = "/home/agent"},
                      {.host_path = root_, .guest_path = "/home/agent/../etc"},
                      {.host_path = root_, .guest_path = "/tmp/a"},
                      {.host_path = root_, .guest_path = "/home/agentx/a"},
                      {.host_path = root_, .guest_path = "/home/agent/a/"},
                      {.host_path = root_,
                      .guest_path = "/home/agent/a",
                      .read_only = true,
                      .quota_bytes = 1}}) {
    std::vector<M> v = {m};
    auto st = nv::exec::validate_mounts(v, opt);
    ASSERT_FALSE(st.ok()) << m.guest_path;
    EXPECT_EQ(st.error().code, nv::ErrorCode::BAD_REQUEST) << m.host_path << " " << m.guest_path;
  }
  std::vector<M> overlap = {{.host_path = root_, .guest_path = "/home/agent/a"},
                            {.host_path = root_, .guest_path = "/home/agent/a/b"}};
  auto st = nv::exec::validate_mounts(overlap, opt);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("overlaps"), std::string::npos);
  std::vector<M> nine(9, M{.host_path = root_, .guest_path = "/home/agent/a"});
  EXPECT_EQ(nv::exec::validate_mounts(nine, opt).error().code, nv::ErrorCode::BAD_REQUEST);
}

TEST(MountState, EncodesAndDecodes) {
  nv::exec::MountState ms;
  ms.mount = {
      .host_path = "/srv/p", .guest_path = "/home/agent/p", .quota_bytes = 7, .quota_files = 3};
  ms.copied_bytes = 11;
  ms.copied_files = 2;
  ms.entries["a/b"] = {.dir = false,
                       .host_size = 5,
                       .host_ino = 9,
                       .host_mtime_ns = -1,
                       .guest_size = 5,
                       .guest_mtime_ms = 123};
  ms.entries["a"] = {.dir = true};
  auto back = nv::exec::decode_state(nv::exec::encode_state({ms, ms}));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].mount, ms.mount);
  EXPECT_EQ(back[1].copied_bytes, 11u);
  ASSERT_EQ(back[1].entries.size(), 2u);
  EXPECT_EQ(back[1].entries["a/b"].host_mtime_ns, -1);
  EXPECT_EQ(back[1].entries["a/b"].guest_mtime_ms, 123);
  EXPECT_TRUE(back[1].entries["a"].dir);
  EXPECT_TRUE(nv::exec::decode_state("garbage").empty());
}

TEST_F(Tree, TheRegistryKeepsTheManifestsAcrossARestart) {
  nv::exec::MountState ms;
  ms.mount = {
      .host_path = root_, .guest_path = "/home/agent/p", .quota_bytes = 1, .quota_files = 2};
  ms.entries["f"] = {.host_size = 3, .guest_size = 3};
  const std::string db = base_ + "/executor.sqlite";
  {
    auto reg = nv::exec::SandboxRegistry::open(db);
    ASSERT_TRUE(reg.ok()) << reg.error().message;
    nv::exec::SandboxRecord rec;
    rec.info.sandbox_id = "sbx-t-1";
    rec.info.owner = "o";
    rec.info.mounts = {ms.mount};
    rec.mount_state = nv::exec::encode_state({ms});
    ASSERT_TRUE(reg.value()->put(rec).ok());
    nv::exec::SandboxRecord plain;
    plain.info.sandbox_id = "sbx-t-2";
    plain.info.owner = "o";
    ASSERT_TRUE(reg.value()->put(plain).ok());
  }
  auto reg = nv::exec::SandboxRegistry::open(db);
  ASSERT_TRUE(reg.ok());
  auto rows = reg.value()->load();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  const auto& r = (*rows)[0].info.sandbox_id == "sbx-t-1" ? (*rows)[0] : (*rows)[1];
  const auto& p = (*rows)[0].info.sandbox_id == "sbx-t-1" ? (*rows)[1] : (*rows)[0];
  EXPECT_EQ(r.info.mounts, std::vector<nv::sandbox::Mount>{ms.mount});
  auto back = nv::exec::decode_state(r.mount_state);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].entries["f"].host_size, 3u);
  EXPECT_TRUE(p.mount_state.empty());
}

// The agent's end refuses paths outside /home/agent before any mount(2) is tried.
TEST(AgentMounts, SetupRefusesPathsOutsideTheHome) {
  nv::guest::agent::AgentConfig cfg;
  std::string error;
  for (const std::string p : {"/tmp/x", "/home/agent", "/home/agent/../etc", "/etc", "rel"}) {
    error.clear();
    EXPECT_FALSE(nv::guest::agent::mount_setup(cfg, p, 1 << 20, 100, error)) << p;
    EXPECT_NE(error.find("strictly below /home/agent"), std::string::npos) << p << ": " << error;
    error.clear();
    EXPECT_FALSE(nv::guest::agent::mount_seal(cfg, p, error)) << p;
    EXPECT_NE(error.find("strictly below /home/agent"), std::string::npos) << p << ": " << error;
  }
  EXPECT_FALSE(nv::guest::agent::mount_setup(cfg, "/home/agent/p", 100, 100, error));
  EXPECT_NE(error.find("sizeBytes must be >= 4096"), std::string::npos) << error;
}

}  // namespace
