// utf8_test — the one validator every byte-to-text place uses (services/common/utf8.h):
// each maximal subpart of an ill-formed sequence becomes one U+FFFD (Unicode ch. 3.9, WHATWG).
#include <gtest/gtest.h>

#include <string>

#include "common/utf8.h"

namespace {

using nv::utf8::sanitize;
using nv::utf8::valid;

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

struct Case {
  std::string in, out;
};

// The inputs of issue 10 §4, each with its exact expected text.
TEST(Utf8, IssueInputsBecomeTheExpectedText) {
  const Case cases[] = {
      {"A\xff\xfe"
       "B\xc3\n",
       "A" + R + R + "B" + R + "\n"},
      {"S\xed\xa0\x80"
       "E\n",
       "S" + R + R + R + "E\n"},
      {"O\xe0\x80\xaf"
       "K\n",
       "O" + R + R + R + "K\n"},
      {"F\xf5\x80\x80\x80"
       "G\n",
       "F" + R + R + R + R + "G\n"},
      {"ok \xe2\x9c\x93\n", "ok \xe2\x9c\x93\n"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(sanitize(c.in), c.out);
    EXPECT_TRUE(valid(sanitize(c.in)));
    EXPECT_EQ(valid(c.in), c.in == c.out);
  }
}

// A second input of each kind (stray bytes, surrogate, overlong, past U+10FFFF, truncation,
// well-formed multi-byte text), with the results Python's bytes.decode('utf-8', 'replace')
// gives for them.
TEST(Utf8, SecondInputsOfEachKind) {
  const Case cases[] = {
      {"\x80x\xbf", R + "x" + R},  // lone continuation bytes
      {"\xc0\xaf/", R + R + "/"},  // C0: never a lead byte
      {"a\xed\xbf\xbf"
       "b",
       "a" + R + R + R + "b"},                     // U+DFFF encoded
      {"\xf0\x80\x80\xaf", R + R + R + R},         // overlong 4-byte '/'
      {"\xf4\x90\x80\x80!", R + R + R + R + "!"},  // U+110000
      {"\xf0\x9f\x98X", R + "X"},                  // 3 of 4 bytes: one subpart
      {"\xe2\x9c", R},                             // cut at the end
      {"\xe2\x9cz\xe2\x9c\x93", R + "z\xe2\x9c\x93"},
      {"\xf4\x8f\xbf\xbf\xc2\x80", "\xf4\x8f\xbf\xbf\xc2\x80"},  // U+10FFFF, U+0080: kept
      {"", ""},
  };
  for (const auto& c : cases) EXPECT_EQ(sanitize(c.in), c.out) << testing::PrintToString(c.in);
}

TEST(Utf8, BoundariesForTextCutAtAnyByte) {
  using nv::utf8::complete_prefix;
  using nv::utf8::next_boundary;
  const std::string check = "ok \xe2\x9c\x93";
  EXPECT_EQ(complete_prefix(check), check.size());
  EXPECT_EQ(complete_prefix(check.substr(0, 5)), 3u);  // "ok " + 2 of 3 bytes
  EXPECT_EQ(complete_prefix(check.substr(0, 4)), 3u);
  EXPECT_EQ(complete_prefix("a\xe0\x80"), 3u);  // ill-formed already: not withheld
  EXPECT_EQ(next_boundary(check, 4), 6u);       // inside the check mark
  EXPECT_EQ(next_boundary(check, 3), 3u);
  EXPECT_EQ(nv::utf8::sanitized_length(check), 4u);
  EXPECT_EQ(nv::utf8::sanitized_prefix(check, 3), 3u);
  EXPECT_EQ(nv::utf8::sanitized_prefix(check, 4), 6u);
  const std::string bad =
      "S\xed\xa0\x80"
      "E";  // S, 3 replacements, E
  EXPECT_EQ(nv::utf8::sanitized_length(bad), 5u);
  EXPECT_EQ(nv::utf8::sanitized_prefix(bad, 2), 2u);
  EXPECT_EQ(nv::utf8::sanitized_prefix(bad, 4), 4u);
  EXPECT_EQ(nv::utf8::sanitized_prefix(bad, 9), 5u);
}

// Every byte string of length 1..3 over a set of interesting bytes: the output is valid, and
// valid input is returned unchanged.
TEST(Utf8, ExhaustiveShortInputsGiveValidText) {
  const unsigned char bytes[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
                                 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed,
                                 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff};
  size_t n = sizeof bytes;
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b <= n; ++b) {
      for (size_t c = 0; c <= n; ++c) {
        std::string s(1, static_cast<char>(bytes[a]));
        if (b < n) s += static_cast<char>(bytes[b]);
        if (b < n && c < n) s += static_cast<char>(bytes[c]);
        std::string out = sanitize(s);
        ASSERT_TRUE(valid(out)) << testing::PrintToString(s);
        ASSERT_EQ(nv::utf8::sanitized_length(s), nv::utf8::sanitized_length(out));
        if (valid(s)) {
          ASSERT_EQ(out, s);
        }
      }
    }
  }
}

}  // namespace
