// guest_sandbox_test.cc — the agent's sandbox operations on the build host, no VM: files
// (chunked atomic writes, ranges, stat/list/remove/mkdir, symlink and root refusals), processes
// and signals, background programs, and persistent code contexts (python3, node), each driven
// through the real host GuestChannel over a socketpair.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "tests/unit/agent_on_socketpair.h"

namespace nv::guest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ErrorCode = schema::Error::Code;

Deadline in(std::chrono::milliseconds d) { return Clock::now() + d; }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every byte value, in a pseudo-random order, `n` bytes.
std::string binary_blob(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i < 256 ? i : rng() & 0xff);
  return s;
}

class SandboxFiles : public AgentOnSocketpair {};

TEST_F(SandboxFiles, FiveMiBWithEveryByteValueRoundTrips) {
  auto& ch = connect();
  const std::string data = binary_blob(5u << 20, 7);
  const std::string path = dir_ + "/sub/dir/blob.bin";  // parents are made
  auto w = ch.write_file(path, data, 0600, false, in(20s));
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ(w->path, path);
  EXPECT_EQ(w->type, schema::FileType::FILE);
  EXPECT_EQ(w->size, data.size());
  EXPECT_EQ(w->mode, 0600u);
  EXPECT_EQ(slurp(path), data) << "the file on disk differs";
  auto r = ch.read_file(path, 0, 0, 64u << 20, in(20s));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->size, data.size());
  EXPECT_TRUE(r->eof);
  EXPECT_TRUE(r->data == data) << "read back differs (" << r->data.size() << " bytes)";
  // No temp file is left next to it.
  auto l = ch.list_dir(dir_ + "/sub/dir", false, in(5s));
  ASSERT_TRUE(l.ok()) << l.error().message;
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].path, path);
}

TEST_F(SandboxFiles, RangesAppendAndReplace) {
  auto& ch = connect();
  const std::string path = dir_ + "/r.txt";
  ASSERT_TRUE(ch.write_file(path, "0123456789", 0, false, in(5s)).ok());
  auto r = ch.read_file(path, 3, 4, 1024, in(5s));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->data, "3456");
  EXPECT_EQ(r->offset, 3u);
  EXPECT_EQ(r->size, 10u);
  EXPECT_FALSE(r->eof);
  r = ch.read_file(path, 8, 100, 1024, in(5s));  // past the end: what is there
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, "89");
  EXPECT_TRUE(r->eof);
  r = ch.read_file(path, 10, 0, 1024, in(5s));  // at the end: empty
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, "");
  EXPECT_TRUE(r->eof);
  r = ch.read_file(path, 11, 0, 1024, in(5s));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().guest_code, ErrorCode::BAD_REQUEST);
  r = ch.read_file(path, 0, 2000, 1024, in(5s));
  EXPECT_EQ(r.error().code, ChannelErrc::bad_argument) << "more than max_bytes asked";
  auto a = ch.write_file(path, "ab", 0, true, in(5s));
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->size, 12u);
  EXPECT_EQ(slurp(path), "0123456789ab");
  ASSERT_TRUE(ch.write_file(path, "new", 0, false, in(5s)).ok());
  EXPECT_EQ(slurp(path), "new");
  // A range across several 512 KiB answers.
  const std::string big = binary_blob(1500 * 1024, 3);
  ASSERT_TRUE(ch.write_file(path, big, 0, false, in(10s)).ok());
  r = ch.read_file(path, 100000, 1200 * 1024, 2u << 20, in(10s));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->data == big.substr(100000, 1200 * 1024));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u) << "mode 0 means 0644";
}

