// agent_sandbox_test.cc — the agent's one sandbox per task (agent_tools.h), end to end on the
// host: nv-orchestrator and nv-llm-gateway as child processes, tests/fixtures/fake_llm.py as the
// scripted model, FakeSandboxService (fake_sandbox.h) as the executor's sandbox service. The real
// executor and real VMs: tests/vm/agent_e2e_test.cc (SandboxPersistsFilesBetweenCalls).
#include "agent_harness.h"

namespace {

using namespace nv::agent_harness;

// The scripted model: write a file with write_file, read it back with read_file, answer with
// what it read. The nonce makes every task's content its own.
const char* kWriteReadScript = R"js({
  "captures": {"nonce": "nonce ([0-9a-f]{12})"},
  "turns": [
    {"tool_calls": [{"name": "write_file", "arguments": {"path": "notes/n.txt",
                     "content": "nonce {{nonce}}\nzwei \u00fcber \u00e9t\u00e9\n"}}]},
    {"tool_calls": [{"name": "read_file", "arguments": {"path": "/home/agent/notes/n.txt"}}]},
    {"say": "READ<{{last_tool_output}}>"}
  ]})js";

std::vector<std::string> tool_names(const rapidjson::Document& d) {
  std::vector<std::string> out;
  for (const auto& t : d["body"]["tools"].GetArray())
    out.push_back(t["function"]["name"].GetString());
  return out;
}

class AgentSandboxTest : public AgentTest {};

