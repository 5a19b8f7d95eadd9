// exec_io_test — program output as the model and the clients see it, in real microVMs (issue 10
// §3–§6): head + tail of long output and the tool message made of them, ill-formed UTF-8 through
// nv-exec --json, the caller's environment in python, node and bash, and Ctrl-C / SIGTERM on
// nv-exec and nv-submit (exit 130/143, one line, the VM released and the model call hung up).
//
// One stack for the binary: nv-orchestrator (with the agent loop), nv-vm-pool-manager (small
// tier, --warm 2 --max 3), nv-sandbox-executor, nv-llm-gateway and tests/fixtures/fake_llm.py,
// all children in a temp NV_RUNTIME_DIR. Skips, saying why, without binaries or guest image.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>

#include "common/interrupt.h"
#include "orchestrator/tool_output.h"
#include "support/process.h"
#include "vm/exec_harness.h"

namespace {

using namespace std::chrono_literals;
using nv::schema::Language;
using nv::test::Process;
using nv::test::exec::ExecOptions;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// The fake model: turn 0 stalls (a model call held open until the caller hangs up); the
// conversation whose first user message asks for "sleep" gets a tool call that sleeps instead.
const char* kScript = R"({
  "turns": [
    {"say": "thinking hard", "stall": {"seconds": 120}}
  ]
})";

class ExecIo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    std::string kernel = build + "/guest/vmlinux", rootfs = build + "/guest/rootfs.ext4";
    for (auto name : {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor", "nv-exec",
                      "nv-llm-gateway", "nv-submit"}) {
      if (!exists(nv::test::bin(name))) {
        skip_ = std::string(name) + " is not built";
        return;
      }
    }
    if (!exists(kernel) || !exists(rootfs)) {
      skip_ = "guest image missing (" + kernel + ", " + rootfs + "): run guest/build.sh";
      return;
    }
    rt_ = std::make_unique<nv::test::TempDir>("nv-exec-io-test");
    env_ = {{"NV_RUNTIME_DIR", rt_->path()}, {"NV_LOG_LEVEL", "info"}};
    procs_.push_back(std::make_unique<Process>(Process::start(nv::test::service_process(
        "/usr/bin/python3", {nv::test::source_dir() + "/tests/fixtures/fake_llm.py", "--port-file",
                             rt_->file("llm.port"), "--record", rt_->file("requests.jsonl"),
                             "--quiet", "--script-json", kScript}))));
    if (!nv::test::wait_until([&] { return rt_->has("llm.port"); }, 20s)) {
      setup_error_ = "fake_llm.py did not start: " + procs_.back()->stderr_text();
      return;
    }
    int port = 0;
    std::ifstream(rt_->file("llm.port")) >> port;
    auto start = [&](const std::string& bin, std::vector<std::string> args) {
      procs_.push_back(std::make_unique<Process>(
          Process::start(nv::test::service_process(nv::test::bin(bin), std::move(args), env_))));
    };
    start("nv-orchestrator", {});
    start("nv-vm-pool-manager",
          {"--kernel", kernel, "--rootfs", rootfs, "--size", "small", "--warm", "2", "--max", "3",
           "--accel", "tcg", "--no-require-egress"});  // this stack runs no sentinel
    start("nv-sandbox-executor", {});
    start("nv-llm-gateway", {"--llm-api", "ollama", "--model", "fake-model", "--llm-url",
                             "http://127.0.0.1:" + std::to_string(port)});
    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("clients.sock")), {}, {}, {}});
    // Generous: the pool's template boots under TCG on a loaded machine first.
    bool ready = nv::test::exec::wait_exec_capacity(*client_, 300s);
    if (!ready) setup_error_ = "the executor never registered with capacity > 0\n" + logs();
  }

  static void TearDownTestSuite() {
    client_.reset();
    zmq_.reset();
    for (auto it = procs_.rbegin(); it != procs_.rend(); ++it) (*it)->terminate(20s);
    procs_.clear();
    rt_.reset();
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  static std::string logs() {
    std::string s;
    for (auto& p : procs_)
      s += "\n--- " + p->command_line().substr(0, 80) + "\n" + p->stderr_text().substr(0, 6000);
    return s;
  }

  nv::test::RunResult nv_exec(std::vector<std::string> args) {
    args.insert(args.begin(), {"--timeout", "90"});
    return nv::test::run({.binary = nv::test::bin("nv-exec"), .args = std::move(args), .env = env_},
                         200s);
  }

  bool vm_released(const std::string& id, std::chrono::milliseconds within) {
    return nv::test::wait_until(
        [&] {
          auto ids = nv::test::exec::released_vms(*client_);
          return std::find(ids.begin(), ids.end(), id) != ids.end();
        },
        within, 50ms);
  }

  static inline std::string skip_, setup_error_;
  static inline std::map<std::string, std::string> env_;
  static inline std::unique_ptr<nv::test::TempDir> rt_;
  static inline std::vector<std::unique_ptr<Process>> procs_;
  static inline std::unique_ptr<zmq::context_t> zmq_;
  static inline std::unique_ptr<nv::Client> client_;
};

