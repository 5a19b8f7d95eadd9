// agent_test.cc — the agent loop end to end on the host, with real processes and sockets:
//
//   nv-submit / nv::Client ──▶ nv-orchestrator (broker + agent loop, child process)
//                                  ├──▶ nv-llm-gateway (child) ──HTTP──▶ fake_llm.py (child)
//                                  └──▶ FakeSandboxExec (in this test: a test double of
//                                       nv-sandbox-executor that runs nothing; it answers
//                                       from a table of known programs)
//
// Every test gets a fresh runtime dir and its own stack. The scripted model asks for code whose
// output depends on a nonce in the task; the fixture records every request it receives, so the
// tests check that the model's next request really carried the (computed) output.
#include "agent_harness.h"

namespace {

using namespace nv::agent_harness;

const char* kNonceScript = R"js({
  "captures": {"nonce": "nonce ([0-9a-f]{12})"},
  "turns": [
    {"say": "Let me compute that.",
     "tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                     "code": "print(int('{{nonce}}', 16) * 7)"}}]},
    {"say": "The value is {{last_tool_output|strip}}."}
  ]})js";

// ================================================================================== the tests

// The main flow through nv-submit and Ollama's wire format: the model asks for code whose
// output depends on the nonce, the (test double) sandbox answers, the model's next request
// carries that output, and the answer with stats reaches the user.
TEST_F(AgentTest, OllamaNonceFlowThroughNvSubmit) {
  Stack stack({.script_json = kNonceScript});
  std::string nonce = nonce_hex();
  std::string want = times7(nonce);
  auto r = run_submit(stack.rt().path(), {"Multiply the nonce " + nonce + " by seven."});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err << stack.logs();
  std::printf("--- what nv-submit printed ---\n%s------------------------------\n", r.out.c_str());
  EXPECT_NE(r.out.find("▶ iteration 1: asking the model…"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("⚙ execute_code (python)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("│ print(int('" + nonce + "', 16) * 7)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("✓ exit 0 in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("▶ iteration 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("═ answer ═\nThe value is " + want + "."), std::string::npos) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m,
                                std::regex("iterations 2 · tool calls 1 · model load [0-9.]+ s · "
                                           "total [0-9.]+ s · trace ([0-9a-f-]{36})")))
      << r.out;
  std::string trace = m[1];
  EXPECT_TRUE(nv::is_uuid_v7(trace)) << trace;

  // The model's second request carried the real output as a tool message.
  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  auto tools = contents(*reqs[1], "tool");
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0], want + "\n");
  // The trace id went out as an HTTP header and to the executor in the bus header and body.
  EXPECT_EQ(header(*reqs[0], "X-Trace-Id"), trace);
  EXPECT_EQ(header(*reqs[1], "X-Trace-Id"), trace);
  auto seen = stack.exec().seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header_trace, trace);
  EXPECT_EQ(seen[0].body_trace, trace);
  EXPECT_EQ(seen[0].language, s::Language::PYTHON);
  EXPECT_EQ(seen[0].timeout_ms, 30000u);
  // The tool was offered to the model with its schema.
  {
    const auto& tl = (*reqs[0])["body"]["tools"];
    ASSERT_TRUE(tl.IsArray());
    ASSERT_EQ(tl.Size(), 1u);
    EXPECT_STREQ(tl[0]["function"]["name"].GetString(), "execute_code");
  }
}

