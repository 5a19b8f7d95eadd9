// config_test.cc — nv::Config: precedence flag > NV_* environment > default, boolean negation,
// every problem reported in one message, and --help text.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/config.h"

namespace nv {
namespace {

// Sets an environment variable for one test and restores it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old, had_ = true;
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

Config make_config() {
  Config c("nv-test", "a test program");
  c.add_int("cfg-port", 5555, "port to listen on");
  c.add_string("cfg-name", "alpha", "a name");
  c.add_number("cfg-ratio", 0.5, "a ratio");
  c.add_bool("cfg-verbose", true, "talk a lot");
  return c;
}

Status parse(Config& c, std::vector<const char*> args) {
  args.insert(args.begin(), "nv-test");
  return c.parse(static_cast<int>(args.size()), args.data());
}

TEST(Config, DefaultsWhenNothingIsGiven) {
  auto c = make_config();
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.integer("cfg-port"), 5555);
  EXPECT_EQ(c.str("cfg-name"), "alpha");
  EXPECT_DOUBLE_EQ(c.number("cfg-ratio"), 0.5);
  EXPECT_TRUE(c.boolean("cfg-verbose"));
  EXPECT_EQ(c.source("cfg-port"), "default");
}

TEST(Config, EnvironmentOverridesDefault) {
  EXPECT_EQ(Config::env_name("cfg-port"), "NV_CFG_PORT");
  ScopedEnv env("NV_CFG_PORT", "6000");
  auto c = make_config();
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.integer("cfg-port"), 6000);
  EXPECT_EQ(c.source("cfg-port"), "env NV_CFG_PORT");
}

TEST(Config, FlagOverridesEnvironment) {
  ScopedEnv env("NV_CFG_PORT", "6000");
  ScopedEnv env2("NV_CFG_NAME", "from-env");
  auto c = make_config();
  ASSERT_TRUE(parse(c, {"--cfg-port", "7000", "--cfg-name=from-flag"}));
  EXPECT_EQ(c.integer("cfg-port"), 7000);
  EXPECT_EQ(c.source("cfg-port"), "flag");
  EXPECT_EQ(c.str("cfg-name"), "from-flag");
}

TEST(Config, AliasEnvironmentIsReadWhenNvVariableIsUnset) {
  ScopedEnv env("CFG_TEST_ALIAS_HOST", "model-host");
  auto c = make_config();
  c.alias_env("cfg-name", "CFG_TEST_ALIAS_HOST");
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.str("cfg-name"), "model-host");
}

TEST(Config, BooleanFlagAndNegation) {
  auto c = make_config();
  ASSERT_TRUE(parse(c, {"--no-cfg-verbose"}));
  EXPECT_FALSE(c.boolean("cfg-verbose"));
  EXPECT_EQ(c.source("cfg-verbose"), "flag");
  ScopedEnv env("NV_CFG_VERBOSE", "false");
  auto d = make_config();
  ASSERT_TRUE(parse(d, {"--cfg-verbose"}));
  EXPECT_TRUE(d.boolean("cfg-verbose"));
}

TEST(Config, BadIntegerIsReportedWithItsSource) {
  auto c = make_config();
  auto st = parse(c, {"--cfg-port", "12ab"});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::BAD_REQUEST);
  EXPECT_NE(st.error().message.find("--cfg-port"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("12ab"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("integer"), std::string::npos) << st.error().message;
}

TEST(Config, BadEnvironmentValueNamesTheVariable) {
  ScopedEnv env("NV_CFG_RATIO", "lots");
  auto c = make_config();
  auto st = parse(c, {});
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("NV_CFG_RATIO"), std::string::npos) << st.error().message;
}

