// agent_tools_test.cc — the agent's file tools as pure functions: write_file and read_file
// arguments (model_reply.h), paths in the sandbox, what read_file shows the model, the tool
// specs and system prompt of each mode (agent_tools.h). No sockets, no timing.
#include "agent_tools.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <string>

#include "model_reply.h"

namespace {

namespace a = nv::agent;
namespace s = nv::schema;

TEST(SandboxPath, RelativePathsAreUnderTheAgentsHome) {
  EXPECT_EQ(a::sandbox_path("notes.txt"), "/home/agent/notes.txt");
  EXPECT_EQ(a::sandbox_path("./dir/x.py"), "/home/agent/dir/x.py");
  EXPECT_EQ(a::sandbox_path("~/x"), "/home/agent/x");
  EXPECT_EQ(a::sandbox_path("~"), "/home/agent");
  EXPECT_EQ(a::sandbox_path(" /tmp/data.csv "), "/tmp/data.csv");
  EXPECT_EQ(a::sandbox_path(""), "");
  EXPECT_EQ(a::sandbox_path("   "), "");
  EXPECT_EQ(a::sandbox_path(std::string("a\0b", 3)), "");
  EXPECT_EQ(a::sandbox_path(std::string(5000, 'x')), "");
}

TEST(WriteArgs, PathAndContent) {
  std::string why;
  auto w = a::parse_write_args(R"({"path": "out/r.txt", "content": "a\nb\u00e9"})", &why);
  ASSERT_TRUE(w) << why;
  EXPECT_EQ(w->path, "/home/agent/out/r.txt");
  EXPECT_EQ(w->content, "a\nb\xc3\xa9");
  EXPECT_EQ(w->note, "");
  // Encoded twice, an empty content, an unknown key (named in the note).
  w = a::parse_write_args(R"("{\"path\": \"/tmp/e\", \"content\": \"\", \"mode\": 1}")", &why);
  ASSERT_TRUE(w) << why;
  EXPECT_EQ(w->path, "/tmp/e");
  EXPECT_EQ(w->content, "");
  EXPECT_EQ(w->note, "note: write_file takes only \"path\" and \"content\"; ignored \"mode\"");
}

TEST(WriteArgs, WhatIsWrongIsSaid) {
  std::string why;
  EXPECT_FALSE(a::parse_write_args(R"({"content": "x"})", &why));
  EXPECT_EQ(why.rfind("the \"path\" argument is missing or not a string; write_file takes", 0), 0u)
      << why;
  EXPECT_FALSE(a::parse_write_args(R"({"path": "a", "content": 5})", &why));
  EXPECT_EQ(why.rfind("the \"content\" argument is missing or not a string", 0), 0u) << why;
  EXPECT_FALSE(a::parse_write_args(R"({"path": "", "content": "x"})", &why));
  EXPECT_EQ(why.rfind("the \"path\" argument is empty", 0), 0u) << why;
  EXPECT_FALSE(a::parse_write_args("not json", &why));
  EXPECT_EQ(why.rfind("the arguments are not a JSON object (got: not json)", 0), 0u) << why;
}

TEST(ReadArgs, OffsetAndLengthAreWholeNumbers) {
  std::string why;
  auto r = a::parse_read_args(R"({"path": "big.log"})", &why);
  ASSERT_TRUE(r) << why;
  EXPECT_EQ(r->path, "/home/agent/big.log");
  EXPECT_EQ(r->offset, 0u);
  EXPECT_EQ(r->length, 0u);
  r = a::parse_read_args(R"({"path": "big.log", "offset": 4096, "length": "100"})", &why);
  ASSERT_TRUE(r) << why;
  EXPECT_EQ(r->offset, 4096u);
  EXPECT_EQ(r->length, 100u);
  r = a::parse_read_args(R"({"path": "x", "offset": 10.0, "length": null})", &why);
  ASSERT_TRUE(r) << why;
  EXPECT_EQ(r->offset, 10u);
  for (const char* bad :
       {R"({"path": "x", "offset": -1})", R"({"path": "x", "offset": 1.5})",
        R"({"path": "x", "length": "ten"})", R"({"path": "x", "offset": 1e300})"}) {
    EXPECT_FALSE(a::parse_read_args(bad, &why)) << bad;
    EXPECT_NE(why.find("must be a whole number of bytes, 0 or more"), std::string::npos) << why;
  }
}

TEST(FileRead, TheWholeFileIsShownAsItIs) {
  EXPECT_EQ(a::render_file_read("/home/agent/a", "line 1\nline 2\n", 0, 14), "line 1\nline 2\n");
  EXPECT_EQ(a::render_file_read("/home/agent/a", "", 0, 0), "(/home/agent/a is empty: 0 bytes)");
  EXPECT_EQ(a::render_file_read("/home/agent/a", "", 20, 10),
            "(nothing at offset 20: /home/agent/a has 10 bytes)");
}

TEST(FileRead, APartSaysWhichBytesAndHowToReadOn) {
  EXPECT_EQ(a::render_file_read("/home/agent/log", "abc", 10, 100),
            "abc\n[/home/agent/log: bytes 10..13 of 100 shown; read on with offset=13]");
  EXPECT_EQ(a::render_file_read("/home/agent/log", "end\n", 96, 100),
            "end\n[/home/agent/log: bytes 96..100 of 100 shown]");
  // Bytes that are not UTF-8: shown as U+FFFD, and said so.
  EXPECT_EQ(a::render_file_read("/tmp/b",
                                "A\xff"
                                "B",
                                0, 3),
            "A\xEF\xBF\xBD"
            "B\n[/tmp/b: bytes 0..3 of 3 shown; bytes that are not UTF-8 text are "
            "shown as \xEF\xBF\xBD]");
}

TEST(FileRead, ShownBytesEndOnACharacterBoundary) {
  std::string text =
      "ab\xc3\xa9"
      "cd";  // a b é c d: 6 bytes, 5 code points
  EXPECT_EQ(a::shown_bytes(text, 0, 6, 100), 6u);
  EXPECT_EQ(a::shown_bytes(text, 0, 6, 3), 4u);  // a b é
  EXPECT_EQ(a::shown_bytes(text, 0, 6, 2), 2u);
  // A read cut inside é (not the file's end): the partial character is held back.
  EXPECT_EQ(a::shown_bytes(text.substr(0, 3), 0, 6, 100), 2u);
  // At the file's end a cut character is shown (as U+FFFD by render_file_read).
  EXPECT_EQ(a::shown_bytes(text.substr(0, 3), 0, 3, 100), 3u);
}

TEST(ToolSpecs, EachModeOffersItsTools) {
  auto sandbox = a::tool_specs(true);
  ASSERT_EQ(sandbox.size(), 3u);
  EXPECT_EQ(sandbox[0].name, "execute_code");
  EXPECT_EQ(sandbox[1].name, "write_file");
  EXPECT_EQ(sandbox[2].name, "read_file");
  for (auto& t : sandbox) {
    rapidjson::Document d;
    d.Parse(t.parameters_json.c_str());
    ASSERT_FALSE(d.HasParseError()) << t.name << ": " << t.parameters_json;
    EXPECT_STREQ(d["type"].GetString(), "object");
    EXPECT_TRUE(d["required"].IsArray());
  }
  auto fresh = a::tool_specs(false);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_EQ(fresh[0].name, "execute_code");
  EXPECT_NE(a::system_prompt(true).find("python and javascript each keep one interpreter"),
            std::string::npos);
  EXPECT_NE(a::system_prompt(false).find("Nothing persists between calls."), std::string::npos);
  EXPECT_EQ(a::context_for(s::Language::PYTHON), "python");
  EXPECT_EQ(a::context_for(s::Language::JAVASCRIPT), "javascript");
  EXPECT_EQ(a::context_for(s::Language::BASH), "");
}

// Issue 15: what the model is told about mounted host directories, and the end-of-task notice.
TEST(AgentTools, MountsPromptAndSyncNotice) {
  EXPECT_EQ(a::mounts_prompt({}), "");
  EXPECT_EQ(a::mounts_prompt({{"/srv/p", "/home/agent/proj", false, 0, 0},
                              {"/srv/d", "/home/agent/data", true, 0, 0}}),
            "The user's directories are mounted in your sandbox:\n"
            "- /home/agent/proj (read-write: what you write there is copied back to the user's "
            "machine when the task ends)\n"
            "- /home/agent/data (read-only: writing, renaming or deleting there fails)\n");
  EXPECT_EQ(a::sync_notice({}), "read-write mounts copied back to the host: none");
  EXPECT_EQ(a::sync_notice({{"/home/agent/proj", "/srv/p", 1, 12, 0, {}}}),
            "read-write mounts copied back to the host:\n"
            "  /home/agent/proj → /srv/p: 1 file written (12 bytes), 0 removed");
  std::vector<std::string> skipped;
  for (int i = 0; i < 7; ++i) skipped.push_back("l" + std::to_string(i) + ": symlink");
  EXPECT_EQ(a::sync_notice({{"/home/agent/a", "/srv/a", 0, 1, 2, skipped}}),
            "read-write mounts copied back to the host:\n"
            "  /home/agent/a → /srv/a: 0 files written (1 byte), 2 removed, 7 skipped\n"
            "    l0: symlink\n    l1: symlink\n    l2: symlink\n    l3: symlink\n"
            "    l4: symlink\n    ...");
}

}  // namespace