// The same through the OpenAI wire format, observed through the bus: the progress stream has
// the documented shape and the tool result answers the model's call id.
TEST_F(AgentTest, OpenAiNonceFlowThroughTheBus) {
  Stack stack({.script_json = kNonceScript, .api = "openai"});
  nv::EventSubscriber events(test_zmq(), stack.events(), {"task.", "llm.call"});
  std::this_thread::sleep_for(300ms);  // let the subscription reach the hub
  std::string nonce = nonce_hex();
  auto o = submit(stack.clients(), "Multiply the nonce " + nonce + " by seven.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "The value is " + times7(nonce) + ".");
  EXPECT_EQ(o.iterations, 2u);
  EXPECT_EQ(o.tool_calls, 1u);
  // The model's text streams (modelDelta) before the whole text comes with the tool call.
  std::vector<std::string> want = {"thinking", "modelDelta", "modelText", "toolCall",  "status",
                                   "output",   "execResult", "thinking",  "modelDelta"};
  EXPECT_EQ(o.kinds, want);
  EXPECT_EQ(o.streamed_text, "Let me compute that.The value is " + times7(nonce) + ".");
  EXPECT_GT(o.first_token_ms, 0);
  ASSERT_EQ(o.stdout_chunks.size(), 1u);
  EXPECT_EQ(o.stdout_chunks[0], times7(nonce) + "\n");
  EXPECT_EQ(o.progress_traces, std::set<std::string>{o.trace});
  EXPECT_GT(o.llm_ms, 0);
  EXPECT_GT(o.exec_ms, 0);
  EXPECT_GE(o.total_ms, o.llm_ms + o.exec_ms);
  EXPECT_GT(o.completion_tokens, 0u);

  auto reqs = stack.chat_requests(nonce);
  ASSERT_EQ(reqs.size(), 2u);
  const auto& msgs = (*reqs[1])["body"]["messages"];
  std::string call_id, answered_id;
  for (const auto& m : msgs.GetArray()) {
    std::string role = m["role"].GetString();
    if (role == "assistant" && m.HasMember("tool_calls")) {
      call_id = m["tool_calls"][0]["id"].GetString();
    }
    if (role == "tool") {
      answered_id = m["tool_call_id"].GetString();
      EXPECT_EQ(std::string(m["content"].GetString()), times7(nonce) + "\n");
    }
  }
  EXPECT_FALSE(call_id.empty());
  EXPECT_EQ(call_id, answered_id);
  EXPECT_EQ(header(*reqs[1], "X-Trace-Id"), o.trace);

  // The events of this task: started, two iterations, two model calls, finished.
  std::vector<std::string> topics;
  int llm_ok = 0;
  std::string finished_status;
  auto end = std::chrono::steady_clock::now() + 5s;
  while (finished_status.empty() || llm_ok < 2) {
    if (std::chrono::steady_clock::now() > end) break;
    auto e = events.receive(200ms);
    if (!e || str(e->event.getTraceId()) != o.trace) continue;
    topics.push_back(e->topic);
    if (e->event.isLlmCall()) {
      auto c = e->event.getLlmCall();
      EXPECT_EQ(str(c.getApi()), "openai");
      EXPECT_EQ(str(c.getModel()), "fake-model");
      EXPECT_GT(c.getDurationMs(), 0);
      llm_ok += str(c.getOutcome()) == "ok" ? 1 : 0;
    }
    if (e->event.isTaskFinished()) {
      finished_status = str(e->event.getTaskFinished().getStatus());
      EXPECT_EQ(e->event.getTaskFinished().getIterations(), 2u);
      EXPECT_EQ(e->event.getTaskFinished().getToolCalls(), 1u);
    }
  }
  EXPECT_EQ(llm_ok, 2);
  EXPECT_EQ(finished_status, "completed");
  EXPECT_EQ(std::count(topics.begin(), topics.end(), "task.started"), 1);
  EXPECT_EQ(std::count(topics.begin(), topics.end(), "task.iteration"), 2);
}

// The gateway on its own: invalid requests get typed errors, streaming requests get ChatDelta
// partials that add up to the reply, and it keeps serving after each.
TEST_F(AgentTest, GatewayValidatesRequestsAndStreamsDeltas) {
  Stack stack({.script_json = R"js({"turns": [{"say": "one two three four"}]})js",
               .gateway_args = {"--rate", "0.2", "--rate-burst", "2"},
               .start_exec = false});
  nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
  auto ask = [&](const std::function<void(s::ChatRequest::Builder)>& fill,
                 std::vector<std::string>* deltas = nullptr,
                 std::chrono::milliseconds deadline = 20s) {
    capnp::MallocMessageBuilder mb;
    auto r = nv::bus::init_body<s::ChatRequest>(mb);
    auto m = r.initMessages(1);
    m[0].setRole(s::Role::USER);
    m[0].setContent("hello");
    fill(r);
    return c.call("llm", &mb, deadline, [&](nv::Client::Incoming& in) {
      auto d = in.body.root<s::ChatDelta>();
      ASSERT_TRUE(d) << d.error().message;
      if (deltas) deltas->push_back(str(d->getContent()));
    });
  };
  auto r = ask([](s::ChatRequest::Builder b) { b.setVersion(99); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::UNSUPPORTED_VERSION);
  r = ask([](s::ChatRequest::Builder b) { b.getMessages()[0].setRole(static_cast<s::Role>(9)); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(r.error().message.find("messages[0].role"), std::string::npos) << r.error().message;
  r = ask([](s::ChatRequest::Builder b) { b.initMessages(0); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  r = ask(
      [](s::ChatRequest::Builder b) { b.getMessages()[0].setContent(std::string(2u << 20, 'x')); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
  EXPECT_NE(r.error().message.find("cap"), std::string::npos) << r.error().message;

  std::vector<std::string> deltas;
  r = ask([](s::ChatRequest::Builder b) { b.setStream(true); }, &deltas);
  ASSERT_TRUE(r) << r.error().to_string();
  auto reply = r->body.root<s::ChatReply>();
  ASSERT_TRUE(reply);
  EXPECT_EQ(str(reply->getMessage().getContent()), "one two three four");
  EXPECT_GE(deltas.size(), 2u);
  std::string joined;
  for (auto& d : deltas) joined += d;
  EXPECT_EQ(joined, "one two three four");
  deltas.clear();
  r = ask([](s::ChatRequest::Builder) {}, &deltas);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(deltas.empty());
  // The two-request burst is spent (invalid requests take no token): one more with a deadline
  // shorter than the refill is refused with rateLimited, and a patient one still gets through.
  r = ask([](s::ChatRequest::Builder) {}, nullptr, 150ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, nv::ErrorCode::RATE_LIMITED) << r.error().to_string();
  EXPECT_NE(r.error().message.find("--rate"), std::string::npos) << r.error().message;
  r = ask([](s::ChatRequest::Builder) {});
  EXPECT_TRUE(r) << r.error().to_string();
}

// Misbehaviour, one stack, the same conversation submitted three times (the fixture counts
// misbehaviour per conversation and turn): HTTP 500 twice is retried away; then a truncated
// JSON answer fails the task clearly; then a stall past the gateway's timeout ends it as
// timedOut; and the third run, on the same services, completes.
TEST_F(AgentTest, MisbehavingModelGivesClearResultsAndTheServicesKeepServing) {
  const char* script = R"js({
    "captures": {"nonce": "nonce ([0-9a-f]{12})"},
    "turns": [
      {"error": {"status": 500, "times": 2},
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "print(int('{{nonce}}', 16) * 7)"}}]},
      {"malformed": {"kind": "truncated", "times": 1},
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "echo {{last_tool_output|strip}}"}}]},
      {"stall": {"seconds": 6, "times": 1}, "say": "final {{last_tool_output|strip}}"}
    ]})js";
  Stack stack(
      {.script_json = script, .gateway_args = {"--llm-timeout", "1.5", "--llm-retries", "2"}});
  std::string nonce = nonce_hex();
  std::string prompt = "Multiply the nonce " + nonce + " by seven.";

  auto bad = submit(stack.clients(), prompt);
  EXPECT_EQ(bad.status, s::TaskStatus::FAILED) << bad.describe();
  EXPECT_EQ(bad.error_code, "llmBadResponse") << bad.describe();
  EXPECT_EQ(bad.iterations, 2u);
  EXPECT_EQ(bad.tool_calls, 1u);  // the 500s of turn 0 were retried away

  auto slow = submit(stack.clients(), prompt);
  EXPECT_EQ(slow.status, s::TaskStatus::TIMED_OUT) << slow.describe();
  EXPECT_EQ(slow.error_code, "llmTimedOut") << slow.describe();
  EXPECT_NE(slow.error.find("--llm-timeout"), std::string::npos) << slow.error;
  EXPECT_EQ(slow.iterations, 3u);

  auto good = submit(stack.clients(), prompt);
  ASSERT_EQ(good.status, s::TaskStatus::COMPLETED) << good.describe() << stack.logs();
  EXPECT_EQ(good.answer, "final " + times7(nonce));

  // What the fixture saw for turn 0 of this conversation: two 500s, then the answer.
  int errors = 0;
  for (auto& d : stack.chat_requests(nonce)) {
    if ((*d)["turn"].IsInt() && (*d)["turn"].GetInt() == 0 && (*d)["answer"].IsString() &&
        std::string((*d)["answer"].GetString()) == "error 500") {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 2);
}

// A model without native tool calls writes them in its text; the fallback parser finds them
// (a fenced JSON call, then an XML <tool_call>), and the loop runs them like native ones.
TEST_F(AgentTest, ToolCallsWrittenInTextUseTheFallbackParser) {
  Stack stack({.script_file = source_dir() + "/tests/fixtures/fake_llm_text_tool_calls.json"});
  auto o = submit(stack.clients(), "What is 2+2? Use the sandbox.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  EXPECT_EQ(o.answer, "Done: 4");
  EXPECT_EQ(o.tool_calls, 2u);
  ASSERT_EQ(o.codes.size(), 2u);
  EXPECT_EQ(o.codes[0], "print(2+2)");
  EXPECT_EQ(o.codes[1], "echo 4");
  auto seen = stack.exec().seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].language, s::Language::PYTHON);
  EXPECT_EQ(seen[1].language, s::Language::BASH);
  auto reqs = stack.chat_requests("2+2? Use");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(contents(*reqs[2], "tool").back(), "4\n");
}

