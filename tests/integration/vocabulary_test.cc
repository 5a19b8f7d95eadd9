// One vocabulary across the programs (README "Vocabulary"), checked on the built binaries:
// every --help lists each option with its variables and default; durations are named *-ms
// (older names in seconds only as deprecated spellings); the variables of a service's own
// options are unique to it; stray arguments are refused with exit 2 and a message, before
// anything starts (`nv-orchestrator --agent "task"` used to start a daemon and drop the task);
// out-of-range values name the range; and ./neurovisor, the seed's entry point, refuses what
// it cannot map.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.h"

namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kServices = {"nv-orchestrator",    "nv-llm-gateway",
                                            "nv-vm-pool-manager", "nv-sandbox-executor",
                                            "nv-ebpf-sentinel",   "nv-metrics-exporter"};

struct OptionLine {
  std::string name;
  std::vector<std::string> envs;
  std::string rest;
};

// The options of a Config --help text: "  --name VALUE  help\n   (env A or B; default: ...)".
std::vector<OptionLine> options_of(const std::string& help) {
  std::vector<OptionLine> out;
  std::istringstream in(help);
  std::string line;
  std::regex opt_re(R"(^  --([a-z0-9-]+))");
  std::regex env_re(R"(^\s+\(env ([^;]+);(.*)\)$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, opt_re)) {
      if (m[1] == "help") continue;
      out.push_back({m[1], {}, {}});
    } else if (!out.empty() && std::regex_search(line, m, env_re)) {
      std::string envs = m[1];
      for (size_t pos = 0; pos != std::string::npos;) {
        size_t next = envs.find(" or ", pos);
        out.back().envs.push_back(envs.substr(pos, next == std::string::npos ? next : next - pos));
        pos = next == std::string::npos ? next : next + 4;
      }
      out.back().rest = m[2];
    }
  }
  return out;
}

nv::test::RunResult run(const std::string& binary, std::vector<std::string> args,
                        const std::string& rt) {
  return nv::test::run(nv::test::service_process(binary, std::move(args), {{"NV_RUNTIME_DIR", rt}}),
                       20s);
}

class Vocabulary : public ::testing::Test {
 protected:
  void SetUp() override {
    if (nv::test::bin("nv-orchestrator").empty()) GTEST_SKIP() << "NV_BIN_DIR is not set";
  }
  nv::test::TempDir rt_{"nv-vocab"};
};

TEST_F(Vocabulary, EveryServiceHelpListsOptionsWithVariablesDefaultsAndMsDurations) {
  std::map<std::string, std::set<std::string>> own_envs;  // service -> first env of own options
  for (const auto& s : kServices) {
    auto r = run(nv::test::bin(s), {"--help"}, rt_.path());
    ASSERT_EQ(r.status.code, 0) << s << r.err;
    auto opts = options_of(r.out);
    ASSERT_GT(opts.size(), 11u) << s << r.out;
    for (const auto& o : opts) {
      ASSERT_FALSE(o.envs.empty()) << s << " --" << o.name << " shows no variable";
      EXPECT_NE(o.rest.find("default: "), std::string::npos) << s << " --" << o.name;
      // A duration is named by its unit: -ms (a deprecated spelling may be in seconds).
      if (o.name.find("timeout") != std::string::npos ||
          o.name.find("deadline") != std::string::npos ||
          o.name.find("drain") != std::string::npos) {
        EXPECT_TRUE(o.name.size() > 3 && o.name.compare(o.name.size() - 3, 3, "-ms") == 0)
            << s << " --" << o.name << " is a duration not in ms";
      }
    }
    std::string scope = "NV_" + s.substr(3);
    for (auto& c : scope) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
    for (const auto& o : opts) {
      // Shared bus options (every service has them) keep NV_<NAME>; the others are scoped.
      if (o.envs[0].rfind(scope + "_", 0) == 0) own_envs[s].insert(o.envs[0]);
    }
    EXPECT_GT(own_envs[s].size(), 0u) << s << " has no variable of its own:\n" << r.out;
  }
  // No two services share a variable of their own options.
  std::map<std::string, std::string> owner;
  for (const auto& [s, envs] : own_envs) {
    for (const auto& e : envs) {
      auto [it, fresh] = owner.emplace(e, s);
      EXPECT_TRUE(fresh) << e << " belongs to both " << it->second << " and " << s;
    }
  }
  // Deprecated spellings are listed where the old names were in seconds.
  auto orch = run(nv::test::bin("nv-orchestrator"), {"--help"}, rt_.path());
  EXPECT_NE(orch.out.find("deprecated spelling --task-timeout-s in seconds"), std::string::npos);
  EXPECT_NE(orch.out.find("range 1000-86400000"), std::string::npos) << orch.out;
  auto pool = run(nv::test::bin("nv-vm-pool-manager"), {"--help"}, rt_.path());
  EXPECT_NE(pool.out.find("NEUROVISOR_POOL_SIZE"), std::string::npos) << pool.out;
  EXPECT_NE(pool.out.find("NEUROVISOR_MAX_VMS"), std::string::npos);
  EXPECT_NE(pool.out.find("deprecated spelling --size"), std::string::npos);
}

