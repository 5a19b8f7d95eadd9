// sandbox_registry_test.cc — the executor's SQLite registry (rows survive reopening, replace,
// remove, a corrupt row is skipped), the reaper's rule (due_reason on given times) and request
// validation (valid_name, validate on hand-built requests). No sockets, no VMs.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <capnp/message.h>

#include <filesystem>

#include "common/frames.h"
#include "sandbox-executor/sandbox_service.h"
#include "sandbox-executor/sandbox_validate.h"

namespace nv::exec {
namespace {

std::string temp_db() {
  char tmpl[] = "/tmp/nv-sbxreg-XXXXXX";
  EXPECT_TRUE(::mkdtemp(tmpl));
  return std::string(tmpl) + "/executor.sqlite";
}

SandboxRecord record(const std::string& id, schema::SandboxState state) {
  SandboxRecord r;
  r.info.sandbox_id = id;
  r.info.owner = "uid:7";
  r.info.state = state;
  r.info.created_unix_ms = 1000;
  r.info.deadline_unix_ms = 3601000;
  r.info.last_active_unix_ms = 1000;
  r.info.idle_deadline_unix_ms = 601000;
  r.info.labels = {{"a", "b"}};
  r.info.env = {{"X", "1"}};
  r.idle_timeout_ms = 600000;
  r.lease_vm_id = "vm-" + id;
  r.max_deadline_unix_ms = 86401000;
  return r;
}

TEST(SandboxRegistry, RowsSurviveReopening) {
  auto path = temp_db();
  {
    auto reg = SandboxRegistry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().to_string();
    ASSERT_TRUE((*reg)->put(record("s1", schema::SandboxState::RUNNING)));
    ASSERT_TRUE((*reg)->put(record("s2", schema::SandboxState::PAUSED)));
    auto r = record("s1", schema::SandboxState::DESTROYED);
    r.info.end_reason = "idle for 600000 ms";
    r.ended_unix_ms = 602000;
    ASSERT_TRUE((*reg)->put(r));  // replaces s1
  }
  auto reg = SandboxRegistry::open(path);
  ASSERT_TRUE(reg.ok());
  auto rows = (*reg)->load();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  const auto& s1 = (*rows)[0].info.sandbox_id == "s1" ? (*rows)[0] : (*rows)[1];
  const auto& s2 = (*rows)[0].info.sandbox_id == "s2" ? (*rows)[0] : (*rows)[1];
  EXPECT_EQ(s1.info.state, schema::SandboxState::DESTROYED);
  EXPECT_EQ(s1.info.end_reason, "idle for 600000 ms");
  EXPECT_EQ(s1.ended_unix_ms, 602000);
  EXPECT_EQ(s2.info.state, schema::SandboxState::PAUSED);
  EXPECT_EQ(s2.lease_vm_id, "vm-s2");
  EXPECT_EQ(s2.idle_timeout_ms, 600000u);
  EXPECT_EQ(s2.max_deadline_unix_ms, 86401000);
  EXPECT_EQ(s2.info.labels, (std::vector<sandbox::Label>{{"a", "b"}}));
  EXPECT_EQ(s2.info.env, (sandbox::EnvList{{"X", "1"}}));
  ASSERT_TRUE((*reg)->remove("s1"));
  EXPECT_EQ((*reg)->load()->size(), 1u);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(SandboxRegistry, ACorruptRowIsSkippedNotFatal) {
  auto path = temp_db();
  auto reg = SandboxRegistry::open(path);
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE((*reg)->put(record("good", schema::SandboxState::RUNNING)));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT INTO sandboxes VALUES ('bad', 'o', 2, 'vm', 1, 1, 0, 1, "
                         "x'0102030405')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto rows = (*reg)->load();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->front().info.sandbox_id, "good");
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST(SandboxRegistry, AnUnwritablePathIsATypedError) {
  auto reg = SandboxRegistry::open("/proc/nv-no-such-dir/executor.sqlite");
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.error().code, ErrorCode::INTERNAL);
}

TEST(SandboxReaperRule, LifetimeAndIdleOnGivenTimes) {
  auto r = record("s", schema::SandboxState::RUNNING);
  EXPECT_EQ(SandboxService::due_reason(r, 600999), "");
  EXPECT_EQ(SandboxService::due_reason(r, 601000), "idle for 600000 ms");
  EXPECT_EQ(SandboxService::due_reason(r, 3601000), "lifetime ended");  // lifetime first
  r.info.state = schema::SandboxState::PAUSED;  // paused: only the lifetime counts
  EXPECT_EQ(SandboxService::due_reason(r, 3600999), "");
  EXPECT_EQ(SandboxService::due_reason(r, 3601000), "lifetime ended");
  r.info.state = schema::SandboxState::DESTROYED;
  EXPECT_EQ(SandboxService::due_reason(r, 99999999), "");
  r.info.state = schema::SandboxState::STARTING;  // still being made: not reaped under it
  EXPECT_EQ(SandboxService::due_reason(r, 3601000), "");
}

TEST(SandboxValidate, Names) {
  EXPECT_TRUE(valid_name("a"));
  EXPECT_TRUE(valid_name("base-1.v_2"));
  EXPECT_TRUE(valid_name(std::string(63, 'x')));
  EXPECT_FALSE(valid_name(""));
  EXPECT_FALSE(valid_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_name("a b"));
  EXPECT_FALSE(valid_name("a/b"));
  EXPECT_FALSE(valid_name(std::string("a\0b", 3)));
  EXPECT_FALSE(valid_name("é"));
}

Status check(const std::function<void(schema::SandboxRequest::Builder)>& fill) {
  capnp::MallocMessageBuilder mb;
  auto r = bus::init_body<schema::SandboxRequest>(mb);
  r.setOwner("uid:1");
  r.setSandboxId("sbx-a-0000000000000000");
  fill(r);
  return validate(r.asReader(), SandboxLimits{});
}

TEST(SandboxValidate, EveryProblemInOneAnswer) {
  auto st = check([](auto r) {
    auto w = r.initWriteFile();
    w.setPath("tmp/x");
    w.setMode(010000);
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::BAD_REQUEST);
  EXPECT_NE(st.error().message.find("path 'tmp/x' is not absolute"), std::string::npos);
  EXPECT_NE(st.error().message.find("mode 4096 is not a permission mode"), std::string::npos);
  EXPECT_TRUE(check([](auto r) { r.initWriteFile().setPath("/home/agent/x"); }));
  EXPECT_TRUE(check([](auto r) { r.setGet(); }));
  // An exec with every field out of range.
  st = check([](auto r) {
    auto e = r.initExec();
    e.setLanguage(static_cast<schema::Language>(5));
    e.setTimeoutMs(400000);
    auto env = e.initEnv(1);
    env[0].setName("NEUROVISOR_X");
    e.setContext("bad name");
    e.setBackground(true);
  });
  ASSERT_FALSE(st);
  for (const char* words :
       {"language 5", "code is empty", "timeoutMs is 400000", "reserved NEUROVISOR_ prefix",
        "context 'bad name'", "cannot run in the background"}) {
    EXPECT_NE(st.error().message.find(words), std::string::npos) << words;
  }
  // A union value this build does not know (a newer peer): refused, not crashed.
  st = check([](auto r) { r.setDestroy(); });
  EXPECT_TRUE(st);
  st = check([](auto r) { r.initKeepalive().setExtendMs(86400001); });
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("extendMs is 86400001"), std::string::npos);
}

}  // namespace
}  // namespace nv::exec
