// json_test.cc — nv::to_json, the --json output of nv-submit, nv-audit and nv status: the shape
// of capnp's JsonCodec (compared key by key with it), but 64-bit integers as exact JSON numbers.
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <nv/schema/events.capnp.h>
#include <rapidjson/document.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "common/json.h"

namespace {

namespace s = nv::schema;

TEST(Json, SixtyFourBitIntegersAreExactNumbersAndTheRestIsCapnpsShape) {
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<s::Event>();
  e.setVersion(1);
  e.setTopic("vm.stats");
  e.setTimeNs(1700000000123456789);  // above 2^53: a double would round it
  e.setSeverity(s::Severity::WARNING);
  e.setTraceId("a \"quoted\"\nline");
  auto st = e.initVmStats();
  st.setVmId("vm-1");
  st.setMemoryBytes(std::numeric_limits<uint64_t>::max());
  st.setCpuThrottledUs(9007199254740993ull);
  st.setPids(7);
  std::string ours = nv::to_json(e.asReader());
  EXPECT_NE(ours.find("\"timeNs\":1700000000123456789"), std::string::npos) << ours;
  EXPECT_NE(ours.find("\"memoryBytes\":18446744073709551615"), std::string::npos) << ours;
  EXPECT_NE(ours.find("\"cpuThrottledUs\":9007199254740993"), std::string::npos) << ours;

  capnp::JsonCodec codec;
  std::string theirs = codec.encode(e.asReader()).cStr();
  rapidjson::Document a, b;
  a.Parse(ours.c_str());
  b.Parse(theirs.c_str());
  ASSERT_FALSE(a.HasParseError()) << ours;
  ASSERT_FALSE(b.HasParseError()) << theirs;
  // Same keys and values; where capnp wrote a string for a 64-bit integer we wrote the number.
  std::function<void(const rapidjson::Value&, const rapidjson::Value&, const std::string&)> same =
      [&](const rapidjson::Value& x, const rapidjson::Value& y, const std::string& path) {
        if (y.IsString() && x.IsNumber()) {
          EXPECT_EQ(std::string(y.GetString()),
                    x.IsUint64() ? std::to_string(x.GetUint64()) : std::to_string(x.GetInt64()))
              << path;
          return;
        }
        ASSERT_EQ(x.GetType(), y.GetType()) << path;
        if (x.IsObject()) {
          EXPECT_EQ(x.MemberCount(), y.MemberCount())
              << path << "\nours " << ours << "\ncapnp " << theirs;
          for (auto it = y.MemberBegin(); it != y.MemberEnd(); ++it) {
            ASSERT_TRUE(x.HasMember(it->name)) << path << "." << it->name.GetString();
            same(x[it->name], it->value, path + "." + it->name.GetString());
          }
        } else if (x.IsArray()) {
          ASSERT_EQ(x.Size(), y.Size()) << path;
          for (unsigned i = 0; i < x.Size(); ++i) same(x[i], y[i], path);
        } else {
          EXPECT_TRUE(x == y) << path;
        }
      };
  same(a, b, "$");
  EXPECT_STREQ(a["severity"].GetString(), "warning");
  EXPECT_TRUE(a.HasMember("vmStats"));
  EXPECT_FALSE(a.HasMember("none"));  // only the union's active member
}

TEST(Json, NonFiniteFloatsBecomeNull) {
  capnp::MallocMessageBuilder mb;
  auto c = mb.initRoot<s::LlmCall>();
  c.setDurationMs(std::nan(""));
  c.setLoadMs(1.25);
  std::string out = nv::to_json(c.asReader());
  rapidjson::Document d;
  d.Parse(out.c_str());
  ASSERT_FALSE(d.HasParseError()) << out;
  EXPECT_TRUE(d["durationMs"].IsNull());
  EXPECT_EQ(d["loadMs"].GetDouble(), 1.25);
}

}  // namespace
