// nv-bench api: what HTTP adds — the same call made through nv-api (HTTP/1.1 keep-alive, JSON)
// and straight over the bus, interleaved in one run, against a running stack (`nv up` with the
// api and sandbox-executor services; --runtime-dir).
//
//   1. exec in a live sandbox: POST /v1/sandboxes/{id}/exec vs SandboxClient::exec on the same
//      sandbox (both as tenant "bench"), print(1) — when the executor serves "sandbox";
//   2. one-shot exec: POST /v1/exec vs the "exec" service (each on a fresh VM: noisy, VM-bound);
//   3. no VM: GET /readyz vs its two bus calls (nv.status, vm.status) made directly.
// Reports p50/p95 of each path and the p50 difference (target: HTTP adds <= 2 ms p50).
#include <httplib.h>
#include <nv/schema/bus.capnp.h>
#include <nv/schema/exec.capnp.h>
#include <nv/schema/vm.capnp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/client.h"
#include "common/config.h"
#include "common/frames.h"
#include "common/interrupt.h"
#include "common/sandbox_client.h"
#include "common/service.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

// Runs `a` and `b` alternately `n` times; prints both and the p50 difference.
void compare(const char* what, int n, const std::function<bool()>& http,
             const std::function<bool()>& bus) {
  std::vector<double> h, b;
  for (int i = 0; i < n && !nv::interrupt::requested(); ++i) {
    for (int k = 0; k < 2; ++k) {
      bool http_first = (i % 2 == 0) == (k == 0);
      auto t0 = Clock::now();
      bool ok = http_first ? http() : bus();
      double ms = ms_since(t0);
      if (!ok) {
        std::fprintf(stderr, "nv-bench api: %s: a %s call failed\n", what,
                     http_first ? "HTTP" : "bus");
        return;
      }
      (http_first ? h : b).push_back(ms);
    }
  }
  std::printf(
      "%-34s n=%-3zu bus p50 %8.2f ms p95 %8.2f | HTTP p50 %8.2f ms p95 %8.2f | "
      "HTTP adds %+.2f ms p50 (target <= 2 ms: %s)\n",
      what, h.size(), pct(b, 0.5), pct(b, 0.95), pct(h, 0.5), pct(h, 0.95),
      pct(h, 0.5) - pct(b, 0.5), pct(h, 0.5) - pct(b, 0.5) <= 2.0 ? "met" : "missed");
  std::fflush(stdout);
}

}  // namespace

