#include "service.h"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "log.h"
#include "trace_id.h"

namespace nv {

std::string default_runtime_dir() {
  if (const char* d = std::getenv("NV_RUNTIME_DIR"); d && *d) return d;
  if (geteuid() == 0) return "/run/neurovisor";
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x)
    return std::string(x) + "/neurovisor";
  return "/tmp/neurovisor-" + std::to_string(getuid());
}

void add_bus_options(Config& c) {
  c.add_string("runtime-dir", "",
               "directory for sockets, pid files and VM jails "
               "(default: $NV_RUNTIME_DIR, /run/neurovisor as root)");
  c.add_string("log-level", "info", "lowest log level written: debug, info, warn, error");
  c.add_string("workers-endpoint", "",
               "broker back end for workers (default ipc://RT/workers.sock)");
  c.add_string("clients-endpoint", "",
               "broker front end for clients (default ipc://RT/clients.sock)");
  c.add_string("events-in-endpoint", "",
               "where services push events (default ipc://RT/events-in.sock)");
  c.add_string("events-endpoint", "",
               "event stream to subscribe to (default ipc://RT/events.sock)");
  c.add_string("vm-pool-endpoint", "",
               "this host's vm-pool-manager (default ipc://RT/vm-pool.sock)");
  c.add_string("curve-key", "", "CURVE key file (NAME.key from nv-keygen) for tcp:// endpoints");
  c.add_string("curve-server-key", "",
               "the orchestrator's public key file (NAME.pub) to connect "
               "over tcp:// with CURVE");
  c.add_int("max-frame-bytes", 8 << 20, "largest bus frame accepted; larger ones get an error");
  c.range("max-frame-bytes", 1024, 1 << 30);
  c.add_int("heartbeat-ms", 1000, "heartbeat interval between workers and the broker");
  c.range("heartbeat-ms", 10, 600000);
}

Endpoints endpoints_from(const Config& c, const std::string& rt) {
  auto pick = [&](const char* opt, const char* file) {
    const auto& v = c.str(opt);
    return v.empty() ? bus::ipc_endpoint(rt + "/" + file) : v;
  };
  return Endpoints{
      pick("workers-endpoint", "workers.sock"), pick("clients-endpoint", "clients.sock"),
      pick("events-in-endpoint", "events-in.sock"), pick("events-endpoint", "events.sock"),
      pick("vm-pool-endpoint", "vm-pool.sock")};
}

WorkerOptions ServiceContext::worker_options(const std::string& service, uint32_t capacity) const {
  WorkerOptions o;
  o.service = service;
  o.broker_endpoint = endpoints.workers;
  o.capacity = capacity;
  o.heartbeat = std::chrono::milliseconds(config.integer("heartbeat-ms"));
  o.curve_keys = curve_keys;
  o.curve_server_key = curve_server_key;
  o.limits = limits;
  o.instance = instance;
  return o;
}

ClientOptions ServiceContext::client_options() const {
  ClientOptions o;
  o.endpoint = endpoints.clients;
  o.curve_keys = curve_keys;
  o.curve_server_key = curve_server_key;
  o.limits = limits;
  return o;
}

void ServiceContext::announce_started(const std::vector<std::string>& used) {
  std::string privileges = describe_privileges();
  events.publish("service.started", [&](schema::Event::Builder e) {
    auto s = e.initServiceStarted();
    s.setVersion(NV_VERSION);
    auto list = s.initEndpoints(static_cast<unsigned>(used.size()));
    for (unsigned i = 0; i < used.size(); ++i) list.set(i, used[i]);
    s.setPrivileges(privileges);
  });
  log::info("service started", {{"instance", instance}, {"privileges", privileges}});
}

Result<PrivilegeSpec> unprivileged(const Config& config) {
  PrivilegeSpec spec;
  std::string run_as;
  try {
    run_as = config.str("run-as");
  } catch (const std::logic_error&) {
    return spec;  // the service has no --run-as option
  }
  if (run_as.empty()) return spec;
  try {
    size_t used = 0;
    auto id = std::stoul(run_as, &used);
    if (used != run_as.size()) throw std::invalid_argument(run_as);
    spec.uid = static_cast<uid_t>(id);
    spec.gid = static_cast<gid_t>(id);
  } catch (const std::exception&) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "--run-as must be a numeric uid, not '" + run_as + "'");
  }
  return spec;
}

