// Seccomp proof for the running nv-llm-gateway (the real binary, not the library in a fork):
//
//   1. after start-up the gateway has a filter (/proc/PID/status "Seccomp: 2") and still does its
//      job under it: a chat over the bus reaches the scripted model server over HTTP (libcurl,
//      RapidJSON, logging, a handler thread) and the answer comes back;
//   2. a syscall outside its allow-list kills it with SIGSYS. The syscall is made by the gateway
//      itself: the test stops its main thread at its next syscall with ptrace and swaps the
//      syscall number for getppid (harmless, and in no NeuroVisor profile). Since Linux 4.8 the
//      kernel runs seccomp after the tracer, on the swapped number, so this is the filter's
//      verdict on the gateway's own thread;
//   3. the control: the same injection into a gateway started with --no-seccomp leaves it alive
//      and serving (the test restores the original syscall), so (2) cannot pass by accident.
#include <gtest/gtest.h>
#include <nv/schema/llm.capnp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/client.h"
#include "common/frames.h"
#include "support/process.h"

namespace {

namespace s = nv::schema;
using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::TempDir;

using nv::test::source_dir;

zmq::context_t& test_zmq() {
  static zmq::context_t ctx(1);
  return ctx;
}

using nv::test::service_process;

// "Seccomp:" of /proc/PID/status: 0 none, 1 strict, 2 filter; -1 unreadable.
int seccomp_mode(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Seccomp:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// The scripted model, an orchestrator (broker) and the gateway under test.
class GatewayStack {
 public:
  explicit GatewayStack(std::vector<std::string> gateway_args) {
    fake_.emplace(Process::start(service_process(
        "/usr/bin/python3",
        {source_dir() + "/tests/fixtures/fake_llm.py", "--port-file", rt_.file("llm.port"),
         "--quiet", "--script-json", R"js({"turns": [{"say": "under the filter"}]})js"})));
    if (!nv::test::wait_until([&] { return rt_.has("llm.port"); }, 20s)) {
      throw std::runtime_error("fake_llm.py did not start: " + fake_->stderr_text());
    }
    int port = 0;
    std::ifstream(rt_.file("llm.port")) >> port;
    std::map<std::string, std::string> env = {{"NV_RUNTIME_DIR", rt_.path()},
                                              {"NV_HEARTBEAT_MS", "250"}};
    orch_.emplace(
        Process::start(service_process(nv::test::bin("nv-orchestrator"), {"--no-agent"}, env)));
    if (!nv::test::wait_until([&] { return rt_.has("clients.sock"); }, 20s)) {
      throw std::runtime_error("nv-orchestrator did not start: " + orch_->stderr_text());
    }
    std::vector<std::string> args = {"--llm-url",     "http://127.0.0.1:" + std::to_string(port),
                                     "--model",       "fake-model",
                                     "--llm-timeout", "10"};
    args.insert(args.end(), gateway_args.begin(), gateway_args.end());
    auto gopts = service_process(nv::test::bin("nv-llm-gateway"), args, env);
    gopts.working_dir = rt_.path();  // a core file of the SIGSYS kill lands in the temp dir
    gw_.emplace(Process::start(gopts));
    // Ready = registered with the broker; the filter goes on just before it serves.
    if (!nv::test::wait_until(
            [&] { return gw_->stderr_text().find("llm gateway ready") != std::string::npos; },
            20s) ||
        !nv::test::wait_until([&] { return chat_ok(); }, 20s, 200ms)) {
      throw std::runtime_error("the gateway did not come up:\n" + logs());
    }
  }
  ~GatewayStack() {
    if (gw_) gw_->terminate(5s);
    if (orch_) orch_->terminate(5s);
  }

  Process& gateway() { return *gw_; }
  std::string logs() {
    return "gateway:\n" + gw_->stderr_text() + "\norchestrator:\n" + orch_->stderr_text();
  }

  // One chat through the broker; true when the model's scripted answer came back.
  bool chat_ok(std::string* error = nullptr) {
    nv::Client c(test_zmq(), {nv::bus::ipc_endpoint(rt_.file("clients.sock")), {}, {}, {}});
    capnp::MallocMessageBuilder mb;
    auto r = nv::bus::init_body<s::ChatRequest>(mb);
    auto m = r.initMessages(1);
    m[0].setRole(s::Role::USER);
    m[0].setContent("hello");
    auto res = c.call("llm", &mb, 5000ms);
    if (!res) {
      if (error) *error = res.error().to_string();
      return false;
    }
    auto reply = res->body.root<s::ChatReply>();
    return reply && std::string(reply->getMessage().getContent().cStr()) == "under the filter";
  }

 private:
  TempDir rt_{"nv-gw-seccomp"};
  std::optional<Process> fake_, orch_, gw_;
};

// How the injection went.
struct Injection {
  std::string error;  // set when ptrace itself failed (nothing was injected)
  int errnum = 0;     // its errno
  bool died = false;  // the process died while (or right after) running the syscall
  int signal = 0;     // what killed it
};

// Waits for the next event of traced `pid` without reaping a death (the Process object reaps).
// Returns 0 and the wait status for a stop, 1 when the process died (signal in *sig).
int next_event(pid_t pid, int* status, int* sig) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WSTOPPED | WNOWAIT | __WALL) != 0) {
    return -1;
  }
  if (info.si_code == CLD_TRAPPED || info.si_code == CLD_STOPPED) {
    if (waitpid(pid, status, __WALL) != pid) return -1;  // consumes the stop only
    return 0;
  }
  *sig = info.si_code == CLD_EXITED ? 0 : info.si_status;
  return 1;
}