TEST(Config, EveryProblemIsReportedInOneMessage) {
  auto c = make_config();
  auto st = parse(c, {"--cfg-port", "x", "--bogus", "--cfg-ratio=y", "--cfg-name"});
  ASSERT_FALSE(st);
  const auto& m = st.error().message;
  EXPECT_NE(m.find("--cfg-port"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown option --bogus"), std::string::npos) << m;
  EXPECT_NE(m.find("--cfg-ratio"), std::string::npos) << m;
  EXPECT_NE(m.find("--cfg-name needs a value"), std::string::npos) << m;
}

TEST(Config, PositionalArgumentsAndDoubleDash) {
  auto c = make_config();
  ASSERT_TRUE(parse(c, {"task.txt", "--cfg-port", "1", "--", "--not-a-flag"}));
  EXPECT_EQ(c.positional(), (std::vector<std::string>{"task.txt", "--not-a-flag"}));
}

TEST(Config, HelpListsEveryOptionWithEnvAndDefault) {
  auto c = make_config();
  ASSERT_TRUE(parse(c, {"--help"}));
  EXPECT_TRUE(c.help_requested());
  auto h = c.help();
  for (const char* want :
       {"usage: nv-test", "a test program", "--cfg-port VALUE", "port to listen on", "NV_CFG_PORT",
        "default: 5555", "default: alpha", "default: 0.5", "--cfg-verbose", "--help"}) {
    EXPECT_NE(h.find(want), std::string::npos) << "missing '" << want << "' in:\n" << h;
  }
  EXPECT_EQ(h.find("--cfg-verbose VALUE"), std::string::npos) << "booleans take no value";
  auto d = make_config();
  ASSERT_TRUE(parse(d, {"-h"}));
  EXPECT_TRUE(d.help_requested());
}

TEST(Config, SetValidatesLikeParse) {
  auto c = make_config();
  EXPECT_FALSE(c.set("cfg-port", "nope"));
  EXPECT_FALSE(c.set("cfg-missing", "1"));
  ASSERT_TRUE(c.set("cfg-port", "42"));
  EXPECT_EQ(c.integer("cfg-port"), 42);
  EXPECT_EQ(c.source("cfg-port"), "set");
}

}  // namespace

// ---- one vocabulary: deprecated spellings with a unit scale, ranges, per-program variables.

TEST(Config, AnOldSpellingInSecondsSetsTheMillisecondOptionAndReadsBackInSeconds) {
  Config c("nv-test", "t");
  c.add_int("cfg-timeout-ms", 600000, "a timeout");
  c.alias_flag("cfg-timeout-ms", "cfg-timeout-s", 1000);
  ASSERT_TRUE(parse(c, {"--cfg-timeout-s", "2.5"}));
  EXPECT_EQ(c.integer("cfg-timeout-ms"), 2500);
  EXPECT_EQ(c.number("cfg-timeout-s"), 2.5);  // code that reads the old name gets seconds
  EXPECT_EQ(c.integer("cfg-timeout-s"), 3);   // rounded when read as an integer
  Config d("nv-test", "t");
  d.add_int("cfg-timeout-ms", 600000, "a timeout");
  d.alias_flag("cfg-timeout-ms", "cfg-timeout-s", 1000);
  ASSERT_TRUE(parse(d, {"--cfg-timeout-ms=1500"}));
  EXPECT_EQ(d.integer("cfg-timeout-ms"), 1500);
  EXPECT_EQ(d.number("cfg-timeout-s"), 1.5);
  auto bad = parse(d, {"--cfg-timeout-s", "soon"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("cfg-timeout-ms"), std::string::npos);
}

TEST(Config, AnOldSpellingsVariableIsReadWhenTheNewOnesAreUnset) {
  ScopedEnv env("NV_CFG_WAIT_S", "4");
  Config c("nv-test", "t");
  c.add_int("cfg-wait-ms", 1, "a wait");
  c.alias_flag("cfg-wait-ms", "cfg-wait-s", 1000);
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.integer("cfg-wait-ms"), 4000);
  EXPECT_EQ(c.source("cfg-wait-ms"), "env NV_CFG_WAIT_S");
}

TEST(Config, RangesAreCheckedAndPrinted) {
  Config c("nv-test", "t");
  c.add_int("cfg-warm", 1, "idle VMs");
  c.range("cfg-warm", 0, 256);
  auto st = parse(c, {"--cfg-warm", "257"});
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("between 0 and 256, not 257"), std::string::npos)
      << st.error().message;
  Config d("nv-test", "t");
  d.add_int("cfg-warm", 1, "idle VMs");
  d.range("cfg-warm", 0, 256);
  EXPECT_TRUE(parse(d, {"--cfg-warm", "256"}));
  EXPECT_NE(d.help().find("range 0-256"), std::string::npos) << d.help();
}

