// agent_e2e_test.cc — issue 5's acceptance on a real stack with real microVMs:
//
//   nv up (orchestrator + agent loop, nv-vm-pool-manager, nv-sandbox-executor, nv-llm-gateway)
//   nv-submit "… nonce N …" → scripted model (tests/fixtures/fake_llm.py) asks for python that
//   hashes N and prints NEUROVISOR_TRACE_ID → the code runs in a VM → the model's next request
//   carries the real stdout (the SHA-256 is computed here, independently) → the answer reaches
//   the user → nv down.
//
// Once over the Ollama wire format and once over the OpenAI one; one VM-backed task each (VMs
// under TCG are slow). Skips, saying why, when the VM binaries or the guest image are missing.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/events.h"
#include "common/frames.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::TempDir;

// ---- SHA-256 (FIPS 180-4), so the expected stdout is computed here and not by the fixture ----

std::string sha256_hex(const std::string& msg) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
      0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
      0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
      0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
      0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
      0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
      0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string m = msg;
  uint64_t bits = static_cast<uint64_t>(msg.size()) * 8;
  m += static_cast<char>(0x80);
  while (m.size() % 64 != 56) m += '\0';
  for (int i = 7; i >= 0; --i) m += static_cast<char>((bits >> (i * 8)) & 0xff);
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = 0;
      for (int j = 0; j < 4; ++j) {
        w[i] = (w[i] << 8) | static_cast<uint8_t>(m[off + static_cast<size_t>(i * 4 + j)]);
      }
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 =
          hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  char out[65];
  for (int i = 0; i < 8; ++i) std::snprintf(out + i * 8, 9, "%08x", h[i]);
  return std::string(out, 64);
}

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

std::string nonce_hex() {
  std::random_device rd;
  std::mt19937_64 g(rd());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(g()));
  return buf;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

using nv::test::service_process;