int run_api_bench(int argc, char** argv) {
  nv::Config c("nv-bench api", "HTTP (nv-api) vs the bus, the same calls interleaved");
  nv::add_bus_options(c);
  c.add_int("runs", 20, "calls per path (VM-backed parts)");
  c.add_int("fast-runs", 300, "calls per path (the part without a VM)");
  c.add_string("api-key", "",
               "an nv-api key of tenant 'bench' (default: nv-keygen --api makes one)");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-bench api: %s\n", st.error().message.c_str());
    return 2;
  }
  std::string rt = c.str("runtime-dir").empty() ? nv::default_runtime_dir() : c.str("runtime-dir");
  int port = 0;
  std::ifstream(rt + "/api.port") >> port;
  if (port <= 0) {
    std::fprintf(stderr, "nv-bench api: no nv-api in %s (start it: nv up, with --runtime-dir)\n",
                 rt.c_str());
    return 1;
  }
  std::string key = c.str("api-key");
  if (key.empty()) {
    namespace fs = std::filesystem;
    std::string keygen = (fs::read_symlink("/proc/self/exe").parent_path() / "nv-keygen").string();
    std::string cmd = "NV_RUNTIME_DIR='" + rt + "' '" + keygen +
                      "' --api --tenant bench --scopes sandbox,task,admin 2>/dev/null";
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[256] = {};
      if (std::fgets(buf, sizeof buf, p)) key = buf;
      ::pclose(p);
    }
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  }
  zmq::context_t ctx(1);
  auto eps = nv::endpoints_from(c, rt);
  nv::ClientOptions co;
  co.endpoint = eps.clients;
  nv::Client bus(ctx, co);
  nv::ClientOptions po = co;
  po.endpoint = eps.vm_pool;
  nv::Client pool(ctx, po);
  httplib::Client http("127.0.0.1", port);
  http.set_keep_alive(true);
  http.set_tcp_nodelay(true);
  http.set_read_timeout(120, 0);
  httplib::Headers auth{{"Authorization", "Bearer " + key}};
  int runs = static_cast<int>(c.integer("runs"));
  std::printf("nv-bench api: nv-api at 127.0.0.1:%d, stack %s\n", port, rt.c_str());

  // 3. No VM: /readyz against its own two bus calls.
  compare(
      "readyz (nv.status + vm.status)", static_cast<int>(c.integer("fast-runs")),
      [&] {
        auto r = http.Get("/readyz");
        return r && (r->status == 200 || r->status == 503);
      },
      [&] {
        capnp::MallocMessageBuilder a, b;
        nv::bus::init_body<nv::schema::StatusRequest>(a);
        nv::bus::init_body<nv::schema::PoolStatusRequest>(b);
        return bus.call("nv.status", &a, 2000ms).ok() && pool.call("vm.status", &b, 1000ms).ok();
      });

  // 1. A live sandbox, when the service is there.
  const std::string body = "{\"language\":\"python\",\"code\":\"print(1)\"}";
  nv::sandbox::SandboxClient sc(bus, "tenant:bench", {120000ms, {}});
  auto sbx = sc.create({});
  if (!sbx) {
    std::printf("%-34s skipped: %s\n", "sandbox exec (live sandbox)",
                sbx.error().to_string().c_str());
  } else {
    std::string id = sbx->sandbox_id;
    nv::sandbox::ExecSpec spec;
    spec.language = nv::schema::Language::PYTHON;
    spec.code = "print(1)";
    auto via_http = [&] {
      auto r = http.Post(("/v1/sandboxes/" + id + "/exec").c_str(), auth, body, "application/json");
      return r && r->status == 200;
    };
    auto via_bus = [&] { return sc.exec(id, spec).ok(); };
    compare("sandbox exec print(1) (live VM)", runs, via_http, via_bus);
    // The same in a live python context (no interpreter start per call: ~10 ms under TCG), so
    // the VM's own time no longer drowns what HTTP adds. Each path has its own context.
    const std::string ctx_body =
        "{\"language\":\"python\",\"code\":\"print(1)\",\"context\":\"bench-http\"}";
    auto ctx_spec = spec;
    ctx_spec.context = "bench-bus";
    auto ctx_http = [&] {
      auto r =
          http.Post(("/v1/sandboxes/" + id + "/exec").c_str(), auth, ctx_body, "application/json");
      return r && r->status == 200;
    };
    auto ctx_bus = [&] { return sc.exec(id, ctx_spec).ok(); };
    (void)ctx_http();  // start both interpreters before timing
    (void)ctx_bus();
    compare("sandbox exec print(1) (live context)", static_cast<int>(c.integer("fast-runs")),
            ctx_http, ctx_bus);
    (void)sc.destroy(id);
  }

  // 2. One-shot exec, each on a fresh VM.
  auto oneshot_http = [&] {
    auto r = http.Post("/v1/exec", auth, body, "application/json");
    return r && r->status == 200;
  };
  auto oneshot_bus = [&] {
    capnp::MallocMessageBuilder mb;
    auto e = nv::bus::init_body<nv::schema::ExecRequest>(mb);
    e.setLanguage(nv::schema::Language::PYTHON);
    e.setCode("print(1)");
    return bus.call("exec", &mb, 120000ms).ok();
  };
  compare("one-shot exec print(1) (fresh VM)", runs, oneshot_http, oneshot_bus);
  return nv::interrupt::requested() ? nv::interrupt::exit_code() : 0;
}
