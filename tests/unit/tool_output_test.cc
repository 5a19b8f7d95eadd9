// tool_output_test — what the model is shown of an execution (services/orchestrator/
// tool_output.h): status first, head and tail of each stream, a marker with the bytes left out,
// stderr never crowded out, valid UTF-8. Exact expected texts.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <string>

#include "common/utf8.h"
#include "orchestrator/tool_output.h"

namespace {

using nv::agent::render_tool_output;
using nv::agent::ToolOutputOptions;

struct Fake {
  int exit_code = 0;
  std::string out, err, out_tail, err_tail;
  uint64_t out_total = 0, err_total = 0;  // 0 = the sizes of what is given
  bool truncated = false;
};

std::string render(const Fake& f, size_t budget) {
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<nv::schema::ExecResult>();
  auto bytes = [](const std::string& s) {
    return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
  };
  r.setExitCode(f.exit_code);
  r.setStdout(bytes(f.out));
  r.setStderr(bytes(f.err));
  r.setStdoutTail(bytes(f.out_tail));
  r.setStderrTail(bytes(f.err_tail));
  r.setStdoutBytes(f.out_total ? f.out_total : f.out.size() + f.out_tail.size());
  r.setStderrBytes(f.err_total ? f.err_total : f.err.size() + f.err_tail.size());
  r.setTruncated(f.truncated);
  return render_tool_output(r.asReader(), ToolOutputOptions{budget});
}

std::string lines(int from, int to) {  // "line 00\n" .. (8 bytes each)
  std::string s;
  for (int i = from; i < to; ++i)
    s += "line " + std::string(i < 10 ? "0" : "") + std::to_string(i) + "\n";
  return s;
}

TEST(ToolOutput, QuietSuccessIsItsStdout) {
  Fake f;
  f.out = "1048576\n";
  EXPECT_EQ(render(f, 100), "1048576\n");
  EXPECT_EQ(render({}, 100), "(the program printed nothing and exited with code 0)");
}

// The shape of issue 10 §3: long progress output, the result at its end, a traceback on
// stderr after the head cap was used up. The sandbox kept the first bytes and the tails.
TEST(ToolOutput, StatusFirstThenHeadAndTailOfEachStream) {
  Fake f;
  f.exit_code = 1;
  f.out = lines(0, 40);                                // the head the cap kept (320 bytes)
  f.out_tail = lines(90, 100) + "FINAL_SUM=499500\n";  // the tail ring
  f.out_total = 800 + 17;                              // 100 lines + the sum line
  f.err_tail = "Traceback (most recent call last):\nValueError: boom\n";
  f.truncated = true;
  EXPECT_EQ(render(f, 120),
            "exit status: 1\n"
            "stdout (817 bytes):\n"
            "line 00\nline 01\nline 02\nline 03\n"
            "[… 752 bytes of stdout left out …]\n"
            "line 98\nline 99\nFINAL_SUM=499500\n"
            "stderr (52 bytes):\n"
            "Traceback (most recent call last):\nValueError: boom\n");
}

// A second input of the kind: everything arrived (no tail from the sandbox), but it does not
// fit the budget: the start and the end of the one text.
TEST(ToolOutput, WholeOutputOverBudgetShowsStartAndEnd) {
  Fake f;
  f.exit_code = 1;
  f.out = lines(0, 20);
  f.err = "Err\n";
  EXPECT_EQ(render(f, 64),
            "exit status: 1\n"
            "stdout (160 bytes):\n"
            "line 00\nline 01\nline 02\n"
            "[… 112 bytes of stdout left out …]\n"
            "line 17\nline 18\nline 19\n"
            "stderr (4 bytes):\nErr\n");
}

// stderr is not crowded out: with more stdout than the whole budget, stderr keeps its half.
TEST(ToolOutput, StderrKeepsHalfTheBudget) {
  std::string err = lines(50, 60);  // 80 bytes
  Fake f;
  f.exit_code = 2;
  f.out = lines(0, 40);
  f.err = err;
  std::string text = render(f, 100);
  EXPECT_NE(text.find("stderr (80 bytes):\nline 50\n"), std::string::npos) << text;
  EXPECT_NE(text.find("line 59\n"), std::string::npos) << text;
  EXPECT_EQ(text.substr(0, 15), "exit status: 2\n");
}

// Program bytes become valid UTF-8; a character cut by the sandbox's cap is counted as left
// out rather than shown as U+FFFD.
TEST(ToolOutput, BytesBecomeValidText) {
  Fake f;
  f.exit_code = 3;
  f.out =
      "A\xff\xfe"
      "B\n"
      "ok \xe2\x9c";  // the head ends inside a check mark
  f.out_tail =
      "\x93\nS\xed\xa0\x80"
      "E\n";  // the tail begins inside it
  f.out_total = 100;
  std::string text = render(f, 1000);
  EXPECT_TRUE(nv::utf8::valid(text));
  EXPECT_EQ(text,
            "exit status: 3\n"
            "stdout (100 bytes):\n"
            "A\xEF\xBF\xBD\xEF\xBF\xBD"
            "B\nok \n"
            "[… 85 bytes of stdout left out …]\n"
            "\nS\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
            "E\n");
}

TEST(ToolOutput, TimeoutAndSignalAreSaid) {
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<nv::schema::ExecResult>();
  r.setExitCode(-1);
  r.setSignal(9);
  EXPECT_EQ(render_tool_output(r.asReader()),
            "the program was killed by signal 9\n(the program printed nothing)\n");
  r.setTimedOut(true);
  r.setDurationMs(2000);
  EXPECT_EQ(render_tool_output(r.asReader()),
            "the program was stopped: it ran past its time limit (after 2000 ms)\n"
            "(the program printed nothing)\n");
}

}  // namespace
