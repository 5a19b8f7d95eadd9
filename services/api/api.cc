// api.cc — nv-api's HTTP server: options, the request path (trace, size, auth, rate, scope),
// logs and metrics, the bus calls, and the built-in routes (health, readiness, OpenAPI,
// metrics). See api.h.
#include "api.h"

#include <nv/schema/bus.capnp.h>
#include <nv/schema/vm.capnp.h>
#include <prometheus/text_serializer.h>
#include <sodium.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <sstream>
#include <thread>

#include "common/frames.h"
#include "common/log.h"
#include "common/trace_id.h"
#include "http_json.h"
#include "tasks.h"

namespace nv::api {

extern const char* const kOpenApiDocument;  // openapi.json, embedded at build time

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

thread_local Caller t_caller;
thread_local Clock::time_point t_started;
thread_local std::unique_ptr<Client> t_bus;
thread_local std::unique_ptr<Client> t_pool;

bool is_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Route classes for the early size check.
bool is_upload(const httplib::Request& req) {
  return req.method == "PUT" && req.path.find("/files") != std::string::npos;
}

bool public_path(const std::string& path) {
  return path == "/healthz" || path == "/readyz" || path == "/openapi.json";
}

}  // namespace

Caller& current_caller() { return t_caller; }

std::string trace_id_from_traceparent(const std::string& h) {
  // version "00": 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>, lowercase; an all-zero
  // trace-id or parent-id is invalid (W3C Trace Context §3.2.2).
  if (h.size() < 55 || h[2] != '-' || h[35] != '-' || h[52] != '-') return {};
  std::string_view v(h), ver = v.substr(0, 2), trace = v.substr(3, 32), parent = v.substr(36, 16),
                         flags = v.substr(53, 2);
  if (!is_hex(ver) || ver == "ff" || !is_hex(trace) || !is_hex(parent) || !is_hex(flags)) return {};
  if (ver == "00" && h.size() != 55) return {};
  if (trace.find_first_not_of('0') == std::string_view::npos) return {};
  if (parent.find_first_not_of('0') == std::string_view::npos) return {};
  std::string t(trace);
  return t.substr(0, 8) + "-" + t.substr(8, 4) + "-" + t.substr(12, 4) + "-" + t.substr(16, 4) +
         "-" + t.substr(20);
}

std::string traceparent_for(const std::string& trace_id) {
  std::string hex;
  for (char c : trace_id) {
    if (c != '-') hex += c;
  }
  if (hex.size() != 32 || !is_hex(hex)) return {};
  unsigned char span[8];
  randombytes_buf(span, sizeof span);
  char span_hex[17];
  sodium_bin2hex(span_hex, sizeof span_hex, span, sizeof span);
  return "00-" + hex + "-" + span_hex + "-01";
}

StreamFormat stream_format(const httplib::Request& req) {
  std::string accept = req.get_header_value("Accept");
  if (accept.find("text/event-stream") != std::string::npos) return StreamFormat::sse;
  if (accept.find("application/x-ndjson") != std::string::npos ||
      accept.find("application/jsonl") != std::string::npos) {
    return StreamFormat::ndjson;
  }
  return StreamFormat::none;
}

const char* content_type(StreamFormat f) {
  return f == StreamFormat::sse ? "text/event-stream" : "application/x-ndjson";
}

std::string stream_event(StreamFormat f, const std::string& type, const std::string& json) {
  if (f == StreamFormat::sse) return "event: " + type + "\ndata: " + json + "\n\n";
  return json + "\n";
}

