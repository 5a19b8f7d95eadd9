// tool_output.h — what the model is shown of one finished execution (the tool message).
//
// A program's output can be far larger than a model's context. The rendering keeps what a model
// needs to go on: the exit status first, then, per stream, the head and the tail of what the
// program wrote, with a marker saying how many bytes were left out between them:
//
//   exit status: 1
//   stdout (1400016 bytes):
//   progress 0
//   …
//   [… 1384570 bytes of stdout left out …]
//   progress 99999
//   FINAL_SUM=499500
//   stderr (103 bytes):
//   Traceback (most recent call last):
//     File "<string>", line 4, in <module>
//   ValueError: boom
//
// Budget: `max_chars` Unicode code points of program output in all (markers and the status
// lines come on top, a few hundred at most). When stdout and stderr do not both fit, stderr gets
// at least half the budget (or all it needs when that is less), so a traceback is never crowded
// out by progress lines; within a stream the head and the tail share its part equally, cuts fall
// on a line end when one is near. A program that exits 0 with nothing on stderr and fits the
// budget is shown its stdout alone, as before.
//
// The bytes come from ExecResult: `stdout`/`stderr` (the head the sandbox kept) and
// `stdoutTail`/`stderrTail` (its last bytes past the cap); they are shown as UTF-8 with each
// ill-formed sequence replaced by U+FFFD (common/utf8.h).
#pragma once

#include <nv/schema/exec.capnp.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace nv::agent {

// The default of --tool-output-chars.
inline constexpr size_t kDefaultToolOutputChars = 16 * 1024;

struct ToolOutputOptions {
  size_t max_chars = kDefaultToolOutputChars;  // code points of program output, both streams
};

// One stream as the sandbox returned it.
struct StreamBytes {
  std::string_view head;  // the first bytes (ExecResult.stdout / stderr)
  std::string_view tail;  // the last bytes past the head (ExecResult.stdoutTail / stderrTail)
  uint64_t total = 0;     // bytes the program wrote to it in all (stdoutBytes / stderrBytes)
};

// The shown text of one stream within `budget` code points: head, a "[… N bytes of NAME left
// out …]" line when anything is missing, tail. Valid UTF-8. Exposed for tests.
std::string render_stream(const StreamBytes& s, size_t budget, std::string_view name);

// The tool message for a finished execution.
std::string render_tool_output(schema::ExecResult::Reader r, const ToolOutputOptions& o = {});

}  // namespace nv::agent