// The text parser on its own, on the forms models are seen to write.
TEST(TextToolCalls, ParsesTheCommonForms) {
  using nv::agent::parse_text_tool_calls;
  auto one = [](const std::string& text) {
    auto calls = parse_text_tool_calls(text);
    EXPECT_EQ(calls.size(), 1u) << text;
    return calls.empty() ? nv::agent::ParsedCall{} : calls[0];
  };
  auto c =
      one("Sure.\n```json\n{\"name\": \"execute_code\", \"arguments\": {\"language\": "
          "\"python\", \"code\": \"print(1)\"}}\n```");
  EXPECT_EQ(c.name, "execute_code");
  EXPECT_EQ(c.arguments_json, R"js({"language":"python","code":"print(1)"})js");
  c = one(R"({"name": "execute_code", "parameters": {"language": "bash", "code": "ls"}})");
  EXPECT_EQ(c.arguments_json, R"({"language":"bash","code":"ls"})");
  c =
      one("<tool_call>\n{\"name\": \"execute_code\", \"arguments\": \"{\\\"language\\\": "
          "\\\"python\\\", \\\"code\\\": \\\"x=1\\\"}\"}\n</tool_call>");
  EXPECT_EQ(c.arguments_json, R"({"language": "python", "code": "x=1"})");
  c =
      one("<execute_code language=\"python\">\nfor i in range(3):\n    print(i &lt; 2)\n"
          "</execute_code>");
  std::string why;
  auto args = nv::agent::parse_code_args(c.arguments_json, &why);
  ASSERT_TRUE(args) << why;
  EXPECT_EQ(args->language, s::Language::PYTHON);
  EXPECT_EQ(args->code, "for i in range(3):\n    print(i < 2)");
  c =
      one("<tool_call><name>execute_code</name><arguments><language>javascript</language>"
          "<code>console.log(1)</code></arguments></tool_call>");
  args = nv::agent::parse_code_args(c.arguments_json, &why);
  ASSERT_TRUE(args) << why;
  EXPECT_EQ(args->language, s::Language::JAVASCRIPT);
  EXPECT_EQ(args->code, "console.log(1)");
  // Two calls keep their order; a plain code block or prose with braces is not a call.
  auto two = parse_text_tool_calls(
      "<execute_code language=\"bash\">echo a</execute_code> then "
      "{\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", "
      "\"code\": \"echo b\"}}");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NE(two[0].arguments_json.find("echo a"), std::string::npos);
  EXPECT_NE(two[1].arguments_json.find("echo b"), std::string::npos);
  EXPECT_TRUE(parse_text_tool_calls("```python\nprint({'a': 1})\n```\nThe set {1, 2}.").empty());
  EXPECT_FALSE(nv::agent::parse_code_args(R"({"language": "cobol", "code": "x"})", &why));
  EXPECT_NE(why.find("cobol"), std::string::npos);
}

// Tool failures go back to the model as tool results: an execution that times out, and an
// executor that answers with an error. The task still completes.
TEST_F(AgentTest, ToolTimeoutsAndErrorsGoBackToTheModel) {
  const char* script = R"js({"turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
                       "code": "import time; time.sleep(999)"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "bash",
                       "code": "crash the vm"}}]},
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "cobol",
                       "code": "DISPLAY 1"}}]},
      {"say": "I saw: {{last_tool_output}}"}]})js";
  Stack stack({.script_json = script});
  auto o = submit(stack.clients(), "Try things that fail.");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack.logs();
  ASSERT_EQ(o.timed_out.size(), 1u);
  EXPECT_TRUE(o.timed_out[0]);
  ASSERT_EQ(o.tool_errors.size(), 2u) << o.describe();
  EXPECT_NE(o.tool_errors[0].find("the VM died"), std::string::npos) << o.tool_errors[0];
  EXPECT_NE(o.tool_errors[1].find("cobol"), std::string::npos) << o.tool_errors[1];
  EXPECT_NE(o.answer.find("cobol"), std::string::npos) << o.answer;
  auto reqs = stack.chat_requests("Try things that fail.");
  ASSERT_EQ(reqs.size(), 4u);
  auto tools = contents(*reqs[3], "tool");
  ASSERT_EQ(tools.size(), 3u);
  EXPECT_NE(tools[0].find("time limit"), std::string::npos) << tools[0];
  EXPECT_NE(tools[1].find("the VM died"), std::string::npos) << tools[1];
  EXPECT_NE(tools[2].find("language \"cobol\" is not available"), std::string::npos) << tools[2];
}

