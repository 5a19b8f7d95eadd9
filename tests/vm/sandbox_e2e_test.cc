// sandbox_e2e_test — sandboxes that live, end to end through the bus with real microVMs (issue 13
// acceptance, the parts that need the guest agent and the pool): nv-orchestrator,
// nv-vm-pool-manager (small tier, TCG here) and nv-sandbox-executor as child processes in a temp
// runtime dir, spoken to only through the typed client (services/common/sandbox_client.h). Few
// VMs, shared by the cases, which run in file order:
//   A. a file and a python context variable written in exec 1 are read in exec 2 and 3;
//   B. a background process started in exec 1 is listed and running in exec 2; signal kills it;
//   C. pause → resume: the file and the variable are intact;
//   D. fork 2: the sibling that changed both sees its change, the other and the parent do not;
//   E. snapshot → destroy → create fromSnapshot: the same file and context variable;
//   F. a real short idle timeout reaps a sandbox, with a sandbox.reaped event "idle for N ms";
//   G. SIGKILL the executor with a running and a paused sandbox: restarted, both are reachable;
//   H. SIGKILL the pool manager: restarted, the running sandbox is reaped "vm lost: ..." with an
//      event, the paused one resumes with its file; no VMM, jail dir or cgroup is left.
// Skips (saying why) without root, the binaries or the guest image.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "cgroup.h"
#include "common/events.h"
#include "common/frames.h"
#include "common/sandbox_client.h"
#include "support/process.h"
#include "sysutil.h"