TEST_F(SandboxFiles, SymlinksAreNeverFollowedForWrites) {
  auto& ch = connect();
  const std::string outside = dir_ + "-outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  const std::string target = outside + "/target.txt";
  { std::ofstream(target) << "precious"; }
  // The final component is a link to a file outside: refused, the target untouched.
  ASSERT_EQ(::symlink(target.c_str(), (dir_ + "/link").c_str()), 0);
  for (bool append : {false, true}) {
    auto w = ch.write_file(dir_ + "/link", "overwritten", 0, append, in(5s));
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().code, ChannelErrc::guest_error);
    EXPECT_EQ(w.error().guest_code, ErrorCode::BAD_REQUEST) << w.error().message;
  }
  EXPECT_EQ(slurp(target), "precious");
  // A link in the middle of the path (to a directory outside): refused too.
  ASSERT_EQ(::symlink(outside.c_str(), (dir_ + "/dirlink").c_str()), 0);
  auto w = ch.write_file(dir_ + "/dirlink/target.txt", "overwritten", 0, false, in(5s));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().guest_code, ErrorCode::BAD_REQUEST) << w.error().message;
  EXPECT_EQ(slurp(target), "precious");
  EXPECT_FALSE(ch.make_dir(dir_ + "/dirlink/x", true, in(5s)).ok());
  // The one-frame PutFile walks the path the same way.
  EXPECT_EQ(ch.put_file(dir_ + "/dirlink/target.txt", "overwritten", 0, in(5s)).code,
            ChannelErrc::guest_error);
  EXPECT_EQ(ch.put_file(dir_ + "/link", "overwritten", 0, in(5s)).code, ChannelErrc::guest_error);
  EXPECT_FALSE(ch.remove(dir_ + "/dirlink/target.txt", false, in(5s)).ok());
  EXPECT_EQ(slurp(target), "precious");
  // stat and list report the link itself.
  auto s = ch.stat(dir_ + "/link", in(5s));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->type, schema::FileType::SYMLINK);
  EXPECT_EQ(s->link_target, target);
  auto l = ch.list_dir(dir_ + "/dirlink", true, in(5s));
  ASSERT_TRUE(l.ok()) << l.error().message;
  ASSERT_EQ(l->size(), 1u) << "a link to a directory lists as the link";
  EXPECT_EQ((*l)[0].type, schema::FileType::SYMLINK);
  // Removing the link removes the link, not what it points at.
  ASSERT_FALSE(ch.remove(dir_ + "/dirlink", true, in(5s)));
  EXPECT_EQ(slurp(target), "precious");
  std::system(("rm -rf " + outside).c_str());
}

TEST_F(SandboxFiles, PathsOutsideTheRootsAreRefused) {
  auto& ch = connect();
  for (const std::string& p : {std::string("/etc/nv-should-not-exist"), dir_, dir_ + "/../escape",
                               dir_ + "/./x", std::string("relative"), dir_ + "//x"}) {
    auto w = ch.write_file(p, "x", 0, false, in(5s));
    ASSERT_FALSE(w.ok()) << p;
    EXPECT_EQ(w.error().guest_code, ErrorCode::BAD_REQUEST) << p << ": " << w.error().message;
    EXPECT_EQ(ch.remove(p, true, in(5s)).guest_code, ErrorCode::BAD_REQUEST) << p;
    EXPECT_EQ(ch.make_dir(p, true, in(5s)).error().guest_code, ErrorCode::BAD_REQUEST) << p;
  }
  EXPECT_NE(::access("/etc/nv-should-not-exist", F_OK), 0);
  EXPECT_EQ(::access(dir_.c_str(), F_OK), 0) << "the root itself is not removable";
  // The channel stays usable after refusals.
  EXPECT_TRUE(ch.write_file(dir_ + "/ok", "fine", 0, false, in(5s)).ok());
}

TEST_F(SandboxFiles, StatListRemoveMkdirAndNotFound) {
  auto& ch = connect();
  auto m = ch.make_dir(dir_ + "/a/b/c", true, in(5s));
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->type, schema::FileType::DIRECTORY);
  EXPECT_TRUE(ch.make_dir(dir_ + "/a/b/c", true, in(5s)).ok()) << "parents: existing is fine";
  auto again = ch.make_dir(dir_ + "/a/b/c", false, in(5s));
  EXPECT_EQ(again.error().guest_code, ErrorCode::BAD_REQUEST) << again.error().message;
  auto orphan = ch.make_dir(dir_ + "/no/such/x", false, in(5s));
  EXPECT_EQ(orphan.error().guest_code, ErrorCode::NOT_FOUND) << orphan.error().message;
  ASSERT_TRUE(ch.write_file(dir_ + "/a/f1", "1", 0, false, in(5s)).ok());
  ASSERT_TRUE(ch.write_file(dir_ + "/a/b/f2", "22", 0, false, in(5s)).ok());
  auto flat = ch.list_dir(dir_ + "/a", false, in(5s));
  ASSERT_TRUE(flat.ok()) << flat.error().message;
  ASSERT_EQ(flat->size(), 2u);
  EXPECT_EQ((*flat)[0].path, dir_ + "/a/b");
  EXPECT_EQ((*flat)[1].path, dir_ + "/a/f1");
  EXPECT_EQ((*flat)[1].size, 1u);
  auto deep = ch.list_dir(dir_ + "/a", true, in(5s));
  ASSERT_TRUE(deep.ok());
  ASSERT_EQ(deep->size(), 4u);  // b, b/c, b/f2, f1
  auto s = ch.stat(dir_ + "/a/b/f2", in(5s));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size, 2u);
  EXPECT_GT(s->mtime_unix_ms, 1600000000000);
  auto gone = ch.stat(dir_ + "/nope", in(5s));
  EXPECT_EQ(gone.error().guest_code, ErrorCode::NOT_FOUND);
  EXPECT_EQ(ch.read_file(dir_ + "/nope", 0, 0, 10, in(5s)).error().guest_code,
            ErrorCode::NOT_FOUND);
  EXPECT_EQ(ch.remove(dir_ + "/nope", false, in(5s)).guest_code, ErrorCode::NOT_FOUND);
  auto notempty = ch.remove(dir_ + "/a", false, in(5s));
  EXPECT_EQ(notempty.guest_code, ErrorCode::BAD_REQUEST) << notempty.message;
  ASSERT_FALSE(ch.remove(dir_ + "/a", true, in(5s)));
  EXPECT_NE(::access((dir_ + "/a").c_str(), F_OK), 0);
}