// ------------------------------------------------------------------ §3 head and tail

// 1.4 MB of progress lines, the result, then a traceback: the result and the traceback reach
// the caller (tails) and the model's tool message (status first, marker with the bytes left out).
TEST_F(ExecIo, LongOutputKeepsItsEndAndTheToolMessageShowsIt) {
  const std::string code =
      "import sys\n"
      "for i in range(20000):\n"
      "    print('progress %06d of 020000 ' % i + '.' * 43)\n"  // 70 bytes a line
      "print('FINAL_SUM=%d' % sum(range(1000)))\n"
      "raise ValueError('boom')\n";
  ExecOptions o;
  o.timeout_ms = 120000;
  o.deadline = 200s;
  auto r = nv::test::exec::run_exec(*client_, Language::PYTHON, code, o);
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.out_bytes, 20000u * 70 + 17);
  EXPECT_EQ(r.out.size(), 1u << 20);  // the executor's default head
  EXPECT_EQ(r.out.substr(0, 70), "progress 000000 of 020000 " + std::string(43, '.') + "\n");
  ASSERT_EQ(r.out_tail.size(), 64u * 1024);
  EXPECT_EQ(r.out_tail.substr(r.out_tail.size() - 87),
            "progress 019999 of 020000 " + std::string(43, '.') + "\nFINAL_SUM=499500\n");
  // The traceback came after the head was used up: all of it is in the stderr tail.
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.err_tail,
            "Traceback (most recent call last):\n  File \"<string>\", line 5, in <module>\n"
            "ValueError: boom\n");
  // The model's view, at the default budget.
  std::string text =
      nv::agent::render_tool_output(r.result->getRoot<nv::schema::ExecResult>().asReader());
  EXPECT_EQ(text.substr(0, 60), "exit status: 1\nstdout (1400017 bytes):\nprogress 000000 of 02");
  const std::string end = "progress 019999 of 020000 " + std::string(43, '.') +
                          "\nFINAL_SUM=499500\nstderr (" + std::to_string(r.err_tail.size()) +
                          " bytes):\n" + r.err_tail;
  ASSERT_GE(text.size(), end.size());
  EXPECT_EQ(text.substr(text.size() - end.size()), end);
  auto m = text.find("[… ");
  ASSERT_NE(m, std::string::npos) << text.substr(0, 2000);
  // The marker's count is what is not shown: whole 70-byte lines here.
  uint64_t left_out = std::stoull(text.substr(m + 4));
  EXPECT_EQ(left_out % 70, 0u) << left_out;
  size_t shown_lines = 0;
  for (size_t p = text.find("progress "); p != std::string::npos; p = text.find("progress ", p + 1))
    ++shown_lines;
  EXPECT_EQ(left_out, (20000 - shown_lines) * 70);
  EXPECT_LE(text.size(), nv::agent::kDefaultToolOutputChars + 400);
}

// A second input of the kind: bash, another size, another exit status.
TEST_F(ExecIo, BashLongOutputAndErrorMessage) {
  ExecOptions o;
  o.timeout_ms = 120000;
  o.output_cap = 4096;
  auto r = nv::test::exec::run_exec(*client_, Language::BASH,
                                    "seq 1 300000; echo 'fatal: disk full' >&2; exit 3", o);
  ASSERT_TRUE(r.ok) << r.describe() << logs();
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out.size(), 4096u);
  EXPECT_EQ(r.out_tail.substr(r.out_tail.size() - 14), "299999\n300000\n");
  EXPECT_EQ(r.err_tail, "fatal: disk full\n");
  std::string text = nv::agent::render_tool_output(
      r.result->getRoot<nv::schema::ExecResult>().asReader(), {.max_chars = 200});
  EXPECT_EQ(text.substr(0, 40), "exit status: 3\nstdout (1988895 bytes):\n1");
  const std::string end = "299999\n300000\nstderr (17 bytes):\nfatal: disk full\n";
  ASSERT_GE(text.size(), end.size());
  EXPECT_EQ(text.substr(text.size() - end.size()), end);
}