void add_api_options(Config& c) {
  c.add_string("listen", "127.0.0.1:8420", "address:port of the HTTP API (loopback by default)");
  c.add_string("keys-file", "",
               "API key file written by `nv-keygen --api` (default: $NV_STATE_DIR/api-keys; as "
               "root on an install /var/lib/neurovisor/api-keys; else RUNTIME/state/api-keys)");
  c.add_int("threads", 64, "HTTP threads: requests served at once, streams included (4-1024)");
  c.add_int("max-json-bytes", 1 << 20, "largest JSON request body, bytes (413 above)");
  c.add_int("max-file-bytes", 32 << 20, "largest file upload, bytes (413 above)");
  c.add_int("read-timeout-ms", 5000,
            "a client silent this long while sending a request is dropped (100-600000)");
  c.add_int("write-timeout-ms", 10000, "a client not reading its answer this long is dropped");
  c.add_int("keep-alive-ms", 5000, "idle keep-alive connections are closed after this");
  c.add_number("rate-per-s", 20, "requests per second per tenant (token bucket refill)");
  c.add_number("burst", 100, "requests per tenant in one burst (token bucket size)");
  c.add_int("max-sandboxes", 8, "live sandboxes per tenant (429 sandboxLimit above)");
  c.add_int("max-tasks", 4, "running agent tasks per tenant (429 above)");
  c.add_int("bus-timeout-ms", 60000, "deadline of one bus call (an exec: its timeout plus this)");
  c.add_bool("allow-mounts", false,
             "let tenants mount host directories into sandboxes (\"mounts\" in POST "
             "/v1/sandboxes, MCP create_sandbox); every tenant may then mount anything under the "
             "executor's --mount-root: for single-tenant or trusted deployments. Off: 403 "
             "mountRefused");
  c.add_string("tls-cert", "", "PEM certificate: serve HTTPS (with --tls-key)");
  c.add_string("tls-key", "", "PEM private key of --tls-cert");
  c.add_string("run-as", "", "user id to switch to after binding (when started as root)");
  c.add_bool("seccomp", true, "install the seccomp allow-list once serving");
  c.add_bool("list-routes", false, "print every route (METHOD PATH SCOPE) and exit");
}

Result<ApiOptions> api_options_from(const Config& c, const std::string& runtime_dir) {
  ApiOptions o;
  std::string problems;
  const std::string& listen = c.str("listen");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    problems += "--listen must be HOST:PORT; ";
  } else {
    o.host = listen.substr(0, colon);
    if (o.host.size() > 2 && o.host.front() == '[') o.host = o.host.substr(1, o.host.size() - 2);
    try {
      o.port = std::stoi(listen.substr(colon + 1));
    } catch (...) {
      o.port = -1;
    }
    if (o.port < 0 || o.port > 65535) problems += "--listen: port must be 0-65535; ";
  }
  o.keys_file = c.str("keys-file");
  if (o.keys_file.empty()) o.keys_file = default_keys_file(runtime_dir);
  auto range = [&](const char* name, int64_t lo, int64_t hi) {
    int64_t v = c.integer(name);
    if (v < lo || v > hi) {
      problems += std::string("--") + name + " must be " + std::to_string(lo) + "-" +
                  std::to_string(hi) + "; ";
    }
    return v;
  };
  o.threads = static_cast<int>(range("threads", 4, 1024));
  o.max_json_bytes = static_cast<size_t>(range("max-json-bytes", 1024, 64 << 20));
  o.max_file_bytes = static_cast<size_t>(range("max-file-bytes", 1024, 1 << 30));
  o.read_timeout_ms = static_cast<int>(range("read-timeout-ms", 100, 600000));
  o.write_timeout_ms = static_cast<int>(range("write-timeout-ms", 100, 600000));
  o.keep_alive_ms = static_cast<int>(range("keep-alive-ms", 100, 600000));
  o.max_sandboxes = static_cast<int>(range("max-sandboxes", 0, 100000));
  o.max_tasks = static_cast<int>(range("max-tasks", 0, 100000));
  o.bus_timeout_ms = static_cast<int>(range("bus-timeout-ms", 1000, 3600000));
  o.allow_mounts = c.boolean("allow-mounts");
  o.rate_per_s = c.number("rate-per-s");
  o.burst = c.number("burst");
  if (!(o.rate_per_s > 0) || !(o.burst >= 1)) problems += "--rate-per-s > 0 and --burst >= 1; ";
  o.tls_cert = c.str("tls-cert");
  o.tls_key = c.str("tls-key");
  if (o.tls_cert.empty() != o.tls_key.empty()) problems += "--tls-cert needs --tls-key; ";
  if (!problems.empty()) {
    problems.resize(problems.size() - 2);
    return make_error(ErrorCode::BAD_REQUEST, problems);
  }
  return o;
}

