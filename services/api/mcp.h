// mcp.h — NeuroVisor as a Model Context Protocol server (MCP 2025-06-18,
// https://modelcontextprotocol.io/specification/2025-06-18): JSON-RPC 2.0 messages in, messages
// out, transport-independent. nv-mcp speaks it over stdio (one message a line); nv-api serves it
// at POST /mcp (Streamable HTTP, behind its API keys).
//
// Lifecycle: initialize (the client's protocolVersion is echoed when supported, else ours),
// notifications/initialized, ping. Tools (tools/list, tools/call), each with an inputSchema and
// an outputSchema; a call answers `structuredContent` and the same JSON as one text content
// block; a failing tool answers isError true (JSON-RPC errors are for protocol faults only).
// A tools/call with params._meta.progressToken gets notifications/progress while it runs (exec
// output, task progress).
//
// Tools: run_code, create_sandbox, exec, write_file, read_file, list_files, fork_sandbox,
// destroy_sandbox, submit_task.
#pragma once

#include <functional>
#include <string>

#include "common/client.h"

namespace nv::mcp {

struct Options {
  std::string owner;            // sandbox owner: "tenant:<id>" (nv-api) or "uid:<n>" (nv-mcp)
  std::string trace_id;         // "" = a new one per call
  bool allow_tasks = true;      // submit_task (nv-api: the key's task scope)
  bool allow_sandboxes = true;  // every other tool (nv-api: the key's sandbox scope)
  int bus_timeout_ms = 60000;
  bool allow_mounts = false;  // create_sandbox's "mounts" (nv-api/nv-mcp --allow-mounts); off:
                              // a call with mounts fails with mountRefused
};

// Called with each outgoing JSON-RPC message (notifications first, the response last).
using Emit = std::function<void(const std::string& json)>;

class Server {
 public:
  Server(Client& bus, Options options) : bus_(bus), options_(std::move(options)) {}
  // Handles one incoming message. Returns false when it was not a request (a notification or a
  // response: nothing is emitted), true when a response was emitted.
  bool handle(const std::string& message, const Emit& emit);

 private:
  Client& bus_;
  Options options_;
};

// The protocol versions served (newest first).
const char* const* supported_versions();

}  // namespace nv::mcp
