// nv-orchestrator: the broker between clients and workers, the event hub, and (issue 5) the
// agent loop. Runs unprivileged: it drops every capability after binding its sockets.
#include <sstream>

#include "broker.h"
#include "common/log.h"
#include "common/service.h"

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void add_options(nv::Config& c) {
  c.add_string("extra-workers-endpoints", "",
               "more endpoints for workers, comma-separated (e.g. tcp://0.0.0.0:5555)");
  c.add_string("extra-clients-endpoints", "", "more endpoints for clients, comma-separated");
  c.add_string("extra-events-in-endpoints", "", "more endpoints for event publishers");
  c.add_string("extra-events-endpoints", "", "more endpoints for event subscribers");
  c.add_string("curve-allow", "",
               "a .pub file or a directory of them: client keys allowed on tcp:// endpoints");
  c.add_int("liveness", 3, "heartbeats a worker may miss before it is presumed dead");
  c.add_int("default-deadline-ms", 60000, "deadline of requests that set none");
  c.add_int("max-attempts", 2, "times a request that never started is dispatched");
  c.add_int("history", 20000, "events kept for `nv-audit --since-start`");
  c.add_int("status-interval-ms", 5000, "interval of broker.status events");
  c.add_string("run-as", "", "user id to switch to after binding (when started as root)");
}

int run(nv::ServiceContext& ctx) {
  nv::BrokerOptions o;
  auto& c = ctx.config;
  auto with = [](std::string first, const std::string& extra, const char* inproc) {
    std::vector<std::string> v{std::move(first), inproc};
    for (auto& e : split_list(extra)) v.push_back(e);
    return v;
  };
  // inproc:// endpoints let the in-process agent loop use the same protocol without sockets.
  o.worker_endpoints = with(ctx.endpoints.workers, c.str("extra-workers-endpoints"),
                            "inproc://nv-workers");
  o.client_endpoints = with(ctx.endpoints.clients, c.str("extra-clients-endpoints"),
                            "inproc://nv-clients");
  o.events_in_endpoints = with(ctx.endpoints.events_in, c.str("extra-events-in-endpoints"),
                               "inproc://nv-events-in");
  o.events_out_endpoints = with(ctx.endpoints.events_out, c.str("extra-events-endpoints"),
                                "inproc://nv-events");
  o.heartbeat = std::chrono::milliseconds(c.integer("heartbeat-ms"));
  o.liveness = static_cast<int>(c.integer("liveness"));
  o.default_deadline = std::chrono::milliseconds(c.integer("default-deadline-ms"));
  o.max_attempts = static_cast<int>(c.integer("max-attempts"));
  o.history = static_cast<size_t>(c.integer("history"));
  o.status_interval = std::chrono::milliseconds(c.integer("status-interval-ms"));
  o.curve_keys = ctx.curve_keys;
  o.limits = ctx.limits;
  o.instance = ctx.instance;
  if (!c.str("curve-allow").empty()) {
    auto allow = nv::curve::load_allow_list(c.str("curve-allow"));
    if (!allow) {
      nv::log::error(allow.error().message);
      return 2;
    }
    o.curve_allow = allow.value();
  }
  nv::Broker broker(ctx.zmq, o);
  if (auto st = broker.bind(); !st) {
    nv::log::error("cannot start the broker", {{"error", st.error().message}});
    return 1;
  }
  // Sockets are bound: nothing below needs a privilege.
  nv::PrivilegeSpec spec;
  if (!c.str("run-as").empty()) {
    auto uid = static_cast<uid_t>(std::stoul(c.str("run-as")));
    spec.uid = uid;
    spec.gid = uid;
  }
  if (auto st = nv::drop_privileges(spec); !st) {
    nv::log::error("cannot drop privileges", {{"error", st.error().message}});
    return 1;
  }
  std::string privileges = nv::describe_privileges();
  auto eps = broker.endpoints();
  broker.publish("service.started", [&](nv::schema::Event::Builder e) {
    auto s = e.initServiceStarted();
    s.setVersion(NV_VERSION);
    auto list = s.initEndpoints(static_cast<unsigned>(eps.size()));
    for (unsigned i = 0; i < eps.size(); ++i) list.set(i, eps[i]);
    s.setPrivileges(privileges);
  });
  nv::log::info("orchestrator ready", {{"instance", ctx.instance}, {"privileges", privileges}});
  broker.run(ctx.stop);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(argc, argv,
                          nv::ServiceSpec{"orchestrator",
                                          "broker, event hub and agent loop of NeuroVisor",
                                          add_options, run, false});
}