TEST_F(SandboxFiles, RecursiveListIsCappedAt10000Entries) {
  auto& ch = connect();
  const std::string d = dir_ + "/many";
  ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
  for (int i = 0; i < 9999; ++i) {
    int fd = ::open((d + "/" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  auto l = ch.list_dir(dir_, true, in(30s));  // many + 9,999 files = 10,000 entries
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->size(), 10000u);
  int fd = ::open((d + "/last").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ::close(fd);
  auto over = ch.list_dir(dir_, true, in(30s));
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().guest_code, ErrorCode::BAD_REQUEST) << over.error().message;
  EXPECT_TRUE(ch.stat(d, in(5s)).ok()) << "the channel goes on";
}

TEST_F(SandboxFiles, AFailedWriteIsAnsweredOnceAndTheNextWorks) {
  auto& ch = connect();
  // A directory in the way: the first chunk fails; the write's later chunks are dropped.
  ASSERT_EQ(::mkdir((dir_ + "/d").c_str(), 0755), 0);
  auto w = ch.write_file(dir_ + "/d", std::string(9u << 20, 'x'), 0, false, in(10s));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().guest_code, ErrorCode::BAD_REQUEST) << w.error().message;
  auto ok = ch.write_file(dir_ + "/e", "fine", 0, false, in(5s));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(slurp(dir_ + "/e"), "fine");
  auto empty = ch.write_file(dir_ + "/empty", "", 0, false, in(5s));
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_EQ(empty->size, 0u);
}

// ---- processes, signals, background programs ---------------------------------------------

class SandboxProcesses : public AgentOnSocketpair {
 protected:
  // Runs sh code; returns the outcome (asserting the call itself worked).
  ExecOutcome sh(GuestChannel& ch, const std::string& code, bool keep, bool background,
                 std::string* out = nullptr) {
    ExecSpec spec;
    spec.language = schema::Language::SH;
    spec.code = code;
    spec.keep_background = keep;
    spec.background = background;
    spec.timeout_ms = 20000;
    auto r = ch.exec(
        spec,
        [&](schema::Stream, std::string_view d) {
          if (out) out->append(d);
        },
        in(30s));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r.value() : ExecOutcome{};
  }
  // The listed process whose command contains `needle` (pid 0 if none).
  ProcessEntry find(GuestChannel& ch, const std::string& needle) {
    auto ps = ch.processes(in(5s));
    EXPECT_TRUE(ps.ok()) << ps.error().message;
    if (ps.ok()) {
      for (const auto& p : *ps) {
        if (p.command.find(needle) != std::string::npos) return p;
      }
    }
    return {};
  }
  // Waits (polling the agent's list) until no live process matches.
  bool gone(GuestChannel& ch, const std::string& needle) {
    for (int i = 0; i < 200; ++i) {
      auto p = find(ch, needle);
      if (p.pid == 0 || p.state == "Z") return true;
      std::this_thread::sleep_for(25ms);  // polling another process's state
    }
    return false;
  }
  bool file_appears(const std::string& path, std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      if (!slurp(path).empty()) return true;
      std::this_thread::sleep_for(25ms);  // polling a file another process writes
    }
    return false;
  }
};

