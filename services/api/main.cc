// nv-api: NeuroVisor over HTTP/1.1 + JSON for any language (services/api/README.md). An
// unprivileged bus client: no capabilities, no_new_privs, a seccomp allow-list once serving.
#include <unistd.h>

#include <cstdio>

#include "api.h"
#include "common/log.h"
#include "common/seccomp_policy.h"

namespace {

// The bus services' allow-list plus what an HTTP server on cpp-httplib needs on top of it.
nv::seccomp::Profile api_seccomp_profile() {
  auto p = nv::seccomp::zmq_service_profile("api");
  using nv::seccomp::allow;
  p.rules.push_back(allow("accept", "cpp-httplib accepts connections with accept(2)"));
  p.rules.push_back(allow("accept4", "accept with SOCK_CLOEXEC"));
  p.rules.push_back(allow("select", "cpp-httplib waits for socket readiness with select(2)"));
  p.rules.push_back(allow("pselect6", "glibc's select(2) is pselect6 on some builds"));
  p.rules.push_back(allow("sendto", "HTTP answers (send(2) is sendto)"));
  p.rules.push_back(allow("recvfrom", "HTTP requests (recv(2) is recvfrom)"));
  p.rules.push_back(allow("shutdown", "cpp-httplib shuts a connection down before close"));
  p.rules.push_back(allow("getpeername", "remote address of a request, for the log"));
  p.rules.push_back(allow("getsockname", "local address of a connection"));
  p.rules.push_back(allow("setsockopt", "SO_RCVTIMEO/SO_SNDTIMEO/TCP_NODELAY per connection"));
  p.rules.push_back(allow("rt_sigtimedwait", "service_main's signal thread"));
  p.rules.push_back(allow("stat", "the API key file's mtime (reload on change)"));
  p.rules.push_back(allow("newfstatat", "stat(2) on this libc"));
  p.rules.push_back(allow("access", "/readyz: may this user open the pool manager's socket"));
  p.rules.push_back(allow("faccessat", "access(2) on this libc"));
  p.rules.push_back(allow("faccessat2", "access(2) on newer libcs"));
  p.rules.push_back(allow("rename", "the api.port file written atomically"));
  p.rules.push_back(allow("unlink", "the api.port file removed at exit"));
  p.rules.push_back(allow("getrandom", "libsodium: span ids and key checks"));
  return p;
}

int run(nv::ServiceContext& ctx) {
  auto& c = ctx.config;
  auto options = nv::api::api_options_from(c, ctx.runtime_dir);
  if (!options) {
    nv::log::error("bad options", {{"error", options.error().message}});
    std::fprintf(stderr, "nv-api: %s\n", options.error().message.c_str());
    return 2;
  }
  nv::api::Api api(ctx, *options);
  if (c.boolean("list-routes")) {
    for (const auto& r : api.routes()) {
      std::printf("%s %s %s\n", r.method.c_str(), r.path.c_str(),
                  r.scope ? nv::api::scopes_text(r.scope).c_str() : "public");
    }
    return 0;
  }
  // Presence with the broker (capacity 0: `nv status` lists nv-api; nothing is routed here).
  nv::Worker worker(ctx.zmq, ctx.worker_options("api", 0), [](std::shared_ptr<nv::Request> r) {
    r->fail(nv::make_error(nv::ErrorCode::BAD_REQUEST, "nv-api takes no bus requests; use HTTP"));
  });
  std::atomic<bool> worker_stop{false};
  std::thread worker_thread([&] { worker.run(worker_stop); });
  int rc = api.run(ctx.stop, [&] {
    ctx.announce_started({"http://" + options->host + ":" + std::to_string(api.options().port),
                          ctx.endpoints.clients});
    if (c.boolean("seccomp")) {
      nv::seccomp::InstallOptions so;
      so.log = [](const std::string& line) { nv::log::info(line); };
      auto r = nv::seccomp::install(api_seccomp_profile(), so);
      if (!r.ok) nv::log::error("cannot install the seccomp allow-list", {{"error", r.text()}});
    }
  });
  worker_stop = true;
  worker_thread.join();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"api",
                      "NeuroVisor over HTTP + JSON: sandboxes, one-shot exec, agent tasks, "
                      "OpenAPI at /openapi.json",
                      nv::api::add_api_options, run, true, nv::unprivileged,
                      /*shared_env_fallback=*/false});
}