// ------------------------------------------------------------------ §4 bytes are not text

struct Utf8Case {
  std::string bytes_literal;  // a Python bytes literal body
  std::string expected;       // what nv-exec --json gives as "stdout"
};

TEST_F(ExecIo, NvExecJsonGivesValidUtf8WithReplacements) {
  const std::string R = "\xEF\xBF\xBD";
  const Utf8Case cases[] = {
      {"A\\xff\\xfeB\\xc3\\n", "A" + R + R + "B" + R + "\n"},
      {"S\\xed\\xa0\\x80E\\n", "S" + R + R + R + "E\n"},
      {"O\\xe0\\x80\\xafK\\n", "O" + R + R + R + "K\n"},
      {"F\\xf5\\x80\\x80\\x80G\\n", "F" + R + R + R + R + "G\n"},
      {"ok \\xe2\\x9c\\x93\\n", "ok \xe2\x9c\x93\n"},
  };
  // All five in one VM: one line of output per case, split again below.
  std::string code = "import sys\n";
  for (auto& c : cases) code += "sys.stdout.buffer.write(b'" + c.bytes_literal + "')\n";
  auto r = nv_exec({"--json", "python", "-c", code});
  ASSERT_TRUE(r.status.clean()) << r.status.describe() << r.out << r.err << logs();
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.out;
  std::string expected;
  for (auto& c : cases) expected += c.expected;
  EXPECT_EQ(std::string(d["stdout"].GetString(), d["stdout"].GetStringLength()), expected);
  // Raw mode stays byte-exact.
  auto raw = nv_exec({"python", "-c", code});
  EXPECT_EQ(raw.out,
            "A\xff\xfe"
            "B\xc3\nS\xed\xa0\x80"
            "E\nO\xe0\x80\xaf"
            "K\nF\xf5\x80\x80\x80"
            "G\nok \xe2\x9c\x93\n");
}

// Second inputs of the kinds, from bash's printf, on stderr this time.
TEST_F(ExecIo, NvExecJsonStderrSecondInputs) {
  const std::string R = "\xEF\xBF\xBD";
  auto r =
      nv_exec({"--json", "bash", "-c",
               "printf '\\x80x\\xc0\\xafa\\xed\\xbf\\xbfb\\xf4\\x90\\x80\\x80!\\xf0\\x9f\\x98X' "
               ">&2"});
  ASSERT_TRUE(r.status.clean()) << r.status.describe() << r.out << r.err << logs();
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.out;
  EXPECT_EQ(std::string(d["stderr"].GetString(), d["stderr"].GetStringLength()),
            R + "x" + R + R + "a" + R + R + R + "b" + R + R + R + R + "!" + R + "X");
}

// ------------------------------------------------------------------ §5 the caller's environment

TEST_F(ExecIo, CallersEnvironmentWinsInPythonNodeAndBash) {
  const std::vector<std::string> env = {"--env",  "HOME=/tmp/home", "--env",
                                        "TZ=UTC", "--env",          "GREETING=a=b c"};
  auto with = [&](std::vector<std::string> rest) {
    std::vector<std::string> args = env;
    args.insert(args.end(), rest.begin(), rest.end());
    return nv_exec(args);
  };
  auto py = with({"python", "-c",
                  "import os; print('|'.join([os.environ['HOME'], os.path.expanduser('~'), "
                  "os.environ['TZ'], os.environ['GREETING']]))"});
  EXPECT_EQ(py.out, "/tmp/home|/tmp/home|UTC|a=b c\n") << py.err << logs();
  auto js = with({"node", "-e",
                  "const os = require('os'); console.log([process.env.HOME, os.homedir(), "
                  "process.env.TZ, process.env.GREETING].join('|'))"});
  EXPECT_EQ(js.out, "/tmp/home|/tmp/home|UTC|a=b c\n") << js.err;
  auto sh = with({"bash", "-c", "echo \"$HOME|$(echo ~)|$TZ|$GREETING\""});
  EXPECT_EQ(sh.out, "/tmp/home|/tmp/home|UTC|a=b c\n") << sh.err;
}