namespace {

using namespace std::chrono_literals;
using nv::schema::Language;
using nv::schema::SandboxState;
using nv::test::Process;
namespace sbx = nv::sandbox;

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// The pid of the VMM named nv-<vm_id> (QEMU -name), or -1.
pid_t vmm_pid(const std::string& vm_id) { return nv::vm::find_process_by_arg("nv-" + vm_id); }

constexpr const char* kOwner = "uid:4242";
constexpr const char* kFile = "/home/agent/notes/a.txt";

class SandboxE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string build = std::getenv("NV_BUILD_DIR") ? std::getenv("NV_BUILD_DIR") : "";
    kernel_ = build + "/guest/vmlinux";
    rootfs_ = build + "/guest/rootfs.ext4";
    if (::geteuid() != 0) {
      skip_ = "needs root (the pool manager's jails and cgroups)";
      return;
    }
    for (auto name : {"nv-orchestrator", "nv-vm-pool-manager", "nv-sandbox-executor"}) {
      if (!exists(nv::test::bin(name))) {
        skip_ = std::string(name) + " is not built ($NV_BIN_DIR=" + nv::test::bin("") + ")";
        return;
      }
    }
    if (!exists(kernel_) || !exists(rootfs_)) {
      skip_ = "guest image missing (" + kernel_ + ", " + rootfs_ + ")";
      return;
    }
    rt_ = std::make_unique<nv::test::TempDir>("nv-sbx-e2e");
    env_ = {{"NV_RUNTIME_DIR", rt_->path()}, {"NV_LOG_LEVEL", "info"}};
    orch_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-orchestrator"), .args = {}, .env = env_}));
    start_pool();
    start_executor();
    zmq_ = std::make_unique<zmq::context_t>(1);
    client_ = std::make_unique<nv::Client>(
        *zmq_, nv::ClientOptions{nv::bus::ipc_endpoint(rt_->file("clients.sock")), {}, {}, {}});
    events_ = std::make_unique<nv::EventSubscriber>(*zmq_,
                                                    nv::bus::ipc_endpoint(rt_->file("events.sock")),
                                                    std::vector<std::string>{"sandbox."});
    sbx_ = std::make_unique<sbx::SandboxClient>(*client_, kOwner,
                                                sbx::ClientCallOptions{240s, "sbx-e2e"});
    // Ready: the executor's own service answers (list is served by "sandbox").
    bool ready = nv::test::wait_until([&] { return sbx_->list().ok(); }, 120s, 500ms);
    if (!ready) setup_error_ = "the sandbox service never answered" + logs();
  }
  static void TearDownTestSuite() {
    events_.reset();
    sbx_.reset();
    client_.reset();
    zmq_.reset();
    for (auto* p : {&exec_, &pool_, &orch_}) {
      if (*p) (*p)->terminate(30s);
      p->reset();
    }
    rt_.reset();
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  static void start_pool() {
    pool_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-vm-pool-manager"),
                        .args = {"--kernel", kernel_, "--rootfs", rootfs_, "--size", "small",
                                 "--warm", "1", "--max", "8", "--accel", "tcg", "--boot-timeout-ms",
                                 "180000", "--no-require-egress"},
                        .env = env_}));
  }
  static void start_executor() {
    exec_ = std::make_unique<Process>(
        Process::start({.binary = nv::test::bin("nv-sandbox-executor"),
                        .args = {"--executor-name", "e2e", "--sandbox-reap-interval-ms", "500",
                                 "--sandbox-verify-ms", "2000", "--connect-timeout-ms", "60000",
                                 "--max-lease-wait-ms", "200000"},
                        .env = env_}));
  }
  static std::string logs() {
    std::string out;
    if (exec_) out += "\n--- executor:\n" + exec_->stderr_text().substr(0, 30000);
    if (pool_) out += "\n--- pool:\n" + pool_->stderr_text().substr(0, 30000);
    return out;
  }

  // Runs code in the sandbox; stdout, or "ERROR: ..." with what went wrong.
  static std::string run(const std::string& id, const std::string& code,
                         Language lang = Language::BASH, const std::string& context = {}) {
    sbx::ExecSpec e;
    e.language = lang;
    e.code = code;
    e.context = context;
    e.timeout_ms = 120000;
    auto r = sbx_->exec(id, e);
    if (!r.ok()) return "ERROR: " + r.error().to_string();
    if (r->exit_code != 0) {
      return "ERROR: exit " + std::to_string(r->exit_code) + ": " + r->stderr_data + r->note;
    }
    return r->stdout_data;
  }
  // Writes the file and sets x in the python context "nb" of `id`.
  static void set_state(const std::string& id, const std::string& text, int x) {
    auto w = sbx_->write_file(id, kFile, text);
    ASSERT_TRUE(w.ok()) << w.error().to_string();
    EXPECT_EQ(w->size, text.size());
    EXPECT_EQ(
        run(id, "x = " + std::to_string(x) + "\nimport json\nprint('set')", Language::PYTHON, "nb"),
        "set\n");
  }
  // The file's text and x, as "text|x".
  static std::string state(const std::string& id) {
    auto f = sbx_->read_file(id, kFile);
    std::string text = f.ok() ? f->data : "ERROR: " + f.error().to_string();
    auto x = run(id, "print(x)", Language::PYTHON, "nb");
    while (!x.empty() && x.back() == '\n') x.pop_back();
    return text + "|" + x;
  }
  // The next sandbox.* event for `id` with `topic`, within `limit`: its reason, or "<none>".
  static std::string event_reason(const std::string& id, const std::string& topic,
                                  std::chrono::milliseconds limit = 30s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      auto e = events_->receive(500ms);
      if (!e || !e->event.isSandbox()) continue;
      if (std::string(e->event.getSandbox().getSandboxId()) != id) continue;
      if (std::string(e->event.getTopic()) != topic) continue;
      return e->event.getSandbox().getReason();
    }
    return "<none>";
  }

  static inline std::string skip_, setup_error_, kernel_, rootfs_;
  static inline std::map<std::string, std::string> env_;
  static inline std::unique_ptr<nv::test::TempDir> rt_;
  static inline std::unique_ptr<Process> orch_, pool_, exec_;
  static inline std::unique_ptr<zmq::context_t> zmq_;
  static inline std::unique_ptr<nv::Client> client_;
  static inline std::unique_ptr<nv::EventSubscriber> events_;
  static inline std::unique_ptr<sbx::SandboxClient> sbx_;
  static inline std::string main_;    // the sandbox the cases share
  static inline std::string paused_;  // G → H: a paused sandbox
};