// nv up exports NV_LISTEN for the metrics exporter (the deprecated shared form); nv-api, newer
// than scoped variables, must not take it for its own --listen (both then bound one port).
TEST(Config, AScopeWithoutTheSharedFallbackIgnoresAnotherProgramsSharedVariable) {
  ScopedEnv shared("NV_CFG_LISTEN", "127.0.0.1:36627");
  Config c("nv-test", "t");
  c.env_scope("api", /*shared_fallback=*/false);
  c.add_string("cfg-listen", "127.0.0.1:8420", "own option");
  c.env_scope("");
  EXPECT_EQ(c.env_names("cfg-listen"), (std::vector<std::string>{"NV_API_CFG_LISTEN"}));
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.str("cfg-listen"), "127.0.0.1:8420");
  ScopedEnv own("NV_API_CFG_LISTEN", "127.0.0.1:9999");
  Config d("nv-test", "t");
  d.env_scope("api", false);
  d.add_string("cfg-listen", "127.0.0.1:8420", "own option");
  ASSERT_TRUE(parse(d, {}));
  EXPECT_EQ(d.str("cfg-listen"), "127.0.0.1:9999");
}

TEST(Config, ScopedVariablesAreUniqueToTheProgramAndWinOverTheSharedForm) {
  ScopedEnv shared("NV_CFG_CONCURRENCY", "3");
  Config c("nv-test", "t");
  c.add_string("cfg-dir", "", "shared option");
  c.env_scope("llm-gateway");
  c.add_int("cfg-concurrency", 1, "own option");
  c.env_scope("");
  EXPECT_EQ(c.env_names("cfg-concurrency"),
            (std::vector<std::string>{"NV_LLM_GATEWAY_CFG_CONCURRENCY", "NV_CFG_CONCURRENCY"}));
  EXPECT_EQ(c.env_names("cfg-dir"), (std::vector<std::string>{"NV_CFG_DIR"}));
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.integer("cfg-concurrency"), 3);  // the shared form still works
  ScopedEnv own("NV_LLM_GATEWAY_CFG_CONCURRENCY", "7");
  Config d("nv-test", "t");
  d.env_scope("llm-gateway");
  d.add_int("cfg-concurrency", 1, "own option");
  ASSERT_TRUE(parse(d, {}));
  EXPECT_EQ(d.integer("cfg-concurrency"), 7);
  EXPECT_NE(d.help().find("env NV_LLM_GATEWAY_CFG_CONCURRENCY or NV_CFG_CONCURRENCY"),
            std::string::npos)
      << d.help();
}

TEST(Config, TheSeedsVariablesReachTheirOptions) {
  ScopedEnv pool("NEUROVISOR_POOL_SIZE", "3");
  Config c("nv-test", "t");
  c.env_scope("vm-pool-manager");
  c.add_int("warm", 1, "idle VMs kept ready per tier");
  c.alias_env("warm", "NEUROVISOR_POOL_SIZE");
  ASSERT_TRUE(parse(c, {}));
  EXPECT_EQ(c.integer("warm"), 3);
  EXPECT_EQ(c.source("warm"), "env NEUROVISOR_POOL_SIZE");
}

}  // namespace nv