// A model that never stops calling tools ends with maxIterations, through the bus and through
// nv-submit (exit code 6).
TEST_F(AgentTest, MaxIterationsEndsTheTaskWithThatStatus) {
  Stack stack({.script_file = source_dir() + "/tests/fixtures/fake_llm_max_iterations.json"});
  auto o = submit(stack.clients(), "Loop forever.", 3);
  EXPECT_EQ(o.status, s::TaskStatus::MAX_ITERATIONS) << o.describe();
  EXPECT_EQ(o.iterations, 3u);
  EXPECT_EQ(o.tool_calls, 2u);  // the third answer's call would never be read: not run
  EXPECT_NE(o.error.find("--max-iterations"), std::string::npos) << o.error;

  auto r = run_submit(stack.rt().path(), {"--max-iterations", "2", "Loop again."});
  EXPECT_EQ(r.status.code, 6) << r.out << r.err;
  EXPECT_NE(r.out.find("═ maxIterations ═"), std::string::npos) << r.out;
}

// Model not found: a clear error naming the fix, exit code 4 from nv-submit; the services keep
// serving a task that names a model the server has. (The gateway finds the server through
// OLLAMA_HOST in Ollama's host:port form here.)
TEST_F(AgentTest, ModelNotFoundIsClearAndTheServicesKeepServing) {
  Stack stack({.script_json = R"({"models": ["other-model"], "turns": [{"say": "hello"}]})",
               .url_in_ollama_host = true});
  auto o = submit(stack.clients(), "Say hello.");
  EXPECT_EQ(o.status, s::TaskStatus::MODEL_UNREACHABLE) << o.describe();
  EXPECT_EQ(o.error_code, "modelNotFound");
  EXPECT_NE(o.error.find("ollama pull fake-model"), std::string::npos) << o.error;

  auto r = run_submit(stack.rt().path(), {"Say hello."});
  EXPECT_EQ(r.status.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("ollama pull fake-model"), std::string::npos) << r.err;

  auto ok = submit(stack.clients(), "Say hello.", 0, 0, "other-model");
  EXPECT_EQ(ok.status, s::TaskStatus::COMPLETED) << ok.describe();
  EXPECT_EQ(ok.answer, "hello");
}

// 20 tasks at once against an executor that takes 2 at a time: they queue, none fails.
TEST_F(AgentTest, TwentyConcurrentTasksQueueOnTwoExecutorSlots) {
  Stack stack({.script_json = kNonceScript, .exec_capacity = 2, .exec_delay = 150ms});
  std::vector<std::string> nonces;
  for (int i = 0; i < 20; ++i) nonces.push_back(nonce_hex());
  std::vector<Outcome> outs(20);
  std::vector<std::thread> threads;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      outs[i] = submit(stack.clients(), "Multiply the nonce " + nonces[i] + " by seven.");
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> traces;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(outs[i].status, s::TaskStatus::COMPLETED) << i << ": " << outs[i].describe();
    EXPECT_EQ(outs[i].answer, "The value is " + times7(nonces[i]) + ".");
    traces.insert(outs[i].trace);
  }
  EXPECT_EQ(traces.size(), 20u);
  EXPECT_EQ(stack.exec().seen().size(), 20u);
  EXPECT_LE(stack.exec().max_concurrent(), 2);
  EXPECT_EQ(stack.exec().max_concurrent(), 2);  // they really overlapped
}

// The task's own deadline: a model slower than --timeout ends the task as timedOut (nv-submit
// exit code 7), and the services keep serving.
TEST_F(AgentTest, TaskDeadlineEndsWithTimedOut) {
  Stack stack({.script_json = R"js({"turns": [{"stall": {"seconds": 4, "times": 1},
                                                "say": "done"}]})js"});
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_submit(stack.rt().path(), {"--timeout", "1", "Be slow."});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status.code, 7) << r.out << r.err;
  EXPECT_NE(r.out.find("═ timedOut ═"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("task deadline (1000 ms)"), std::string::npos) << r.err;
  EXPECT_LT(took, 4s);
  auto o = submit(stack.clients(), "Be slow.");  // the stall was used up: served at once
  EXPECT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "done");
}

// SIGTERM while a task waits for a stalled model: the task ends at once with a clear error that
// reaches its client, and the orchestrator exits 0 without waiting for the model.
TEST_F(AgentTest, OrchestratorSigtermEndsRunningTasksCleanly) {
  Stack stack({.script_json = R"js({"turns": [{"stall": 60, "say": "late"}]})js",
               .gateway_args = {"--llm-timeout", "120"}});
  Outcome o;
  std::thread client([&] { o = submit(stack.clients(), "Take your time."); });
  // Wait until the model has the request, then stop the orchestrator.
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 20s));
  auto t0 = std::chrono::steady_clock::now();
  auto exit = stack.orchestrator().terminate(20s);
  auto took = std::chrono::steady_clock::now() - t0;
  client.join();
  EXPECT_TRUE(exit.clean()) << exit.describe() << stack.logs();
  EXPECT_LT(took, 10s);
  // Whoever answers first — the agent ending the task, or the broker failing what is still
  // pending as it stops — the client learns the orchestrator is shutting down.
  if (o.bus_error) {
    EXPECT_EQ(o.bus_error->code, nv::ErrorCode::SHUTTING_DOWN) << o.describe();
  } else {
    EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
    EXPECT_EQ(o.error_code, "shuttingDown") << o.describe();
  }
}