class AgentE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);  // run by hand: this build's binaries
    std::string build = env_or("NV_BUILD_DIR", NV_TEST_BUILD_DIR);
    for (auto b : {"nv", "nv-orchestrator", "nv-llm-gateway", "nv-submit", "nv-sandbox-executor",
                   "nv-vm-pool-manager"}) {
      std::string p = nv::test::bin(b);
      if (p.empty() || access(p.c_str(), X_OK) != 0) {
        GTEST_SKIP() << b << " is not built in NV_BIN_DIR (" << env_or("NV_BIN_DIR", "unset")
                     << "): build it to run the VM end-to-end test";
      }
    }
    kernel_ = env_or("NV_GUEST_KERNEL", build + "/guest/vmlinux");
    rootfs_ = env_or("NV_GUEST_ROOTFS", build + "/guest/rootfs.ext4");
    if (build.empty() || access(kernel_.c_str(), R_OK) != 0 || access(rootfs_.c_str(), R_OK) != 0) {
      GTEST_SKIP() << "the guest image is missing (" << kernel_ << ", " << rootfs_
                   << "): build it with the `guest` target or tools/setup.sh";
    }
  }

  // The scripted model and the stack (nv up), torn down (nv down) when the Stack goes away.
  struct Stack {
    std::unique_ptr<TempDir> rt;
    std::optional<Process> fake;
    std::map<std::string, std::string> env;
    std::string record;
    int up_code = -1;
    std::string up_out;
    ~Stack() {
      if (!env.empty()) nv::test::run(service_process(nv::test::bin("nv"), {"down"}, env), 60s);
    }
  };
  void start(Stack& st, const std::string& api, int warm, int max,
             const std::string& script = "agent_e2e_nonce.json",
             const std::map<std::string, std::string>& more_env = {}) {
    st.rt = std::make_unique<TempDir>("nv-agent-e2e");
    TempDir& rt = *st.rt;
    st.record = rt.file("requests.jsonl");
    st.fake.emplace(Process::start(service_process(
        "/usr/bin/python3",
        {env_or("NV_SOURCE_DIR", NV_TEST_SOURCE_DIR) + "/tests/fixtures/fake_llm.py", "--script",
         env_or("NV_SOURCE_DIR", NV_TEST_SOURCE_DIR) + "/tests/fixtures/" + script, "--port-file",
         rt.file("llm.port"), "--record", st.record, "--quiet"},
        {})));
    ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("llm.port"); }, 20s))
        << st.fake->stderr_text();
    int port = 0;
    std::ifstream(rt.file("llm.port")) >> port;
    // Options reach each service through its NV_* environment.
    st.env = {
        {"NV_RUNTIME_DIR", rt.path()},
        {"NV_LLM_URL", "http://127.0.0.1:" + std::to_string(port)},
        {"NV_LLM_API", api},
        {"NV_MODEL", "fake-model"},
        {"NV_KERNEL", kernel_},
        {"NV_ROOTFS", rootfs_},
        {"NV_SIZE", "small"},
        {"NV_WARM", std::to_string(warm)},
        {"NV_MAX", std::to_string(max)},
    };
    st.env.insert(more_env.begin(), more_env.end());
    auto up =
        nv::test::run(service_process(nv::test::bin("nv"),
                                      {"up", "--only",
                                       "ebpf-sentinel,vm-pool-manager,sandbox-executor,llm-gateway",
                                       "--wait-s", "600"},
                                      st.env),
                      660s);
    st.up_code = up.status.code;
    st.up_out = up.out + up.err;
  }

  // One protocol end to end: nv up, one task through nv-submit, checks, nv down.
  void run_protocol(const std::string& api) {
    Stack st;
    start(st, api, 1, 4);
    ASSERT_EQ(st.up_code, 0) << st.up_out;
    TempDir& rt = *st.rt;
    auto& env = st.env;
    std::string record = st.record;

    // The task: the nonce is new each run, so no script can know the hash in advance.
    std::string nonce = nonce_hex();
    std::string sha = sha256_hex(nonce);
    auto r = nv::test::run(
        service_process(nv::test::bin("nv-submit"),
                        {"--json", "--timeout", "900",
                         "Compute the SHA-256 of the nonce " + nonce + " in the sandbox."},
                        env),
        960s);
    ASSERT_EQ(r.status.code, 0) << r.out << r.err;
    rapidjson::Document d;
    d.Parse(r.out.c_str());
    ASSERT_FALSE(d.HasParseError()) << r.out;
    const auto& res = d["result"];
    EXPECT_STREQ(res["status"].GetString(), "completed");
    std::string trace = res["traceId"].GetString();
    std::string answer = res["answer"].GetString();
    EXPECT_EQ(answer, "The sandbox printed: " + sha + "\n" + trace) << r.out;
    EXPECT_EQ(res["iterations"].GetUint(), 2u);
    EXPECT_EQ(res["toolCalls"].GetUint(), 1u);

    // The progress stream: the code ran in a VM and printed the real hash.
    bool saw_result = false;
    std::string out;
    for (const auto& p : d["progress"].GetArray()) {
      std::string kind = p["kind"].GetString();
      if (kind == "output" && std::string(p["stream"].GetString()) == "stdout") {
        out += p["data"].GetString();
      }
      if (kind == "execResult") {
        saw_result = true;
        EXPECT_EQ(p["exitCode"].GetInt(), 0);
        EXPECT_FALSE(p["timedOut"].GetBool());
        EXPECT_STRNE(p["vmId"].GetString(), "");
        EXPECT_EQ(std::string(p["stdout"].GetString()), sha + "\n" + trace + "\n");
      }
    }
    EXPECT_TRUE(saw_result) << r.out;
    EXPECT_EQ(out, sha + "\n" + trace + "\n");

    // The model's second request carried that stdout; both carried the trace id header.
    std::ifstream in(record);
    std::vector<std::shared_ptr<rapidjson::Document>> chats;
    for (std::string line; std::getline(in, line);) {
      if (line.find(nonce) == std::string::npos) continue;
      auto doc = std::make_shared<rapidjson::Document>();
      doc->Parse(line.c_str());
      if (!doc->HasParseError() && (*doc)["method"] == "POST") chats.push_back(doc);
    }
    ASSERT_EQ(chats.size(), 2u);
    std::string tool_content;
    for (const auto& m : (*chats[1])["body"]["messages"].GetArray()) {
      if (std::string(m["role"].GetString()) == "tool") tool_content = m["content"].GetString();
    }
    EXPECT_EQ(tool_content, sha + "\n" + trace + "\n");
    for (auto& c : chats) {
      std::string header;
      for (const auto& h : (*c)["headers"].GetObject()) {
        if (strcasecmp(h.name.GetString(), "X-Trace-Id") == 0) header = h.value.GetString();
      }
      EXPECT_EQ(header, trace);
    }

    // And the stack goes down cleanly.
    auto dn = nv::test::run(service_process(nv::test::bin("nv"), {"down"}, env), 60s);
    EXPECT_EQ(dn.status.code, 0) << dn.out << dn.err;
    EXPECT_FALSE(rt.has("clients.sock"));
  }

  std::string kernel_, rootfs_;
};

