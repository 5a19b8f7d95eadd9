// api.h — nv-api: NeuroVisor over HTTP/1.1 + JSON (cpp-httplib), every call mapped to the bus.
//
// Request path, in order (Api::pre_route, then the route's wrapper):
//   1. trace id: from a W3C `traceparent` header (its 32-hex trace-id, as a UUID text) or a new
//      UUID v7; answered in `X-Trace-Id` and a `traceparent` of our own span; every log line and
//      bus request of the request carries it.
//   2. size: a Content-Length above the route class's cap → 413 before the body is read.
//   3. auth (all but /healthz, /readyz, /openapi.json): `Authorization: Bearer nvk_...` → 401.
//   4. the tenant's token bucket (--rate-per-s, --burst) → 429 with Retry-After.
//   5. the route's scope (sandbox, task, admin) → 403.
// Then the route runs on one of --threads HTTP threads, each with its own bus Client.
// Every answer is logged with route, status, tenant, trace id and duration, and counted in
// neurovisor_api_requests_total{route,method,status} (served at /metrics, scope admin).
#pragma once

#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api_keys.h"
#include "common/client.h"
#include "common/service.h"
#include "common/token_bucket.h"

namespace nv::api {

struct ApiOptions {
  std::string host = "127.0.0.1";
  int port = 8420;
  std::string keys_file;
  int threads = 64;
  size_t max_json_bytes = 1 << 20;   // JSON bodies
  size_t max_file_bytes = 32 << 20;  // raw file uploads
  int read_timeout_ms = 5000;        // per read of a request (slow clients are dropped)
  int write_timeout_ms = 10000;
  int keep_alive_ms = 5000;
  double rate_per_s = 20, burst = 100;  // per tenant
  int max_sandboxes = 8;                // live sandboxes per tenant
  int max_tasks = 4;                    // running tasks per tenant
  int bus_timeout_ms = 60000;           // deadline of one bus call (exec: its timeout + this)
  bool allow_mounts = false;  // tenants may ask for host directories (SandboxCreate.mounts);
                              // off: 403 mountRefused. The executor's --mount-root still applies
  std::string tls_cert, tls_key;
};

void add_api_options(Config& c);
Result<ApiOptions> api_options_from(const Config& c, const std::string& runtime_dir);

// Who is calling, for the request being served on this thread.
struct Caller {
  std::string tenant;  // "" before auth (or on unauthenticated routes)
  uint8_t scopes = 0;
  std::string key_id;
  std::string trace_id;
  std::string route = "unmatched";  // the OpenAPI path template, for logs and metrics
  std::string owner() const { return "tenant:" + tenant; }
};

class TaskRegistry;

class Api {
 public:
  Api(ServiceContext& svc, ApiOptions options);
  ~Api();

  // Routes: `path` is the OpenAPI template ("/v1/tasks/{id}"); its {x} become regex groups.
  using Handler = std::function<void(const httplib::Request&, httplib::Response&, Caller&)>;
  void route(const std::string& method, const std::string& path, uint8_t scope, Handler h,
             bool raw_body = false);
  struct RouteInfo {
    std::string method, path;
    uint8_t scope;
  };
  const std::vector<RouteInfo>& routes() const { return routes_; }

  // Binds and serves until `stop`. Returns the exit code.
  int run(const std::atomic<bool>& stop, const std::function<void()>& after_start);

  // The calling HTTP thread's bus client.
  Client& bus();
  // A bus call whose partials go to `on_partial`; `wanted` is polled every 100 ms and a false
  // cancels the request upstream (the HTTP client went away).
  Result<Client::Incoming> call(const std::string& service, capnp::MessageBuilder* body,
                                std::chrono::milliseconds deadline, const std::string& trace_id,
                                const Client::PartialFn& on_partial = {},
                                const std::function<bool()>& wanted = {});

  const ApiOptions& options() const { return options_; }
  ServiceContext& service() { return svc_; }
  TaskRegistry& tasks() { return *tasks_; }

 private:
  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res);
  void after_response(const httplib::Request& req, const httplib::Response& res);
  bool rate_ok(const std::string& tenant, double* retry_after_s);
  void add_builtin_routes();

  ServiceContext& svc_;
  ApiOptions options_;
  KeyStore keys_;
  std::unique_ptr<httplib::Server> server_;
  std::vector<RouteInfo> routes_;
  std::string openapi_;
  std::unique_ptr<TaskRegistry> tasks_;

  std::mutex rate_mu_;
  std::map<std::string, TokenBucket> buckets_;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* durations_ = nullptr;
};

// The Caller of the request this thread serves (set by pre_route).
Caller& current_caller();

// Route groups (each in its own file).
void add_exec_routes(Api& api);
void add_task_routes(Api& api);
void add_sandbox_routes(Api& api);
void add_mcp_routes(Api& api);

// Streams a sequence of JSON events as NDJSON (one object a line) or Server-Sent Events
// (`event: <type>\ndata: <object>\n\n`), per the request's Accept header.
enum class StreamFormat { none, ndjson, sse };
StreamFormat stream_format(const httplib::Request& req);
const char* content_type(StreamFormat f);
// One event: `json_object` is a JSON object text that already carries "event":"<type>".
std::string stream_event(StreamFormat f, const std::string& type, const std::string& json_object);

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the trace id of a valid
// `traceparent` as UUID text ("" when absent or invalid: the caller mints one).
std::string trace_id_from_traceparent(const std::string& header);
// A traceparent naming `trace_id` (UUID text) and a new span id.
std::string traceparent_for(const std::string& trace_id);

}  // namespace nv::api