// The caller cancels a chat while the model stalls (before answering, or in the middle of a
// stream): the gateway abandons the HTTP call at once — the model server sees its connection
// close within a second, not after the 30 s stall — answers the broker so its only slot
// (--concurrency 1) is free, and serves the next request right away.
TEST_F(AgentTest, CallerCancelClosesTheGatewaysModelConnection) {
  struct Case {
    const char* name;
    bool stream;
    const char* script;
    const char* answer;
  };
  for (Case k : {Case{"stalled before answering", false,
                      R"js({"turns": [{"stall": {"seconds": 30, "times": 1},
                                       "say": "served"}]})js",
                      "served"},
                 Case{"stalled mid-stream", true,
                      R"js({"turns": [{"stall": {"seconds": 30, "after_chunks": 1, "times": 1},
                                       "say": "served at last"}]})js",
                      "served at last"}}) {
    SCOPED_TRACE(k.name);
    Stack stack({.script_json = k.script,
                 .gateway_args = {"--concurrency", "1", "--llm-timeout", "60"},
                 .start_exec = false});
    nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
    auto fill = [&](capnp::MallocMessageBuilder& mb) {
      auto r = nv::bus::init_body<s::ChatRequest>(mb);
      r.setStream(k.stream);
      auto m = r.initMessages(1);
      m[0].setRole(s::Role::USER);
      m[0].setContent("hello");
    };
    capnp::MallocMessageBuilder first;
    fill(first);
    uint64_t id = c.send("llm", &first, 60s);
    ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 10s))
        << stack.logs();
    if (k.stream) {  // the first piece reached the caller; the model stalls after it
      auto in = c.receive(10s);
      ASSERT_TRUE(in) << stack.logs();
      EXPECT_EQ(in->header.kind, nv::bus::Kind::PARTIAL);
    } else {
      std::this_thread::sleep_for(300ms);
    }
    EXPECT_TRUE(stack.hangups().empty());
    auto t0 = std::chrono::steady_clock::now();
    c.cancel(id, "llm");
    ASSERT_TRUE(nv::test::wait_until([&] { return !stack.hangups().empty(); }, 5s, 10ms))
        << "the model server never saw the gateway hang up\n"
        << stack.logs();
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, 1s) << std::chrono::duration<double>(took).count() << " s";
    EXPECT_TRUE(nv::test::wait_until(
        [&] {
          return stack.gateway().stderr_text().find("chat cancelled by the caller") !=
                 std::string::npos;
        },
        5s))
        << stack.logs();
    // The next request takes the same (only) slot and is answered at once.
    auto t1 = std::chrono::steady_clock::now();
    capnp::MallocMessageBuilder second;
    fill(second);
    auto r = c.call("llm", &second, 20s);
    ASSERT_TRUE(r) << r.error().to_string() << stack.logs();
    auto reply = r->body.root<s::ChatReply>();
    ASSERT_TRUE(reply);
    EXPECT_EQ(str(reply->getMessage().getContent()), k.answer);
    EXPECT_LT(std::chrono::steady_clock::now() - t1, 5s);
    EXPECT_EQ(stack.hangups().size(), 1u);
  }
}

// The broker dies (SIGKILL) while the gateway waits on a stalled model: the gateway notices the
// silence within its liveness window (3 × 250 ms here), reconnects, and abandons the orphaned
// call, whose answer has nowhere to go, instead of holding the model for the rest of the stall.
TEST_F(AgentTest, GatewayAbandonsModelCallsWhenTheBrokerIsGone) {
  Stack stack({.script_json = R"js({"turns": [{"stall": 30, "say": "late"}]})js",
               .gateway_args = {"--llm-timeout", "60"},
               .start_exec = false});
  nv::Client c(test_zmq(), {stack.clients(), {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  auto r = nv::bus::init_body<s::ChatRequest>(mb);
  auto m = r.initMessages(1);
  m[0].setRole(s::Role::USER);
  m[0].setContent("hello");
  c.send("llm", &mb, 60s);
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.chat_requests().empty(); }, 10s))
      << stack.logs();
  auto t0 = std::chrono::steady_clock::now();
  stack.orchestrator().signal(SIGKILL);
  ASSERT_TRUE(nv::test::wait_until([&] { return !stack.hangups().empty(); }, 10s, 10ms))
      << "the model server never saw the gateway hang up\n"
      << stack.logs();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_NE(stack.gateway().stderr_text().find("orphaned"), std::string::npos) << stack.logs();
  EXPECT_TRUE(stack.gateway().running());
}

