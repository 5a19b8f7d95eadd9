#include "exporter.h"

#include <prometheus/exposer.h>
#include <prometheus/gateway.h>
#include <netdb.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "common/log.h"
#include "common/seccomp_policy.h"
#include "event_metrics.h"
#include "otlp_exporter.h"
#include "trace_spans.h"

namespace nv::metrics {
namespace {

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool valid_port(const std::string& s) {
  return all_digits(s) && s.size() <= 5 && std::stoi(s) >= 1 && std::stoi(s) <= 65535;
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

// Pushes the registry to a Pushgateway every `interval` until stopped, and once more at stop.
class Pusher {
 public:
  Pusher(const PushTarget& target, const std::string& job, const std::string& instance,
         const std::shared_ptr<prometheus::Registry>& registry, std::chrono::seconds interval)
      : gateway_(target.host, target.port, job, {{"instance", instance}}),
        url_(target.host + ":" + target.port),
        interval_(interval) {
    gateway_.RegisterCollectable(registry);
    thread_ = std::thread([this] { loop(); });
  }
  ~Pusher() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    push();  // the last values, so one-shot runs leave their totals behind
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (cv_.wait_for(lock, interval_, [this] { return stopping_; })) break;
      lock.unlock();
      push();
      lock.lock();
    }
  }
  void push() {
    int status = gateway_.Push();
    if (status < 200 || status >= 300) {
      // Logged on the first failure and then every 20th, so a gateway that is down is visible
      // without flooding the log.
      if (failures_++ % 20 == 0) {
        log::warn("Pushgateway push failed",
                  {{"url", url_}, {"status", status}, {"failures", failures_}});
      }
    } else if (failures_ > 0) {
      log::info("Pushgateway push works again", {{"url", url_}});
      failures_ = 0;
    }
  }

  prometheus::Gateway gateway_;
  std::string url_;
  std::chrono::seconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  uint64_t failures_ = 0;
  std::thread thread_;
};

// Replays the orchestrator's kept events into `metrics`; returns the ids it applied.
std::unordered_set<std::string> replay_history(ServiceContext& ctx, EventMetrics& metrics,
                                               uint32_t limit) {
  std::unordered_set<std::string> ids;
  Client client(ctx.zmq, ctx.client_options());
  capnp::MallocMessageBuilder mb;
  auto req = bus::init_body<schema::HistoryRequest>(mb);
  req.setLimit(limit);
  auto reply = client.call("nv.events", &mb, std::chrono::milliseconds(2000));
  if (!reply) {
    log::warn("no event history: starting from live events",
              {{"error", reply.error().to_string()}});
    return ids;
  }
  auto history = reply->body.root<schema::HistoryReply>();
  if (!history) {
    log::warn("unusable event history", {{"error", history.error().to_string()}});
    return ids;
  }
  size_t rejected = 0;
  for (auto ev : history->getEvents()) {
    ids.insert(ev.getId());
    if (!metrics.apply(ev.getTopic().cStr(), ev)) ++rejected;
  }
  log::info("event history replayed", {{"events", ids.size()},
                                       {"rejected", rejected},
                                       {"dropped_by_orchestrator", history->getDropped()}});
  return ids;
}

// The bus services' allow-list plus what this process needs on top of it.
seccomp::Profile exporter_seccomp_profile() {
  auto p = seccomp::zmq_service_profile("metrics-exporter");
  // libcurl: the Pushgateway push and the OTLP/HTTP trace export (the same set the LLM gateway
  // was profiled with: HTTP, HTTPS, name resolution).
  for (const auto& r : seccomp::llm_gateway_rules()) p.rules.push_back(r);
  p.rules.push_back(seccomp::allow("accept",
                                   "civetweb (prometheus-cpp Exposer) accepts HTTP "
                                   "connections with accept(2), not accept4"));
  // Not in the shared sets yet (reported): service_main's signal thread waits with it.
  p.rules.push_back(seccomp::allow("rt_sigtimedwait",
                                   "service_main's signal thread "
                                   "(sigtimedwait for SIGTERM/SIGINT/SIGHUP)"));
  return p;
}

}  // namespace