TEST_F(Vocabulary, StrayArgumentsAreRefusedWithExit2BeforeAnythingStarts) {
  for (const auto& s : kServices) {
    auto r = run(nv::test::bin(s), {"stray"}, rt_.path());
    EXPECT_EQ(r.status.code, 2) << s << ": " << r.status.describe() << r.err;
    EXPECT_NE(r.err.find("unexpected argument 'stray'"), std::string::npos) << s << r.err;
  }
  // The seed's habit: the task after --agent, which is a switch here.
  auto r = run(nv::test::bin("nv-orchestrator"), {"--agent", "find primes under 100"}, rt_.path());
  EXPECT_EQ(r.status.code, 2) << r.err;
  EXPECT_NE(r.err.find("'find primes under 100'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("./nv run"), std::string::npos) << r.err;
  EXPECT_FALSE(rt_.has("workers.sock")) << "the daemon started anyway";
  // Out of range: the message names the range.
  r = run(nv::test::bin("nv-orchestrator"), {"--task-timeout-ms", "5"}, rt_.path());
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("between 1000 and 86400000"), std::string::npos) << r.err;
  r = run(nv::test::bin("nv-vm-pool-manager"), {"--warm", "100000"}, rt_.path());
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("between 0 and 256"), std::string::npos) << r.err;
  // nv-keygen takes one NAME, nv-audit none.
  r = run(nv::test::bin("nv-audit"), {"stray"}, rt_.path());
  EXPECT_EQ(r.status.code, 2) << r.err;
}

TEST_F(Vocabulary, ClientsShareTheNamesAndKeepTheOldSpellings) {
  for (const std::string c : {"nv-submit", "nv-exec"}) {
    auto r = run(nv::test::bin(c), {"--help"}, rt_.path());
    ASSERT_EQ(r.status.code, 0) << c << r.err;
    EXPECT_NE(r.out.find("--tier"), std::string::npos) << c;
    EXPECT_NE(r.out.find("--timeout-ms"), std::string::npos) << c;
    EXPECT_NE(r.out.find("--clients-endpoint"), std::string::npos) << c;
  }
  // Old spellings still parse (the orchestrator is not running: nv-submit then fails to
  // connect, exit 3, not a usage error).
  auto r = run(nv::test::bin("nv-submit"),
               {"--size", "small", "--timeout", "1.5", "--connect-timeout", "0.2", "a task"},
               rt_.path());
  EXPECT_NE(r.status.code, 2) << r.err;
  r = run(nv::test::bin("nv-submit"), {"--tier", "huge", "a task"}, rt_.path());
  EXPECT_EQ(r.status.code, 2) << r.err;
}

TEST_F(Vocabulary, TheSeedsEntryPointMapsOntoNvAndRefusesTheRest) {
  std::string entry = nv::test::source_dir() + "/neurovisor";
  auto r = nv::test::run({.binary = entry, .args = {"--help"}}, 10s);
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("--agent \"TASK\""), std::string::npos) << r.out;
  r = nv::test::run({.binary = entry, .args = {"find primes"}}, 10s);
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("--agent"), std::string::npos) << r.err;
  r = nv::test::run({.binary = entry, .args = {"--agent"}}, 10s);
  EXPECT_EQ(r.status.code, 2) << r.err;
  r = nv::test::run({.binary = entry, .args = {"--grpc-port", "50051"}}, 10s);
  EXPECT_EQ(r.status.code, 2) << r.err;
}

}  // namespace
