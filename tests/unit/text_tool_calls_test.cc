// text_tool_calls_test.cc — the agent's parser of tool calls written as text, on the inputs the
// text_tool_calls fuzz target (tests/fuzz) found faults with, and a second input of each kind.
#include <gtest/gtest.h>

#include <string>

#include "orchestrator/agent.h"

namespace nv::agent {
namespace {

const std::string kCall =
    R"J({"name": "execute_code", "arguments": {"language": "python", "code": "print(1)"}})J";

// ---- nesting: RapidJSON recurses once per level; a million '[' overflowed the stack.

TEST(TextToolCalls, DeeplyNestedFencedJsonIsNoCall) {
  // The shape of tests/fuzz/corpus/text_tool_calls/crash-deep-nesting, 50 times deeper.
  std::string text = "```json\n" + std::string(1'000'000, '[') + "\n```\n" + kCall;
  auto calls = parse_text_tool_calls(text);
  ASSERT_EQ(calls.size(), 1u);  // the real call after it is still found
  EXPECT_EQ(calls[0].name, "execute_code");
  EXPECT_EQ(calls[0].arguments_json, R"J({"language":"python","code":"print(1)"})J");
}

TEST(TextToolCalls, DeeplyNestedArgumentsAreRefusedWithAReason) {
  std::string why;
  auto args = parse_code_args(std::string(1'000'000, '{'), &why);
  EXPECT_FALSE(args);
  EXPECT_EQ(why.rfind("the arguments are not a JSON object", 0), 0u) << why;
  // Encoded twice: the inner text is checked as well.
  why.clear();
  args = parse_code_args("\"" + std::string(1'000'000, '[') + "\"", &why);
  EXPECT_FALSE(args);
  EXPECT_EQ(why.rfind("the arguments are not a JSON object", 0), 0u) << why;
}

TEST(TextToolCalls, NestingUpToTheBoundIsStillRead) {
  // 128 levels in all (the bound, services/common/json_depth.h) parse; the call is found.
  std::string deep = std::string(126, '[') + std::string(126, ']');
  std::string text = R"({"name": "execute_code", "arguments": {"language": "python", "x": )" +
                     deep + R"J(, "code": "print(2)"}})J";
  auto calls = parse_text_tool_calls(text);
  ASSERT_EQ(calls.size(), 1u);
  std::string why;
  auto args = parse_code_args(calls[0].arguments_json, &why);
  ASSERT_TRUE(args) << why;
  EXPECT_EQ(args->code, "print(2)");
}

// ---- quadratic scans: every '{' was scanned to the text's end (20 KB of '{': ~20 s under
//      ASan; 1 MB: hours). ctest's timeout fails the old code; the answer is exact.

TEST(TextToolCalls, TextFullOfOpenBracesIsNoCall) {
  EXPECT_TRUE(parse_text_tool_calls(std::string(2'000'000, '{')).empty());
}

TEST(TextToolCalls, TextFullOfUnclosedObjectsIsNoCall) {
  std::string text;
  for (int i = 0; i < 200'000; ++i) text += R"({"x": )";
  EXPECT_TRUE(parse_text_tool_calls(text).empty());
}

TEST(TextToolCalls, BareCallAfterAFewStrayBracesIsFound) {
  auto calls = parse_text_tool_calls("Sure { here } {{ " + kCall);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].name, "execute_code");
}

}  // namespace
}  // namespace nv::agent