TEST_F(AgentE2E, NonceHashedInARealVmThroughOllama) { run_protocol("ollama"); }

// Twenty tasks at once against a pool of at most 2 VMs: they queue (broker and pool), none
// fails, and each gets the hash of its own nonce computed in its own VM.
void twenty_tasks(const std::map<std::string, std::string>& env) {
  struct Task {
    std::string nonce, sha;
    std::optional<Process> p;
  };
  std::vector<Task> tasks(20);
  for (auto& t : tasks) {
    t.nonce = nonce_hex();
    t.sha = sha256_hex(t.nonce);
    t.p.emplace(Process::start(service_process(
        nv::test::bin("nv-submit"),
        {"--quiet", "--timeout", "1200", "Compute the SHA-256 of the nonce " + t.nonce + "."},
        env)));
  }
  int completed = 0;
  for (auto& t : tasks) {
    auto exit = t.p->wait(1260s);
    ASSERT_TRUE(exit.has_value()) << "nv-submit still running";
    EXPECT_TRUE(exit->clean()) << exit->describe() << t.p->stderr_text();
    EXPECT_NE(t.p->stdout_text().find(t.sha), std::string::npos) << t.p->stdout_text();
    completed += exit->clean() ? 1 : 0;
  }
  EXPECT_EQ(completed, 20);
}

// Each call in a fresh VM (the orchestrator's --fresh-vm-per-call).
TEST_F(AgentE2E, TwentyConcurrentTasksOnAPoolOfTwoVms) {
  Stack st;
  start(st, "ollama", 2, 2, "agent_e2e_nonce.json", {{"NV_FRESH_VM_PER_CALL", "true"}});
  ASSERT_EQ(st.up_code, 0) << st.up_out;
  twenty_tasks(st.env);
}

// The same in sandbox mode (the default): each task holds a sandbox lease for its whole life,
// so 18 sandbox leases wait at the pool while 2 run. Waiting leases once held every request
// thread of the pool manager that vm.release needed (no VM was ever freed: the stack stalled
// after 2 sandboxes) and, waiting > 30 s, looked like a stalled peer to the executor's client.
TEST_F(AgentE2E, TwentyConcurrentSandboxTasksOnAPoolOfTwoVms) {
  Stack st;
  start(st, "ollama", 2, 2, "agent_e2e_nonce.json");
  ASSERT_EQ(st.up_code, 0) << st.up_out;
  twenty_tasks(st.env);
}

TEST_F(AgentE2E, NonceHashedInARealVmThroughOpenAi) { run_protocol("openai"); }

