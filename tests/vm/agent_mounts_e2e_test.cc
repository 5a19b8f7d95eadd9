// agent_mounts_e2e_test.cc — issue 15's agent acceptance on a real stack with real microVMs:
//
//   nv up with nv-sandbox-executor --mount-root ROOT → nv-submit --mount ROOT/proj:proj:rw →
//   the scripted model (tests/fixtures/fake_llm.py, agent_e2e_mounts.json) has python in the
//   task's sandbox read proj/input.txt and write proj/result.txt → the task ends, the rw mount is
//   synced → the host's ROOT/proj/result.txt holds exactly the bytes computed here, independently.
//   A task whose mount is outside ROOT fails with mountRefused, and the model got no request.
//
// One stack, two tasks (VMs under TCG are slow). Skips, saying why, when the VM binaries or the
// guest image are missing.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>

#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::service_process;
using nv::test::TempDir;

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

TEST(AgentMountsE2E, MountedProjectIsReadAndWrittenOutsideRootIsRefused) {
  setenv("NV_BIN_DIR", NV_TEST_BIN_DIR, 0);
  std::string build = env_or("NV_BUILD_DIR", NV_TEST_BUILD_DIR);
  for (auto b : {"nv", "nv-orchestrator", "nv-llm-gateway", "nv-submit", "nv-sandbox-executor",
                 "nv-vm-pool-manager", "nv-mount-copier"}) {
    std::string p = nv::test::bin(b);
    if (p.empty() || access(p.c_str(), X_OK) != 0) {
      GTEST_SKIP() << b << " is not built in NV_BIN_DIR: build it to run the VM test";
    }
  }
  std::string kernel = env_or("NV_GUEST_KERNEL", build + "/guest/vmlinux");
  std::string rootfs = env_or("NV_GUEST_ROOTFS", build + "/guest/rootfs.ext4");
  if (access(kernel.c_str(), R_OK) != 0 || access(rootfs.c_str(), R_OK) != 0) {
    GTEST_SKIP() << "the guest image is missing (" << kernel << ", " << rootfs << ")";
  }

  TempDir rt("nv-mounts-e2e"), root("nv-mounts-root"), outside("nv-mounts-outside");
  std::string proj = root.file("proj");
  ASSERT_EQ(::mkdir(proj.c_str(), 0755), 0);
  std::string nonce = nonce_hex();
  std::string input = "nonce " + nonce + "\nzweite Zeile \xc3\xbc\n";
  put(proj + "/input.txt", input);
  put(outside.file("secret.txt"), "not for the guest\n");

  std::string src = env_or("NV_SOURCE_DIR", NV_TEST_SOURCE_DIR);
  std::string record = rt.file("requests.jsonl");
  Process fake =
      Process::start(service_process("/usr/bin/python3",
                                     {src + "/tests/fixtures/fake_llm.py", "--script",
                                      src + "/tests/fixtures/agent_e2e_mounts.json", "--port-file",
                                      rt.file("llm.port"), "--record", record, "--quiet"},
                                     {}));
  ASSERT_TRUE(nv::test::wait_until([&] { return rt.has("llm.port"); }, 20s)) << fake.stderr_text();
  int port = 0;
  std::ifstream(rt.file("llm.port")) >> port;
  std::map<std::string, std::string> env = {
      {"NV_RUNTIME_DIR", rt.path()},
      {"NV_LLM_URL", "http://127.0.0.1:" + std::to_string(port)},
      {"NV_LLM_API", "ollama"},
      {"NV_MODEL", "fake-model"},
      {"NV_KERNEL", kernel},
      {"NV_ROOTFS", rootfs},
      {"NV_SIZE", "small"},
      {"NV_WARM", "1"},
      {"NV_MAX", "2"},
      {"NV_MOUNT_ROOT", root.path()},  // nv-sandbox-executor --mount-root
  };
  struct Down {
    std::map<std::string, std::string>& env;
    ~Down() { nv::test::run(service_process(nv::test::bin("nv"), {"down"}, env), 60s); }
  } down{env};
  auto up = nv::test::run(
      service_process(nv::test::bin("nv"),
                      {"up", "--only", "ebpf-sentinel,vm-pool-manager,sandbox-executor,llm-gateway",
                       "--wait-s", "600"},
                      env),
      660s);
  ASSERT_EQ(up.status.code, 0) << up.out << up.err;

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
