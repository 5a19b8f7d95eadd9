// sandbox_mounts_test.cc — host directory mounts on the client side (issue 15): the
// HOST:GUEST[:ro|:rw] spelling of nv-submit and `nv sandbox create` (common/mount_arg.h), the
// JSON shapes nv-api and `nv sandbox --json` use (common/sandbox_json.h), and Mount/MountSync
// through the schema (common/sandbox_client.h). No sockets.
#include <gtest/gtest.h>

#include <capnp/message.h>
#include <rapidjson/document.h>

#include <string>
#include <vector>

#include "common/mount_arg.h"
#include "common/sandbox_client.h"
#include "common/sandbox_json.h"

namespace {

namespace sb = nv::sandbox;

sb::Mount parsed(const std::string& arg, const std::string& home = "/home/user",
                 const std::string& cwd = "/work/src") {
  auto r = sb::parse_mount_arg(arg, home, cwd);
  EXPECT_TRUE(r) << arg << ": " << (r ? "" : r.error().message);
  return r ? *r : sb::Mount{};
}

TEST(MountArg, TildeRelativeAndModes) {
  EXPECT_EQ(parsed("~/proj:/home/agent/proj:rw"),
            (sb::Mount{"/home/user/proj", "/home/agent/proj", false, 0, 0}));
  // No mode: read-only. A relative guest path is under /home/agent.
  EXPECT_EQ(parsed("~/proj:proj"), (sb::Mount{"/home/user/proj", "/home/agent/proj", true, 0, 0}));
  EXPECT_EQ(parsed("~:home:ro"), (sb::Mount{"/home/user", "/home/agent/home", true, 0, 0}));
  // A relative host path is taken from the current directory; ".", ".." and slashes normalized.
  EXPECT_EQ(parsed("data/:in/:ro"), (sb::Mount{"/work/src/data", "/home/agent/in", true, 0, 0}));
  EXPECT_EQ(parsed("../out//x/.:/home/agent/a/../b:rw"),
            (sb::Mount{"/work/out/x", "/home/agent/b", false, 0, 0}));
  EXPECT_EQ(parsed("/srv/p:deep/er/dir"),
            (sb::Mount{"/srv/p", "/home/agent/deep/er/dir", true, 0, 0}));
}

TEST(MountArg, BadSpellingsAreRefusedSayingWhy) {
  struct Case {
    const char* arg;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {"/srv/proj", "no ':'"},
           {"", "no ':'"},
           {":/home/agent/p", "host directory is empty"},
           {"/srv/p:", "guest directory is empty"},
           {"/srv/p::rw", "guest directory is empty"},
           {"/srv/p:p:wr", "unknown mode 'wr'"},
           {"/srv/p:p:", "unknown mode ''"},
           {"/srv/p:p:RO", "unknown mode 'RO'"},
           {"/srv/p:p:rw:x", "too many ':'"},
           {"~bob/p:p", "'~user' is not supported"},
           {"/srv/p:/tmp/p", "must be under /home/agent"},
           {"/srv/p:/home/agent", "must be under /home/agent"},
           {"/srv/p:..", "must be under /home/agent"},
           {"/srv/p:/home/agent/../etc:rw", "must be under /home/agent"},
           {"/srv/p:/home/agentx", "must be under /home/agent"},
       }) {
    auto r = sb::parse_mount_arg(c.arg, "/home/user", "/work/src");
    ASSERT_FALSE(r) << c.arg;
    EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST) << c.arg;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos)
        << c.arg << " → " << r.error().message;
  }
  // "~" with no known home, a relative path with no current directory.
  EXPECT_FALSE(sb::parse_mount_arg("~/p:p", "", "/w"));
  EXPECT_FALSE(sb::parse_mount_arg("p:p", "/home/u", ""));
}

std::string written(void (*fn)(sb::JsonOut&, const sb::MountSync&), const sb::MountSync& m) {
  rapidjson::StringBuffer buf;
  sb::JsonOut w(buf);
  fn(w, m);
  return buf.GetString();
}

TEST(MountJson, ShapesAreExact) {
  rapidjson::StringBuffer buf;
  sb::JsonOut w(buf);
  sb::write_mount(w, {"/srv/proj", "/home/agent/proj", false, 1048576, 50});
  EXPECT_STREQ(buf.GetString(),
               R"({"hostPath":"/srv/proj","guestPath":"/home/agent/proj","readOnly":false,)"
               R"("quotaBytes":1048576,"quotaFiles":50})");
  sb::MountSync s{"/home/agent/proj", "/srv/proj", 2, 4096, 1, {"link: symlink", "dev: device"}};
  EXPECT_EQ(written(sb::write_mount_sync, s),
            R"({"guestPath":"/home/agent/proj","hostPath":"/srv/proj","filesWritten":2,)"
            R"("bytesWritten":4096,"filesRemoved":1,"skipped":["link: symlink","dev: device"]})");
  // Names that are not UTF-8 come out as U+FFFD, still valid JSON.
  sb::MountSync bad{"/home/agent/p", "/srv/p", 0, 0, 0, {"a\xff: symlink"}};
  EXPECT_EQ(written(sb::write_mount_sync, bad),
            "{\"guestPath\":\"/home/agent/p\",\"hostPath\":\"/srv/p\",\"filesWritten\":0,"
            "\"bytesWritten\":0,\"filesRemoved\":0,\"skipped\":[\"a\xef\xbf\xbd: symlink\"]}");
}