Api::Api(ServiceContext& svc, ApiOptions options)
    : svc_(svc),
      options_(std::move(options)),
      keys_(options_.keys_file),
      openapi_(kOpenApiDocument),
      registry_(std::make_shared<prometheus::Registry>()) {
  (void)keys_.load();
  if (!options_.tls_cert.empty()) {
    server_ =
        std::make_unique<httplib::SSLServer>(options_.tls_cert.c_str(), options_.tls_key.c_str());
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  requests_ = &prometheus::BuildCounter()
                   .Name("neurovisor_api_requests_total")
                   .Help("HTTP requests answered by nv-api, by route template, method and status")
                   .Register(*registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("neurovisor_api_request_duration_seconds")
                    .Help("Time from the request's headers to the end of its answer")
                    .Register(*registry_);
  tasks_ = std::make_unique<TaskRegistry>(*this);
  auto& s = *server_;
  int threads = options_.threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  auto ms = [](int v) { return std::chrono::milliseconds(v); };
  // Nagle + delayed ACK would hold each answer's second write ~40 ms (measured: nv-bench api).
  s.set_tcp_nodelay(true);
  s.set_read_timeout(ms(options_.read_timeout_ms));
  s.set_write_timeout(ms(options_.write_timeout_ms));
  s.set_idle_interval(0, 0);
  s.set_keep_alive_timeout(std::max<time_t>(1, options_.keep_alive_ms / 1000));
  s.set_keep_alive_max_count(1000);
  s.set_payload_max_length(std::max(options_.max_file_bytes, options_.max_json_bytes));
  s.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    after_response(req, res);
  });
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                              httplib::Response& res) {
    if (!res.body.empty() || res.content_length_ > 0) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (res.status == 404) {
      send_error(res, 404, "routeNotFound",
                 "no route " + req.method + " " + req.path + " (see /openapi.json)",
                 t_caller.trace_id);
    } else if (res.status == 413) {
      send_error(res, 413, "payloadTooLarge", "the request body is too large", t_caller.trace_id);
      res.set_header("Connection", "close");
    } else {
      send_error(res, res.status, "badRequest", "the HTTP request could not be served",
                 t_caller.trace_id);
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {}
        log::error("route threw", {{"error", what}});
        send_error(res, 500, "internal", "internal error: " + what, t_caller.trace_id);
      });
  add_builtin_routes();
  add_exec_routes(*this);
  add_task_routes(*this);
  add_sandbox_routes(*this);
  add_mcp_routes(*this);
}

Api::~Api() = default;

void Api::route(const std::string& method, const std::string& path, uint8_t scope, Handler h,
                bool raw_body) {
  routes_.push_back({method, path, scope});
  // "/v1/tasks/{id}" → "/v1/tasks/([^/]+)"
  std::string pattern = std::regex_replace(path, std::regex(R"(\{[a-zA-Z]+\})"), "([^/]+)");
  auto wrapped = [this, path, scope, raw_body, h](const httplib::Request& req,
                                                  httplib::Response& res) {
    Caller& c = t_caller;
    c.route = path;
    if (scope != 0 && !(c.scopes & scope) && !(c.scopes & kScopeAdmin)) {
      send_error(res, 403, "forbidden",
                 "this API key lacks the scope '" + scopes_text(scope) + "' this route needs",
                 c.trace_id);
      return;
    }
    size_t cap = raw_body ? options_.max_file_bytes : options_.max_json_bytes;
    if (req.body.size() > cap) {
      send_error(res, 413, "payloadTooLarge",
                 "the body has " + std::to_string(req.body.size()) + " bytes; at most " +
                     std::to_string(cap) + " are taken here",
                 c.trace_id);
      return;
    }
    h(req, res, c);
  };
  auto& s = *server_;
  if (method == "GET") s.Get(pattern, wrapped);
  if (method == "POST") s.Post(pattern, wrapped);
  if (method == "PUT") s.Put(pattern, wrapped);
  if (method == "DELETE") s.Delete(pattern, wrapped);
}