// nv-submit's exit codes for an absent stack (3), an unreachable model (4) and bad usage (2).
TEST_F(AgentTest, NvSubmitExitCodes) {
  {
    TempDir empty("nv-agent-empty");
    auto r = run_submit(empty.path(), {"anything"});
    EXPECT_EQ(r.status.code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("./nv up"), std::string::npos) << r.err;
  }
  {
    auto r = run_submit("/nonexistent", {});
    EXPECT_EQ(r.status.code, 2) << r.out << r.err;
    r = run_submit("/nonexistent", {"--tier", "huge", "x"});
    EXPECT_EQ(r.status.code, 2) << r.out << r.err;
  }
  Stack stack({.gateway_args = {"--llm-retries", "0"}, .start_fake = false});
  auto r = run_submit(stack.rt().path(), {"Say hello."});
  EXPECT_EQ(r.status.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("ollama serve"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--llm-url"), std::string::npos) << r.err;
  auto j = run_submit(stack.rt().path(), {"--json", "Say hello."});
  EXPECT_EQ(j.status.code, 4);
  rapidjson::Document d;
  d.Parse(j.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << j.out;
  EXPECT_EQ(d["exitCode"].GetInt(), 4);
  EXPECT_STREQ(d["result"]["status"].GetString(), "modelUnreachable");
  EXPECT_TRUE(d["progress"].IsArray());
}

// ========================================================= replies as real models send them
//
// Issue 10 §1–2: one stack per wire format, shared by every case (fake_llm.py routes each
// conversation to its case's script by the "case:NAME" tag in the task). Each case is a kind of
// reply the happy path did not expect; the exact values are computed by the sandbox double from
// the code it receives (agent_e2e_test runs the same code in real microVMs).

const char* kRepliesScript = R"js({
  "routes": [
    {"match": "case:ids-empty", "turns": [
      {"tool_calls": [
        {"id": "", "name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}},
        {"id": "", "name": "execute_code", "arguments": {"language": "javascript", "code": "console.log(3**5)"}}]},
      {"say": "ok {{last_tool_output|strip}}"}]},
    {"match": "case:ids-dup", "turns": [
      {"tool_calls": [
        {"id": "call_dup", "name": "execute_code", "arguments": {"language": "python", "code": "print(2**10)"}},
        {"id": "call_dup", "name": "execute_code", "arguments": {"language": "python", "code": "print(3**3)"}}]},
      {"say": "ok {{last_tool_output|strip}}"}]},
    {"match": "case:fence-python", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python",
        "code": "```python\nimport math\nprint(math.factorial(20))\n```"}}]},
      {"say": "20! = {{last_tool_output|strip}}"}]},
    {"match": "case:fence-tilde", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"code": "\n~~~js\n\nconsole.log(3**5)\n~~~\n"}}]},
      {"say": "3**5 = {{last_tool_output|strip}}"}]},
    {"match": "case:cut-twice", "turns": [
      {"tool_calls": [{"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}}]},
      {"say": "", "thinking": "The output is 1048576, so the answer", "done_reason": "length"},
      {"say": "", "done_reason": "length"}]},
    {"match": "case:cut-once", "turns": [
      {"say": "The answer is 10", "done_reason": "length"},
      {"say": "The answer is 1024."}]},
    {"match": "case:empty-once", "turns": [
      {"say": "", "thinking": "only thinking here"},
      {"say": "Fine: 42."}]},
    {"match": "case:think", "turns": [
      {"thinking": "Run it: {\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", \"code\": \"echo thought\"}}",
       "say": "<think>also {\"name\": \"execute_code\", \"arguments\": {\"language\": \"bash\", \"code\": \"echo tagged\"}}</think>\nI will compute it.",
       "tool_calls": [{"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}}]},
      {"say": "<think>the tool said {{last_tool_output|strip}}</think>The answer is {{last_tool_output|strip}}."}]},
    {"match": "case:family", "turns": [
      {"tool_calls": [
        {"name": "run_python", "arguments": {"code": "print(1)"}},
        {"name": "execute_code", "arguments": "{\"language\": \"python\", \"code\": \"print(1)"},
        {"name": "execute_code", "arguments": {"language": "py", "code": "print(2**20)", "timeout": 5}},
        {"name": "execute_code", "arguments": {"language": "node", "code": "console.log(3**5)"}}]},
      {"say": "done"}]},
    {"match": "case:slow-stream", "turns": [
      {"say": "one two three four", "stall": {"seconds": 30, "after_chunks": 1}}]},
    {"match": "case:stream", "turns": [
      {"say": "Computing both powers now.", "split_bytes": 7, "crlf": true, "keep_alive": true,
       "chunk_delay": 0.01,
       "tool_calls": [
         {"name": "execute_code", "arguments": {"language": "python", "code": "print(2**20)"}},
         {"name": "execute_code", "arguments": {"language": "javascript", "code": "console.log(3**5)"}}]},
      {"say": "The last result is {{last_tool_output|strip}}.", "split_bytes": 5, "crlf": true,
       "keep_alive": true}]}
  ]})js";

class AgentReplies : public ::testing::TestWithParam<std::string> {
 protected:
  static void TearDownTestSuite() { stacks().clear(); }
  static std::map<std::string, std::unique_ptr<Stack>>& stacks() {
    static std::map<std::string, std::unique_ptr<Stack>> s;
    return s;
  }
  void SetUp() override {
    setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);
    for (auto b : {"nv-orchestrator", "nv-llm-gateway", "nv-submit"}) {
      if (nv::test::bin(b).empty() || access(nv::test::bin(b).c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " is not built";
      }
    }
    auto& st = stacks()[GetParam()];
    if (!st) {
      // The OpenAI-format server refuses tool-call ids the way strict servers do (HTTP 400).
      std::string script = kRepliesScript;
      if (GetParam() == "openai") script.insert(1, "\n  \"strict_tool_ids\": true,");
      st = std::make_unique<Stack>(StackOptions{.script_json = script, .api = GetParam()});
    }
    stack_ = st.get();
  }
  bool openai() const { return GetParam() == "openai"; }

  // Runs one case; `tag` goes into the task so fake_llm.py plays that case.
  Outcome run_case(const std::string& tag) {
    nonce_ = nonce_hex();
    return submit(stack_->clients(), "case:" + tag + " nonce " + nonce_ + ": do the task.");
  }
  std::vector<std::shared_ptr<rapidjson::Document>> requests() {
    return stack_->chat_requests(nonce_);
  }
  // The messages of `role` in recorded request `i` (JSON objects).
  std::vector<const rapidjson::Value*> messages(const rapidjson::Document& d,
                                                const std::string& role) {
    std::vector<const rapidjson::Value*> out;
    for (const auto& m : d["body"]["messages"].GetArray()) {
      if (role == m["role"].GetString()) out.push_back(&m);
    }
    return out;
  }
  // The code the sandbox received for this case's task, in order.
  std::vector<std::pair<std::string, s::Language>> ran(const std::string& trace) {
    std::vector<std::pair<std::string, s::Language>> out;
    for (auto& x : stack_->exec().seen()) {
      if (x.body_trace == trace) out.emplace_back(x.code, x.language);
    }
    return out;
  }

  Stack* stack_ = nullptr;
  std::string nonce_;
};

// Two calls with empty ids (the issue's input) and two with the same id: every call gets a
// unique non-empty id, the same in the assistant message and in its tool message, so a server
// that checks them (the OpenAI-format fake answers 400 otherwise) accepts the conversation.
TEST_P(AgentReplies, EmptyAndDuplicateToolCallIds) {
  struct Case {
    std::string tag, first, second;
  };
  for (const Case& c :
       {Case{"ids-empty", "1048576\n", "243\n"}, Case{"ids-dup", "1024\n", "27\n"}}) {
    auto o = run_case(c.tag);
    ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << c.tag << " " << o.describe() << stack_->logs();
    EXPECT_EQ(o.answer, "ok " + c.second.substr(0, c.second.size() - 1));
    auto reqs = requests();
    ASSERT_EQ(reqs.size(), 2u) << c.tag;
    auto assistant = messages(*reqs[1], "assistant");
    auto tools = messages(*reqs[1], "tool");
    ASSERT_EQ(assistant.size(), 1u);
    ASSERT_EQ(tools.size(), 2u);
    EXPECT_EQ(std::string((*tools[0])["content"].GetString()), c.first) << c.tag;
    EXPECT_EQ(std::string((*tools[1])["content"].GetString()), c.second) << c.tag;
    if (openai()) {
      const auto& calls = (*assistant[0])["tool_calls"];
      ASSERT_EQ(calls.Size(), 2u);
      std::string id0 = calls[0]["id"].GetString(), id1 = calls[1]["id"].GetString();
      EXPECT_FALSE(id0.empty());
      EXPECT_FALSE(id1.empty());
      EXPECT_NE(id0, id1);
      EXPECT_EQ(std::string((*tools[0])["tool_call_id"].GetString()), id0);
      EXPECT_EQ(std::string((*tools[1])["tool_call_id"].GetString()), id1);
    }
  }
}

// Code wrapped in a markdown fence: the issue's ```python block, and a ~~~js block with blank
// lines and no language argument (the fence's tag gives it).
TEST_P(AgentReplies, CodeInAMarkdownFence) {
  auto o = run_case("fence-python");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "20! = 2432902008176640000");
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);
  EXPECT_EQ(code[0].first, "import math\nprint(math.factorial(20))\n");
  EXPECT_EQ(code[0].second, s::Language::PYTHON);
  EXPECT_EQ(std::string((*messages(*requests()[1], "tool")[0])["content"].GetString()),
            "2432902008176640000\n");

  o = run_case("fence-tilde");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "3**5 = 243");
  code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);
  EXPECT_EQ(code[0].first, "console.log(3**5)\n");
  EXPECT_EQ(code[0].second, s::Language::JAVASCRIPT);
}

