// Seccomp proof: a process that installed a NeuroVisor profile is killed (SIGSYS) by a syscall
// outside its allow-list, and keeps working for those inside it.
#include <gtest/gtest.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "seccomp_policy.h"

namespace sc = nv::seccomp;

namespace {

// Runs `body` in a forked child after installing `profile`; returns the wait status.
// Exit codes: 0 body returned normally, 3 install failed.
int run_confined(const sc::Profile& profile, const std::function<void()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    sc::InstallOptions opts;
    opts.log = [](const std::string&) {};  // keep the child to write()/exit only
    sc::InstallResult r = sc::install(profile, opts);
    if (!r.ok) _exit(3);
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

}  // namespace

TEST(SeccompProof, ForbiddenSyscallKillsTheProcessWithSigsys) {
  int status = run_confined(sc::zmq_service_profile("test-service"), [] {
    (void)syscall(SYS_getpid);                           // allowed
    (void)syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);  // not in any service profile
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "child was not killed, status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(SeccompProof, AllowedSyscallsKeepWorking) {
  int status = run_confined(sc::zmq_service_profile("test-service"), [] {
    int p[2];
    if (pipe2(p, 0) != 0) _exit(4);
    if (write(p[1], "x", 1) != 1) _exit(5);
    char c;
    if (read(p[0], &c, 1) != 1) _exit(6);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SeccompProof, ServiceProfileCannotForkButPoolManagerCan) {
  auto try_fork = [] {
    pid_t p = fork();  // glibc: clone without CLONE_THREAD
    if (p == 0) _exit(0);
    if (p > 0) waitpid(p, nullptr, 0);
  };
  int svc = run_confined(sc::zmq_service_profile("test-service"), try_fork);
  ASSERT_TRUE(WIFSIGNALED(svc)) << "a generic service could fork";
  EXPECT_EQ(WTERMSIG(svc), SIGSYS);
  int pool = run_confined(sc::pool_manager_profile(), try_fork);
  ASSERT_TRUE(WIFEXITED(pool)) << "pool manager killed by " << WTERMSIG(pool);
  EXPECT_EQ(WEXITSTATUS(pool), 0);
}

// The gateway speaks HTTP, so it may open sockets and start resolver threads, but it may not
// start a process (a compromised libcurl/OpenSSL could otherwise exec a shell) or trace one.
TEST(SeccompProof, LlmGatewayProfileCannotForkExecOrPtrace) {
  auto try_fork = [] {
    pid_t p = fork();
    if (p == 0) _exit(0);
    if (p > 0) waitpid(p, nullptr, 0);
  };
  auto try_exec = [] {
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    execve("/bin/true", argv, nullptr);  // returns only if refused without a kill
    _exit(9);
  };
  auto try_ptrace = [] { (void)syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0); };
  auto try_socket_and_thread = [] {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);  // libcurl's IPv6 probe
    if (fd >= 0) close(fd);
    std::thread t([] {});  // libcurl's threaded resolver
    t.join();
  };
  for (const auto& [name, body] : std::vector<std::pair<const char*, std::function<void()>>>{
           {"fork", try_fork}, {"execve", try_exec}, {"ptrace", try_ptrace}}) {
    int st = run_confined(sc::llm_gateway_profile(), body);
    ASSERT_TRUE(WIFSIGNALED(st)) << name << " was not killed, status " << st;
    EXPECT_EQ(WTERMSIG(st), SIGSYS) << name;
  }
  int ok = run_confined(sc::llm_gateway_profile(), try_socket_and_thread);
  ASSERT_TRUE(WIFEXITED(ok)) << "killed by signal " << WTERMSIG(ok);
  EXPECT_EQ(WEXITSTATUS(ok), 0);
}

TEST(SeccompProof, BpfIsOnlyForTheSentinel) {
  auto try_bpf = [] { (void)syscall(SYS_bpf, -1, nullptr, 0); };  // EINVAL if allowed
  int sentinel = run_confined(sc::sentinel_profile(), try_bpf);
  ASSERT_TRUE(WIFEXITED(sentinel)) << "sentinel killed by " << WTERMSIG(sentinel);
  int svc = run_confined(sc::zmq_service_profile("test-service"), try_bpf);
  ASSERT_TRUE(WIFSIGNALED(svc));
  EXPECT_EQ(WTERMSIG(svc), SIGSYS);
}

TEST(SeccompProof, EveryRuleHasAReason) {
  for (const sc::Profile& p : {sc::zmq_service_profile(), sc::pool_manager_profile(),
                               sc::sentinel_profile(), sc::llm_gateway_profile()}) {
    for (const sc::Rule& r : p.rules) EXPECT_FALSE(r.reason.empty()) << p.name << ": " << r.syscall;
  }
}

// The generic profile must not kill a real ZeroMQ service doing its normal work: context made
// before the filter (as services do), sockets, ipc:// and tcp:// loopback round trips, shutdown.
#include <zmq.hpp>

TEST(SeccompProof, ZeroMqServiceRunsUnderTheGenericProfile) {
  const std::string ipc = "ipc:///tmp/nv-seccomp-zmq-" + std::to_string(getpid());
  pid_t pid = fork();
  if (pid == 0) {
    zmq::context_t ctx(1);
    sc::InstallOptions opts;
    opts.log = [](const std::string&) {};
    if (!sc::install(sc::zmq_service_profile("test-zmq"), opts).ok) _exit(3);
    try {
      for (const std::string& ep : {ipc, std::string("tcp://127.0.0.1:*")}) {
        zmq::socket_t router(ctx, zmq::socket_type::router);
        zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
        router.set(zmq::sockopt::linger, 0);
        dealer.set(zmq::sockopt::linger, 0);
        router.bind(ep);
        dealer.connect(router.get(zmq::sockopt::last_endpoint));
        for (int i = 0; i < 10; ++i) {
          dealer.send(zmq::str_buffer("ping"), zmq::send_flags::none);
          zmq::message_t id, body;
          if (!router.recv(id) || !router.recv(body)) _exit(4);
          router.send(id, zmq::send_flags::sndmore);
          router.send(zmq::str_buffer("pong"), zmq::send_flags::none);
          zmq::message_t reply;
          zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};
          if (zmq::poll(items, 1, std::chrono::milliseconds(2000)) != 1) _exit(5);
          if (!dealer.recv(reply) || reply.to_string() != "pong") _exit(6);
        }
      }
    } catch (const zmq::error_t&) {
      _exit(7);
    }
    ctx.close();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  unlink(ipc.substr(6).c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status)
                                 << " (SIGSYS = a syscall missing from the profile)";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
