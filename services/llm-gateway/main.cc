// nv-llm-gateway: the only NeuroVisor process that speaks HTTP to a model server. Registers with
// the broker as service "llm" and answers ChatRequests (llm.capnp) through nv_llm_client.
//
// Start-up, in order: options → LLM client pool (reads the API key once) → worker socket →
// drop every capability (nothing below needs one) → service.started → seccomp allow-list
// (llm_gateway_profile, every thread, kill on anything else) → serve until SIGTERM → drain
// (calls still running after --drain-s are ended with shuttingDown). A caller's cancel ends its
// model call within ~100 ms and closes the HTTP connection (gateway.cc).
#include <seccomp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/seccomp_policy.h"
#include "common/service.h"
#include "gateway.h"

namespace {

constexpr const char* kDefaultModel = "qwen2.5-coder:7b";

void add_options(nv::Config& c) {
  c.add_string("llm-url", "",
               "model server root URL, e.g. http://localhost:11434 (Ollama) or "
               "http://host:8080 (OpenAI-compatible, without /v1); OLLAMA_HOST is honoured "
               "(default http://localhost:11434)");
  c.alias_env("llm-url", "OLLAMA_HOST");
  c.add_string("llm-api", "ollama", "wire protocol of the model server: ollama | openai");
  c.add_string("model", kDefaultModel,
               "model used when a request names none; it must exist on the server "
               "(Ollama: `ollama pull MODEL` first)");
  c.add_string("api-key-env", "",
               "name of an environment variable holding the bearer API key (OpenAI servers)");
  c.add_string("api-key-file", "",
               "file whose first line is the bearer API key (wins over "
               "--api-key-env)");
  // Durations in ms; the older names in seconds stay as deprecated spellings (read back below
  // in seconds through them).
  c.add_number("llm-timeout-ms", 300000, "how long one HTTP exchange with the model may take, ms");
  c.range("llm-timeout-ms", 1, 86400000).alias_flag("llm-timeout-ms", "llm-timeout", 1000);
  c.add_number("llm-connect-timeout-ms", 5000,
               "how long connecting to the model server may take, ms");
  c.range("llm-connect-timeout-ms", 1, 86400000);
  c.alias_flag("llm-connect-timeout-ms", "llm-connect-timeout", 1000);
  c.add_int("llm-retries", 2, "retries after connection errors, 429 and 5xx (0 = none)");
  c.add_int("concurrency", 4, "chat requests served at once (broker capacity of this worker)");
  c.add_number("rate", 0, "model requests per second (token bucket, all requests); 0 = no limit");
  c.add_number("rate-burst", 10, "requests allowed in one burst by --rate");
  c.add_number("drain-ms", 8000,
               "on SIGTERM, how long calls in flight may finish before they "
               "are cut off with shuttingDown, ms");
  c.range("drain-ms", 0, 600000).alias_flag("drain-ms", "drain-s", 1000);
  c.add_bool("seccomp", true, "install the seccomp allow-list after start-up");
  c.add_bool("seccomp-log", false,
             "profiling only: syscalls outside the allow-list are logged to the kernel audit log "
             "(dmesg, type=1326) instead of killing the gateway");
}

// The allow-list goes on every thread running now (ZeroMQ I/O, signal, event publisher) and is
// inherited by those started later (request handlers, libcurl's resolver). It comes after
// announce_started, whose privilege summary needs capget and prctl(PR_GET_NO_NEW_PRIVS).
bool install_seccomp(const nv::Config& c) {
  if (!c.boolean("seccomp")) {
    nv::log::warn("seccomp disabled by --no-seccomp");
    return true;
  }
  nv::seccomp::InstallOptions io;
  io.log = [](const std::string& line) { nv::log::debug(line); };
  bool audit_only = c.boolean("seccomp-log");
  if (audit_only) {
    io.default_action = SCMP_ACT_LOG;
    io.log = [](const std::string& line) { nv::log::warn(line); };
  }
  auto r = nv::seccomp::install(nv::seccomp::llm_gateway_profile(), io);
  if (!r.ok) {
    nv::log::error("cannot install the seccomp filter", {{"error", r.text()}});
    return false;
  }
  nv::log::info(audit_only ? "seccomp allow-list installed in LOG mode (not enforcing)"
                           : "seccomp allow-list installed",
                {{"rules", r.rules_added}});
  return true;
}

// The configuration as the library takes it; every problem is reported at once.
nv::Result<nv::gateway::GatewayOptions> options_from(const nv::Config& c) {
  std::vector<std::string> problems;
  nv::gateway::GatewayOptions o;
  std::string url = c.str("llm-url");
  if (url.empty() || c.source("llm-url").find("OLLAMA_HOST") != std::string::npos) {
    url = nv::llm::base_url_from_ollama_host(url);  // "host:port" forms, as Ollama reads them
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    problems.push_back("--llm-url must start with http:// or https:// (got '" + url + "')");
  }
  o.llm.base_url = url;
  if (!nv::llm::parse_api(c.str("llm-api"), &o.llm.api)) {
    problems.push_back("--llm-api must be ollama or openai (got '" + c.str("llm-api") + "')");
  }
  o.llm.default_model = c.str("model");
  if (o.llm.default_model.empty()) problems.push_back("--model must not be empty");
  o.llm.api_key_env = c.str("api-key-env");
  o.llm.api_key_file = c.str("api-key-file");
  auto seconds = [&](const char* name, long* out) {
    double v = c.number(name);
    if (!(v > 0) || v > 86400) {
      problems.push_back(std::string("--") + name + " must be in (0, 86400] seconds");
      return;
    }
    *out = static_cast<long>(v * 1000);
  };
  seconds("llm-timeout", &o.llm.timeout_ms);
  seconds("llm-connect-timeout", &o.llm.connect_timeout_ms);
  int64_t retries = c.integer("llm-retries");
  if (retries < 0 || retries > 20) problems.push_back("--llm-retries must be in [0, 20]");
  o.llm.max_attempts = static_cast<uint32_t>(std::clamp<int64_t>(retries, 0, 20) + 1);
  int64_t conc = c.integer("concurrency");
  if (conc < 1 || conc > 1024) problems.push_back("--concurrency must be in [1, 1024]");
  o.concurrency = static_cast<uint32_t>(std::clamp<int64_t>(conc, 1, 1024));
  o.rate_per_s = c.number("rate");
  o.rate_burst = c.number("rate-burst");
  if (o.rate_per_s < 0) problems.push_back("--rate must be >= 0");
  if (o.rate_burst < 1) problems.push_back("--rate-burst must be >= 1");
  if (!problems.empty()) {
    std::string all;
    for (auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    return nv::make_error(nv::ErrorCode::BAD_REQUEST, all);
  }
  o.llm.log = [](nv::llm::LogLevel level, const std::string& msg, const std::string& trace) {
    auto l = level == nv::llm::LogLevel::debug  ? nv::log::Level::debug
             : level == nv::llm::LogLevel::info ? nv::log::Level::info
             : level == nv::llm::LogLevel::warn ? nv::log::Level::warn
                                                : nv::log::Level::error;
    nv::log::write(l, msg, {}, trace);
  };
  return o;
}

int run(nv::ServiceContext& ctx) {
  auto opts = options_from(ctx.config);
  if (!opts) {
    nv::log::error("bad options", {{"error", opts.error().message}});
    return 2;
  }
  nv::gateway::Gateway gateway(std::move(opts.value()), ctx.events);
  const auto& o = gateway.options();
  nv::Worker worker(ctx.zmq, ctx.worker_options("llm", o.concurrency),
                    [&](std::shared_ptr<nv::Request> r) { gateway.handle(r); });
  // Everything that needed the environment (key file, sockets) is set up: shed privileges.
  if (auto st = nv::drop_privileges(nv::PrivilegeSpec{}); !st) {
    nv::log::error("cannot drop privileges", {{"error", st.error().message}});
    return 1;
  }
  ctx.announce_started({ctx.endpoints.workers, o.llm.base_url});
  if (!install_seccomp(ctx.config)) return 1;
  nv::log::info("llm gateway ready", {{"llm_url", o.llm.base_url},
                                      {"api", std::string(nv::llm::api_name(o.llm.api))},
                                      {"model", o.llm.default_model},
                                      {"concurrency", o.concurrency}});
  // On stop, give calls in flight --drain-s, then cut them off so the worker can drain.
  std::mutex mu;
  std::condition_variable cv;
  bool served = false;
  auto drain = std::chrono::milliseconds(static_cast<int64_t>(ctx.config.number("drain-s") * 1000));
  std::thread cutter([&] {
    while (!ctx.stop.load()) {
      std::unique_lock lock(mu);
      if (cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return served; })) return;
    }
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, drain, [&] { return served; })) gateway.shutdown();
  });
  worker.run(ctx.stop);
  {
    std::lock_guard lock(mu);
    served = true;
  }
  cv.notify_all();
  cutter.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"llm-gateway",
                      "the only process that talks HTTP to the model server (Ollama or "
                      "OpenAI-compatible); serves bus service \"llm\". The --model must exist "
                      "on the server: `ollama pull qwen2.5-coder:7b` before the first task",
                      add_options, run, true, nv::unprivileged});
}