namespace {

std::atomic<bool> g_stop{false};

void signal_thread(sigset_t set, std::atomic<bool>* done) {
  while (!done->load()) {
    timespec ts{0, 200 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig <= 0) continue;
    if (g_stop.exchange(true)) {
      log::warn("second signal: exiting now", {{"signal", sig}});
      std::_Exit(130);
    }
    log::info("signal received: draining", {{"signal", sig}});
  }
}

}  // namespace

int service_main(int argc, char** argv, const ServiceSpec& spec) {
  // Signals first, before any thread exists, so every thread inherits the blocked mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Config config("nv-" + spec.name, spec.summary);
  add_bus_options(config);
  // The service's own options read variables unique to it (NV_LLM_GATEWAY_MODEL); the shared
  // bus options above keep NV_RUNTIME_DIR, NV_LOG_LEVEL, ...
  config.env_scope(spec.name, spec.shared_env_fallback);
  if (spec.add_options) spec.add_options(config);
  config.env_scope("");
  if (auto st = config.parse(argc, argv); !st) {
    std::cerr << "nv-" << spec.name << ": " << st.error().message << "\n";
    return 2;
  }
  if (!config.positional().empty()) {  // `nv-orchestrator --agent "task"` is not a task
    std::cerr << "nv-" << spec.name << ": unexpected argument '" << config.positional()[0]
              << "': nv-" << spec.name << " takes options only (see --help); to run a task use "
              << "`./nv run \"TASK\"` or nv-submit\n";
    return 2;
  }
  if (config.help_requested()) {
    std::cout << config.help();
    return 0;
  }
  // A service takes options only: a stray word (`nv-orchestrator --agent "task"`) is a mistake
  // to report, not something to ignore while a daemon starts.
  if (!config.positional().empty()) {
    std::string words;
    for (const auto& p : config.positional()) words += (words.empty() ? "'" : " '") + p + "'";
    std::cerr << "nv-" << spec.name << ": unexpected argument"
              << (config.positional().size() > 1 ? "s " : " ") << words
              << ": a service takes --options only (see --help)\n";
    return 2;
  }
  log::Level level;
  if (!log::parse_level(config.str("log-level"), &level)) {
    std::cerr << "nv-" << spec.name << ": --log-level must be debug, info, warn or error\n";
    return 2;
  }
  log::init(spec.name, level);

  std::string rt =
      config.str("runtime-dir").empty() ? default_runtime_dir() : config.str("runtime-dir");
  if (::mkdir(rt.c_str(), 0750) != 0 && errno != EEXIST) {
    log::syscall_error("mkdir(" + rt + ")", errno);
    return 1;
  }
  std::optional<curve::KeyPair> keys;
  std::string server_key;
  if (!config.str("curve-key").empty()) {
    auto k = curve::load(config.str("curve-key"));
    if (!k) {
      log::error(k.error().message);
      return 2;
    }
    keys = k.value();
  }
  if (!config.str("curve-server-key").empty()) {
    auto k = curve::load(config.str("curve-server-key"));
    if (!k) {
      log::error(k.error().message);
      return 2;
    }
    server_key = k->public_key;
  }
  // Privileges before any thread exists (see ServiceSpec::privileges).
  if (spec.privileges) {
    auto ps = spec.privileges(config);
    if (!ps) {
      log::error("bad privilege settings", {{"error", ps.error().message}});
      return 2;
    }
    if (auto st = drop_privileges(ps.value()); !st) {
      log::error("cannot drop privileges", {{"error", st.error().message}});
      return 1;
    }
  }
  bus::Limits limits;
  limits.max_frame_bytes = static_cast<size_t>(config.integer("max-frame-bytes"));

  std::atomic<bool> signals_done{false};
  std::thread sig(signal_thread, set, &signals_done);
  int rc = 0;
  {
    zmq::context_t zmq_ctx(1);
    Endpoints ep = endpoints_from(config, rt);
    std::string instance = default_instance(spec.name);
    EventPublisher events(zmq_ctx, spec.publish_events ? ep.events_in : std::string(), spec.name,
                          instance, keys, server_key);
    ServiceContext ctx{spec.name, config, zmq_ctx, rt,         ep,    instance,
                       events,    g_stop, keys,    server_key, limits};
    try {
      rc = spec.run(ctx);
    } catch (const std::exception& e) {
      log::error("service failed", {{"what", e.what()}});
      rc = 1;
    } catch (const kj::Exception& e) {
      log::error("service failed", {{"what", e.getDescription().cStr()}});
      rc = 1;
    }
    events.publish("service.stopping", [](schema::Event::Builder e) { e.setServiceStopping(); });
    log::info("service stopped", {{"exit_code", rc}});
  }
  signals_done = true;
  sig.join();
  return rc;
}

}  // namespace nv
