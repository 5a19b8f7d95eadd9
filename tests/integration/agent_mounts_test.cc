// agent_mounts_test.cc — a task with host directories (SubmitTask.mounts, issue 15) against the
// sandbox service's test double (fake_sandbox.h): the sandbox is made before the first model call
// with the task's mounts, so a refused mount fails the task with no model call at all; the model
// is told which directories are mounted and which are read-only; the read-write ones are synced
// when the task ends — completed, failed or timed out — before the sandbox is destroyed, and a
// notice says what was copied. Real VMs and the real copier: tests/vm/agent_mounts_e2e_test.cc.
#include "agent_harness.h"

namespace {

using namespace nv::agent_harness;
namespace sb = nv::sandbox;

const char* kScript = R"js({
  "captures": {"nonce": "nonce ([0-9a-f]{12})"},
  "routes": [
    {"match": "write result", "turns": [
      {"tool_calls": [{"name": "write_file", "arguments": {"path": "/home/agent/proj/result.txt",
                       "content": "result {{nonce}}\n"}}]},
      {"say": "wrote it"}]},
    {"match": "slow", "turns": [
      {"tool_calls": [{"name": "write_file", "arguments": {"path": "proj/partial.txt",
                       "content": "12345"}}]},
      {"stall": 30, "say": "never"}]},
    {"match": "model error", "turns": [
      {"tool_calls": [{"name": "write_file", "arguments": {"path": "proj/a", "content": "ab"}}]},
      {"error": {"status": 401, "message": "key revoked"}}]}
  ],
  "turns": [{"say": "unused"}]})js";

const std::vector<sb::Mount> kMounts = {{"/allowed/proj", "/home/agent/proj", false, 0, 0},
                                        {"/allowed/data", "/home/agent/data", true, 0, 0}};

std::vector<std::string> ops(FakeSandboxService& f, const std::string& owner) {
  std::vector<std::string> out;
  for (auto& s : f.seen()) {
    if (s.owner == owner) out.push_back(s.op);
  }
  return out;
}