TEST_F(SandboxE2E, A_FileAndContextVariableSurviveExecs) {
  sbx::Spec spec;
  spec.labels = {{"suite", "e2e"}};
  auto s = sbx_->create(spec);
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  main_ = s->sandbox_id;
  EXPECT_EQ(s->state, SandboxState::RUNNING);
  EXPECT_EQ(event_reason(main_, "sandbox.created"), "");
  ASSERT_TRUE(sbx_->make_dir(main_, "/home/agent/notes").ok());
  set_state(main_, "hello from exec 1\n", 41);
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
  EXPECT_EQ(run(main_, "cat " + std::string(kFile) + "; print_x=$((41+1)); echo $print_x"),
            "hello from exec 1\n42\n");
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
  auto st = sbx_->stat_file(main_, kFile);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(st->type, nv::schema::FileType::FILE);
  auto missing = sbx_->read_file(main_, "/home/agent/none.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, nv::ErrorCode::NOT_FOUND) << missing.error().to_string();
}

TEST_F(SandboxE2E, B_BackgroundProcessListedThenSignalled) {
  ASSERT_FALSE(main_.empty());
  sbx::ExecSpec bg;
  bg.code = "exec sleep 777";
  bg.background = true;
  auto r = sbx_->exec(main_, bg);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->exit_code, -1);
  // Still running at exec 2.
  EXPECT_EQ(run(main_,
                "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'slee[p] 777' && "
                "echo running"),
            "running\n");
  auto ps = sbx_->processes(main_);
  ASSERT_TRUE(ps.ok()) << ps.error().to_string();
  int32_t pid = 0;
  for (const auto& p : *ps) {
    if (p.command.find("sleep 777") != std::string::npos) pid = p.pid;
  }
  ASSERT_GT(pid, 0) << "sleep 777 not listed";
  ASSERT_TRUE(sbx_->signal(main_, pid, 9));
  EXPECT_TRUE(nv::test::wait_until(
      [&] {
        auto again = sbx_->processes(main_);
        if (!again.ok()) return false;
        for (const auto& p : *again) {
          if (p.pid == pid && p.state != "Z") return false;
        }
        return true;
      },
      30s, 500ms));
  auto gone = sbx_->signal(main_, 999999, 9);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, nv::ErrorCode::NOT_FOUND) << gone.error().to_string();
}

TEST_F(SandboxE2E, C_PauseResumeKeepsFileAndContext) {
  ASSERT_FALSE(main_.empty());
  auto p = sbx_->pause(main_);
  ASSERT_TRUE(p.ok()) << p.error().to_string() << logs();
  EXPECT_EQ(p->state, SandboxState::PAUSED);
  EXPECT_EQ(p->vm_id, "");
  auto refused = sbx_->exec(main_, {.code = "true"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, nv::ErrorCode::SANDBOX_STATE);
  auto r = sbx_->resume(main_);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  EXPECT_EQ(r->state, SandboxState::RUNNING);
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
}

TEST_F(SandboxE2E, D_ForkSiblingsAreIsolated) {
  ASSERT_FALSE(main_.empty());
  auto f = sbx_->fork(main_, 2, {{"fork", "yes"}});
  ASSERT_TRUE(f.ok()) << f.error().to_string() << logs();
  ASSERT_EQ(f->size(), 2u);
  const auto a = (*f)[0].sandbox_id, b = (*f)[1].sandbox_id;
  EXPECT_EQ((*f)[0].parent_id, main_);
  EXPECT_EQ(state(a), "hello from exec 1\n|41");
  set_state(a, "changed in fork a\n", 7);
  EXPECT_EQ(state(a), "changed in fork a\n|7");
  EXPECT_EQ(state(b), "hello from exec 1\n|41");
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
  EXPECT_TRUE(sbx_->destroy(a).ok());
  EXPECT_TRUE(sbx_->destroy(b).ok());
}

TEST_F(SandboxE2E, E_SnapshotDestroyCreateFromSnapshot) {
  ASSERT_FALSE(main_.empty());
  auto snap = sbx_->snapshot(main_, "e2e-base");
  ASSERT_TRUE(snap.ok()) << snap.error().to_string() << logs();
  EXPECT_EQ(snap->name, "e2e-base");
  auto d = sbx_->destroy(main_);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->end_reason, "destroyed by owner");
  EXPECT_EQ(event_reason(main_, "sandbox.destroyed"), "destroyed by owner");
  sbx::Spec spec;
  spec.from_snapshot = "e2e-base";
  auto s = sbx_->create(spec);
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  main_ = s->sandbox_id;
  EXPECT_EQ(s->from_snapshot, "e2e-base");
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
  // Another owner sees neither the snapshot nor the sandbox.
  sbx::SandboxClient other(*client_, "uid:1", {30s, ""});
  EXPECT_EQ(other.get(main_).error().code, nv::ErrorCode::UNKNOWN_SANDBOX);
  auto theirs = other.snapshots();
  ASSERT_TRUE(theirs.ok());
  EXPECT_TRUE(theirs->empty());
  EXPECT_TRUE(sbx_->delete_snapshot("e2e-base"));
}