TEST_F(SandboxProcesses, KeepBackgroundLeavesTheJobRunningListedAndSignalable) {
  auto& ch = connect();
  std::string out;
  auto o = sh(ch, "sleep 301 & echo started", true, false, &out);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(out, "started\n");
  auto p = find(ch, "sleep 301");
  ASSERT_GT(p.pid, 0) << "the background sleep was not kept";
  EXPECT_TRUE(p.state == "S" || p.state == "R") << p.state;
  EXPECT_GT(p.started_unix_ms, 1600000000000);
  EXPECT_EQ(p.context, "");
  // Still there after another exec.
  EXPECT_EQ(sh(ch, "true", true, false).exit_code, 0);
  EXPECT_EQ(find(ch, "sleep 301").pid, p.pid);
  ASSERT_FALSE(ch.signal(p.pid, SIGKILL, in(5s)));
  EXPECT_TRUE(gone(ch, "sleep 301"));
  // Without keepBackground the job dies with the program, as for one-shot execs.
  sh(ch, "sleep 302 & echo x", false, false);
  EXPECT_TRUE(gone(ch, "sleep 302"));
}

TEST_F(SandboxProcesses, LeftoverOutputIsDrainedNeverBlockingNorSigpipe) {
  auto& ch = connect();
  const std::string mark = dir_ + "/mark";
  // The job writes 10 MB to the exec's stdout after the exec ended: it must finish normally.
  auto o = sh(ch,
              "(sleep 0.3; head -c 10000000 /dev/zero && head -c 10000000 /dev/zero >&2 && "
              "echo ok > " +
                  mark + " || echo fail:$? > " + mark + ") & echo spawned",
              true, false);
  EXPECT_EQ(o.exit_code, 0);
  ASSERT_TRUE(file_appears(mark, 30s)) << "the leftover job blocked on its output";
  EXPECT_EQ(slurp(mark), "ok\n");
}

TEST_F(SandboxProcesses, BackgroundAnswersAtOnceAndRunsOn) {
  auto& ch = connect();
  const std::string mark = dir_ + "/bg";
  auto o = sh(ch, "echo noise; sleep 0.5; echo ran > " + mark + "; exec sleep 303", false, true);
  EXPECT_EQ(o.exit_code, -1);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.error, "");
  EXPECT_TRUE(slurp(mark).empty()) << "the answer came after the program's work";
  ASSERT_TRUE(file_appears(mark, 30s));
  auto p = find(ch, "sleep 303");
  ASSERT_GT(p.pid, 0);
  ASSERT_FALSE(ch.signal(p.pid, SIGTERM, in(5s)));
  EXPECT_TRUE(gone(ch, "sleep 303"));
  // The channel is in step: a normal exec works.
  std::string out;
  EXPECT_EQ(sh(ch, "echo after", false, false, &out).exit_code, 0);
  EXPECT_EQ(out, "after\n");
}

TEST_F(SandboxProcesses, SignalOnlyReachesSandboxProcesses) {
  auto& ch = connect();
  auto self = ch.signal(::getpid(), SIGTERM, in(5s));  // the agent (this test process)
  EXPECT_EQ(self.guest_code, ErrorCode::BAD_REQUEST) << self.message;
  auto init = ch.signal(1, SIGTERM, in(5s));  // not started by the agent
  EXPECT_EQ(init.guest_code, ErrorCode::BAD_REQUEST) << init.message;
  auto kthread = ch.signal(2, SIGKILL, in(5s));
  EXPECT_EQ(kthread.guest_code, ErrorCode::BAD_REQUEST) << kthread.message;
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  int st = 0;
  ::waitpid(dead, &st, 0);
  auto missing = ch.signal(dead, SIGTERM, in(5s));
  EXPECT_EQ(missing.guest_code, ErrorCode::NOT_FOUND) << missing.message;
  EXPECT_EQ(ch.signal(dead, 0, in(5s)).code, ChannelErrc::bad_argument);
  EXPECT_EQ(ch.signal(dead, 65, in(5s)).code, ChannelErrc::bad_argument);
  auto ps = ch.processes(in(5s));
  ASSERT_TRUE(ps.ok());
  for (const auto& p : *ps) EXPECT_NE(p.pid, ::getpid()) << "the agent lists itself";
}

// ---- code contexts -------------------------------------------------------------------------

