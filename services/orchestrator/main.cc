// nv-orchestrator: the broker between clients and workers, the event hub, and (issue 5) the
// agent loop. Runs unprivileged: it drops every capability after binding its sockets.
#include <algorithm>
#include <sstream>
#include <thread>

#include "agent.h"
#include "common/seccomp_policy.h"
#include "broker.h"
#include "common/log.h"
#include "common/service.h"

namespace {

void add_options(nv::Config& c) {
  c.add_string("extra-workers-endpoints", "",
               "more endpoints for workers, comma-separated (e.g. tcp://0.0.0.0:5555)");
  c.add_string("extra-clients-endpoints", "", "more endpoints for clients, comma-separated");
  c.add_string("extra-events-in-endpoints", "", "more endpoints for event publishers");
  c.add_string("extra-events-endpoints", "", "more endpoints for event subscribers");
  c.add_string("curve-allow", "",
               "a .pub file or a directory of them: client keys allowed on tcp:// endpoints");
  c.add_string("roles", "",
               "roles file: which uids/CURVE keys may serve which services and publish which "
               "event topics (default: the orchestrator's own uid and root, everything)");
  c.add_int("liveness", 3, "heartbeats a worker may miss before it is presumed dead");
  c.add_int("default-deadline-ms", 60000, "deadline of requests that set none");
  c.add_int("max-attempts", 2, "times a request that never started is dispatched");
  c.add_int("history", 20000, "events kept for `nv-audit --since-start`");
  c.add_int("status-interval-ms", 5000, "interval of broker.status events");
  c.add_int("busy-poll-us", nv::BrokerOptions{}.busy_poll.count(),
            "the longest adaptive busy-poll window after a loop that moved messages, in us "
            "(grows while messages follow within it, shrinks when traffic is sparse; see "
            "nv-bench bus); 0: block at once; at most 10000");
  c.add_int("history-mib", 64, "bytes of events kept for `nv-audit --since-start`, in MiB");
  c.add_int("max-event-kib", 1024, "events larger than this are dropped (KiB)");
  c.add_int("client-silence-ms", 30000,
            "a client with requests pending that is silent this long is presumed gone");
  c.add_int("admission-cold-rounds", 16,
            "before a service has finished a request: queued requests allowed per slot");
  c.add_string("run-as", "", "user id to switch to after binding (when started as root)");
  // The agent loop (service "task").
  c.add_bool("seccomp", true, "install the seccomp allow-list after start-up");
  c.add_bool("agent", true, "run the agent loop (bus service \"task\") in this process");
  c.add_int("max-tasks", 64, "tasks the agent loop runs at once; more wait in the broker queue");
  c.add_int("max-iterations", 10, "LLM calls per task when the task sets none");
  c.add_int("task-timeout-ms", 600000, "deadline of a task that sets none, ms");
  c.range("task-timeout-ms", 1000, 86400000).alias_flag("task-timeout-ms", "task-timeout-s", 1000);
  c.add_int("exec-timeout-ms", 30000, "time limit of one code execution (ExecRequest.timeoutMs)");
  c.range("exec-timeout-ms", 100, 3600000);
  c.range("max-tasks", 1, 10000).range("max-iterations", 1, 100);
  c.add_int("llm-call-timeout-ms", 330000, "how long the agent waits for one LLM answer, ms");
  c.range("llm-call-timeout-ms", 1000, 86400000);
  c.alias_flag("llm-call-timeout-ms", "llm-call-timeout-s", 1000);
  c.add_int("tool-output-chars", 16384,
            "program output shown to the model per execution, in characters (code points): "
            "exit status first, then head and tail of stdout and of stderr");
  c.range("tool-output-chars", 256, 1 << 20);
  c.add_string("model", "", "model for tasks that name none (\"\" = the gateway's --model)");
  c.add_bool("fresh-vm-per-call", false,
             "run every execute_code of a task in a fresh VM (service \"exec\"), as before "
             "sandboxes: nothing persists between calls and there are no file tools; default: one "
             "sandbox per task, files and python/javascript variables persist between calls");
}

nv::Result<nv::agent::AgentOptions> agent_options(const nv::ServiceContext& ctx) {
  const auto& c = ctx.config;
  std::string problems;
  auto in = [&](const char* name, int64_t lo, int64_t hi) {
    int64_t v = c.integer(name);
    if (v < lo || v > hi) {
      problems += std::string(problems.empty() ? "" : "; ") + "--" + name + " must be in [" +
                  std::to_string(lo) + ", " + std::to_string(hi) + "]";
    }
    return std::clamp(v, lo, hi);
  };
  nv::agent::AgentOptions o;
  o.max_tasks = static_cast<uint32_t>(in("max-tasks", 1, 10000));
  o.default_max_iterations = static_cast<uint32_t>(in("max-iterations", 1, 100));
  o.default_task_timeout = std::chrono::milliseconds(in("task-timeout-ms", 1000, 86400000));
  o.exec_timeout = std::chrono::milliseconds(in("exec-timeout-ms", 100, 3600000));
  o.llm_call_timeout = std::chrono::milliseconds(in("llm-call-timeout-ms", 1000, 86400000));
  o.max_tool_output_chars = static_cast<size_t>(in("tool-output-chars", 256, 1 << 20));
  o.default_model = c.str("model");
  o.fresh_vm_per_call = c.boolean("fresh-vm-per-call");
  o.heartbeat = std::chrono::milliseconds(c.integer("heartbeat-ms"));
  o.limits = ctx.limits;
  o.instance = ctx.instance;
  if (!problems.empty()) return nv::make_error(nv::ErrorCode::BAD_REQUEST, problems);
  return o;
}

int run(nv::ServiceContext& ctx) {
  nv::BrokerOptions o;
  auto& c = ctx.config;
  auto with = [](std::string first, const std::string& extra, const char* inproc) {
    std::vector<std::string> v{std::move(first), inproc};
    for (auto& e : nv::split_commas(extra)) v.push_back(e);
    return v;
  };
  // inproc:// endpoints let the in-process agent loop use the same protocol without sockets.
  o.worker_endpoints =
      with(ctx.endpoints.workers, c.str("extra-workers-endpoints"), "inproc://nv-workers");
  o.client_endpoints =
      with(ctx.endpoints.clients, c.str("extra-clients-endpoints"), "inproc://nv-clients");
  o.events_in_endpoints =
      with(ctx.endpoints.events_in, c.str("extra-events-in-endpoints"), "inproc://nv-events-in");
  o.events_out_endpoints =
      with(ctx.endpoints.events_out, c.str("extra-events-endpoints"), "inproc://nv-events");
  o.heartbeat = std::chrono::milliseconds(c.integer("heartbeat-ms"));
  o.liveness = static_cast<int>(c.integer("liveness"));
  o.default_deadline = std::chrono::milliseconds(c.integer("default-deadline-ms"));
  o.max_attempts = static_cast<int>(c.integer("max-attempts"));
  o.history = static_cast<size_t>(c.integer("history"));
  o.status_interval = std::chrono::milliseconds(c.integer("status-interval-ms"));
  o.busy_poll = std::chrono::microseconds(std::clamp<int64_t>(c.integer("busy-poll-us"), 0, 10000));
  o.history_bytes = static_cast<size_t>(std::clamp<int64_t>(c.integer("history-mib"), 1, 4096))
                    << 20;
  o.max_event_bytes = static_cast<size_t>(std::clamp<int64_t>(c.integer("max-event-kib"), 1, 65536))
                      << 10;
  o.client_silence =
      std::chrono::milliseconds(std::max<int64_t>(1000, c.integer("client-silence-ms")));
  o.cold_rounds =
      static_cast<int>(std::clamp<int64_t>(c.integer("admission-cold-rounds"), 1, 100000));
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
  if (!c.str("roles").empty()) {
    auto roles = nv::Roles::load(c.str("roles"));
    if (!roles) {
      nv::log::error("bad roles file", {{"error", roles.error().message}});
      return 2;
    }
    o.roles = std::move(roles.value());
  } else if (!o.curve_allow.empty()) {
    // As before roles existed: an allowed key may serve and publish anything.
    nv::log::warn(
        "no --roles: every --curve-allow key may register any service and publish "
        "any event topic; give --roles to bind keys to services");
    for (const auto& k : o.curve_allow) o.roles.grant_all("key:" + k);
  }
  std::optional<nv::agent::AgentOptions> agent_opts;
  if (c.boolean("agent")) {
    auto a = agent_options(ctx);
    if (!a) {
      nv::log::error("bad options", {{"error", a.error().message}});
      return 2;
    }
    agent_opts = a.value();
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
  // Seccomp after start-up: the generic bus-service allow-list, on every thread, kill on the rest.
  if (c.boolean("seccomp")) {
    auto profile = nv::seccomp::zmq_service_profile("orchestrator");
    nv::seccomp::InstallOptions io;
    io.log = [](const std::string& line) { nv::log::debug(line); };
    auto r = nv::seccomp::install(profile, io);
    if (!r.ok) {
      nv::log::error("cannot install the seccomp filter", {{"error", r.text()}});
      return 1;
    }
  }
  nv::log::info("orchestrator ready", {{"instance", ctx.instance}, {"privileges", privileges}});
  if (!agent_opts) {
    broker.run(ctx.stop);
    return 0;
  }
  // The agent loop is a worker like any other, on the inproc endpoints of this context. On
  // SIGTERM it drains first; the broker keeps running until then so its answers get out.
  std::atomic<bool> broker_stop{false};
  nv::agent::Agent agent(ctx.zmq, *agent_opts);
  std::thread agent_thread([&] {
    agent.run(ctx.stop);
    broker_stop = true;
  });
  broker.run(broker_stop);
  agent_thread.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"orchestrator", "broker, event hub and agent loop of NeuroVisor", add_options,
                      run, false, nv::unprivileged});
}
