// service.h — what every NeuroVisor service shares: bus options and endpoints, logging, the
// runtime directory, SIGTERM/SIGINT handling and the event publisher.
//
// A service's main() is `return nv::service_main(argc, argv, spec);`. service_main:
//   1. blocks SIGTERM/SIGINT/SIGHUP in every thread and waits for them on its own thread,
//      turning the first into `stop = true` (drain, then exit 0) and a second into exit(130);
//   2. parses flags and NV_* variables (--help prints them all and exits 0; bad values exit 2);
//   3. creates the runtime directory and the ZeroMQ context, connects the event publisher;
//   4. runs spec.run(ctx), publishes service.stopping, and returns its exit code.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "client.h"
#include "config.h"
#include "curve.h"
#include "events.h"
#include "frames.h"
#include "privileges.h"
#include "worker.h"

namespace nv {

struct Endpoints {
  std::string workers;     // broker back end (ROUTER) that workers connect to
  std::string clients;     // broker front end (ROUTER) that clients connect to
  std::string events_in;   // orchestrator PULL that publishers PUSH events to
  std::string events_out;  // orchestrator XPUB that subscribers connect to
  std::string vm_pool;     // this host's vm-pool-manager ROUTER
};

// $NV_RUNTIME_DIR, else /run/neurovisor for root, else $XDG_RUNTIME_DIR/neurovisor, else
// /tmp/neurovisor-<uid>.
std::string default_runtime_dir();

// Options every service has: runtime-dir, log-level, the five endpoints (default ipc:// under the
// runtime dir), curve-key, curve-server-key, max-frame-bytes, heartbeat-ms.
void add_bus_options(Config& config);
Endpoints endpoints_from(const Config& config, const std::string& runtime_dir);

struct ServiceContext {
  std::string name;
  Config& config;
  zmq::context_t& zmq;
  std::string runtime_dir;
  Endpoints endpoints;
  std::string instance;
  EventPublisher& events;
  const std::atomic<bool>& stop;
  std::optional<curve::KeyPair> curve_keys;
  std::string curve_server_key;
  bus::Limits limits;

  WorkerOptions worker_options(const std::string& service, uint32_t capacity) const;
  ClientOptions client_options() const;
  // Publishes service.started with the endpoints used and the privileges now held.
  void announce_started(const std::vector<std::string>& endpoints_used);
};

struct ServiceSpec {
  std::string name;                          // "metrics-exporter"; logs, events, instance
  std::string summary;                       // one line for --help
  std::function<void(Config&)> add_options;  // service-specific options
  std::function<int(ServiceContext&)> run;   // returns the exit code
  bool publish_events = true;                // false for the orchestrator (it is the hub)
  // Privileges this service keeps, applied by service_main before it starts any thread
  // (capability sets are per thread: a drop made later in run() would leave the ZeroMQ I/O
  // threads and the signal thread with everything). Unset = keep what the process has.
  std::function<Result<PrivilegeSpec>(const Config&)> privileges = {};
  // Read the deprecated shared NV_<NAME> after NV_<SERVICE>_<NAME>: only services that existed
  // before variables were scoped (wave 1); a newer one sets false.
  bool shared_env_fallback = true;
};

// For ServiceSpec::privileges: no capabilities at all, no_new_privs, and the uid/gid of
// --run-as when the service has that option and it is set.
Result<PrivilegeSpec> unprivileged(const Config& config);

int service_main(int argc, char** argv, const ServiceSpec& spec);

}  // namespace nv