// Issue 13 §3 in a real sandbox: the second tool call reads the file the first wrote, a python
// variable survives to the third, read_file returns the exact bytes, and the task's sandbox is
// destroyed when the task ends (sandbox.created and sandbox.destroyed events of its owner).
TEST_F(AgentE2E, SandboxKeepsFilesAndVariablesBetweenCalls) {
  Stack st;
  start(st, "ollama", 1, 3, "agent_e2e_sandbox.json");
  ASSERT_EQ(st.up_code, 0) << st.up_out;
  zmq::context_t ctx(1);
  nv::EventSubscriber events(ctx, nv::bus::ipc_endpoint(st.rt->file("events.sock")), {"sandbox."});
  std::this_thread::sleep_for(300ms);  // let the subscription reach the hub
  std::string nonce = nonce_hex();
  auto r = nv::test::run(
      service_process(nv::test::bin("nv-submit"),
                      {"--json", "--timeout", "900", "Keep the nonce " + nonce + " in a file."},
                      st.env),
      960s);
  ASSERT_EQ(r.status.code, 0) << r.out << r.err;
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.out;
  const auto& res = d["result"];
  EXPECT_STREQ(res["status"].GetString(), "completed");
  EXPECT_EQ(std::string(res["answer"].GetString()), nonce) << r.out;
  EXPECT_EQ(res["toolCalls"].GetUint(), 4u);
  std::string trace = res["traceId"].GetString();
  std::vector<std::string> stdouts, vms;
  for (const auto& p : d["progress"].GetArray()) {
    if (std::string(p["kind"].GetString()) == "execResult") {
      stdouts.push_back(p["stdout"].GetString());
      vms.push_back(p["vmId"].GetString());
      EXPECT_EQ(p["exitCode"].GetInt(), 0) << r.out;
    }
  }
  EXPECT_EQ(stdouts, (std::vector<std::string>{sha256_hex(nonce) + "\n", "kept-" + nonce + "\n"}))
      << r.out;
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vms[0], vms[1]);  // one VM for the task
  // The sandbox's life, from the executor's events.
  std::string created, destroyed;
  for (auto end = std::chrono::steady_clock::now() + 20s;
       destroyed.empty() && std::chrono::steady_clock::now() < end;) {
    auto e = events.receive(500ms);
    if (!e || !e->event.isSandbox()) continue;
    auto sb = e->event.getSandbox();
    if (std::string(sb.getOwner().cStr()) != "task:" + trace) continue;
    if (e->topic == "sandbox.created") created = sb.getSandboxId().cStr();
    if (e->topic == "sandbox.destroyed") destroyed = sb.getSandboxId().cStr();
  }
  EXPECT_FALSE(created.empty());
  EXPECT_EQ(destroyed, created);
}

