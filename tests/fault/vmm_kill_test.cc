// vmm_kill_test.cc — issue 11's fault suite, the VMM case: SIGKILL the QEMU processes under
// running executions while a task is in flight, on a real stack (`nv up`: orchestrator with the
// agent loop, sentinel, pool manager with the small tier under TCG, executor, gateway in front
// of tests/fixtures/fake_llm.py):
//   - two nv-exec runs and one nv-submit task each have code sleeping in their own microVM;
//   - the VMM of each of those VMs (found from the event stream: exec.started names the VM,
//     vm.booted its VMM pid) is SIGKILLed;
//   - every client returns within 10 s of the kill: nv-exec with the typed error (exit 125,
//     `vmFailed`), nv-submit with a result (the task goes on: the model is told the execution
//     failed and answers);
//   - the next request succeeds (the pool refills), and after `nv down` nothing is left: no
//     process of the stack, no VMM, no jail dir, no VM cgroup, no socket.
#include <gtest/gtest.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/events.capnp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "common/client.h"
#include "common/frames.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nv::test::Process;
using nv::test::service_process;
using nv::test::TempDir;

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

bool pid_alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  auto close = s.rfind(')');
  return !(close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'Z');
}

// Processes whose command line mentions `needle` (the runtime dir: every service and VMM of
// this stack has it in its arguments or jail paths).
std::vector<std::string> processes_mentioning(const std::string& needle, pid_t except) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    for (auto& c : cmd) c = c ? c : ' ';
    pid_t pid = std::stoi(name);
    if (pid != except && cmd.find(needle) != std::string::npos && pid_alive(pid)) {
      out.push_back(name + " " + cmd.substr(0, 120));
    }
  }
  return out;
}

struct History {
  std::map<std::string, pid_t> vmm_of;  // vm id -> VMM pid (vm.booted)
  std::vector<std::string> executing;   // vm ids of exec.started, in order
  std::set<std::string> released;       // vm ids of vm.released / vm.failed
};

History read_history(nv::Client& c) {
  History h;
  capnp::MallocMessageBuilder mb;
  nv::bus::init_body<nv::schema::HistoryRequest>(mb);
  auto r = c.call("nv.events", &mb, 5s);
  if (!r) return h;
  auto reply = r->body.root<nv::schema::HistoryReply>();
  if (!reply) return h;
  for (auto e : reply->getEvents()) {
    if (e.isVmBooted()) h.vmm_of[e.getVmBooted().getVmId()] = e.getVmBooted().getVmmPid();
    if (e.isExecStarted()) h.executing.emplace_back(e.getExecStarted().getVmId());
    if (e.isVmReleased()) h.released.insert(e.getVmReleased().getVmId());
    if (e.isVmFailed()) h.released.insert(e.getVmFailed().getVmId());
  }
  return h;
}

class VmmKill : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (jails, cgroups, BPF)";
    for (auto b : {"nv", "nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor",
                   "nv-llm-gateway", "nv-ebpf-sentinel", "nv-exec", "nv-submit"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " not built";
      }
    }
    const char* bd = std::getenv("NV_BUILD_DIR");
    guest_ = std::string(bd ? bd : "build") + "/guest";
    if (!exists(guest_ + "/vmlinux") || !exists(guest_ + "/rootfs.ext4")) {
      GTEST_SKIP() << "no guest image in " << guest_ << " (./nv setup)";
    }
    if (!exists("/usr/bin/qemu-system-x86_64")) GTEST_SKIP() << "no QEMU";
  }
  std::string guest_;
};