// The acceptance case: the second tool call reads the file the first one wrote, in the same
// sandbox, with the exact bytes; the sandbox is made once, owned by the task, and destroyed when
// the task ends. Through both wire formats (the tools go out in each API's own shape).
TEST_F(AgentSandboxTest, SecondCallReadsTheFileTheFirstWrote) {
  for (std::string api : {"ollama", "openai"}) {
    SCOPED_TRACE(api);
    Stack stack({.script_json = kWriteReadScript,
                 .api = api,
                 .start_sandbox = true,
                 .fresh_vm_per_call = false});
    std::string nonce = nonce_hex();
    std::string content = "nonce " + nonce + "\nzwei \u00fcber \u00e9t\u00e9\n";
    auto o = submit(stack.clients(), "Keep the nonce " + nonce + " in a file.");
    ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
    EXPECT_EQ(o.answer, "READ<" + content + ">");
    EXPECT_EQ(o.tool_calls, 2u);
    EXPECT_EQ(o.tools, (std::vector<std::string>{"write_file", "read_file"}));
    EXPECT_EQ(o.paths,
              (std::vector<std::string>{"/home/agent/notes/n.txt", "/home/agent/notes/n.txt"}));
    ASSERT_EQ(o.tool_results.size(), 2u);
    EXPECT_EQ(o.tool_results[0],
              "wrote " + std::to_string(content.size()) + " bytes to /home/agent/notes/n.txt");
    EXPECT_EQ(o.tool_results[1], content);
    ASSERT_FALSE(o.notices.empty());
    EXPECT_EQ(o.notices[0].rfind("started sandbox sbx-fake-", 0), 0u) << o.notices[0];

    // One sandbox, the task's: made at the first call, used by both, destroyed at the end.
    auto creates = stack.sandbox().seen("create");
    ASSERT_EQ(creates.size(), 1u);
    EXPECT_EQ(creates[0].owner, "task:" + o.trace);
    EXPECT_EQ(creates[0].labels,
              (std::vector<std::pair<std::string, std::string>>{{"task", o.trace}}));
    // The task's time left + 60 s (submit() gives the task 120 s).
    EXPECT_GT(creates[0].lifetime_ms, 170'000u);
    EXPECT_LE(creates[0].lifetime_ms, 180'000u);
    std::string id = creates[0].sandbox_id;
    auto writes = stack.sandbox().seen("writeFile");
    auto reads = stack.sandbox().seen("readFile");
    ASSERT_EQ(writes.size(), 1u);
    ASSERT_EQ(reads.size(), 1u);
    EXPECT_EQ(writes[0].sandbox_id, id);
    EXPECT_EQ(writes[0].code, content);
    EXPECT_EQ(reads[0].sandbox_id, id);
    auto destroys = stack.sandbox().seen("destroy");
    ASSERT_EQ(destroys.size(), 1u);
    EXPECT_EQ(destroys[0].sandbox_id, id);
    EXPECT_EQ(destroys[0].owner, "task:" + o.trace);
    EXPECT_EQ(stack.sandbox().live(), 0u);

    // The model was offered the three tools and told that files persist, and where.
    auto reqs = stack.chat_requests(nonce);
    ASSERT_EQ(reqs.size(), 3u);
    EXPECT_EQ(tool_names(*reqs[0]),
              (std::vector<std::string>{"execute_code", "write_file", "read_file"}));
    const auto& read_tool = (*reqs[0])["body"]["tools"][2]["function"]["parameters"];
    EXPECT_STREQ(read_tool["required"][0].GetString(), "path");
    EXPECT_STREQ(read_tool["properties"]["offset"]["type"].GetString(), "integer");
    auto system = contents(*reqs[0], "system");
    ASSERT_EQ(system.size(), 1u);
    EXPECT_NE(system[0].find("Files and variables persist between calls within this task"),
              std::string::npos);
    EXPECT_NE(system[0].find("/home/agent"), std::string::npos);
    auto tools = contents(*reqs[2], "tool");
    ASSERT_EQ(tools.size(), 2u);
    EXPECT_EQ(tools[1], content);
  }
}

// nv-submit shows the file tools and what they answered.
TEST_F(AgentSandboxTest, NvSubmitShowsTheFileTools) {
  Stack stack({.script_json = kWriteReadScript, .start_sandbox = true, .fresh_vm_per_call = false});
  std::string nonce = nonce_hex();
  auto r = run_submit(stack.rt().path(), {"Keep the nonce " + nonce + " in a file."});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err << stack.logs();
  EXPECT_NE(r.out.find("⚙ write_file /home/agent/notes/n.txt\n│ nonce " + nonce), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("→ wrote "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("⚙ read_file /home/agent/notes/n.txt\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("→ nonce " + nonce), std::string::npos) << r.out;
  EXPECT_EQ(stack.sandbox().live(), 0u);
}

// execute_code in the sandbox: a file written by one call is read by the next (bash), and a
// python variable set in one call is there in the next (the "python" context); bash runs as a
// new process (no context).
TEST_F(AgentSandboxTest, ExecuteCodeSeesFilesAndVariablesOfEarlierCalls) {
  const char* script = R"js({
    "captures": {"nonce": "nonce ([0-9a-f]{12})"},
    "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "echo {{nonce}} > data.txt"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "cat data.txt"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "x = 41"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "py",
                       "code": "print(x + 1)"}}]},
      {"say": "{{last_tool_output|strip}}"}
    ]})js";
  Stack stack({.script_json = script, .start_sandbox = true, .fresh_vm_per_call = false});
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Use the nonce " + nonce + ".");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "42");
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 5u);
  auto tools = contents(*reqs[4], "tool");
  ASSERT_EQ(tools.size(), 4u);
  EXPECT_EQ(tools[1], nonce + "\n");  // the second call read what the first wrote
  auto execs = stack.sandbox().seen("exec");
  ASSERT_EQ(execs.size(), 4u);
  EXPECT_EQ(stack.sandbox().seen("create").size(), 1u);
  for (auto& e : execs) EXPECT_EQ(e.sandbox_id, execs[0].sandbox_id);
  EXPECT_EQ(execs[0].context, "");
  EXPECT_EQ(execs[1].context, "");
  EXPECT_EQ(execs[2].context, "python");
  EXPECT_EQ(execs[3].context, "python");
  EXPECT_EQ(execs[3].language, s::Language::PYTHON);
  EXPECT_TRUE(stack.exec().seen().empty());  // nothing went to the fresh-VM service
  EXPECT_EQ(stack.sandbox().live(), 0u);
}