// Issue 10 §1 with the code run in real microVMs, over the OpenAI format against a server that
// refuses empty or mismatched tool-call ids (HTTP 400): two calls with empty ids, then a
// ```python fence and a ~~~bash fence without a language argument, both calls with one id.
TEST_F(AgentE2E, RepliesAsRealModelsSendThem) {
  Stack st;
  start(st, "openai", 1, 2, "agent_e2e_replies.json");
  ASSERT_EQ(st.up_code, 0) << st.up_out;
  // One task through nv-submit --json: its exit code, result and the stdout of each execution.
  struct Run {
    int code = -1;
    std::string status, answer, out;
    std::vector<std::string> stdouts;
  };
  auto task = [&](const std::string& tag) {
    Run run;
    auto r = nv::test::run(
        service_process(nv::test::bin("nv-submit"),
                        {"--json", "--timeout", "900", "case:" + tag + " nonce " + nonce_hex()},
                        st.env),
        960s);
    run.code = r.status.code;
    run.out = r.out + r.err;
    rapidjson::Document d;
    d.Parse(r.out.c_str());
    if (d.HasParseError() || !d.HasMember("result")) return run;
    run.status = d["result"]["status"].GetString();
    run.answer = d["result"]["answer"].GetString();
    for (const auto& p : d["progress"].GetArray()) {
      if (std::string(p["kind"].GetString()) == "execResult") {
        run.stdouts.push_back(p["stdout"].GetString());
      }
    }
    return run;
  };

  Run ids = task("ids-empty");
  ASSERT_EQ(ids.code, 0) << ids.out;
  EXPECT_EQ(ids.status, "completed");
  EXPECT_EQ(ids.stdouts, (std::vector<std::string>{"1048576\n", "243\n"})) << ids.out;
  EXPECT_EQ(ids.answer, "The results are in.");

  Run fence = task("fence");
  ASSERT_EQ(fence.code, 0) << fence.out;
  EXPECT_EQ(fence.stdouts, (std::vector<std::string>{"2432902008176640000\n", "42\n"}))
      << fence.out;
  EXPECT_EQ(fence.answer, "42");

  // The server saw unique, non-empty ids answered one for one (else it would have said 400).
  std::ifstream in(st.record);
  int checked = 0;
  for (std::string line; std::getline(in, line);) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    if (d.HasParseError() || !d.HasMember("answer")) continue;
    EXPECT_STRNE(d["answer"].GetString(), "400") << line;
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

// Issue 15 with real microVMs: nv-submit --mount ROOT/proj:proj:rw; the model's python reads
// proj/input.txt in the task's sandbox and writes proj/result.txt; when the task ends the rw mount
// is synced and the host's file holds exactly the bytes computed here (not UTF-8 on purpose). A
// mount outside the executor's --mount-root fails the task with mountRefused, and the model got
// no request.
TEST_F(AgentE2E, MountedProjectIsReadAndWrittenOutsideRootIsRefused) {
  if (access(nv::test::bin("nv-mount-copier").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "nv-mount-copier is not built: build it to run the mounts end-to-end test";
  }
  TempDir root("nv-mounts-root"), outside("nv-mounts-outside");
  std::string proj = root.file("proj");
  ASSERT_EQ(::mkdir(proj.c_str(), 0755), 0);
  std::string nonce = nonce_hex();
  std::string input = "nonce " + nonce + "\nzweite Zeile \xc3\xbc\n";
  put(proj + "/input.txt", input);
  put(outside.file("secret.txt"), "not for the guest\n");
  Stack st;
  // nv-sandbox-executor --mount-root ROOT
  start(st, "ollama", 1, 2, "agent_e2e_mounts.json", {{"NV_MOUNT_ROOT", root.path()}});
  ASSERT_EQ(st.up_code, 0) << st.up_out;
  auto& env = st.env;
  std::string record = st.record;

  // 1. The mounted project: read in the guest, the result written back to the host.
  auto r =
      nv::test::run(service_process(nv::test::bin("nv-submit"),
                                    {"--json", "--timeout", "900", "--mount", proj + ":proj:rw",
                                     "Reverse the mounted project's input, nonce " + nonce},
                                    env),
                    960s);
  ASSERT_EQ(r.status.code, 0) << r.out << r.err;
  std::string want = "reversed:" + std::string(input.rbegin(), input.rend()) + "\n";
  EXPECT_EQ(slurp(proj + "/result.txt"), want);  // the exact bytes (not UTF-8), on the host
  EXPECT_EQ(slurp(proj + "/input.txt"), input);
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.out;
  EXPECT_STREQ(d["result"]["status"].GetString(), "completed");
  // read_file shows the result to the model as text: the reversed "ü" is not UTF-8 (two U+FFFD
  // and a line saying so); the rest is as written.
  std::string line = "nonce " + nonce + "\n";
  EXPECT_NE(std::string(d["result"]["answer"].GetString())
                .find("elieZ etiewz" + std::string(line.rbegin(), line.rend())),
            std::string::npos)
      << r.out;
  std::string sync_notice;
  for (const auto& p : d["progress"].GetArray()) {
    if (std::string(p["kind"].GetString()) == "notice") sync_notice = p["text"].GetString();
  }
  EXPECT_EQ(sync_notice.rfind("read-write mounts copied back to the host:\n  /home/agent/proj → " +
                                  proj + ": 1 file written (" + std::to_string(want.size()) +
                                  " bytes), 0 removed",
                              0),
            0u)
      << sync_notice;

  // 2. A mount outside every --mount-root: mountRefused, no model call, nothing written.
  std::string other = nonce_hex();
  r = nv::test::run(service_process(nv::test::bin("nv-submit"),
                                    {"--json", "--timeout", "900", "--mount", outside.path() + ":o",
                                     "outside mount, nonce " + other},
                                    env),
                    960s);
  EXPECT_EQ(r.status.code, 5) << r.out << r.err;
  d.Parse(r.out.c_str());
  ASSERT_FALSE(d.HasParseError()) << r.out;
  EXPECT_STREQ(d["result"]["status"].GetString(), "failed");
  EXPECT_STREQ(d["result"]["error"]["code"].GetString(), "mountRefused") << r.out;
  EXPECT_EQ(slurp(record).find(other), std::string::npos) << "the model got a request";
  EXPECT_EQ(outside.list(), std::vector<std::string>{"secret.txt"});
}

}  // namespace