TEST_F(VmmKill, KilledVmmsUnderExecutionsAndATaskFailFastAndTheStackRecovers) {
  TempDir rt("nv-vmmkill");
  // The model: run code that sleeps in the sandbox, then report what came back.
  std::ofstream(rt.file("script.json")) << R"JSON({"turns": [
    {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
      "code": "import time\nprint('task code started', flush=True)\ntime.sleep(240)"}}]},
    {"say": "the sandbox said: {{last_tool_output|strip}}"}]})JSON";
  auto fake = Process::start(service_process(
      "/usr/bin/python3", {nv::test::source_dir() + "/tests/fixtures/fake_llm.py", "--script",
                           rt.file("script.json"), "--port-file", rt.file("llm.port"), "--quiet"}));
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("llm.port"); }, 20s)) << fake.stderr_text();
  int port = 0;
  std::ifstream(rt.file("llm.port")) >> port;
  std::map<std::string, std::string> env{
      {"NV_RUNTIME_DIR", rt.path()},
      {"NV_LLM_URL", "http://127.0.0.1:" + std::to_string(port)},
      {"NV_LLM_API", "ollama"},
      {"NV_MODEL", "fake-model"},
      {"NV_KERNEL", guest_ + "/vmlinux"},
      {"NV_ROOTFS", guest_ + "/rootfs.ext4"},
      {"NV_SIZE", "small"},
      {"NV_WARM", "3"},
      {"NV_MAX", "4"},
  };
  struct Down {
    std::map<std::string, std::string>* env;
    ~Down() { nv::test::run(service_process(nv::test::bin("nv"), {"down"}, *env), 60s); }
  } down_at_exit{&env};
  auto up = nv::test::run(
      service_process(nv::test::bin("nv"),
                      {"up", "--only", "ebpf-sentinel,vm-pool-manager,sandbox-executor,llm-gateway",
                       "--wait-s", "600"},
                      env),
      660s);
  ASSERT_EQ(up.status.code, 0) << up.out << up.err;

  // In flight: two executions and a task, each with code sleeping in its own VM.
  const std::string sleeper = "import time\nprint('exec started', flush=True)\ntime.sleep(240)";
  std::vector<Process> execs;
  for (int i = 0; i < 2; ++i) {
    execs.push_back(Process::start(service_process(
        nv::test::bin("nv-exec"), {"--timeout", "280", "python", "-c", sleeper}, env)));
  }
  auto task = Process::start(service_process(
      nv::test::bin("nv-submit"), {"--json", "--timeout", "600", "Sleep in the sandbox."}, env));

  nv::ClientOptions co;
  co.endpoint = nv::bus::ipc_endpoint(rt.file("clients.sock"));
  zmq::context_t zctx(1);
  nv::Client client(zctx, co);
  History h;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        h = read_history(client);
        return h.executing.size() >= 3;
      },
      300s, 200ms))
      << "executions started: " << h.executing.size();
  std::vector<pid_t> victims;
  for (const auto& vm : h.executing) {
    ASSERT_TRUE(h.vmm_of.count(vm)) << "no vm.booted for " << vm;
    victims.push_back(h.vmm_of[vm]);
  }
  // Let the code start inside the guests (TCG: python takes a moment), then kill the VMMs.
  std::this_thread::sleep_for(3s);
  for (pid_t v : victims) ASSERT_TRUE(pid_alive(v)) << "VMM " << v << " already gone";
  auto killed = Clock::now();
  for (pid_t v : victims) ::kill(v, SIGKILL);

  // Every client returns within 10 s of the kill.
  for (auto& p : execs) {
    auto exit = p.wait(
        std::chrono::duration_cast<std::chrono::milliseconds>(10s - (Clock::now() - killed)));
    ASSERT_TRUE(exit.has_value()) << "nv-exec still waiting 10 s after its VMM was killed";
    EXPECT_EQ(exit->code, 125) << exit->describe() << "\n" << p.stderr_text();
    EXPECT_NE(p.stderr_text().find("vmFailed"), std::string::npos) << p.stderr_text();
    std::cout << "nv-exec: " << exit->describe() << ", stdout " << p.stdout_text() << "stderr "
              << p.stderr_text();
  }
  auto texit = task.wait(
      std::chrono::duration_cast<std::chrono::milliseconds>(10s - (Clock::now() - killed)));
  double took = std::chrono::duration<double>(Clock::now() - killed).count();
  ASSERT_TRUE(texit.has_value()) << "nv-submit still waiting 10 s after its VMM was killed";
  EXPECT_TRUE(texit->clean()) << texit->describe() << task.stderr_text();
  EXPECT_NE(task.stdout_text().find("the sandbox said:"), std::string::npos) << task.stdout_text();
  std::cout << "nv-submit: " << task.stdout_text().substr(0, 600) << "\n";
  std::cout << "every client returned " << took * 1000 << " ms after the VMMs' SIGKILL\n";
  RecordProperty("clients_returned_ms", std::to_string(static_cast<int>(took * 1000)));

  // The next request succeeds.
  auto next = nv::test::run(
      service_process(nv::test::bin("nv-exec"), {"python", "-c", "print(6*7)"}, env), 300s);
  EXPECT_EQ(next.status.code, 0) << next.out << next.err;
  EXPECT_EQ(next.out, "42\n");

  // nv down: nothing is left.
  auto h2 = read_history(client);
  auto dn = nv::test::run(service_process(nv::test::bin("nv"), {"down"}, env), 60s);
  EXPECT_EQ(dn.status.code, 0) << dn.out << dn.err;
  for (auto& [vm, pid] : h2.vmm_of) EXPECT_FALSE(pid_alive(pid)) << "VMM of " << vm;
  // (The scripted model server is this test's own.)
  EXPECT_TRUE(
      nv::test::wait_until([&] { return processes_mentioning(rt.path(), fake.pid()).empty(); }, 5s))
      << processes_mentioning(rt.path(), fake.pid()).front();
  if (exists(rt.file("vms"))) {
    EXPECT_TRUE(std::filesystem::is_empty(rt.file("vms")));
  }
  for (const auto& e : std::filesystem::recursive_directory_iterator(rt.path())) {
    EXPECT_FALSE(e.is_socket()) << "socket left: " << e.path();
  }
  for (auto& [vm, pid] : h2.vmm_of) {
    for (const auto& ctl : std::filesystem::directory_iterator("/sys/fs/cgroup")) {
      EXPECT_FALSE(exists(ctl.path().string() + "/neurovisor/" + vm)) << ctl.path() << " " << vm;
    }
  }
}

}  // namespace
