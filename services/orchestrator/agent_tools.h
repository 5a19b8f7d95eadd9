// agent_tools.h — the tools the agent offers a model, and what it says about them.
//
// Two modes (AgentOptions.fresh_vm_per_call, the orchestrator's --fresh-vm-per-call):
//   sandbox (the default): one sandbox (schemas/sandbox.capnp) per task, made at the task's first
//     tool call and destroyed when the task ends. Tools: execute_code, write_file, read_file.
//     Files persist between calls (home and working directory /home/agent); python and
//     javascript run in one persistent interpreter per language (a code context), so variables
//     and imports persist too; bash runs as a new process each call.
//   fresh VM per call: every execute_code runs in a fresh microVM through the "exec" service
//     and nothing persists between calls. Tool: execute_code alone.
// The tool schemas are JSON Schema objects as the OpenAI "function" tools and the Ollama
// /api/chat "tools" take them (the gateway wraps them in each API's own shape).
#pragma once

#include <nv/schema/common.capnp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/sandbox_client.h"

namespace nv::agent {

struct ToolSpec {
  std::string name;
  std::string description;
  std::string parameters_json;  // JSON Schema of the arguments object
};

// The system prompt every task starts with; `persistent` = sandbox mode.
std::string system_prompt(bool persistent);

// What the system prompt adds for a task with host directories (SubmitTask.mounts): each guest
// path and whether it is read-only, and that read-write ones go back to the user's machine when
// the task ends. "" without mounts. Host paths are not shown to the model.
std::string mounts_prompt(const std::vector<sandbox::Mount>& mounts);

// The notice that says what the end-of-task sync did: per read-write mount "GUEST → HOST: N
// files written (B bytes), M removed", and the skipped entries (at most 5 shown per mount).
std::string sync_notice(const std::vector<sandbox::MountSync>& synced);

// The tools offered to the model: execute_code, plus write_file and read_file when persistent.
std::vector<ToolSpec> tool_specs(bool persistent);

// The JSON Schemas of each tool's arguments.
std::string execute_code_schema();
std::string write_file_schema();
std::string read_file_schema();

// The code context a language runs in within a task's sandbox: "python" and "javascript" (a
// persistent interpreter); "" for bash and sh (a new process per call).
std::string context_for(schema::Language language);

// The tool message for a read_file answer: the text of bytes [offset, offset + |data|) of a file
// of `size` bytes. The whole file is shown as it is; a part gets a last line saying which bytes
// were shown and how to read on. Bytes that are not UTF-8 are shown as U+FFFD with a line
// saying so. `data` should end on a character boundary (see read_length).
std::string render_file_read(std::string_view path, std::string_view data, uint64_t offset,
                             uint64_t size);

// How many of the bytes read (`data`, at `offset` of a file of `size` bytes) to show at most
// `max_chars` code points of, cut on a character boundary unless the file ends there.
size_t shown_bytes(std::string_view data, uint64_t offset, uint64_t size, size_t max_chars);

}  // namespace nv::agent