// A second input: other defaults (LANG, PATH) overridden; each name appears once.
TEST_F(ExecIo, OverriddenDefaultsAppearOnce) {
  auto r = nv_exec({"--env", "LANG=C", "--env", "PATH=/usr/bin:/bin", "bash", "-c",
                    "env | grep -c '^LANG='; env | grep -c '^PATH='; env | grep -c '^HOME='; "
                    "echo $LANG $PATH"});
  EXPECT_EQ(r.out, "1\n1\n1\nC /usr/bin:/bin\n") << r.err;
}

// ------------------------------------------------------------------ §6 Ctrl-C

// Runs nv-exec on a program that sleeps, signals it once the program runs, and checks the exit
// status, the one line, and that the VM is released within 2 s of the signal.
void interrupt_nv_exec(
    ExecIo& t, int sig, int want_status, const std::string& want_line,
    const std::map<std::string, std::string>& env,
    const std::function<bool(const std::string&, std::chrono::milliseconds)>& released) {
  Process p = Process::start({.binary = nv::test::bin("nv-exec"),
                              .args = {"--verbose", "--timeout", "120", "python", "-c",
                                       "import time\nprint('ready', flush=True)\ntime.sleep(100)"},
                              .env = env});
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return p.stdout_text().find("ready") != std::string::npos; }, 150s, 20ms))
      << p.stderr_text();
  std::string err = p.stderr_text();
  auto at = err.find("started vm=");
  ASSERT_NE(at, std::string::npos) << err;
  std::string vm = err.substr(at + 11, err.find('\n', at) - at - 11);
  p.signal(sig);
  auto st = p.wait(10s);
  ASSERT_TRUE(st.has_value()) << "nv-exec did not exit after the signal";
  EXPECT_TRUE(st->exited() && st->code == want_status) << st->describe() << p.stderr_text();
  EXPECT_NE(p.stderr_text().find(want_line), std::string::npos) << p.stderr_text();
  EXPECT_EQ(p.stderr_text().find("terminate called"), std::string::npos) << p.stderr_text();
  EXPECT_TRUE(released(vm, 2s)) << "VM " << vm << " not released within 2 s";
  (void)t;
}

TEST_F(ExecIo, CtrlCOnNvExecCancelsAndReleasesTheVm) {
  interrupt_nv_exec(*this, SIGINT, 130, "nv-exec: SIGINT: the execution was cancelled", env_,
                    [&](const std::string& id, auto within) { return vm_released(id, within); });
}

TEST_F(ExecIo, SigtermOnNvExecExits143) {
  interrupt_nv_exec(*this, SIGTERM, 143, "nv-exec: SIGTERM: the execution was cancelled", env_,
                    [&](const std::string& id, auto within) { return vm_released(id, within); });
}

// nv-submit while the model call is held open: the fake model sees the hang-up.
TEST_F(ExecIo, CtrlCOnNvSubmitHangsUpTheModelCall) {
  auto hangups = [&] {
    std::ifstream in(rt_->file("requests.jsonl"));
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find("\"/_hangup\"") != line.npos;
    return n;
  };
  auto requests = [&] {
    std::ifstream in(rt_->file("requests.jsonl"));
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find("/api/chat") != line.npos;
    return n;
  };
  const size_t before = hangups(), asked = requests();
  for (int sig : {SIGINT, SIGTERM}) {
    const size_t seen = hangups(), calls = requests();
    Process p = Process::start({.binary = nv::test::bin("nv-submit"),
                                .args = {"--timeout", "120", "say something"},
                                .env = env_});
    ASSERT_TRUE(nv::test::wait_until([&] { return requests() > calls; }, 30s, 20ms))
        << p.stdout_text() << p.stderr_text();
    p.signal(sig);
    auto st = p.wait(10s);
    ASSERT_TRUE(st.has_value()) << "nv-submit did not exit after the signal";
    EXPECT_TRUE(st->exited() && st->code == 128 + sig) << st->describe() << p.stderr_text();
    EXPECT_NE(p.stderr_text().find("nv-submit: " + nv::interrupt::signal_name(sig) +
                                   ": the task was cancelled"),
              std::string::npos)
        << p.stderr_text();
    EXPECT_TRUE(nv::test::wait_until([&] { return hangups() > seen; }, 2s, 20ms))
        << "the fake model saw no hang-up within 2 s of " << nv::interrupt::signal_name(sig);
  }
  EXPECT_GE(hangups(), before + 2);
  EXPECT_GE(requests(), asked + 2);
}

}  // namespace