httplib::Server::HandlerResponse Api::pre_route(const httplib::Request& req,
                                                httplib::Response& res) {
  using HR = httplib::Server::HandlerResponse;
  t_started = Clock::now();
  t_caller = Caller{};
  Caller& c = t_caller;
  c.trace_id = trace_id_from_traceparent(req.get_header_value("traceparent"));
  if (c.trace_id.empty()) c.trace_id = new_uuid_v7();
  res.set_header("X-Trace-Id", c.trace_id);
  if (auto tp = traceparent_for(c.trace_id); !tp.empty()) res.set_header("traceparent", tp);

  // The size cap before the body is read: the library reads a body only after this returns.
  size_t cap = is_upload(req) ? options_.max_file_bytes : options_.max_json_bytes;
  if (req.has_header("Content-Length")) {
    unsigned long long len = 0;
    const std::string v = req.get_header_value("Content-Length");
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18) {
      send_error(res, 400, "badRequest", "Content-Length is not a number", c.trace_id);
      res.set_header("Connection", "close");
      return HR::Handled;
    }
    len = std::stoull(v);
    if (len > cap) {
      send_error(res, 413, "payloadTooLarge",
                 "the body has " + v + " bytes; at most " + std::to_string(cap) +
                     " are taken here" + (is_upload(req) ? "" : " (JSON)"),
                 c.trace_id);
      res.set_header("Connection", "close");  // its body is never read
      return HR::Handled;
    }
  }
  // curl -d / --data-binary label bodies application/x-www-form-urlencoded, which the library
  // parses as a form and caps at 8 KiB; no route takes forms, so a larger one is refused clearly.
  if (req.get_header_value("Content-Type") == "application/x-www-form-urlencoded" &&
      req.get_header_value("Content-Length").size() > 4) {  // over 9999 bytes
    send_error(res, 415, "unsupportedMediaType",
               "a body over 8 KiB must not be application/x-www-form-urlencoded: send JSON as "
               "application/json and files as application/octet-stream",
               c.trace_id);
    res.set_header("Connection", "close");
    return HR::Handled;
  }
  if (public_path(req.path)) return HR::Unhandled;

  std::string auth = req.get_header_value("Authorization");
  std::optional<KeyRecord> key;
  if (auth.rfind("Bearer ", 0) == 0) key = keys_.verify(std::string_view(auth).substr(7));
  if (!key) {
    res.set_header("WWW-Authenticate", "Bearer realm=\"neurovisor\"");
    send_error(res, 401, "unauthorized",
               auth.empty() ? "an API key is needed: Authorization: Bearer nvk_... "
                              "(nv-keygen --api makes one)"
                            : "the API key is not valid",
               c.trace_id);
    if (req.has_header("Content-Length")) res.set_header("Connection", "close");
    return HR::Handled;
  }
  c.tenant = key->tenant;
  c.scopes = key->scopes;
  c.key_id = key->id;
  double retry = 0;
  if (!rate_ok(c.tenant, &retry)) {
    send_error(res, 429, "rateLimited",
               "tenant '" + c.tenant + "' is over its request rate (" +
                   std::to_string(options_.rate_per_s) + "/s, burst " +
                   std::to_string(options_.burst) + ")",
               c.trace_id, retry);
    if (req.has_header("Content-Length")) res.set_header("Connection", "close");
    return HR::Handled;
  }
  return HR::Unhandled;
}

