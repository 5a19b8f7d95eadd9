// trace_id_test.cc — UUID v7 ids: canonical text, version and variant bits, time order, and the
// millisecond timestamp read back.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "common/trace_id.h"

namespace nv {
namespace {

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

TEST(TraceId, CanonicalVersion7Text) {
  static const std::regex kForm(
      "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
      "[0-9a-f]{12}$");
  for (int i = 0; i < 200; ++i) {
    auto id = new_uuid_v7();
    ASSERT_TRUE(std::regex_match(id, kForm)) << id;
    ASSERT_TRUE(is_uuid_v7(id)) << id;
  }
}

TEST(TraceId, RejectsOtherText) {
  EXPECT_FALSE(is_uuid_v7(""));
  EXPECT_FALSE(is_uuid_v7("not-a-uuid"));
  EXPECT_FALSE(is_uuid_v7("0193b3c4-5e6f-4abc-8def-0123456789ab"));  // version 4
  EXPECT_FALSE(is_uuid_v7("0193b3c4-5e6f-7abc-cdef-0123456789ab"));  // wrong variant
  EXPECT_FALSE(is_uuid_v7("0193b3c4-5e6f-7abc-8def-0123456789a"));   // short
  EXPECT_FALSE(is_uuid_v7("0193b3c4x5e6f-7abc-8def-0123456789ab"));
  EXPECT_FALSE(is_uuid_v7("0193b3c4-5e6f-7abc-8def-0123456789ag"));
  EXPECT_TRUE(is_uuid_v7("0193B3C4-5E6F-7ABC-8DEF-0123456789AB"));
  EXPECT_EQ(uuid_v7_millis("0193b3c4-5e6f-4abc-8def-0123456789ab"), 0u);
}

TEST(TraceId, MillisRoundTrip) {
  for (uint64_t ms : {uint64_t{0}, uint64_t{1}, uint64_t{1732600000000}, (uint64_t{1} << 48) - 1}) {
    auto id = new_uuid_v7(ms);
    ASSERT_TRUE(is_uuid_v7(id)) << id;
    EXPECT_EQ(uuid_v7_millis(id), ms) << id;
  }
}

TEST(TraceId, CurrentTimeIsEmbedded) {
  uint64_t before = now_ms();
  auto id = new_uuid_v7();
  uint64_t after = now_ms();
  EXPECT_GE(uuid_v7_millis(id), before);
  EXPECT_LE(uuid_v7_millis(id), after);
}

TEST(TraceId, IdsSortByCreationTime) {
  std::vector<std::string> ids;
  uint64_t base = 1732600000000;
  for (uint64_t i = 0; i < 100; ++i) ids.push_back(new_uuid_v7(base + i * 7));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  // Same millisecond: random bits differ, so ids are still unique.
  std::set<std::string> same;
  for (int i = 0; i < 1000; ++i) same.insert(new_uuid_v7(base));
  EXPECT_EQ(same.size(), 1000u);
}

}  // namespace
}  // namespace nv
