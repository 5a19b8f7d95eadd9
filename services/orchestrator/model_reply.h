// model_reply.h — what the agent makes of a model's reply (library nv_agent).
//
// The gateway hands the agent an assistant message: text (reasoning already split off into
// `thinking`, see services/llm-gateway/reasoning.h), native tool calls, and a done reason. Real
// models send more shapes than the happy path: calls written in the text, empty or duplicate
// call ids, code wrapped in a markdown fence, language aliases, unknown argument keys, arguments
// that are not JSON, tools that do not exist, and empty or length-cut replies. Each becomes a
// clear result here: a call to run, or a message for the model saying what is wrong.
//
// Everything here is a pure function of its input bytes (no I/O, no globals), so tests and
// libFuzzer targets call it directly.
#pragma once

#include <nv/schema/common.capnp.h>

#include <cstdint>

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace nv::agent {

// `v` without leading and trailing whitespace.
std::string trimmed(std::string_view v);

// ------------------------------------------------------------------------- calls in the text

struct ParsedCall {
  std::string name;            // the tool named, e.g. "execute_code"
  std::string arguments_json;  // an arguments object as JSON text
};

// Tool calls written inside the model's text, for models without native tool calling:
//   ```json {"name": "execute_code", "arguments": {...}} ```   (also ```tool_call, bare JSON)
//   <tool_call>{"name": ..., "arguments": {...}}</tool_call>
//   <tool_call><name>execute_code</name><arguments><language>..</language>..</arguments>
//   <execute_code language="python">CODE</execute_code>
//   {"name": "execute_code", "parameters": {...}} and {"function": {...}} spellings
// Returns every call found, in order of appearance; none when the text holds no call.
// Never given reasoning text: thinking is not parsed for calls.
std::vector<ParsedCall> parse_text_tool_calls(std::string_view text);

// --------------------------------------------------------------------- execute_code arguments

// A language name as models write it → the schema's language; false when unknown.
//   python: python, python3, py, py3 · bash: bash, shell, zsh · sh: sh, posix
//   javascript: javascript, js, node, nodejs, node.js, mjs      (case and spaces ignored)
bool language_from_name(std::string_view name, schema::Language* out);

struct Fence {
  bool found = false;  // the code was one fenced block
  std::string code;    // the block's body (the input unchanged when !found)
  std::string tag;     // the info string's first word, e.g. "python" ("" = none)
};
// Code wrapped in a markdown fence (CommonMark: ``` or ~~~, three or more, an optional info
// string, blank lines around, the closing fence optional when the reply was cut):
//   "```python\nimport math\nprint(math.factorial(20))\n```" → body "import math\n…(20))\n",
//   tag "python". Code not wrapped as a whole is returned unchanged.
Fence strip_code_fence(std::string_view code);

struct CodeArgs {
  schema::Language language = schema::Language::UNSET;
  std::string code;
  std::string note;  // for the model, beside the result: ignored keys ("" = nothing to say)
};
// execute_code's arguments → language and code, or nullopt and *why, a message for the model
// saying what is wrong and how to call the tool. Accepts the arguments object as JSON text or
// encoded twice (a JSON string holding it). A fenced `code` is unwrapped and its tag fills a
// missing `language`. Keys other than language and code are ignored and named in `note`.
std::optional<CodeArgs> parse_code_args(std::string_view arguments_json, std::string* why);

// ------------------------------------------------------------------ write_file and read_file

// The directory a task's files live in: the sandbox's home and default working directory.
inline constexpr std::string_view kAgentHome = "/home/agent";

// A path as a model writes it → an absolute guest path: "notes.txt" and "./notes.txt" →
// "/home/agent/notes.txt", "~/x" → "/home/agent/x", "~" and "." → "/home/agent"; an absolute
// path is kept (the sandbox service refuses one outside its writable roots, /home/agent and
// /tmp, with badRequest). "" for an empty path, one over 4096 bytes, or one holding a NUL byte.
std::string sandbox_path(std::string_view path);

struct WriteArgs {
  std::string path;     // absolute (sandbox_path)
  std::string content;  // the whole file, as the model sent it (UTF-8 text)
  std::string note;     // ignored keys ("" = nothing to say)
};
// write_file's arguments {"path": ..., "content": ...} → the call, or nullopt and *why (a
// message for the model). The same object rules as parse_code_args (twice-encoded accepted).
std::optional<WriteArgs> parse_write_args(std::string_view arguments_json, std::string* why);

struct ReadArgs {
  std::string path;     // absolute (sandbox_path)
  uint64_t offset = 0;  // bytes from the start
  uint64_t length = 0;  // 0 = as much as the tool shows at once
  std::string note;
};
// read_file's arguments {"path": ..., "offset"?: N, "length"?: N} → the call, or nullopt and
// *why. offset and length are whole numbers ≥ 0 (JSON numbers, or digit strings as some models
// send them).
std::optional<ReadArgs> parse_read_args(std::string_view arguments_json, std::string* why);

// --------------------------------------------------------------------------------- the reply

struct ModelCall {
  std::string id;  // unique in the task once assign_call_ids ran
  std::string name;
  std::string arguments_json;  // as the model sent it
};

// Gives every call an id that is non-empty and unique in the task (`used` holds the ids given
// so far): the model's own id when it has one not used before, else "call_<iteration>_<n>".
// The same id goes into the assistant message and into the tool message that answers it, so
// strict OpenAI-compatible servers can match them.
void assign_call_ids(std::vector<ModelCall>& calls, uint32_t iteration,
                     std::set<std::string>& used);

// The arguments as the history carries them: the model's text when it is a JSON object, else
// "{}" (Ollama needs an object there; the tool message tells the model what was wrong).
std::string history_arguments(std::string_view arguments_json);

enum class ReplyKind {
  answer,  // text, no calls: the final answer
  calls,   // tool calls to run
  empty,   // no calls and no text (or whitespace, or reasoning only)
  cut,     // no calls and the model stopped at its token limit (done reason "length", or
           // "max_tokens" in any case)
};
// What a reply is. `content` is the text without reasoning; `calls` counts native and text calls.
ReplyKind classify_reply(std::string_view content, size_t calls, std::string_view done_reason);

// The user message that asks once more after an empty or cut reply.
std::string ask_again_message(ReplyKind kind);
// What the progress stream says when asking again, and the error when the second reply fails
// too; both name the reply kind and the done reason.
std::string ask_again_notice(ReplyKind kind, std::string_view done_reason);
std::string reply_cut_error(ReplyKind kind, std::string_view done_reason);

}  // namespace nv::agent