bool Api::rate_ok(const std::string& tenant, double* retry_after_s) {
  std::lock_guard lock(rate_mu_);
  auto it = buckets_.find(tenant);
  if (it == buckets_.end()) {
    it = buckets_.emplace(tenant, TokenBucket(options_.burst, options_.rate_per_s)).first;
  }
  if (it->second.try_take()) return true;
  *retry_after_s = std::max(1.0, it->second.seconds_until());
  return false;
}

void Api::after_response(const httplib::Request& req, const httplib::Response& res) {
  const Caller& c = t_caller;
  double s = std::chrono::duration<double>(Clock::now() - t_started).count();
  std::string status = std::to_string(res.status);
  requests_->Add({{"route", c.route}, {"method", req.method}, {"status", status}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  durations_->Add({{"route", c.route}}, kBuckets).Observe(s);
  log::write(res.status >= 500 ? log::Level::warn : log::Level::info, "request",
             {{"method", req.method},
              {"path", req.path},
              {"route", c.route},
              {"status", res.status},
              {"tenant", c.tenant},
              {"key", c.key_id},
              {"remote", req.remote_addr},
              {"ms", s * 1000}},
             c.trace_id);
}

Client& Api::bus() {
  if (!t_bus) t_bus = std::make_unique<Client>(svc_.zmq, svc_.client_options());
  return *t_bus;
}

Result<Client::Incoming> Api::call(const std::string& service, capnp::MessageBuilder* body,
                                   std::chrono::milliseconds deadline, const std::string& trace_id,
                                   const Client::PartialFn& on_partial,
                                   const std::function<bool()>& wanted) {
  Client& c = bus();
  uint64_t id = c.send(service, body, deadline, trace_id);
  auto give_up = Clock::now() + deadline + 1s;
  while (true) {
    if (wanted && !wanted()) {
      c.cancel(id, service);
      return make_error(ErrorCode::CANCELLED, "the HTTP client went away");
    }
    if (Clock::now() > give_up) {
      c.cancel(id, service);
      return make_error(ErrorCode::TIMED_OUT, "no answer from '" + service + "' in " +
                                                  std::to_string(deadline.count()) + " ms");
    }
    auto in = c.receive(100ms);
    if (!in) continue;
    if (in->header.request_id != id) continue;  // a late answer to an abandoned request
    if (!in->final()) {
      if (on_partial) on_partial(*in);
      continue;
    }
    if (in->header.kind == bus::Kind::ERROR) return in->error();
    return std::move(*in);
  }
}

int Api::run(const std::atomic<bool>& stop, const std::function<void()>& after_start) {
  auto& s = *server_;
  int port = options_.port;
  if (port == 0) {
    port = s.bind_to_any_port(options_.host.c_str());
  } else if (!s.bind_to_port(options_.host.c_str(), port)) {
    port = -1;
  }
  if (port < 0) {
    log::error("cannot listen",
               {{"host", options_.host}, {"port", options_.port}, {"error", std::strerror(errno)}});
    std::fprintf(stderr, "nv-api: cannot listen on %s:%d: %s\n", options_.host.c_str(),
                 options_.port, std::strerror(errno));
    return 2;
  }
  options_.port = port;
  std::thread server_thread([&s] { s.listen_after_bind(); });
  while (!s.is_running() && !stop.load()) std::this_thread::sleep_for(5ms);
  log::info("serving HTTP", {{"host", options_.host},
                             {"port", port},
                             {"tls", !options_.tls_cert.empty()},
                             {"keys", keys_.size()},
                             {"keys_file", options_.keys_file}});
  // The port file lets tests and `nv up` find an ephemeral port (--listen 127.0.0.1:0).
  {
    std::string pf = svc_.runtime_dir + "/api.port";
    std::string tmp = pf + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      std::fprintf(f, "%d\n", port);
      std::fclose(f);
      std::rename(tmp.c_str(), pf.c_str());
    }
  }
  if (after_start) after_start();
  while (!stop.load()) std::this_thread::sleep_for(50ms);
  tasks_->cancel_all();
  s.stop();
  server_thread.join();
  tasks_->join_all();
  ::unlink((svc_.runtime_dir + "/api.port").c_str());
  return 0;
}

void Api::add_builtin_routes() {
  route("GET", "/healthz", 0, [](const httplib::Request&, httplib::Response& res, Caller&) {
    res.set_content("{\"status\":\"ok\"}\n", "application/json");
  });
  route("GET", "/openapi.json", 0,
        [this](const httplib::Request&, httplib::Response& res, Caller&) {
          res.set_content(openapi_, "application/json");
        });
  route("GET", "/readyz", 0, [this](const httplib::Request&, httplib::Response& res, Caller& c) {
    // Ready = an executor is registered and the pool has a warm VM. Where the pool manager's
    // socket is not ours to open (systemd: it belongs to group nv-vmchan, which nv-api is not
    // in), the executor's free capacity stands in for the pool's warm count, and says so.
    std::string why;
    bool exec = false;
    uint32_t free_slots = 0;
    int64_t warm = -1;
    {
      capnp::MallocMessageBuilder mb;
      bus::init_body<schema::StatusRequest>(mb);
      auto r = call("nv.status", &mb, 2000ms, c.trace_id);
      if (!r) {
        why = "orchestrator: " + r.error().to_string();
      } else if (auto st = r->body.root<schema::StatusReply>(); st) {
        for (auto svc : st->getServices()) {
          if (std::string_view(svc.getService().cStr()) != "exec") continue;
          exec = true;
          free_slots += svc.getCapacity();
        }
        if (!exec) why = "no executor is registered";
      }
    }
    const std::string& pool_ep = svc_.endpoints.vm_pool;
    bool pool_readable =
        pool_ep.rfind("ipc://", 0) != 0 || ::access(pool_ep.substr(6).c_str(), R_OK | W_OK) == 0;
    if (exec && !pool_readable) {
      why =
          "the pool manager's socket is not readable by this user: judged by the executor's "
          "free capacity";
    } else if (exec) {
      if (!t_pool) {
        ClientOptions po = svc_.client_options();
        po.endpoint = svc_.endpoints.vm_pool;
        t_pool = std::make_unique<Client>(svc_.zmq, po);
      }
      capnp::MallocMessageBuilder mb;
      bus::init_body<schema::PoolStatusRequest>(mb);
      auto r = t_pool->call("vm.status", &mb, 1000ms);
      if (!r) {
        why = "pool manager: " + r.error().to_string();
      } else if (auto st = r->body.root<schema::PoolStatus>(); st) {
        warm = 0;
        for (auto t : st->getTiers()) warm += t.getWarm();
        if (warm == 0) why = "no warm VM yet";
      }
    }
    bool ready = exec && (pool_readable ? warm > 0 : free_slots > 0);
    res.status = ready ? 200 : 503;
    res.set_content(std::string("{\"ready\":") + (ready ? "true" : "false") + ",\"executor\":" +
                        (exec ? "true" : "false") + ",\"warmVms\":" + std::to_string(warm) +
                        (why.empty() ? "" : ",\"reason\":" + json_string(why)) + "}\n",
                    "application/json");
  });
  route("GET", "/metrics", kScopeAdmin,
        [this](const httplib::Request&, httplib::Response& res, Caller&) {
          std::ostringstream out;
          prometheus::TextSerializer().Serialize(out, registry_->Collect());
          res.set_content(out.str(), "text/plain; version=0.0.4");
        });
}

}  // namespace nv::api
