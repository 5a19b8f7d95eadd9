// nv-mcp: NeuroVisor as an MCP server over stdio (MCP 2025-06-18, "stdio" transport): JSON-RPC
// messages one per line on stdin, answers and progress notifications one per line on stdout,
// logs on stderr. An agent starts it as a subprocess:
//   {"mcpServers": {"neurovisor": {"command": "nv-mcp"}}}
// It calls the bus as this user (sandbox owner "uid:<uid>", like the nv CLI); for a remote or
// multi-tenant setup use nv-api's /mcp (Streamable HTTP with API keys) instead.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "common/client.h"
#include "common/config.h"
#include "common/log.h"
#include "common/service.h"
#include "mcp.h"

int main(int argc, char** argv) {
  nv::Config c("nv-mcp",
               "NeuroVisor's MCP server over stdio (tools: run_code, create_sandbox, "
               "exec, write_file, read_file, list_files, fork_sandbox, destroy_sandbox, "
               "submit_task)");
  nv::add_bus_options(c);
  c.add_string("owner", "", "sandbox owner sent with every call (default uid:<this uid>)");
  c.add_int("bus-timeout-ms", 60000, "deadline of one bus call (an exec: its timeout plus this)");
  c.add_bool("allow-mounts", false,
             "create_sandbox may mount host directories (under the executor's --mount-root)");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-mcp: %s\n", st.error().message.c_str());
    return 2;
  }
  nv::log::init("mcp");
  std::string rt = c.str("runtime-dir").empty() ? nv::default_runtime_dir() : c.str("runtime-dir");
  auto eps = nv::endpoints_from(c, rt);
  zmq::context_t ctx(1);
  nv::ClientOptions co;
  co.endpoint = eps.clients;
  nv::Client bus(ctx, co);
  nv::mcp::Options o;
  o.owner = c.str("owner").empty() ? "uid:" + std::to_string(::getuid()) : c.str("owner");
  o.bus_timeout_ms = static_cast<int>(c.integer("bus-timeout-ms"));
  o.allow_mounts = c.boolean("allow-mounts");
  nv::mcp::Server server(bus, o);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty() || line == "\r") continue;
    server.handle(line, [](const std::string& m) {
      std::fwrite(m.data(), 1, m.size(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    });
  }
  return 0;
}