Result<PushTarget> parse_pushgateway_url(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "--pushgateway-url '" + url + "': " + why + " (expected http://host:port)");
  };
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return bad("no scheme");
  std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return bad("scheme must be http or https");
  std::string rest = url.substr(scheme_end + 3);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) return bad("a path is not supported");
  if (rest.empty()) return bad("no host");
  std::string host = rest, port = "9091";
  if (auto colon = rest.rfind(':'); colon != std::string::npos && rest.back() != ']') {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("no host");
  if (!valid_port(port)) return bad("port must be 1-65535");
  return PushTarget{scheme + "://" + host, port};
}

Status check_listen_address(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || !valid_port(listen.substr(colon + 1))) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "--listen '" + listen + "' must be HOST:PORT, e.g. 127.0.0.1:9090");
  }
  return {};
}

Status check_listen_free(const std::string& listen, const std::string& option) {
  auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return make_error(ErrorCode::BAD_REQUEST, option + " '" + listen + "': cannot resolve '" +
                                                  host + "': " + ::gai_strerror(rc));
  }
  std::string problem;
  for (addrinfo* a = found; a != nullptr && problem.empty(); a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0) {
      int err = errno;
      if (err == EADDRINUSE) {
        problem = "port " + port + " on " + host + " (" + listen +
                  ") is already in use by another program (a Prometheus server?); choose a free "
                  "one with " +
                  option + ", e.g. " + listen.substr(0, colon) + ":9464";
      } else {
        problem = "cannot listen on " + listen + ": " + std::strerror(err) + "; choose another " +
                  "address with " + option;
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (!problem.empty()) return make_error(ErrorCode::BAD_REQUEST, problem);
  return {};
}

void add_exporter_options(Config& c) {
  c.add_string("listen", "127.0.0.1:9090", "address:port serving /metrics");
  c.add_string("pushgateway-url", "",
               "Pushgateway to push to, e.g. http://127.0.0.1:9091 "
               "(\"\" = no push)");
  c.add_int("push-interval-s", 15, "seconds between Pushgateway pushes");
  c.add_string("push-job", "neurovisor", "job label of pushed metrics");
  c.add_string("push-instance", "", "instance label of pushed metrics (default: host name)");
  c.add_bool("replay-history", true, "apply the orchestrator's kept events at start");
  c.add_int("history-limit", 10000, "most events replayed at start");
  c.add_int("max-vm-series", 4096, "VMs with per-VM series at once");
  c.add_int("vm-idle-s", 600, "per-VM series of a VM silent this long are removed");
  c.add_string("otlp-endpoint", "",
               "OpenTelemetry collector for traces over OTLP/HTTP with JSON, e.g. "
               "http://127.0.0.1:4318 (+ /v1/traces; a URL with a path is used as given; \"\" = "
               "no traces)");
  c.alias_env("otlp-endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  c.alias_env("otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT");
  c.add_int("otlp-timeout-ms", 10000, "timeout of one OTLP export request, ms (1-600000)");
  c.add_int("trace-linger-ms", 2000,
            "a finished trace waits this long for late events before its spans are sent, ms "
            "(0-600000)");
  c.add_string("run-as", "", "user id to switch to after binding (when started as root)");
  c.add_bool("seccomp", true, "install the seccomp allow-list once started");
}

int run_exporter(ServiceContext& ctx) {
  auto& c = ctx.config;
  // Options first, every problem reported at once.
  std::string problems;
  if (auto st = check_listen_address(c.str("listen")); !st) problems += st.error().message + "; ";
  std::optional<PushTarget> push;
  if (!c.str("pushgateway-url").empty()) {
    auto t = parse_pushgateway_url(c.str("pushgateway-url"));
    if (t)
      push = t.value();
    else
      problems += t.error().message + "; ";
  }
  if (c.integer("push-interval-s") < 1) problems += "--push-interval-s must be at least 1; ";
  if (c.integer("history-limit") < 0) problems += "--history-limit must not be negative; ";
  if (c.integer("max-vm-series") < 1) problems += "--max-vm-series must be at least 1; ";
  if (c.integer("vm-idle-s") < 1 || c.integer("vm-idle-s") > 86400 * 365) {
    problems += "--vm-idle-s must be between 1 and a year; ";
  }
  std::string otlp_url;
  if (!c.str("otlp-endpoint").empty()) {
    auto u = tracing::otlp_traces_url(c.str("otlp-endpoint"));
    if (u)
      otlp_url = u.value();
    else
      problems += u.error().message + "; ";
  }
  if (c.integer("otlp-timeout-ms") < 1 || c.integer("otlp-timeout-ms") > 600000) {
    problems += "--otlp-timeout-ms must be between 1 and 600000; ";
  }
  if (c.integer("trace-linger-ms") < 0 || c.integer("trace-linger-ms") > 600000) {
    problems += "--trace-linger-ms must be between 0 and 600000; ";
  }
  if (!c.str("run-as").empty() &&
      c.str("run-as").find_first_not_of("0123456789") != std::string::npos) {
    problems += "--run-as must be a numeric uid; ";
  }
  if (!problems.empty()) {
    problems.resize(problems.size() - 2);
    log::error("bad options", {{"error", problems}});
    return 2;
  }
  // Before anything waits on the bus: a port in use is reported at once.
  if (auto st =
          check_listen_free(c.str("listen"), "--listen (env " + Config::env_name("listen") + ")");
      !st) {
    log::error("cannot serve /metrics",
               {{"listen", c.str("listen")}, {"error", st.error().message}});
    std::fprintf(stderr, "nv-metrics-exporter: %s\n", st.error().message.c_str());
    return 2;
  }

  auto registry = std::make_shared<prometheus::Registry>();
  Limits limits;
  limits.max_vms = static_cast<size_t>(c.integer("max-vm-series"));
  limits.vm_idle_ns = c.integer("vm-idle-s") * 1'000'000'000;
  EventMetrics metrics(registry, limits);

  // 1. Subscribe before anything else, so nothing published from here on is missed.
  EventSubscriber sub(ctx.zmq, ctx.endpoints.events_out, {}, ctx.curve_keys, ctx.curve_server_key);

  // 2. Bind HTTP and shed privileges. Capabilities belong to threads, and a new thread copies
  // its creator's: the HTTP threads the Exposer starts keep whatever this thread holds at that
  // moment. A port of 1024 or more needs no privilege to bind, so everything is dropped first and
  // the HTTP threads start with nothing; only a privileged port is bound before the drop.
  PrivilegeSpec spec;
  if (!c.str("run-as").empty()) {
    auto uid = static_cast<uid_t>(std::stoul(c.str("run-as")));
    spec.uid = uid;
    spec.gid = uid;
  }
  const std::string& listen = c.str("listen");
  bool privileged_port = std::stoi(listen.substr(listen.rfind(':') + 1)) < 1024;
  auto drop = [&] {
    if (auto st = drop_privileges(spec); !st) {
      log::error("cannot drop privileges", {{"error", st.error().message}});
      return false;
    }
    return true;
  };
  if (!privileged_port && !drop()) return 1;
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    log::error("cannot serve /metrics", {{"listen", listen}, {"error", e.what()}});
    return 1;
  }
  exposer->RegisterCollectable(registry);
  if (privileged_port) {
    log::warn(
        "--listen uses a privileged port: the HTTP threads keep the capabilities they "
        "started with; prefer a port of 1024 or more",
        {{"listen", listen}});
    if (!drop()) return 1;
  }

  // 3. Presence with the broker (capacity 0: `nv status` lists us, no request is routed here).
  Worker worker(ctx.zmq, ctx.worker_options("metrics-exporter", 0), [](std::shared_ptr<Request> r) {
    r->fail(
        make_error(ErrorCode::BAD_REQUEST, "metrics-exporter takes no requests; scrape /metrics"));
  });
  // Its own stop flag, so a failure below can end it as well as SIGTERM can.
  std::atomic<bool> worker_stop{false};
  std::thread worker_thread([&] { worker.run(worker_stop); });
  int rc = 0;
  std::string url = "http://" + listen + "/metrics";
  ctx.announce_started({url, ctx.endpoints.events_out, ctx.endpoints.workers});

  // Before seccomp: the Gateway initialises libcurl and OpenSSL, which read system info.
  std::unique_ptr<Pusher> pusher;
  if (push) {
    std::string instance = c.str("push-instance").empty() ? hostname() : c.str("push-instance");
    pusher = std::make_unique<Pusher>(*push, c.str("push-job"), instance, registry,
                                      std::chrono::seconds(c.integer("push-interval-s")));
  }

  // Traces: spans built from the events, sent by a thread of their own (before seccomp, like the
  // Pusher: libcurl initialises itself there).
  std::optional<tracing::TraceAssembler> assembler;
  std::unique_ptr<tracing::OtlpExporter> otlp;
  if (!otlp_url.empty()) {
    tracing::AssemblerLimits al;
    al.linger_ns = c.integer("trace-linger-ms") * 1'000'000;
    assembler.emplace(al);
    tracing::OtlpOptions oo;
    oo.url = otlp_url;
    oo.timeout = std::chrono::milliseconds(c.integer("otlp-timeout-ms"));
    oo.scope_version = NV_VERSION;
    otlp = std::make_unique<tracing::OtlpExporter>(oo, *registry);
    log::info("exporting traces", {{"url", otlp_url}});
  }
  auto steady_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };

  // The seccomp allow-list goes on every thread running now (ZeroMQ, HTTP, worker, pusher) and
  // is inherited by any started later (curl's resolver). It comes after announce_started, whose
  // privilege summary needs capget and prctl(PR_GET_NO_NEW_PRIVS).
  if (c.boolean("seccomp")) {
    seccomp::InstallOptions so;
    so.log = [](const std::string& line) { log::info(line); };
    auto r = seccomp::install(exporter_seccomp_profile(), so);
    if (!r.ok) {
      log::error("cannot install the seccomp allow-list", {{"error", r.text()}});
      rc = 1;
    }
  }

  // 4. History, then 5. live events (skipping those the history already had).
  std::unordered_set<std::string> replayed;
  if (c.boolean("replay-history") && rc == 0) {
    replayed = replay_history(ctx, metrics, static_cast<uint32_t>(c.integer("history-limit")));
  }
  log::info("serving metrics", {{"url", url}});
  uint64_t malformed_seen = 0;
  uint64_t rejected = 0;
  auto next_expiry = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (rc == 0 && !ctx.stop.load()) {
    if (std::chrono::steady_clock::now() >= next_expiry) {
      next_expiry += std::chrono::seconds(30);
      replayed.clear();  // live copies of replayed events arrive within moments, not 30 s
      auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
      if (size_t n = metrics.expire_idle_vms(now_ns); n > 0) {
        log::warn("forgot VMs that went silent without a release", {{"vms", n}});
      }
    }
    if (assembler) otlp->enqueue(assembler->take_ready(steady_ns()));
    auto in = sub.receive(std::chrono::milliseconds(200));
    if (sub.malformed() != malformed_seen) {
      metrics.count_malformed(sub.malformed() - malformed_seen);
      malformed_seen = sub.malformed();
    }
    if (!in) continue;
    if (!replayed.empty()) {
      auto it = replayed.find(in->event.getId().cStr());
      if (it != replayed.end()) {
        replayed.erase(it);
        continue;
      }
    }
    auto st = metrics.apply(in->topic, in->event);
    // Spans only from events the metrics accepted (validated); history replays make none, so a
    // restarted exporter does not send a trace twice.
    if (st && assembler) assembler->add(in->event, steady_ns());
    if (!st) {
      // The counter has every rejection; the log shows the first few and then every 1000th.
      if (rejected++ < 10 || rejected % 1000 == 0) {
        log::warn("invalid event", {{"topic", in->topic},
                                    {"service", in->event.getService().cStr()},
                                    {"error", st.error().message},
                                    {"total", rejected}});
      }
    }
  }

  // Drain: the worker leaves the broker, the last values are pushed, HTTP closes.
  worker_stop = true;
  worker_thread.join();
  pusher.reset();
  if (assembler) otlp->enqueue(assembler->take_all());  // unfinished traces go out as they are
  otlp.reset();
  exposer.reset();
  return rc;
}

}  // namespace nv::metrics