class SandboxContexts : public AgentOnSocketpair {
 protected:
  struct Cell {
    ExecOutcome o;
    std::string out, err;
  };
  Cell run(GuestChannel& ch, schema::Language lang, const std::string& ctx, const std::string& code,
           uint32_t timeout_ms = 20000, const std::string& stdin = "") {
    ExecSpec spec;
    spec.language = lang;
    spec.code = code;
    spec.context = ctx;
    spec.timeout_ms = timeout_ms;
    spec.stdin_data = stdin;
    Cell c;
    auto r = ch.exec(
        spec,
        [&](schema::Stream s, std::string_view d) {
          (s == schema::Stream::STDOUT ? c.out : c.err).append(d);
        },
        in(60s));
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (r.ok()) c.o = r.value();
    return c;
  }
  Cell py(GuestChannel& ch, const std::string& code, uint32_t timeout_ms = 20000,
          const std::string& stdin = "") {
    return run(ch, schema::Language::PYTHON, "nb", code, timeout_ms, stdin);
  }
};

TEST_F(SandboxContexts, PythonVariablesAndImportsSurvive) {
  auto& ch = connect();
  auto a = py(ch, "x = 41\nimport math\nprint('set')");
  EXPECT_EQ(a.o.exit_code, 0) << a.err << a.o.error;
  EXPECT_EQ(a.out, "set\n");
  auto b = py(ch, "print(x + 1, math.floor(math.pi))");
  EXPECT_EQ(b.o.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, "42 3\n");
  // The program's stdout cannot fake the end of a cell: the status travels on its own pipe.
  auto c = py(ch,
              "import sys, os\nsys.stdout.write('\\x00\\x00\\x00\\x00')\n"
              "os.write(1, bytes(range(256)))\nprint('end')");
  EXPECT_EQ(c.o.exit_code, 0) << c.err;
  std::string want("\0\0\0\0", 4);
  for (int i = 0; i < 256; ++i) want += static_cast<char>(i);
  EXPECT_TRUE(c.out == want + "end\n") << c.out.size();
  auto d = py(ch, "print(input()[::-1])", 20000, "olleh\n");
  EXPECT_EQ(d.out, "hello\n") << d.err;
  auto e = py(ch, "import sys\nsys.exit(3)");
  EXPECT_EQ(e.o.exit_code, 3);
  EXPECT_EQ(py(ch, "print(x)").out, "41\n") << "sys.exit ends the cell, not the context";
  auto slow = py(ch, "import time\ntime.sleep(0.2)");
  EXPECT_GE(slow.o.duration_ms, 190) << "the agent measures the cell";
  // The interpreter is listed with its context.
  auto ps = ch.processes(in(5s));
  ASSERT_TRUE(ps.ok());
  bool listed = false;
  for (const auto& p : *ps) listed = listed || p.context == "nb";
  EXPECT_TRUE(listed);
}