nv::Result<std::vector<sb::Mount>> from(const char* json) {
  rapidjson::Document d;
  d.Parse(json);
  EXPECT_FALSE(d.HasParseError()) << json;
  return sb::mounts_from_json(d);
}

TEST(MountJson, ParsesWhatWriteMountWrites) {
  auto r = from(R"([{"hostPath":"/srv/a","guestPath":"/home/agent/a"},)"
                R"({"hostPath":"/srv/b","guestPath":"/home/agent/b","readOnly":true,)"
                R"("quotaBytes":9007199254740993,"quotaFiles":4294967295}])");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0], (sb::Mount{"/srv/a", "/home/agent/a", false, 0, 0}));
  EXPECT_EQ((*r)[1],
            (sb::Mount{"/srv/b", "/home/agent/b", true, 9007199254740993ull, 4294967295u}));
  EXPECT_TRUE(from("[]"));
}

TEST(MountJson, BadShapesAreBadRequests) {
  struct Case {
    const char* json;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"hostPath":"/a","guestPath":"/home/agent/a"})", "must be an array"},
           {R"(["/a:/home/agent/a"])", "mounts[0] must be an object"},
           {R"([{"guestPath":"/home/agent/a"}])", "mounts[0].hostPath is required"},
           {R"([{"hostPath":"/a"}])", "mounts[0].guestPath is required"},
           {R"([{"hostPath":"","guestPath":"/home/agent/a"}])", "mounts[0].hostPath must be"},
           {R"([{"hostPath":7,"guestPath":"/home/agent/a"}])", "mounts[0].hostPath must be"},
           {R"([{"hostPath":"/a","guestPath":"/home/agent/a","readOnly":"yes"}])",
            "readOnly must be true or false"},
           {R"([{"hostPath":"/a","guestPath":"/home/agent/a","quotaBytes":-1}])",
            "quotaBytes must be a non-negative integer"},
           {R"([{"hostPath":"/a","guestPath":"/home/agent/a","quotaFiles":4294967296}])",
            "quotaFiles must be an integer"},
           {R"([{"hostPath":"/a","guestPath":"/home/agent/a","host_path":"/b"}])",
            "mounts[0].host_path is not a mount field"},
           {R"([{"hostPath":"/a","guestPath":"/home/agent/a"},{"hostPath":"/b"}])",
            "mounts[1].guestPath is required"},
           {R"([{"hostPath":"/a\u0000b","guestPath":"/home/agent/a"}])", "NUL byte"},
       }) {
    auto r = from(c.json);
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code, nv::ErrorCode::BAD_REQUEST);
    EXPECT_NE(r.error().message.find(c.says), std::string::npos)
        << c.json << " → " << r.error().message;
  }
  std::string nine = "[";
  for (int i = 0; i < 9; ++i) {
    nine += std::string(i ? "," : "") + R"({"hostPath":"/a","guestPath":"/home/agent/a"})";
  }
  auto r = from((nine + "]").c_str());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("has 9 entries; the limit is 8"), std::string::npos);
}

TEST(MountSchema, SpecInfoAndSyncRoundTrip) {
  sb::Spec spec;
  spec.mounts = {{"/srv/a", "/home/agent/a", true, 0, 0}, {"/srv/b", "/home/agent/b", false, 7, 3}};
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<nv::schema::SandboxSpec>();
  sb::to_capnp(spec, b);
  EXPECT_EQ(b.getMounts().size(), 2u);
  EXPECT_EQ(sb::from_capnp(b.asReader()).mounts, spec.mounts);

  sb::Info info;
  info.sandbox_id = "sbx-h-0123456789abcdef";
  info.mounts = spec.mounts;
  capnp::MallocMessageBuilder mi;
  auto ib = mi.initRoot<nv::schema::SandboxInfo>();
  sb::to_capnp(info, ib);
  EXPECT_EQ(sb::from_capnp(ib.asReader()).mounts, spec.mounts);

  sb::MountSync s{"/home/agent/b", "/srv/b", 3, 12, 1, {"x: hard link"}};
  capnp::MallocMessageBuilder ms;
  auto sbld = ms.initRoot<nv::schema::MountSync>();
  sb::to_capnp(s, sbld);
  auto back = sb::from_capnp(sbld.asReader());
  EXPECT_EQ(back.guest_path, "/home/agent/b");
  EXPECT_EQ(back.host_path, "/srv/b");
  EXPECT_EQ(back.files_written, 3u);
  EXPECT_EQ(back.bytes_written, 12u);
  EXPECT_EQ(back.files_removed, 1u);
  EXPECT_EQ(back.skipped, std::vector<std::string>{"x: hard link"});
}

}  // namespace