// read_file of a path that is not there: the model is told (an error tool message) and the task
// goes on; bad arguments are told too, without reaching the sandbox.
TEST_F(AgentSandboxTest, UnknownPathAndBadArgumentsAreErrorsTheModelSees) {
  const char* script = R"js({
    "turns": [
      {"tool_calls": [{"name": "read_file", "arguments": {"path": "missing.txt"}},
                      {"name": "read_file", "arguments": {"path": "x", "offset": -3}},
                      {"name": "write_file", "arguments": {"path": "y"}}]},
      {"say": "{{last_user}}"}
    ]})js";
  Stack stack({.script_json = script, .start_sandbox = true, .fresh_vm_per_call = false});
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Read a file " + nonce);
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  auto tools = contents(*reqs[1], "tool");
  ASSERT_EQ(tools.size(), 3u);
  EXPECT_EQ(tools[0], "error: the file could not be read: /home/agent/missing.txt: no such file");
  EXPECT_EQ(tools[1].rfind("error: the file could not be read: the \"offset\" argument must be a "
                           "whole number of bytes, 0 or more (got -3)",
                           0),
            0u)
      << tools[1];
  EXPECT_EQ(
      tools[2].rfind("error: the file was not written: the \"content\" argument is missing", 0), 0u)
      << tools[2];
  ASSERT_EQ(o.tool_errors.size(), 3u);
  EXPECT_EQ(stack.sandbox().seen("readFile").size(), 1u);
  EXPECT_EQ(stack.sandbox().seen("writeFile").size(), 0u);
  EXPECT_EQ(stack.sandbox().live(), 0u);
}

// Every way a task ends destroys its sandbox: the client cancels, the task deadline passes, the
// model fails. One stack, one route per case.
TEST_F(AgentSandboxTest, SandboxIsDestroyedOnEveryEnd) {
  const char* script = R"js({
    "routes": [
      {"match": "cancel", "turns": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": "1"}}]},
        {"stall": 30, "say": "never"}]},
      {"match": "deadline", "turns": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": "1"}}]},
        {"stall": 30, "say": "never"}]},
      {"match": "model error", "turns": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": "1"}}]},
        {"error": {"status": 401, "message": "key revoked"}}]}
    ],
    "turns": [{"say": "unused"}]})js";
  Stack stack({.script_json = script,
               .gateway_args = {"--llm-timeout", "60"},
               .start_sandbox = true,
               .fresh_vm_per_call = false});
  // Cancel: the client goes away while the model thinks after the first tool call.
  {
    nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
    capnp::MallocMessageBuilder mb;
    nv::bus::init_body<s::SubmitTask>(mb).setPrompt("cancel " + nonce_hex());
    uint64_t id = c.send("task", &mb, 60s);
    bool wrote = false;
    for (auto end = std::chrono::steady_clock::now() + 20s;
         !wrote && std::chrono::steady_clock::now() < end;) {
      auto in = c.receive(200ms);
      if (!in || in->header.kind != nv::bus::Kind::PARTIAL) continue;
      auto p = in->body.root<s::TaskProgress>();
      wrote = p && p->which() == s::TaskProgress::TOOL_RESULT;
    }
    ASSERT_TRUE(wrote) << stack.logs();
    ASSERT_EQ(stack.sandbox().live(), 1u);
    c.cancel(id, "task");
    EXPECT_TRUE(nv::test::wait_until([&] { return stack.sandbox().live() == 0; }, 10s))
        << stack.logs();
    EXPECT_EQ(stack.sandbox().seen("destroy").size(), 1u);
  }
  // Deadline.
  auto o = submit(stack.clients(), "deadline " + nonce_hex(), 0, 3000);
  EXPECT_EQ(o.status, s::TaskStatus::TIMED_OUT) << o.describe();
  EXPECT_EQ(stack.sandbox().seen("destroy").size(), 2u);
  EXPECT_EQ(stack.sandbox().live(), 0u);
  // The model fails.
  o = submit(stack.clients(), "model error " + nonce_hex());
  EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
  EXPECT_EQ(stack.sandbox().seen("destroy").size(), 3u);
  EXPECT_EQ(stack.sandbox().live(), 0u);
  auto creates = stack.sandbox().seen("create");
  auto destroys = stack.sandbox().seen("destroy");
  ASSERT_EQ(creates.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(destroys[i].sandbox_id, creates[i].sandbox_id);
}

