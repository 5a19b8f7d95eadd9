// exec_harness.h — helpers shared by the exec tests (tests/vm/exec_test.cc,
// tests/integration/exec_scaleout_test.cc) and nothing else: run one ExecRequest through the bus
// and collect its partials and result, read the broker's status and event history.
#pragma once

#include <nv/schema/bus.capnp.h>
#include <nv/schema/events.capnp.h>
#include <nv/schema/exec.capnp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/client.h"
#include "common/frames.h"

namespace nv::test::exec {

using namespace std::chrono_literals;

struct ExecOptions {
  // Generous: node takes ~1 s to start under TCG on an idle machine, 15 s on a loaded one.
  uint32_t timeout_ms = 60000;
  uint32_t output_cap = 0;
  std::string stdin_data;
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::pair<std::string, std::string>> put;  // path, data
  std::vector<std::string> get;
  std::chrono::milliseconds deadline = 150s;
  std::string trace_id;  // "" = none
  // Called once with the first partial (the executor's "started vm=<id>" status chunk).
  std::function<void(const std::string&)> on_started;
};

struct ExecOutcome {
  bool ok = false;  // an ExecResult came back (else `error`)
  Error error;
  std::vector<std::pair<schema::Stream, std::string>> chunks;
  int exit_code = -1, signal = 0;
  bool timed_out = false, truncated = false, host_killed = false;
  std::string out, err, vm_id, note;
  std::string out_tail, err_tail;  // ExecResult.stdoutTail / stderrTail
  // The ExecResult itself (getRoot<schema::ExecResult>()), for code that renders it.
  std::shared_ptr<capnp::MallocMessageBuilder> result;
  uint64_t out_bytes = 0, err_bytes = 0;
  double wall_ms = 0;
  std::vector<std::pair<std::string, std::string>> files;  // path, data (found only)
  // Chunk bytes of one stream, in order.
  std::string streamed(schema::Stream s) const {
    std::string all;
    for (auto& [st, d] : chunks) {
      if (st == s) all += d;
    }
    return all;
  }
  std::string describe() const {
    if (!ok) return "error " + error.to_string();
    return "exit=" + std::to_string(exit_code) + " signal=" + std::to_string(signal) +
           " timed_out=" + std::to_string(timed_out) + " truncated=" + std::to_string(truncated) +
           " host_killed=" + std::to_string(host_killed) + " vm=" + vm_id + " note='" + note +
           "' stdout='" + out.substr(0, 300) + "' stderr='" + err.substr(0, 300) + "'";
  }
};

inline std::string as_string(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}
inline kj::ArrayPtr<const kj::byte> as_bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

inline ExecOutcome run_exec(Client& client, schema::Language language, const std::string& code,
                            const ExecOptions& o = {}) {
  capnp::MallocMessageBuilder mb;
  auto r = bus::init_body<schema::ExecRequest>(mb);
  r.setLanguage(language);
  r.setCode(code);
  r.setTimeoutMs(o.timeout_ms);
  r.setOutputCapBytes(o.output_cap);
  r.setStdin(as_bytes(o.stdin_data));
  auto env = r.initEnv(static_cast<unsigned>(o.env.size()));
  for (unsigned i = 0; i < o.env.size(); ++i) {
    env[i].setName(o.env[i].first);
    env[i].setValue(o.env[i].second);
  }
  auto puts = r.initPutFiles(static_cast<unsigned>(o.put.size()));
  for (unsigned i = 0; i < o.put.size(); ++i) {
    puts[i].setPath(o.put[i].first);
    puts[i].setData(as_bytes(o.put[i].second));
  }
  auto gets = r.initGetFiles(static_cast<unsigned>(o.get.size()));
  for (unsigned i = 0; i < o.get.size(); ++i) gets.set(i, o.get[i]);

  ExecOutcome out;
  uint64_t id = client.send("exec", &mb, o.deadline, o.trace_id);
  auto give_up = std::chrono::steady_clock::now() + o.deadline + 5s;
  bool started = false;
  while (std::chrono::steady_clock::now() < give_up) {
    auto in = client.receive(200ms);
    if (!in || in->header.request_id != id) continue;
    if (in->header.kind == bus::Kind::PARTIAL) {
      auto c = in->body.root<schema::ExecChunk>();
      if (!c) continue;
      out.chunks.emplace_back(c->getStream(), as_string(c->getData()));
      if (!started && o.on_started) o.on_started(out.chunks.back().second);
      started = true;
      continue;
    }
    if (in->header.kind == bus::Kind::ERROR) {
      out.error = in->error();
      return out;
    }
    auto res = in->body.root<schema::ExecResult>();
    if (!res) {
      out.error = res.error();
      return out;
    }
    out.ok = true;
    out.exit_code = res->getExitCode();
    out.signal = res->getSignal();
    out.timed_out = res->getTimedOut();
    out.truncated = res->getTruncated();
    out.host_killed = res->getHostKilled();
    out.out = as_string(res->getStdout());
    out.err = as_string(res->getStderr());
    out.out_tail = as_string(res->getStdoutTail());
    out.err_tail = as_string(res->getStderrTail());
    out.result = std::make_shared<capnp::MallocMessageBuilder>();
    out.result->setRoot(res.value());
    out.vm_id = res->getVmId();
    out.note = res->getNote();
    out.out_bytes = res->getStdoutBytes();
    out.err_bytes = res->getStderrBytes();
    out.wall_ms = res->getWallMs();
    for (auto f : res->getFiles()) {
      if (f.getFound()) out.files.emplace_back(f.getPath(), as_string(f.getData()));
    }
    return out;
  }
  out.error = make_error(ErrorCode::TIMED_OUT, "test: no final answer");
  return out;
}

// Registered "exec" workers and their capacity (nv.status).
struct WorkerInfo {
  std::string instance;
  uint32_t pid = 0, capacity = 0, in_flight = 0;
};
inline std::vector<WorkerInfo> exec_workers(Client& client) {
  std::vector<WorkerInfo> out;
  auto r = client.call("nv.status", nullptr, 2000ms);
  if (!r) return out;
  auto body = r->body.root<schema::StatusReply>();
  if (!body) return out;
  for (auto s : body->getServices()) {
    if (s.getService() != "exec") continue;
    out.push_back({s.getInstance(), s.getPid(), s.getCapacity(), s.getInFlight()});
  }
  return out;
}

// Waits until an "exec" worker is registered with free capacity (the pool has warm VMs).
inline bool wait_exec_capacity(Client& client, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    auto w = exec_workers(client);
    if (!w.empty() && w[0].capacity > 0) return true;
    std::this_thread::sleep_for(250ms);
  }
  return false;
}

