// nv_guest_ctl.cc — talk to a guest agent by hand (debugging, demos, measurements).
//
//   nv-guest-ctl SOCKET hello                 connect, print Hello and the time it took
//   nv-guest-ctl SOCKET ping [N]              N pings, print p50/p99 round trip
//   nv-guest-ctl SOCKET exec LANG CODE        run code (python|bash|sh|javascript), stream output
//   nv-guest-ctl SOCKET reconnect N           connect/hang up N times, each must get Hello
//   nv-guest-ctl SOCKET shutdown              power the VM off
// Options before SOCKET: --vsock PORT (Firecracker hybrid vsock), --timeout SECONDS (default 30).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "guest/host/guest_channel.h"

using namespace nv::guest;
using Clock = std::chrono::steady_clock;

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: nv-guest-ctl [--vsock PORT] [--timeout S] SOCKET "
               "hello|ping [N]|exec LANG CODE|reconnect N|shutdown\n");
  return 2;
}

int fail(const ChannelError& e) {
  std::fprintf(stderr, "nv-guest-ctl: %s: %s\n", to_string(e.code), e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ChannelKind kind = ChannelKind::unix_stream;
  uint32_t port = 6000;
  double timeout_s = 30;
  int i = 1;
  for (; i < argc && std::strncmp(argv[i], "--", 2) == 0; i += 2) {
    if (i + 1 >= argc) return usage();
    if (std::strcmp(argv[i], "--vsock") == 0) {
      kind = ChannelKind::hybrid_vsock;
      port = static_cast<uint32_t>(std::stoul(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--timeout") == 0) {
      timeout_s = std::stod(argv[i + 1]);
    } else {
      return usage();
    }
  }
  if (argc - i < 2) return usage();
  const std::string sock = argv[i], cmd = argv[i + 1];
  std::vector<std::string> rest(argv + i + 2, argv + argc);
  auto deadline = [&] {
    return Clock::now() + std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  };
  auto connect = [&] { return GuestChannel::connect(sock, kind, port, deadline()); };

  if (cmd == "reconnect") {
    int n = rest.empty() ? 10 : std::stoi(rest[0]);
    for (int k = 0; k < n; ++k) {
      auto ch = connect();
      if (!ch.ok()) {
        std::fprintf(stderr, "connect %d: ", k);
        return fail(ch.error());
      }
      std::printf(
          "connect %d: Hello after %.3f ms\n", k,
          std::chrono::duration<double, std::milli>(ch.value()->hello().connect_to_hello).count());
    }
    return 0;
  }
  auto ch = connect();
  if (!ch.ok()) return fail(ch.error());
  auto& c = *ch.value();
  if (cmd == "hello") {
    const auto& h = c.hello();
    std::printf("agent %s boot_id %s uptime %llu ms languages", h.agent_version.c_str(),
                h.boot_id.c_str(), static_cast<unsigned long long>(h.uptime_ms));
    for (auto l : h.languages) std::printf(" %d", static_cast<int>(l));
    std::printf("\nconnect to Hello: %.3f ms\n",
                std::chrono::duration<double, std::milli>(h.connect_to_hello).count());
    return 0;
  }
  if (cmd == "ping") {
    int n = rest.empty() ? 100 : std::stoi(rest[0]);
    std::vector<double> us;
    for (int k = 0; k < n; ++k) {
      auto r = c.ping(deadline());
      if (!r.ok()) return fail(r.error());
      us.push_back(std::chrono::duration<double, std::micro>(r.value()).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("%d pings: p50 %.0f us, p99 %.0f us\n", n, us[us.size() / 2],
                us[std::min(us.size() - 1, us.size() * 99 / 100)]);
    return 0;
  }
  if (cmd == "exec" && rest.size() == 2) {
    ExecSpec spec;
    const std::string& l = rest[0];
    spec.language = l == "python"                      ? nv::schema::Language::PYTHON
                    : l == "bash"                      ? nv::schema::Language::BASH
                    : l == "sh"                        ? nv::schema::Language::SH
                    : l == "javascript" || l == "node" ? nv::schema::Language::JAVASCRIPT
                                                       : nv::schema::Language::UNSET;
    spec.code = rest[1];
    spec.timeout_ms = static_cast<uint32_t>(timeout_s * 1000);
    auto r = c.exec(
        spec,
        [](nv::schema::Stream s, std::string_view d) {
          std::fwrite(d.data(), 1, d.size(), s == nv::schema::Stream::STDOUT ? stdout : stderr);
        },
        deadline() + std::chrono::seconds(5));
    if (!r.ok()) return fail(r.error());
    std::fprintf(stderr, "exit %d signal %d %.1f ms%s%s%s%s\n", r->exit_code, r->signal,
                 r->duration_ms, r->timed_out ? " timed-out" : "", r->truncated ? " truncated" : "",
                 r->error.empty() ? "" : " error: ", r->error.c_str());
    return r->exit_code == 0 ? 0 : 1;
  }
  if (cmd == "shutdown") {
    auto e = c.shutdown(deadline());
    return e ? fail(e) : 0;
  }
  return usage();
}
