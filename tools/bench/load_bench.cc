// nv-bench load — N concurrent code executions through a running stack, as N `nv-exec`s would
// send them (issue 11, finding 6). Attaches to the stack of `./nv up` (--runtime-dir).
//
// For each N in --levels, N clients (one socket each) send one ExecRequest at the same moment,
// with nv-exec's defaults (run timeout 10 s, deadline timeout + 60 s), and wait for the answer.
// Reported per N: executions served, refused with `overloaded` at once (< 1 s), and failed any
// other way or late — with each distinct error message and its count — the wall time, and the
// throughput (served executions per second of wall time). The acceptance is: nothing fails
// late, nothing but `overloaded` is refused.
#include <nv/schema/exec.capnp.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/config.h"
#include "common/log.h"
#include "common/service.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Level {
  int n = 0, served = 0, refused_at_once = 0, other = 0;
  double wall_s = 0, slowest_refusal_ms = 0;
  std::map<std::string, int> messages;  // "code: message" of every error but fast overloads
};

Level run_level(zmq::context_t& ctx, const std::string& endpoint, int n, const std::string& code,
                double timeout_s) {
  Level lv;
  lv.n = n;
  std::mutex mu;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  auto deadline = std::chrono::milliseconds(static_cast<int64_t>((timeout_s + 60) * 1000));
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      nv::Client client(ctx, nv::ClientOptions{endpoint, {}, {}, {}});
      capnp::MallocMessageBuilder mb;
      auto req = nv::bus::init_body<nv::schema::ExecRequest>(mb);
      req.setLanguage(nv::schema::Language::PYTHON);
      req.setCode(code);
      req.setTimeoutMs(static_cast<uint32_t>(timeout_s * 1000));
      req.setTier(nv::schema::SizeTier::SMALL);
      ++ready;
      while (!go) std::this_thread::sleep_for(1ms);
      auto sent = Clock::now();
      auto r = client.call("exec", &mb, deadline);
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
      std::lock_guard lock(mu);
      if (r) {
        ++lv.served;
      } else if (r.error().code == nv::ErrorCode::OVERLOADED && ms < 1000) {
        ++lv.refused_at_once;
        lv.slowest_refusal_ms = std::max(lv.slowest_refusal_ms, ms);
      } else {
        ++lv.other;
        ++lv.messages[r.error().to_string() +
                      (ms >= 1000 ? " (after " + std::to_string(std::lround(ms / 1000)) + " s)"
                                  : "")];
      }
    });
  }
  while (ready < n) std::this_thread::sleep_for(1ms);
  t0 = Clock::now();
  go = true;
  for (auto& t : threads) t.join();
  lv.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return lv;
}

}  // namespace

int run_load_bench(int argc, char** argv) {
  nv::Config c("nv-bench load",
               "N concurrent executions through a running stack (`./nv up`), as N nv-exec's:\n"
               "served, refused with `overloaded` at once, failed otherwise; executions/s.");
  c.add_string("runtime-dir", "", "the stack's runtime dir (\"\" = the default one)");
  c.add_string("levels", "10,50,200", "concurrency levels, comma-separated");
  c.add_string("code", "print(1)", "the python program each execution runs");
  c.add_int("timeout", 10, "run timeout in seconds (the deadline is this + 60 s, as nv-exec)");
  c.add_int("pause", 5, "seconds between levels (lets the pool refill)");
  auto st = c.parse(argc, argv);
  if (c.help_requested()) {
    std::fputs(c.help().c_str(), stdout);
    return 0;
  }
  if (!st) {
    std::fprintf(stderr, "nv-bench load: %s\n", st.error().message.c_str());
    return 2;
  }
  nv::log::init("nv-bench", nv::log::Level::warn);
  std::string rt = c.str("runtime-dir").empty() ? nv::default_runtime_dir() : c.str("runtime-dir");
  std::string endpoint = nv::bus::ipc_endpoint(rt + "/clients.sock");
  zmq::context_t ctx(2);
  {
    nv::Client probe(ctx, nv::ClientOptions{endpoint, {}, {}, {}});
    auto r = probe.call("nv.status", nullptr, 2s);
    if (!r) {
      std::fprintf(stderr, "nv-bench load: no stack at %s (%s); start it: ./nv up\n",
                   endpoint.c_str(), r.error().to_string().c_str());
      return 1;
    }
  }
  std::vector<int> levels;
  std::stringstream ss(c.str("levels"));
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) levels.push_back(std::max(1, std::stoi(item)));
  }
  std::printf("nv-bench load: %s, program %s, run timeout %lld s\n\n", endpoint.c_str(),
              c.str("code").c_str(), static_cast<long long>(c.integer("timeout")));
  std::printf("  %6s %8s %18s %8s %9s %14s %16s\n", "N", "served", "overloaded at once", "other",
              "wall s", "executions/s", "slowest refusal");
  bool ok = true;
  for (size_t i = 0; i < levels.size(); ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::seconds(c.integer("pause")));
    auto lv = run_level(ctx, endpoint, levels[i], c.str("code"),
                        static_cast<double>(c.integer("timeout")));
    std::printf("  %6d %8d %18d %8d %9.1f %14.2f %13.0f ms\n", lv.n, lv.served, lv.refused_at_once,
                lv.other, lv.wall_s, lv.served / lv.wall_s, lv.slowest_refusal_ms);
    for (auto& [m, k] : lv.messages) std::printf("           %4d x %s\n", k, m.c_str());
    std::fflush(stdout);
    ok = ok && lv.other == 0;
  }
  std::printf("\n  acceptance (each served or refused at once; nothing else): %s\n",
              ok ? "met" : "MISSED");
  return ok ? 0 : 1;
}