TEST_F(AgentTest, MountedTaskSandboxComesFirstAndIsSyncedOnEveryEnd) {
  Stack stack({.script_json = kScript,
               .gateway_args = {"--llm-timeout", "60"},
               .start_sandbox = true,
               .fresh_vm_per_call = false});

  // 1. A mount outside every --mount-root: the task fails at once, the model is never asked.
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "write result nonce " + nonce, 0, 0, {},
                  {{"/refused/etc", "/home/agent/etc", true, 0, 0}});
  EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
  EXPECT_EQ(o.error_code, "mountRefused");
  EXPECT_EQ(o.error, "/refused/etc is outside every --mount-root (/allowed)");
  EXPECT_EQ(o.iterations, 0u);
  EXPECT_TRUE(stack.chat_requests().empty()) << "the model was asked";
  EXPECT_EQ(ops(stack.sandbox(), "task:" + o.trace), std::vector<std::string>{"create"});
  EXPECT_EQ(stack.sandbox().live(), 0u);

  // 2. Completed: create (with the mounts) before the first model call, the write, then the
  //    sync of the rw mount, then destroy; a notice says what was copied back.
  nonce = nonce_hex();
  o = submit(stack.clients(), "write result nonce " + nonce, 0, 0, {}, kMounts);
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "wrote it");
  ASSERT_GE(o.kinds.size(), 2u);
  EXPECT_EQ(o.kinds[0], "notice");  // "started sandbox ...", before any model call
  EXPECT_EQ(o.kinds[1], "thinking");
  std::string owner = "task:" + o.trace;
  EXPECT_EQ(ops(stack.sandbox(), owner),
            (std::vector<std::string>{"create", "writeFile", "sync", "destroy"}));
  auto creates = stack.sandbox().seen("create");
  ASSERT_EQ(creates.size(), 2u);
  EXPECT_EQ(creates[1].mounts, kMounts);
  std::string content = "result " + nonce + "\n";
  ASSERT_FALSE(o.notices.empty());
  EXPECT_EQ(o.notices.back(),
            "read-write mounts copied back to the host:\n"
            "  /home/agent/proj → /allowed/proj: 1 file written (" +
                std::to_string(content.size()) + " bytes), 0 removed");
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  auto system = contents(*reqs[0], "system");
  ASSERT_EQ(system.size(), 1u);
  EXPECT_NE(system[0].find("The user's directories are mounted in your sandbox:\n"
                           "- /home/agent/proj (read-write: what you write there is copied back "
                           "to the user's machine when the task ends)\n"
                           "- /home/agent/data (read-only: writing, renaming or deleting there "
                           "fails)\n"),
            std::string::npos)
      << system[0];
  EXPECT_EQ(system[0].find("/allowed/"), std::string::npos);  // host paths are not shown

  // 3. Timed out while the model thinks: synced all the same.
  o = submit(stack.clients(), "slow " + nonce_hex(), 0, 4000, {}, kMounts);
  EXPECT_EQ(o.status, s::TaskStatus::TIMED_OUT) << o.describe();
  EXPECT_EQ(ops(stack.sandbox(), "task:" + o.trace),
            (std::vector<std::string>{"create", "writeFile", "sync", "destroy"}));
  ASSERT_FALSE(o.notices.empty());
  EXPECT_EQ(o.notices.back(),
            "read-write mounts copied back to the host:\n"
            "  /home/agent/proj → /allowed/proj: 1 file written (5 bytes), "
            "0 removed");

  // 4. The model fails: synced all the same.
  o = submit(stack.clients(), "model error " + nonce_hex(), 0, 0, {}, kMounts);
  EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
  EXPECT_EQ(ops(stack.sandbox(), "task:" + o.trace),
            (std::vector<std::string>{"create", "writeFile", "sync", "destroy"}));

  // 5. Read-only mounts only: nothing to copy back, no sync.
  o = submit(stack.clients(), "write result nonce " + nonce_hex(), 0, 0, {}, {kMounts[1]});
  EXPECT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(ops(stack.sandbox(), "task:" + o.trace),
            (std::vector<std::string>{"create", "writeFile", "destroy"}));
  EXPECT_EQ(stack.sandbox().live(), 0u);

  // 6. Bad mount fields: refused before anything (more than 8, a control character).
  std::vector<sb::Mount> nine(9, kMounts[0]);
  o = submit(stack.clients(), "write result nonce " + nonce_hex(), 0, 0, {}, nine);
  ASSERT_TRUE(o.bus_error);
  EXPECT_EQ(o.bus_error->code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(o.bus_error->message.find("mounts has 9 entries; the limit is 8"), std::string::npos);
  o = submit(stack.clients(), "write result nonce " + nonce_hex(), 0, 0, {},
             {{"/allowed/a\nb", "/home/agent/a", false, 0, 0}});
  ASSERT_TRUE(o.bus_error);
  EXPECT_EQ(o.bus_error->code, nv::ErrorCode::BAD_REQUEST);
}

// --fresh-vm-per-call has no task sandbox to hold a mount: the task is refused (badRequest) and
// says why; nv-submit exits 5 with that message.
TEST_F(AgentTest, MountsWithFreshVmPerCallAreRefused) {
  Stack stack({.script_json = kScript, .start_sandbox = true, .fresh_vm_per_call = true});
  auto o = submit(stack.clients(), "write result nonce " + nonce_hex(), 0, 0, {}, kMounts);
  ASSERT_TRUE(o.bus_error) << o.describe();
  EXPECT_EQ(o.bus_error->code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(o.bus_error->message.find("--fresh-vm-per-call"), std::string::npos);
  EXPECT_TRUE(stack.sandbox().seen().empty());
  EXPECT_TRUE(stack.chat_requests().empty());
  nv::test::TempDir dir("nv-mounts-cli");
  auto r = run_submit(stack.rt().path(), {"--mount", dir.path() + ":proj:rw", "write result"});
  EXPECT_EQ(r.status.code, 5) << r.out << r.err;
  EXPECT_NE(r.err.find("--fresh-vm-per-call"), std::string::npos) << r.err;
  // A bad --mount is a usage error (2) before anything is sent.
  for (std::string bad : {"/srv/p", "/srv/p:p:wx", ":p", "/srv/p:/etc"}) {
    auto u = run_submit(stack.rt().path(), {"--mount", bad, "write result"});
    EXPECT_EQ(u.status.code, 2) << bad << ": " << u.err;
    EXPECT_NE(u.err.find("--mount '" + bad + "'"), std::string::npos) << u.err;
  }
}

}  // namespace