TEST_F(SandboxContexts, AnExceptionKeepsTheContext) {
  auto& ch = connect();
  py(ch, "y = 'kept'");
  auto bad = py(ch, "def f():\n    return 1 / 0\nf()");
  EXPECT_EQ(bad.o.exit_code, 1);
  EXPECT_NE(bad.err.find("ZeroDivisionError"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("<cell>"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.err.find("_nv_driver"), std::string::npos) << "the driver's frame shows";
  auto syntax = py(ch, "def (:");
  EXPECT_EQ(syntax.o.exit_code, 1);
  EXPECT_NE(syntax.err.find("SyntaxError"), std::string::npos) << syntax.err;
  EXPECT_EQ(py(ch, "print(y)").out, "kept\n");
}

TEST_F(SandboxContexts, TimeoutAndResetGiveAFreshInterpreter) {
  auto& ch = connect();
  py(ch, "z = 1\nimport os\nprint(os.getpid())");
  auto t = py(ch, "import time\nprint('before', flush=True)\ntime.sleep(60)", 800);
  EXPECT_TRUE(t.o.timed_out);
  EXPECT_EQ(t.o.exit_code, -1);
  EXPECT_EQ(t.out, "before\n");
  auto fresh = py(ch, "print('z' in globals())");
  EXPECT_EQ(fresh.out, "False\n") << fresh.err;
  py(ch, "w = 2");
  ASSERT_FALSE(ch.reset_context("nb", schema::Language::PYTHON, in(5s)));
  EXPECT_EQ(py(ch, "print('w' in globals())").out, "False\n");
  EXPECT_FALSE(ch.reset_context("never-made", schema::Language::PYTHON, in(5s)));
  EXPECT_EQ(ch.reset_context("bad name!", schema::Language::PYTHON, in(5s)).guest_code,
            ErrorCode::BAD_REQUEST);
  // An interpreter that exits ends its context; the next cell starts a new one.
  auto quit = py(ch, "import os\nos._exit(7)");
  EXPECT_EQ(quit.o.exit_code, 7);
  EXPECT_EQ(py(ch, "print(1)").out, "1\n");
}

TEST_F(SandboxContexts, OutputBetweenCellsWaitsForTheNextCell) {
  auto& ch = connect();
  const std::string mark = dir_ + "/written";
  // A thread writes 300 KB after its cell ended (more than a default 64 KiB pipe holds), then
  // leaves a mark: it must not block until the next cell.
  auto a = py(ch,
              "import threading, sys, time\n"
              "def w():\n"
              "    time.sleep(0.1)\n"
              "    sys.stdout.write('x' * 300000)\n"
              "    sys.stdout.flush()\n"
              "    open('" +
                  mark +
                  "', 'w').write('done')\n"
                  "threading.Thread(target=w).start()\n");
  ASSERT_EQ(a.o.exit_code, 0) << a.err;
  bool written = false;
  for (int i = 0; i < 400 && !written; ++i) {
    written = !slurp(mark).empty();
    if (!written) std::this_thread::sleep_for(25ms);  // polling a file the thread writes
  }
  EXPECT_TRUE(written) << "the thread blocked on its output between cells";
  auto b = py(ch, "print('next')");
  EXPECT_EQ(b.out, std::string(300000, 'x') + "next\n") << b.out.size();
}

TEST_F(SandboxContexts, StartUpIsNotChargedToTheFirstCellsTimeout) {
  auto& ch = connect();
  // An interpreter that takes 1.5 s to start (sitecustomize runs at python's start-up, as
  // node's cold start under TCG takes seconds); the first cell's timeout is 800 ms.
  { std::ofstream(dir_ + "/sitecustomize.py") << "import time\ntime.sleep(1.5)\n"; }
  ExecSpec spec;
  spec.language = schema::Language::PYTHON;
  spec.code = "print('up')";
  spec.context = "slow-start";
  spec.timeout_ms = 800;
  spec.env = {{"PYTHONPATH", dir_}};
  std::string out;
  auto r = ch.exec(
      spec, [&](schema::Stream, std::string_view d) { out.append(d); }, in(30s));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(out, "up\n");
  // The cell's own time still counts.
  spec.code = "import time\ntime.sleep(5)";
  r = ch.exec(spec, nullptr, in(30s));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
}

TEST_F(SandboxContexts, NodeContextKeepsDeclarationsAndAwaitsPromises) {
  if (::access("/usr/bin/node", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/node on this host";
  auto& ch = connect();
  auto js = [&](const std::string& code) {
    return run(ch, schema::Language::JAVASCRIPT, "js", code);
  };
  auto a = js("var a = 20; let b = 1; const os = require('os'); function f() { return 'F'; }");
  EXPECT_EQ(a.o.exit_code, 0) << a.err << a.o.error;
  auto b = js("console.log(a + b + 1, typeof os.cpus, f())");
  EXPECT_EQ(b.out, "22 function F\n") << b.err;
  auto c = js("throw new Error('boom')");
  EXPECT_EQ(c.o.exit_code, 1);
  EXPECT_NE(c.err.find("boom"), std::string::npos) << c.err;
  auto d = js("new Promise((r) => setTimeout(() => { console.log('later', a); r(); }, 50))");
  EXPECT_EQ(d.out, "later 20\n") << d.err;
  EXPECT_EQ(d.o.exit_code, 0);
  // Another language under the same name is refused; the context is untouched.
  auto mixed = run(ch, schema::Language::PYTHON, "js", "print(1)");
  EXPECT_NE(mixed.o.error, "");
  EXPECT_EQ(js("console.log(a)").out, "20\n");
}

TEST_F(SandboxContexts, PrintRoundTripInALiveContext) {
  auto& ch = connect();
  py(ch, "pass");  // started
  std::vector<double> ms;
  for (int i = 0; i < 30; ++i) {
    auto t0 = Clock::now();
    auto c = py(ch, "print(1)");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    ASSERT_EQ(c.out, "1\n");
  }
  std::sort(ms.begin(), ms.end());
  // A figure for the report, not a pass/fail line (speed goals live in nv-bench).
  RecordProperty("print1_p50_ms", std::to_string(ms[ms.size() / 2]));
  std::printf("print(1) in a live python context over the socketpair: p50 %.2f ms, max %.2f ms\n",
              ms[ms.size() / 2], ms.back());
}

}  // namespace
}  // namespace nv::guest