// The pid of the executor that published exec.started for `trace_id` (0 when none yet).
inline uint32_t executor_of(Client& client, const std::string& trace_id) {
  capnp::MallocMessageBuilder mb;
  auto h = bus::init_body<schema::HistoryRequest>(mb);
  h.setTopicPrefix("exec.started");
  auto r = client.call("nv.events", &mb, 2000ms);
  if (!r) return 0;
  auto body = r->body.root<schema::HistoryReply>();
  if (!body) return 0;
  for (auto e : body->getEvents()) {
    if (e.getTraceId() == trace_id) return e.getPid();
  }
  return 0;
}

// vm.released events the orchestrator kept: the ids of the VMs destroyed so far.
inline std::vector<std::string> released_vms(Client& client) {
  std::vector<std::string> ids;
  capnp::MallocMessageBuilder mb;
  auto h = bus::init_body<schema::HistoryRequest>(mb);
  h.setTopicPrefix("vm.");
  auto r = client.call("nv.events", &mb, 2000ms);
  if (!r) return ids;
  auto body = r->body.root<schema::HistoryReply>();
  if (!body) return ids;
  for (auto e : body->getEvents()) {
    if (e.isVmReleased()) ids.push_back(e.getVmReleased().getVmId());
    if (e.isVmFailed()) ids.push_back(e.getVmFailed().getVmId());
  }
  return ids;
}

}  // namespace nv::test::exec