// A reply cut at the token limit (done_reason / finish_reason "length") after a tool result,
// with reasoning only and no text, twice: never an answer; the model is asked once more (a
// notice says so), then the task fails with llmReplyCut, naming the cut.
TEST_P(AgentReplies, LengthCutRepliesAreNeverAnswers) {
  auto o = run_case("cut-twice");
  EXPECT_EQ(o.status, s::TaskStatus::FAILED) << o.describe();
  EXPECT_EQ(o.error_code, "llmReplyCut") << o.describe();
  EXPECT_NE(o.error.find("cut at its token limit (done reason \"length\")"), std::string::npos)
      << o.error;
  EXPECT_EQ(o.answer, "");
  ASSERT_EQ(o.notices.size(), 1u) << o.describe();
  EXPECT_EQ(o.notices[0],
            "the model's reply was cut at its token limit (done reason \"length\"); asking it "
            "once more");
  EXPECT_EQ(o.iterations, 3u);
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 3u);
  auto users = contents(*reqs[2], "user");
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[1], nv::agent::ask_again_message(nv::agent::ReplyKind::cut));

  // Cut once, then a full answer: the second reply is the answer.
  o = run_case("cut-once");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "The answer is 1024.");
  EXPECT_EQ(o.notices.size(), 1u);
  reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(contents(*reqs[1], "assistant"), std::vector<std::string>{"The answer is 10"});

  // An empty reply (reasoning only, done reason "stop") is asked again too.
  o = run_case("empty-once");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe();
  EXPECT_EQ(o.answer, "Fine: 42.");
  ASSERT_EQ(o.notices.size(), 1u);
  EXPECT_NE(o.notices[0].find("was empty (done reason \"stop\")"), std::string::npos);
}

// nv-submit ends non-zero (5, failed) on a twice-cut reply and says why.
TEST_P(AgentReplies, NvSubmitExitsNonZeroOnACutReply) {
  if (openai()) GTEST_SKIP() << "the same path as Ollama's; one run is enough";
  auto r = run_submit(stack_->rt().path(), {"case:cut-twice nonce " + nonce_hex() + " go"});
  EXPECT_EQ(r.status.code, 5) << r.out << r.err;
  EXPECT_NE(r.out.find("↻ the model's reply was cut at its token limit"), std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("cut at its token limit (done reason \"length\") again"), std::string::npos)
      << r.err;
}

// nv-submit prints the text as it streams, the reasoning apart (a "thinking: " label when stdout
// is not a terminal, dimmed on one), and --no-thinking hides the reasoning.
TEST_P(AgentReplies, NvSubmitShowsThinkingApart) {
  auto r = run_submit(stack_->rt().path(), {"case:think nonce " + nonce_hex() + " go"});
  ASSERT_EQ(r.status.code, 0) << r.out << r.err;
  std::printf("--- what nv-submit printed ---\n%s------------------------------\n", r.out.c_str());
  EXPECT_NE(r.out.find("▶ iteration 1: asking the model…\nthinking: Run it: {\"name\""),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\nI will compute it.\n⚙ execute_code (python)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("thinking: the tool said 1048576\nThe answer is 1048576.\n═ answer ═\n"
                       "The answer is 1048576.\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("first token "), std::string::npos) << r.out;
  auto quiet =
      run_submit(stack_->rt().path(), {"--no-thinking", "case:think nonce " + nonce_hex() + " go"});
  ASSERT_EQ(quiet.status.code, 0) << quiet.out << quiet.err;
  EXPECT_EQ(quiet.out.find("thinking"), std::string::npos) << quiet.out;
  EXPECT_EQ(quiet.out.find("Run it"), std::string::npos) << quiet.out;
  EXPECT_NE(quiet.out.find("I will compute it."), std::string::npos) << quiet.out;
}

// Reasoning in the API's own field (Ollama `thinking`, OpenAI `reasoning_content`) and in
// <think> tags: streamed apart, never executed (both hold a tool call), never the answer, and
// sent back in the history as each API expects.
TEST_P(AgentReplies, ReasoningIsShownNeverRun) {
  auto o = run_case("think");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "The answer is 1048576.");
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 1u);  // not "echo thought", not "echo tagged"
  EXPECT_EQ(code[0].first, "print(2**20)");
  EXPECT_NE(o.streamed_thinking.find("Run it: {\"name\""), std::string::npos)
      << o.streamed_thinking;
  EXPECT_NE(o.streamed_thinking.find("also {\"name\""), std::string::npos) << o.streamed_thinking;
  EXPECT_NE(o.streamed_thinking.find("the tool said 1048576"), std::string::npos);
  EXPECT_EQ(o.streamed_text.find("think>"), std::string::npos) << o.streamed_text;
  EXPECT_EQ(o.streamed_text, "I will compute it.The answer is 1048576.");
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  auto assistant = messages(*reqs[1], "assistant");
  ASSERT_EQ(assistant.size(), 1u);
  const auto& m = *assistant[0];
  EXPECT_EQ(std::string(m["content"].GetString()), "I will compute it.");
  const char* key = openai() ? "reasoning_content" : "thinking";
  ASSERT_TRUE(m.HasMember(key)) << key;
  std::string kept = m[key].GetString();
  EXPECT_TRUE(kept.starts_with("Run it: {\"name\"")) << kept;
  EXPECT_NE(kept.find("also {\"name\""), std::string::npos) << kept;
}

