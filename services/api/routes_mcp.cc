// routes_mcp.cc — MCP's Streamable HTTP transport (MCP 2025-06-18, "Transports") at /mcp,
// behind nv-api's API keys: POST one JSON-RPC message; a request is answered with
// application/json, or — when the client accepts text/event-stream — with an SSE stream of the
// call's progress notifications followed by its response; a notification or response gets 202.
// No session ids are issued (the server keeps no state between messages); GET (a server-sent
// stream) answers 405 as the transport allows.
#include "api.h"
#include "http_json.h"
#include "mcp.h"

namespace nv::api {

void add_mcp_routes(Api& api) {
  api.route("POST", "/mcp", kScopeSandbox | kScopeTask,
            [&api](const httplib::Request& req, httplib::Response& res, Caller& c) {
              std::string version = req.get_header_value("MCP-Protocol-Version");
              if (!version.empty()) {
                bool known = false;
                for (const char* const* v = mcp::supported_versions(); *v; ++v) {
                  known |= version == *v;
                }
                if (!known) {
                  return send_error(res, 400, "badRequest",
                                    "MCP-Protocol-Version '" + version + "' is not supported",
                                    c.trace_id);
                }
              }
              mcp::Options o;
              o.owner = c.owner();
              o.trace_id = c.trace_id;
              o.allow_tasks = (c.scopes & (kScopeTask | kScopeAdmin)) != 0;
              o.allow_sandboxes = (c.scopes & (kScopeSandbox | kScopeAdmin)) != 0;
              o.bus_timeout_ms = api.options().bus_timeout_ms;
              o.allow_mounts = api.options().allow_mounts;
              bool sse =
                  req.get_header_value("Accept").find("text/event-stream") != std::string::npos &&
                  req.body.find("\"tools/call\"") != std::string::npos;
              if (sse) {
                std::string body = req.body;
                res.set_header("Cache-Control", "no-store");
                res.set_chunked_content_provider(
                    "text/event-stream", [&api, o, body](size_t, httplib::DataSink& sink) {
                      mcp::Server server(api.bus(), o);
                      bool answered = server.handle(body, [&](const std::string& m) {
                        std::string e = "event: message\ndata: " + m + "\n\n";
                        sink.write(e.data(), e.size());
                      });
                      (void)answered;  // tools/call is a request: it always answers
                      sink.done();
                      return true;
                    });
                return;
              }
              std::string last;
              mcp::Server server(api.bus(), o);
              if (!server.handle(req.body, [&](const std::string& m) { last = m; })) {
                res.status = 202;
                return;
              }
              res.set_content(last + "\n", "application/json");
            });
  api.route("GET", "/mcp", kScopeSandbox | kScopeTask,
            [](const httplib::Request&, httplib::Response& res, Caller& c) {
              res.set_header("Allow", "POST");
              send_error(res, 405, "methodNotAllowed",
                         "this MCP server sends no server-initiated stream; POST messages",
                         c.trace_id);
            });
}

}  // namespace nv::api