TEST_F(SandboxE2E, F_RealIdleTimeoutReapsWithAnEvent) {
  sbx::Spec spec;
  spec.idle_timeout_ms = 4000;
  auto s = sbx_->create(spec);
  ASSERT_TRUE(s.ok()) << s.error().to_string() << logs();
  auto why = event_reason(s->sandbox_id, "sandbox.reaped", 120s);
  EXPECT_EQ(why.rfind("idle for ", 0), 0u) << why;
  auto g = sbx_->get(s->sandbox_id);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->state, SandboxState::DESTROYED);
  EXPECT_EQ(g->end_reason, why);
  EXPECT_TRUE(nv::test::wait_until([&] { return vmm_pid(s->vm_id) < 0; }, 30s, 250ms));
}

TEST_F(SandboxE2E, G_KilledExecutorFindsItsSandboxesAgain) {
  ASSERT_FALSE(main_.empty());
  auto paused = sbx_->create({});
  ASSERT_TRUE(paused.ok()) << paused.error().to_string() << logs();
  ASSERT_TRUE(sbx_->write_file(paused->sandbox_id, "/home/agent/p.txt", "paused file").ok());
  ASSERT_TRUE(sbx_->pause(paused->sandbox_id).ok());
  exec_->signal(SIGKILL);
  exec_->wait(10s);
  start_executor();
  ASSERT_TRUE(nv::test::wait_until([&] { return sbx_->get(main_).ok(); }, 120s, 500ms)) << logs();
  EXPECT_EQ(sbx_->get(main_)->state, SandboxState::RUNNING);
  EXPECT_EQ(state(main_), "hello from exec 1\n|41");
  EXPECT_EQ(sbx_->get(paused->sandbox_id)->state, SandboxState::PAUSED);
  auto r = sbx_->resume(paused->sandbox_id);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  auto f = sbx_->read_file(paused->sandbox_id, "/home/agent/p.txt");
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_EQ(f->data, "paused file");
  ASSERT_TRUE(sbx_->pause(paused->sandbox_id).ok());
  paused_ = paused->sandbox_id;
}

TEST_F(SandboxE2E, H_KilledPoolManagerReapsLostSandboxesAndLeaksNothing) {
  ASSERT_FALSE(main_.empty());
  ASSERT_FALSE(paused_.empty());
  auto running = sbx_->get(main_);
  ASSERT_TRUE(running.ok());
  const std::string vm = running->vm_id;
  ASSERT_GT(vmm_pid(vm), 0);
  pool_->signal(SIGKILL);
  pool_->wait(10s);
  EXPECT_TRUE(nv::test::wait_until([&] { return vmm_pid(vm) < 0; }, 20s, 200ms))
      << "the VMM outlived its pool manager";
  start_pool();
  auto why = event_reason(main_, "sandbox.reaped", 240s);
  EXPECT_EQ(why.rfind("vm lost: ", 0), 0u) << why << logs();
  auto g = sbx_->get(main_);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->state, SandboxState::DESTROYED);
  // The paused one lives on: resumed, its file is there.
  EXPECT_EQ(sbx_->get(paused_)->state, SandboxState::PAUSED);
  auto r = sbx_->resume(paused_);
  ASSERT_TRUE(r.ok()) << r.error().to_string() << logs();
  auto f = sbx_->read_file(paused_, "/home/agent/p.txt");
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_EQ(f->data, "paused file");
  ASSERT_TRUE(sbx_->destroy(paused_).ok());
  // Nothing of the lost VM is left: VMM, jail dir, cgroups.
  EXPECT_EQ(vmm_pid(vm), -1);
  EXPECT_FALSE(exists(rt_->path() + "/vms/" + vm));
  for (const auto& d : nv::vm::CgroupLayout::detect().vm_dirs(vm)) EXPECT_FALSE(exists(d)) << d;
}

}  // namespace
