// exporter.h — nv-metrics-exporter's plumbing around EventMetrics: the event subscription (with
// an optional replay of the orchestrator's history), the /metrics HTTP endpoint, the periodic
// Pushgateway push and the broker presence.
//
// Start-up, in order (each step logs and fails the service if it cannot be done):
//   1. subscribe to the whole event stream (live events queue from here on);
//   2. drop every capability, then bind the HTTP listener (--listen) — in the other order only
//      for a port below 1024 (see run_exporter: capabilities are per thread);
//   3. install the seccomp allow-list (every thread), register presence with the broker
//      (capacity 0) and publish service.started;
//   4. replay the orchestrator's history ("nv.events"), so gauges such as services_up are right
//      even when the exporter starts after the services; live events already in it are skipped;
//   5. apply live events until SIGTERM, pushing to the Pushgateway every --push-interval-s.
// Shutdown: stop the worker (it tells the broker it leaves), push once more, close HTTP.
#pragma once

#include <string>

#include "common/error.h"
#include "common/service.h"

namespace nv::metrics {

// Where prometheus-cpp's Gateway pushes: "http://host" (scheme kept) and "port".
struct PushTarget {
  std::string host;
  std::string port;
};

// Parses "http://host:port" or "https://host[:port]" (no path). The port defaults to 9091.
Result<PushTarget> parse_pushgateway_url(const std::string& url);

// Checks "host:port" for --listen (an IPv4 address or a name, and a port 1-65535).
Status check_listen_address(const std::string& listen);
// Binds (and closes) HOST:PORT the way the HTTP server will (SO_REUSEADDR), so a port held by
// another program (a Prometheus on 9090) is reported at once, naming the address and the option
// that changes it, instead of the HTTP library's late "null context" error. `option` is how the
// caller names the setting, e.g. "--listen (env NV_LISTEN)".
Status check_listen_free(const std::string& listen, const std::string& option);

// Adds the exporter's options to `config`.
void add_exporter_options(Config& config);

// The service body: returns the exit code.
int run_exporter(ServiceContext& ctx);

}  // namespace nv::metrics