// A sandbox whose VM died is replaced at the next call; the model is told its files are gone.
TEST_F(AgentSandboxTest, ALostSandboxIsReplacedAndTheModelIsTold) {
  const char* script = R"js({
    "turns": [
      {"tool_calls": [{"name": "write_file", "arguments": {"path": "a.txt", "content": "A"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "crash the vm"}}]},
      {"tool_calls": [{"name": "read_file", "arguments": {"path": "a.txt"}}]},
      {"say": "{{last_user}}"}
    ]})js";
  Stack stack({.script_json = script, .start_sandbox = true, .fresh_vm_per_call = false});
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Crash " + nonce);
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 4u);
  auto tools = contents(*reqs[3], "tool");
  ASSERT_EQ(tools.size(), 3u);
  auto creates = stack.sandbox().seen("create");
  ASSERT_EQ(creates.size(), 2u);
  EXPECT_EQ(tools[1], "error: the code did not run: fake sandbox: the VM died — sandbox " +
                          creates[0].sandbox_id +
                          " is gone with its files and variables; the next tool call starts a "
                          "new one");
  EXPECT_EQ(tools[2], "error: the file could not be read: /home/agent/a.txt: no such file");
  EXPECT_EQ(o.notices.back(), "started a new sandbox " + creates[1].sandbox_id +
                                  " for this task: files and variables persist until the task "
                                  "ends");
  auto destroys = stack.sandbox().seen("destroy");
  ASSERT_EQ(destroys.size(), 1u);  // the lost one is gone already
  EXPECT_EQ(destroys[0].sandbox_id, creates[1].sandbox_id);
  EXPECT_EQ(stack.sandbox().live(), 0u);
}

// --fresh-vm-per-call keeps the old behaviour: each execute_code in a fresh VM ("exec"), so the
// second call does not see the file the first wrote; no sandbox, no file tools.
TEST_F(AgentSandboxTest, FreshVmPerCallDoesNotKeepFiles) {
  const char* script = R"js({
    "captures": {"nonce": "nonce ([0-9a-f]{12})"},
    "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "echo {{nonce}} > data.txt"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "cat data.txt"}}]},
      {"tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": "1"}}]},
      {"say": "{{last_user}}"}
    ]})js";
  Stack stack({.script_json = script, .start_sandbox = true, .fresh_vm_per_call = true});
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Use the nonce " + nonce + ".");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 4u);
  auto tools = contents(*reqs[3], "tool");
  ASSERT_EQ(tools.size(), 3u);
  std::string missing = "cat: data.txt: No such file or directory\n";
  EXPECT_EQ(tools[1],
            "exit status: 1\nstdout (" + std::to_string(missing.size()) + " bytes):\n" + missing);
  EXPECT_EQ(tools[2],
            "error: the code did not run: there is no tool named \"write_file\"; the only tool is "
            "execute_code(language, code)");
  EXPECT_EQ(tool_names(*reqs[0]), std::vector<std::string>{"execute_code"});
  auto system = contents(*reqs[0], "system");
  ASSERT_EQ(system.size(), 1u);
  EXPECT_NE(system[0].find("Nothing persists between calls"), std::string::npos);
  EXPECT_EQ(stack.exec().seen().size(), 2u);
  EXPECT_TRUE(stack.sandbox().seen().empty());
}

// No executor serves sandboxes (an older executor): the task runs a fresh VM per call and a
// notice says so.
TEST_F(AgentSandboxTest, WithoutASandboxServiceTheTaskRunsFreshVms) {
  const char* script = R"js({
    "captures": {"nonce": "nonce ([0-9a-f]{12})"},
    "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "print(int('{{nonce}}', 16) * 7)"}}]},
      {"say": "{{last_tool_output|strip}}"}
    ]})js";
  Stack stack({.script_json = script, .fresh_vm_per_call = false});
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Use the nonce " + nonce + ".");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, times7(nonce));
  ASSERT_FALSE(o.notices.empty());
  EXPECT_EQ(o.notices[0],
            "no executor serves sandboxes (service \"sandbox\"): each execute_code runs in a "
            "fresh VM and nothing persists between calls");
  EXPECT_EQ(stack.exec().seen().size(), 1u);
}

}  // namespace
