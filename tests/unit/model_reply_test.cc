// model_reply_test.cc — what the agent makes of odd model replies (services/orchestrator/
// model_reply.h) and how the gateway splits <think> reasoning out of the text
// (services/llm-gateway/reasoning.h). Pure functions: no sockets, no timing.
#include "model_reply.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "reasoning.h"

namespace {

namespace s = nv::schema;
using nv::agent::ModelCall;
using nv::agent::ReplyKind;

// ------------------------------------------------------------------------------- call ids

TEST(CallIds, EmptyIdsBecomeUniqueAndNonEmpty) {
  std::set<std::string> used;
  std::vector<ModelCall> calls = {{"", "execute_code", "{}"}, {"", "execute_code", "{}"}};
  nv::agent::assign_call_ids(calls, 1, used);
  EXPECT_EQ(calls[0].id, "call_1_0");
  EXPECT_EQ(calls[1].id, "call_1_1");
  // The next reply's calls never reuse them, even when the model sends the same ids again.
  std::vector<ModelCall> again = {{"call_1_0", "execute_code", "{}"}, {" ", "x", "{}"}};
  nv::agent::assign_call_ids(again, 2, used);
  EXPECT_EQ(again[0].id, "call_2_0");
  EXPECT_EQ(again[1].id, "call_2_1");
}

TEST(CallIds, DuplicateIdsInOneReplyAreMadeUnique) {
  std::set<std::string> used;
  std::vector<ModelCall> calls = {{"call_abc", "execute_code", "{}"},
                                  {"call_abc", "execute_code", "{}"},
                                  {"call_1_1", "execute_code", "{}"}};
  nv::agent::assign_call_ids(calls, 1, used);
  EXPECT_EQ(calls[0].id, "call_abc");  // the model's own id is kept when it is free
  EXPECT_EQ(calls[1].id, "call_1_1");
  EXPECT_EQ(calls[2].id, "call_1_2");  // "call_1_1" was just given to the second call
  EXPECT_EQ(used.size(), 3u);
}

// ----------------------------------------------------------------------------- code fences

TEST(CodeFence, PythonFenceFromTheIssue) {
  std::string why;
  auto a = nv::agent::parse_code_args(
      R"js({"language": "python", "code": "```python\nimport math\nprint(math.factorial(20))\n```"})js",
      &why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->code, "import math\nprint(math.factorial(20))\n");
  EXPECT_EQ(a->language, s::Language::PYTHON);
  EXPECT_EQ(a->note, "");
}

TEST(CodeFence, TildeFenceBlankLinesAndTagFillsTheLanguage) {
  std::string why;
  auto a = nv::agent::parse_code_args(
      R"js({"code": "\n\n~~~~js\r\n\r\nconsole.log(3**5)\r\n~~~~\n\n"})js", &why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->code, "console.log(3**5)\n");
  EXPECT_EQ(a->language, s::Language::JAVASCRIPT);
  // A fence cut before its end (a length-cut reply) still loses its opening line.
  auto f = nv::agent::strip_code_fence("```bash\necho hi\n");
  EXPECT_TRUE(f.found);
  EXPECT_EQ(f.code, "echo hi\n");
  EXPECT_EQ(f.tag, "bash");
  // The language argument wins over the tag; code that is not wrapped as a whole is untouched.
  a = nv::agent::parse_code_args(R"js({"language": "sh", "code": "```bash\necho 1\n```"})js", &why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->language, s::Language::SH);
  std::string inner = "x = '''\n```\n'''\nprint(x)";
  EXPECT_FALSE(nv::agent::strip_code_fence(inner).found);
  EXPECT_EQ(nv::agent::strip_code_fence(inner).code, inner);
  // A fence whose tag is no language, and no language argument: the model is told.
  EXPECT_FALSE(nv::agent::parse_code_args(R"js({"code": "```cobol\nDISPLAY 1\n```"})js", &why));
  EXPECT_NE(why.find("fence says \"cobol\""), std::string::npos) << why;
}

// ------------------------------------------------------------- the rest of the argument family

TEST(CodeArgs, LanguageAliases) {
  std::vector<std::pair<std::string, s::Language>> cases = {{"py", s::Language::PYTHON},
                                                            {"Python3", s::Language::PYTHON},
                                                            {"python 3", s::Language::PYTHON},
                                                            {"sh", s::Language::SH},
                                                            {"bash", s::Language::BASH},
                                                            {"shell", s::Language::BASH},
                                                            {"js", s::Language::JAVASCRIPT},
                                                            {"node", s::Language::JAVASCRIPT},
                                                            {"JavaScript", s::Language::JAVASCRIPT},
                                                            {"node.js", s::Language::JAVASCRIPT}};
  for (auto& [name, want] : cases) {
    s::Language got = s::Language::UNSET;
    EXPECT_TRUE(nv::agent::language_from_name(name, &got)) << name;
    EXPECT_EQ(got, want) << name;
  }
  s::Language got;
  EXPECT_FALSE(nv::agent::language_from_name("ruby", &got));
}

TEST(CodeArgs, UnknownKeysAreNamedNotDropped) {
  std::string why;
  auto a = nv::agent::parse_code_args(
      R"js({"language": "python", "code": "print(1)", "timeout": 5, "stdin": "x"})js", &why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->note,
            "note: execute_code takes only \"language\" and \"code\"; ignored \"timeout\", "
            "\"stdin\"");
  // Code under another key: the model hears which keys were unknown.
  EXPECT_FALSE(
      nv::agent::parse_code_args(R"js({"language": "python", "source": "print(1)"})js", &why));
  EXPECT_NE(why.find("\"code\" argument is missing"), std::string::npos) << why;
  EXPECT_NE(why.find("unknown arguments: \"source\""), std::string::npos) << why;
}

TEST(CodeArgs, ArgumentsThatAreNotJson) {
  std::string why;
  EXPECT_FALSE(nv::agent::parse_code_args("{\"language\": \"python\", \"code\": \"print(1)", &why));
  EXPECT_NE(why.find("not a JSON object (got: {\"language\""), std::string::npos) << why;
  EXPECT_FALSE(nv::agent::parse_code_args("print(1)", &why));
  EXPECT_NE(why.find("execute_code takes"), std::string::npos) << why;
  // The history keeps only JSON objects (Ollama needs one there).
  EXPECT_EQ(nv::agent::history_arguments("print(1)"), "{}");
  EXPECT_EQ(nv::agent::history_arguments(R"js({"code":"x"})js"), R"js({"code":"x"})js");
  EXPECT_EQ(nv::agent::history_arguments("[1]"), "{}");
}

// ----------------------------------------------------------------------------- reply kinds

TEST(ReplyKinds, EmptyAndCutAreNeverAnswers) {
  using nv::agent::classify_reply;
  EXPECT_EQ(classify_reply("", 0, "length"), ReplyKind::cut);
  EXPECT_EQ(classify_reply("The answer is", 0, "length"), ReplyKind::cut);
  EXPECT_EQ(classify_reply("", 0, "stop"), ReplyKind::empty);
  EXPECT_EQ(classify_reply(" \n\t", 0, "stop"), ReplyKind::empty);
  EXPECT_EQ(classify_reply("42", 0, "stop"), ReplyKind::answer);
  EXPECT_EQ(classify_reply("", 1, "length"), ReplyKind::calls);
  EXPECT_EQ(classify_reply("Partial", 0, "MAX_TOKENS"), ReplyKind::cut);
  EXPECT_NE(nv::agent::reply_cut_error(ReplyKind::cut, "length").find("done reason \"length\""),
            std::string::npos);
  EXPECT_NE(nv::agent::ask_again_notice(ReplyKind::empty, "stop").find("asking it once more"),
            std::string::npos);
}

// --------------------------------------------------------------------- <think> in the text

TEST(ThinkTags, WholeText) {
  auto r = nv::llm::split_think_tags("<think>2**20 is 1048576</think>\n\nThe answer is 1048576.");
  EXPECT_EQ(r.thinking, "2**20 is 1048576");
  EXPECT_EQ(r.content, "The answer is 1048576.");
  r = nv::llm::split_think_tags("<think>I should call the tool {\"name\": \"execute_code\"");
  EXPECT_EQ(r.content, "");  // cut inside the block: all reasoning
  EXPECT_EQ(r.thinking, "I should call the tool {\"name\": \"execute_code\"");
  r = nv::llm::split_think_tags("the template opened it</think>Done.");
  EXPECT_EQ(r.thinking, "the template opened it");
  EXPECT_EQ(r.content, "Done.");
  r = nv::llm::split_think_tags("a < b and 2 > 1");
  EXPECT_EQ(r.thinking, "");
  EXPECT_EQ(r.content, "a < b and 2 > 1");
}

TEST(ThinkTags, StreamedWithTagsCutAcrossPieces) {
  // Every split of the text into two pieces gives the same result.
  std::string text = "<thinking>use python</thinking>\n 243 <3";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    nv::llm::ThinkTagStream st;
    std::string thinking, content;
    nv::llm::DeltaFn emit = [&](std::string_view t, nv::llm::DeltaKind k) {
      (k == nv::llm::DeltaKind::thinking ? thinking : content).append(t);
    };
    st.feed(text.substr(0, cut), emit);
    st.feed(text.substr(cut), emit);
    st.finish(emit);
    EXPECT_EQ(thinking, "use python") << cut;
    EXPECT_EQ(content, "243 <3") << cut;
  }
}

}  // namespace
