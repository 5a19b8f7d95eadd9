// agent_tools.cc — tool specs, the system prompt, and what read_file shows the model.
#include "agent_tools.h"

#include <algorithm>

#include "common/utf8.h"

namespace nv::agent {

namespace s = nv::schema;

std::string system_prompt(bool persistent) {
  std::string tools =
      persistent
          ? "You work in your own isolated microVM (a sandbox; no network) for the whole task. "
            "Tools:\n"
            "- execute_code(language, code): runs python, bash or javascript in the sandbox and "
            "returns the program's real stdout, stderr and exit status.\n"
            "- write_file(path, content): writes a text file in the sandbox.\n"
            "- read_file(path, offset, length): returns a file's text (offset and length in "
            "bytes are optional, to read a part of a large file).\n"
            "Files and variables persist between calls within this task: files stay where "
            "you wrote them (your home and working directory is /home/agent; relative paths "
            "are taken from there), and python and javascript each keep one interpreter for "
            "the whole task, as in a notebook, so variables, functions and imports defined in "
            "one call are there in the next. bash runs as a new process each call but sees the "
            "same files. The sandbox is destroyed when the task ends.\n"
          : "You have one tool, execute_code(language, code): it runs the code in a fresh, "
            "isolated microVM (python, bash or javascript; no network) and returns the "
            "program's real stdout, stderr and exit status. Nothing persists between calls.\n";
  return "You are NeuroVisor's coding agent. You solve the user's task by writing and running "
         "code.\n" +
         tools +
         "Rules:\n"
         "- When a result needs computing, call execute_code instead of guessing; print what "
         "you need to see.\n"
         "- Read the tool result before you answer. If the code failed, fix it and run it "
         "again.\n"
         "- When you have the answer, reply with the final answer in plain text and call no "
         "tool.\n"
         "- If you cannot call tools natively, write the call as JSON in a ```json block: "
         "{\"name\": \"execute_code\", \"arguments\": {\"language\": \"python\", \"code\": "
         "\"print(1)\"}}\n";
}

std::string mounts_prompt(const std::vector<sandbox::Mount>& mounts) {
  if (mounts.empty()) return {};
  std::string out = "The user's directories are mounted in your sandbox:\n";
  for (const auto& m : mounts) {
    out += "- " + m.guest_path +
           (m.read_only ? " (read-only: writing, renaming or deleting there fails)\n"
                        : " (read-write: what you write there is copied back to the user's "
                          "machine when the task ends)\n");
  }
  return out;
}

std::string sync_notice(const std::vector<sandbox::MountSync>& synced) {
  std::string out = "read-write mounts copied back to the host:";
  if (synced.empty()) return out + " none";
  auto plural = [](uint64_t n, const char* one) {
    return std::to_string(n) + " " + one + (n == 1 ? "" : "s");
  };
  for (const auto& m : synced) {
    out += "\n  " + m.guest_path + " → " + m.host_path + ": " + plural(m.files_written, "file") +
           " written (" + plural(m.bytes_written, "byte") + "), " +
           std::to_string(m.files_removed) + " removed";
    if (!m.skipped.empty()) {
      out += ", " + std::to_string(m.skipped.size()) + " skipped";
      for (size_t i = 0; i < m.skipped.size() && i < 5; ++i) out += "\n    " + m.skipped[i];
      if (m.skipped.size() > 5) out += "\n    ...";
    }
  }
  return out;
}

std::string execute_code_schema() {
  return R"({"type":"object","properties":{)"
         R"("language":{"type":"string","enum":["python","bash","javascript"],)"
         R"("description":"the language of the code"},)"
         R"("code":{"type":"string","description":"the complete program to run; print the )"
         R"(results you need"}},"required":["language","code"]})";
}

std::string write_file_schema() {
  return R"({"type":"object","properties":{)"
         R"("path":{"type":"string","description":"the file: relative to /home/agent, or )"
         R"(absolute under /home/agent or /tmp"},)"
         R"("content":{"type":"string","description":"the whole text of the file"}},)"
         R"("required":["path","content"]})";
}

std::string read_file_schema() {
  return R"({"type":"object","properties":{)"
         R"("path":{"type":"string","description":"the file: relative to /home/agent, or )"
         R"(absolute"},)"
         R"("offset":{"type":"integer","minimum":0,"description":"the first byte to read, )"
         R"(default 0"},)"
         R"("length":{"type":"integer","minimum":1,"description":"bytes to read; default: )"
         R"(as much as one answer shows"}},)"
         R"("required":["path"]})";
}

std::vector<ToolSpec> tool_specs(bool persistent) {
  std::vector<ToolSpec> out;
  if (!persistent) {
    out.push_back({"execute_code",
                   "Run a program in a fresh isolated microVM and return its stdout, stderr and "
                   "exit status. Languages: python, bash, javascript. No network; nothing "
                   "persists.",
                   execute_code_schema()});
    return out;
  }
  out.push_back({"execute_code",
                 "Run a program in this task's sandbox (an isolated microVM, no network) and "
                 "return its stdout, stderr and exit status. Languages: python, bash, "
                 "javascript. Files (under /home/agent) and python/javascript variables persist "
                 "between calls.",
                 execute_code_schema()});
  out.push_back({"write_file",
                 "Write a text file in this task's sandbox, replacing it if it exists. A "
                 "relative path is taken under /home/agent. The file stays for the rest of the "
                 "task.",
                 write_file_schema()});
  out.push_back({"read_file",
                 "Read a text file from this task's sandbox. A relative path is taken under "
                 "/home/agent. A large file is shown in parts: read on with offset (bytes).",
                 read_file_schema()});
  return out;
}

std::string context_for(s::Language language) {
  switch (language) {
    case s::Language::PYTHON:
      return "python";
    case s::Language::JAVASCRIPT:
      return "javascript";
    default:
      return {};
  }
}

size_t shown_bytes(std::string_view data, uint64_t offset, uint64_t size, size_t max_chars) {
  size_t n = utf8::sanitized_prefix(data, max_chars);
  bool at_end = offset + n >= size;
  if (!at_end) n = std::max<size_t>(utf8::complete_prefix(data.substr(0, n)), n > 0 ? 1 : 0);
  return n;
}

std::string render_file_read(std::string_view path, std::string_view data, uint64_t offset,
                             uint64_t size) {
  std::string out;
  if (size == 0) return "(" + std::string(path) + " is empty: 0 bytes)";
  if (data.empty()) {
    return "(nothing at offset " + std::to_string(offset) + ": " + std::string(path) + " has " +
           std::to_string(size) + " bytes)";
  }
  out = utf8::sanitize(data);
  bool text = utf8::valid(data);
  uint64_t end = offset + data.size();
  if (offset > 0 || end < size || !text) {
    if (!out.empty() && out.back() != '\n') out += "\n";
    out += "[" + std::string(path) + ": bytes " + std::to_string(offset) + ".." +
           std::to_string(end) + " of " + std::to_string(size) + " shown";
    if (!text) out += "; bytes that are not UTF-8 text are shown as \xEF\xBF\xBD";
    if (end < size) out += "; read on with offset=" + std::to_string(end);
    out += "]";
  }
  return out;
}

}  // namespace nv::agent