// Makes thread `pid` (the gateway's main thread) run syscall `nr` in place of the next syscall
// it enters. If it survives, the original syscall is restarted with its own arguments at the
// exit stop and the thread is released.
Injection inject_syscall(pid_t pid, long nr) {
  Injection out;
  auto fail = [&](const std::string& what) {
    out.errnum = errno;
    out.error = what + ": " + std::strerror(errno);
    return out;
  };
  if (ptrace(PTRACE_SEIZE, pid, nullptr, PTRACE_O_TRACESYSGOOD) != 0) return fail("PTRACE_SEIZE");
  if (ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) != 0) return fail("PTRACE_INTERRUPT");
  int status = 0, sig = 0;
  user_regs_struct saved{};
  bool injected = false;
  for (int events = 0; events < 1000; ++events) {
    int e = next_event(pid, &status, &sig);
    if (e < 0) return fail("waitid");
    if (e == 1) {
      out.died = true;
      out.signal = sig;
      return out;
    }
    int stop = WSTOPSIG(status);
    int resume_sig = 0;
    if (stop == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info si{};
      if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof si, &si) <= 0) {
        return fail("PTRACE_GET_SYSCALL_INFO");
      }
      if (!injected && si.op == PTRACE_SYSCALL_INFO_ENTRY) {
        if (ptrace(PTRACE_GETREGS, pid, nullptr, &saved) != 0) return fail("PTRACE_GETREGS");
        user_regs_struct regs = saved;
        regs.orig_rax = static_cast<unsigned long long>(nr);
        if (ptrace(PTRACE_SETREGS, pid, nullptr, &regs) != 0) return fail("PTRACE_SETREGS");
        injected = true;
      } else if (injected && si.op == PTRACE_SYSCALL_INFO_EXIT) {
        // The exit stop comes even for a syscall seccomp refused (its SIGSYS is delivered on
        // the way back to user space), so it proves nothing yet. Set the thread up to re-run
        // the syscall it meant to make (back over the 2-byte `syscall`), let it go, and see
        // whether it is still alive a moment later.
        user_regs_struct regs = saved;
        regs.rax = saved.orig_rax;
        regs.rip -= 2;
        if (ptrace(PTRACE_SETREGS, pid, nullptr, &regs) != 0) return fail("PTRACE_SETREGS");
        if (ptrace(PTRACE_DETACH, pid, nullptr, nullptr) != 0) return fail("PTRACE_DETACH");
        for (int i = 0; i < 40; ++i) {  // 2 s
          siginfo_t info{};
          if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
            return fail("waitid");
          }
          if (info.si_pid == pid) {
            out.died = true;
            out.signal = info.si_code == CLD_EXITED ? 0 : info.si_status;
            return out;
          }
          usleep(50'000);
        }
        return out;
      }
    } else if ((status >> 16) == 0) {
      resume_sig = stop;  // a signal for the gateway: deliver it
    }
    if (ptrace(PTRACE_SYSCALL, pid, nullptr, resume_sig) != 0) return fail("PTRACE_SYSCALL");
  }
  errno = ETIMEDOUT;
  return fail("no syscall stop");
}

class LlmGatewaySeccomp : public ::testing::Test {
 protected:
  void SetUp() override {
#if !defined(__x86_64__)
    GTEST_SKIP() << "the syscall injection is written for x86_64 registers";
#endif
    setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);  // run by hand: this build's binaries
    for (auto b : {"nv-orchestrator", "nv-llm-gateway"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " is not built (set NV_BIN_DIR)";
      }
    }
  }
};

TEST_F(LlmGatewaySeccomp, FilterIsInstalledAndAForbiddenSyscallKillsTheGateway) {
  GatewayStack stack({});
  pid_t pid = stack.gateway().pid();
  EXPECT_EQ(seccomp_mode(pid), 2) << stack.logs();
  EXPECT_NE(stack.gateway().stderr_text().find("seccomp allow-list installed"), std::string::npos)
      << stack.logs();
  // Real work under the filter: HTTP to the model and back, twice (a reused connection too).
  std::string error;
  EXPECT_TRUE(stack.chat_ok(&error)) << error << stack.logs();
  EXPECT_TRUE(stack.chat_ok(&error)) << error << stack.logs();
  ASSERT_TRUE(stack.gateway().running()) << stack.logs();

  Injection inj = inject_syscall(pid, SYS_getppid);
  if (!inj.error.empty() && !inj.died) {
    if (inj.errnum == EPERM) GTEST_SKIP() << "ptrace refused here: " << inj.error;
    FAIL() << inj.error;
  }
  EXPECT_TRUE(inj.died) << "the gateway ran getppid and lived: no enforcing filter";
  auto exit = stack.gateway().wait(5s);
  ASSERT_TRUE(exit.has_value()) << "the gateway is still running";
  EXPECT_EQ(exit->signal, SIGSYS) << exit->describe() << "\n" << stack.logs();
}

// The control: the same test against a gateway without its filter must see it survive.
TEST_F(LlmGatewaySeccomp, WithoutTheFilterTheSameInjectionIsHarmless) {
  GatewayStack stack({"--no-seccomp"});
  pid_t pid = stack.gateway().pid();
  EXPECT_EQ(seccomp_mode(pid), 0) << stack.logs();
  Injection inj = inject_syscall(pid, SYS_getppid);
  if (!inj.error.empty() && !inj.died) {
    if (inj.errnum == EPERM) GTEST_SKIP() << "ptrace refused here: " << inj.error;
    FAIL() << inj.error;
  }
  EXPECT_FALSE(inj.died) << "killed by signal " << inj.signal;
  std::string error;
  EXPECT_TRUE(stack.chat_ok(&error)) << error << stack.logs();
  EXPECT_TRUE(stack.gateway().running());
}

}  // namespace