// The rest of the family in one reply: a tool that does not exist, arguments that are not JSON,
// an unknown key with a "py" alias, and a "node" alias. Each call gets a clear tool message; the
// history stays valid for the API (Ollama needs an arguments object).
TEST_P(AgentReplies, UnknownToolsBadArgumentsAndAliases) {
  auto o = run_case("family");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "done");
  ASSERT_EQ(o.tool_errors.size(), 2u) << o.describe();
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  auto tools = contents(*reqs[1], "tool");
  ASSERT_EQ(tools.size(), 4u);
  EXPECT_EQ(tools[0],
            "error: the code did not run: there is no tool named \"run_python\"; the only tool "
            "is execute_code(language, code)");
  EXPECT_TRUE(
      tools[1].starts_with("error: the code did not run: the arguments are not a JSON "
                           "object (got: {\"language\": \"python\", \"code\": "
                           "\"print(1)); execute_code takes"))
      << tools[1];
  EXPECT_EQ(tools[2],
            "note: execute_code takes only \"language\" and \"code\"; ignored \"timeout\"\n"
            "1048576\n");
  EXPECT_EQ(tools[3], "243\n");
  const auto& calls = (*messages(*reqs[1], "assistant")[0])["tool_calls"];
  ASSERT_EQ(calls.Size(), 4u);
  if (openai()) {
    EXPECT_STREQ(calls[1]["function"]["arguments"].GetString(), "{}");
  } else {
    EXPECT_TRUE(calls[1]["function"]["arguments"].IsObject());
  }
}

// The agent asks with stream: true; the text arrives in pieces (bodies written 5–7 bytes at a
// time, CRLF line ends, SSE keep-alive comments, tool-call arguments split across chunks by
// index, a usage chunk and [DONE] for OpenAI; NDJSON and the final done object for Ollama).
TEST_P(AgentReplies, StreamsTheModelsTextAndSplitToolCalls) {
  auto o = run_case("stream");
  ASSERT_EQ(o.status, s::TaskStatus::COMPLETED) << o.describe() << stack_->logs();
  EXPECT_EQ(o.answer, "The last result is 243.");
  EXPECT_EQ(o.streamed_text, "Computing both powers now.The last result is 243.");
  EXPECT_GE(o.text_deltas, 8u);  // word-sized pieces, not one block
  EXPECT_GT(o.first_token_ms, 0);
  EXPECT_GT(o.completion_tokens, 0u);  // Ollama's done object / OpenAI's usage chunk
  auto code = ran(o.trace);
  ASSERT_EQ(code.size(), 2u);
  EXPECT_EQ(code[0].first, "print(2**20)");
  EXPECT_EQ(code[1].first, "console.log(3**5)");
  auto reqs = requests();
  ASSERT_EQ(reqs.size(), 2u);
  for (auto& r : reqs) EXPECT_TRUE((*r)["body"]["stream"].GetBool());
  auto tools = contents(*reqs[1], "tool");
  EXPECT_EQ(tools, (std::vector<std::string>{"1048576\n", "243\n"}));
}

// A task cancelled while the model streams: the first piece reached the client, the model
// stalls, the client cancels; the model server sees the hang-up at once (the agent cancels its
// llm call, the gateway closes the HTTP connection).
TEST_P(AgentReplies, CancelStopsAStreamingGeneration) {
  size_t before = stack_->hangups().size();
  nv::Client c(test_zmq(), {stack_->clients(), {}, {}, {}});
  capnp::MallocMessageBuilder mb;
  nv::bus::init_body<s::SubmitTask>(mb).setPrompt("case:slow-stream nonce " + nonce_hex());
  uint64_t id = c.send("task", &mb, 60s);
  std::string first;
  auto until = std::chrono::steady_clock::now() + 20s;
  while (first.empty() && std::chrono::steady_clock::now() < until) {
    auto in = c.receive(500ms);
    if (!in || in->header.request_id != id || in->header.kind != nv::bus::Kind::PARTIAL) continue;
    auto p = in->body.root<s::TaskProgress>();
    if (p && p->which() == s::TaskProgress::MODEL_DELTA) first = str(p->getModelDelta());
  }
  ASSERT_EQ(first, "one ") << stack_->logs();
  auto t0 = std::chrono::steady_clock::now();
  c.cancel(id, "task");
  ASSERT_TRUE(nv::test::wait_until([&] { return stack_->hangups().size() > before; }, 10s, 10ms))
      << "the model server never saw the hang-up\n"
      << stack_->logs();
  auto took = std::chrono::steady_clock::now() - t0;
  // Generous for a loaded machine; the agent polls its cancel every 100 ms, the gateway too.
  EXPECT_LT(took, 3s) << std::chrono::duration<double>(took).count() << " s";
}

INSTANTIATE_TEST_SUITE_P(WireFormats, AgentReplies, ::testing::Values("ollama", "openai"),
                         [](const auto& info) { return info.param; });

}  // namespace
