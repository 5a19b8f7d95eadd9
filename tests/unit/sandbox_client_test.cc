// sandbox_client_test.cc — sandbox ids and routing (sandbox_route.h), and the client's structs
// surviving a round trip through the schema (sandbox_client.h). No sockets.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include "common/sandbox_client.h"
#include "common/sandbox_route.h"

namespace {

TEST(SandboxRoute, WellFormedIdsGoToTheirExecutor) {
  EXPECT_EQ(nv::sandbox_service_for("sbx-host1-0123456789abcdef"), "sandbox.host1");
  EXPECT_EQ(nv::sandbox_service_for("sbx-exec_2-ffffffffffffffff"), "sandbox.exec_2");
  EXPECT_EQ(nv::sandbox_executor_of("sbx-a-0000000000000000"), "a");
}

TEST(SandboxRoute, MalformedIdsGoToThePlainService) {
  for (const char* id :
       {"", "sbx-", "sbx-host1-0123", "sbx-host1-0123456789ABCDEF", "sbx-ho.st-0123456789abcdef",
        "sbx--0123456789abcdef", "xyz-host1-0123456789abcdef", "sbx-host1_0123456789abcdef",
        "sbx-a-b-0123456789abcdef"}) {
    EXPECT_EQ(nv::sandbox_service_for(id), "sandbox") << id;
  }
  EXPECT_TRUE(nv::valid_executor_name("host_1"));
  EXPECT_FALSE(nv::valid_executor_name("host-1"));
  EXPECT_FALSE(nv::valid_executor_name(std::string(41, 'a')));
}

TEST(SandboxClientTypes, InfoRoundTrips) {
  nv::sandbox::Info in;
  in.sandbox_id = "sbx-h-0123456789abcdef";
  in.owner = "uid:1000";
  in.state = nv::schema::SandboxState::PAUSED;
  in.tier = nv::schema::SizeTier::MEDIUM;
  in.vcpus = 2;
  in.memory_mib = 1024;
  in.created_unix_ms = 1700000000123;
  in.deadline_unix_ms = 1700003600123;
  in.idle_deadline_unix_ms = 1700000600123;
  in.last_active_unix_ms = 1700000000500;
  in.labels = {{"task", "t1"}, {"k.2", ""}};
  in.parent_id = "sbx-h-ffffffffffffffff";
  in.cwd = "/home/agent/w";
  in.env = {{"A", "1"}, {"B", "x=y"}};
  in.end_reason = "lifetime ended";
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<nv::schema::SandboxInfo>();
  nv::sandbox::to_capnp(in, b);
  auto out = nv::sandbox::from_capnp(b.asReader());
  EXPECT_EQ(out.sandbox_id, in.sandbox_id);
  EXPECT_EQ(out.state, in.state);
  EXPECT_EQ(out.tier, in.tier);
  EXPECT_EQ(out.memory_mib, 1024u);
  EXPECT_EQ(out.deadline_unix_ms, in.deadline_unix_ms);
  EXPECT_EQ(out.labels, in.labels);
  EXPECT_EQ(out.env, in.env);
  EXPECT_EQ(out.parent_id, in.parent_id);
  EXPECT_EQ(out.end_reason, in.end_reason);
}

TEST(SandboxClientTypes, ExecSpecKeepsBinaryStdin) {
  nv::sandbox::ExecSpec in;
  in.language = nv::schema::Language::PYTHON;
  in.code = "print(x)";
  in.stdin_data = std::string("a\0b\xff", 4);
  in.context = "nb";
  in.background = true;
  in.timeout_ms = 1234;
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<nv::schema::SandboxExec>();
  nv::sandbox::to_capnp(in, b);
  auto out = nv::sandbox::from_capnp(b.asReader());
  EXPECT_EQ(out.stdin_data, in.stdin_data);
  EXPECT_EQ(out.context, "nb");
  EXPECT_TRUE(out.background);
  EXPECT_EQ(out.timeout_ms, 1234u);
  EXPECT_EQ(out.language, nv::schema::Language::PYTHON);
}

}  // namespace
