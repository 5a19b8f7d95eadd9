// nv-bench output — guest output throughput: the same 1.29 MB of text (the numbers 0..199999,
// one a line) written by a program in one write, in 4 KiB stdio blocks (bash's seq) and in
// 200,000 small writes (python's print, unbuffered as the guest runs it), each through the whole
// stack (ExecRequest → executor → guest agent → chunks back to this client), interleaved run by
// run in one process. Reports MB/s of program output delivered (bytes received / wall time from
// request to result) and the guest's own run time, per shape, and small/big as a ratio.
//
// Either attaches to a running stack (--runtime-dir of `./nv up`) or starts its own (see
// bench_stack.h).
#include <nv/schema/exec.capnp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_stack.h"
#include "common/client.h"
#include "common/frames.h"
#include "common/interrupt.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Shape {
  const char* name;
  nv::schema::Language language;
  const char* code;
};

// Each prints exactly the bytes of `seq 0 199999` (1,288,890 bytes).
const Shape kShapes[] = {
    {"one write", nv::schema::Language::PYTHON,
     "import sys\nsys.stdout.write(''.join('%d\\n' % i for i in range(200000)))"},
    {"4 KiB blocks", nv::schema::Language::BASH, "seq 0 199999"},
    {"200k small writes", nv::schema::Language::PYTHON, "for i in range(200000): print(i)"},
};
constexpr uint64_t kBytes = 1288890;

struct Sample {
  double wall_ms = 0, guest_ms = 0;
  uint64_t received = 0;
  std::string error;
};

Sample run_once(nv::Client& client, const Shape& s) {
  capnp::MallocMessageBuilder mb;
  auto r = nv::bus::init_body<nv::schema::ExecRequest>(mb);
  r.setLanguage(s.language);
  r.setCode(s.code);
  r.setTimeoutMs(120000);
  r.setOutputCapBytes(4u << 20);
  Sample out;
  auto t0 = Clock::now();
  auto res = client.call("exec", &mb, 180s, [&](nv::Client::Incoming& in) {
    auto c = in.body.root<nv::schema::ExecChunk>();
    if (c && c->getStream() == nv::schema::Stream::STDOUT) out.received += c->getData().size();
  });
  out.wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!res) {
    out.error = res.error().to_string();
    return out;
  }
  auto body = res->body.root<nv::schema::ExecResult>();
  if (!body) {
    out.error = body.error().to_string();
    return out;
  }
  out.guest_ms = body->getDurationMs();
  if (body->getTimedOut() || body->getExitCode() != 0 || body->getStdoutBytes() != kBytes) {
    out.error = "exit " + std::to_string(body->getExitCode()) + ", timed out " +
                std::to_string(body->getTimedOut()) + ", " +
                std::to_string(body->getStdoutBytes()) + " bytes written, " +
                std::to_string(out.received) + " received";
  }
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int run_output_bench(int argc, char** argv) {
  int runs = 3;
  std::string runtime_dir, kernel, rootfs, accel = "tcg";
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--help" || k == "-h") {
      std::printf(
          "usage: nv-bench output [--runs N] [--runtime-dir RT] [--kernel K --rootfs R "
          "--accel tcg|kvm|auto]\nGuest output throughput: one big write vs 4 KiB "
          "blocks vs 200k small writes of the same 1.29 MB, through the whole stack.\n");
      return 0;
    } else if (k == "--runs") {
      runs = std::max(1, std::atoi(next().c_str()));
    } else if (k == "--runtime-dir") {
      runtime_dir = next();
    } else if (k == "--kernel") {
      kernel = next();
    } else if (k == "--rootfs") {
      rootfs = next();
    } else if (k == "--accel") {
      accel = next();
    } else {
      std::fprintf(stderr, "nv-bench output: unknown option %s (see --help)\n", k.c_str());
      return 2;
    }
  }
  nv::bench::OwnStack own;
  std::string rt = nv::bench::start_exec_stack("output", own, runtime_dir, kernel, rootfs, accel);
  if (rt.empty()) return 1;
  zmq::context_t ctx(1);
  nv::Client client(ctx, {nv::bus::ipc_endpoint(rt + "/clients.sock"), {}, {}, {}});
  if (!nv::bench::wait_exec_ready(client, 180s)) {
    if (nv::interrupt::requested()) return 1;  // main.cc said why and exits 128 + signal
    std::fprintf(stderr, "nv-bench output: no executor with capacity within 180 s\n");
    return 1;
  }
  std::vector<std::vector<double>> wall(std::size(kShapes)), guest(std::size(kShapes));
  for (int run = 0; run < runs && !nv::interrupt::requested(); ++run) {
    for (size_t i = 0; i < std::size(kShapes); ++i) {
      Sample s = run_once(client, kShapes[i]);
      if (nv::interrupt::requested()) break;
      if (!s.error.empty()) {
        std::fprintf(stderr, "nv-bench output: %s: %s (after %.0f ms)\n", kShapes[i].name,
                     s.error.c_str(), s.wall_ms);
        continue;
      }
      wall[i].push_back(s.wall_ms);
      guest[i].push_back(s.guest_ms);
      std::fprintf(stderr, "  run %d %-18s wall %7.0f ms  guest %7.0f ms  %6.2f MB/s\n", run + 1,
                   kShapes[i].name, s.wall_ms, s.guest_ms, kBytes / 1e3 / s.wall_ms);
    }
  }
  if (nv::interrupt::requested()) return 1;  // main.cc exits 128 + signal
  std::printf("nv-bench output: %llu bytes per run, medians of %d runs\n",
              static_cast<unsigned long long>(kBytes), runs);
  std::printf("%-18s %10s %10s %10s\n", "shape", "wall ms", "guest ms", "MB/s");
  for (size_t i = 0; i < std::size(kShapes); ++i) {
    double w = median(wall[i]);
    std::printf("%-18s %10.0f %10.0f %10.2f\n", kShapes[i].name, w, median(guest[i]),
                w > 0 ? kBytes / 1e3 / w : 0.0);
  }
  double big = median(wall[0]), small = median(wall[2]);
  if (big > 0 && small > 0) {
    std::printf("200k small writes take %.2fx the time of one write\n", small / big);
  }
  return 0;
}
