// Observability as the seed documented it, against real components: a real nv-orchestrator and
// nv-metrics-exporter on a fresh runtime dir, one agent task's events published over the real
// bus by publishers named like the services, spans sent over real HTTP to an OTLP/HTTP receiver
// written with python's http.server (tests/fixtures/otlp_receiver.py, which answers the first
// request 503 so the retry is exercised), /metrics scraped over HTTP, and the files in deploy/
// checked: the Grafana dashboard is valid JSON and every metric its queries name is served, the
// Prometheus scrape config passes `promtool check config`.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/events.h"
#include "common/frames.h"
#include "common/trace_id.h"
#include "support/http.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::test::Process;

using nv::test::series_value;

// Whether the scrape has a sample of metric `name` (any labels).
bool serves(const std::string& scrape, const std::string& name) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        (line[name.size()] == '{' || line[name.size()] == ' ')) {
      return true;
    }
  }
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string attr(const rapidjson::Value& attrs, const std::string& key) {
  for (const auto& a : attrs.GetArray()) {
    if (key == a["key"].GetString()) {
      const auto& v = a["value"];
      if (v.HasMember("stringValue")) return v["stringValue"].GetString();
      if (v.HasMember("intValue")) return v["intValue"].GetString();
      if (v.HasMember("boolValue")) return v["boolValue"].GetBool() ? "true" : "false";
    }
  }
  return "<missing>";
}

struct SpanSeen {
  std::string service, trace_id, span_id, parent_id, name;
  int kind = 0, status = -1;
  int64_t start = 0, end = 0;
  std::map<std::string, std::string> attrs;
};

class Observability : public ::testing::Test {
 protected:
  void SetUp() override {
    if (nv::test::bin("nv-orchestrator").empty()) GTEST_SKIP() << "NV_BIN_DIR is not set";
    if (nv::test::find_program("python3").empty()) GTEST_SKIP() << "python3 is not installed";
  }
  std::map<std::string, std::string> env() const { return {{"NV_RUNTIME_DIR", rt_.path()}}; }

  nv::test::TempDir rt_{"nv-observe"};
};

TEST_F(Observability, ATasksEventsBecomeOtlpSpansAndTheSeedsMetricsAndTheDashboardIsServed) {
  // The OTLP receiver (port printed on its first line).
  std::string received = rt_.file("otlp.jsonl");
  auto receiver =
      Process::start({.binary = nv::test::find_program("python3"),
                      .args = {nv::test::source_dir() + "/tests/fixtures/otlp_receiver.py", "0",
                               received, "--fail-first", "1"}});
  std::string port_line;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        port_line = receiver.stdout_text();
        return port_line.find('\n') != std::string::npos;
      },
      10s))
      << receiver.stderr_text();
  int otlp_port = std::stoi(port_line);

  auto orch = Process::start(nv::test::service_process(nv::test::bin("nv-orchestrator"),
                                                       {"--status-interval-ms", "300"}, env()));
  ASSERT_TRUE(nv::test::wait_until([&] { return rt_.has("events.sock"); }, 10s))
      << orch.stderr_text();
  int port = nv::test::free_loopback_port();
  auto exporter = Process::start(nv::test::service_process(
      nv::test::bin("nv-metrics-exporter"),
      {"--listen", "127.0.0.1:" + std::to_string(port), "--otlp-endpoint",
       "http://127.0.0.1:" + std::to_string(otlp_port), "--trace-linger-ms", "300"},
      env()));
  auto scrape = [&] {
    auto r = nv::test::http_get("127.0.0.1", port, "/metrics", 1000ms);
    return r && r->status == 200 ? r->body : std::string();
  };
  ASSERT_TRUE(nv::test::wait_until([&] { return !scrape().empty(); }, 15s))
      << exporter.stderr_text();

  // One task, as the services publish it.
  zmq::context_t ctx(1);
  std::string events_in = nv::bus::ipc_endpoint(rt_.file("events-in.sock"));
  nv::EventPublisher orch_pub(ctx, events_in, "orchestrator", "h/orchestrator/1");
  nv::EventPublisher llm_pub(ctx, events_in, "llm-gateway", "h/llm-gateway/2");
  nv::EventPublisher exec_pub(ctx, events_in, "sandbox-executor", "h/sandbox-executor/3");
  nv::EventPublisher pool_pub(ctx, events_in, "vm-pool-manager", "h/vm-pool-manager/4");
  const std::string trace = nv::new_uuid_v7();
  std::string hex_trace;
  for (char c : trace) {
    if (c != '-') hex_trace.push_back(c);
  }
  auto step = [] { std::this_thread::sleep_for(30ms); };
  namespace s = nv::schema;
  orch_pub.publish(
      "task.started", [](s::Event::Builder e) { e.initTaskStarted().setModel("qwen2.5-coder:7b"); },
      trace);
  step();
  auto llm_call = [&] {
    llm_pub.publish(
        "llm.call",
        [](s::Event::Builder e) {
          auto p = e.initLlmCall();
          p.setModel("qwen2.5-coder:7b");
          p.setApi("ollama");
          p.setDurationMs(10);
          p.setPromptTokens(30);
          p.setCompletionTokens(12);
          p.setOutcome("ok");
        },
        trace);
  };
  llm_call();
  step();
  pool_pub.publish(
      "vm.acquired",
      [](s::Event::Builder e) {
        auto p = e.initVmAcquired();
        p.setVmId("vm-a");
        p.setTier(s::SizeTier::SMALL);
        p.setWaitMs(0.5);
      },
      trace);
  exec_pub.publish(
      "exec.started",
      [](s::Event::Builder e) {
        auto p = e.initExecStarted();
        p.setVmId("vm-a");
        p.setLanguage(s::Language::PYTHON);
      },
      trace);
  step();
  // cgroup counters of the leased VM and of a warm one (no trace: the pool's periodic stats).
  for (const char* vm : {"vm-a", "vm-b"}) {
    pool_pub.publish("vm.stats", [vm](s::Event::Builder e) {
      auto p = e.initVmStats();
      p.setVmId(vm);
      p.setMemoryBytes(64 << 20);
      p.setCpuThrottledPeriods(5);
      p.setCpuThrottledUs(12000);
    });
  }
  step();
  exec_pub.publish(
      "exec.finished",
      [](s::Event::Builder e) {
        auto p = e.initExecFinished();
        p.setVmId("vm-a");
        p.setLanguage(s::Language::PYTHON);
        p.setDurationMs(40);  // lease + run, as the executor measures its request
        p.setStatus("ok");
        p.setOutputBytes(20);
      },
      trace);
  pool_pub.publish(
      "vm.released",
      [](s::Event::Builder e) {
        auto p = e.initVmReleased();
        p.setVmId("vm-a");
        p.setTier(s::SizeTier::SMALL);
        p.setReason("released");
        p.setLeasedMs(70);
      },
      trace);
  step();
  llm_call();
  step();
  orch_pub.publish(
      "task.finished",
      [](s::Event::Builder e) {
        auto p = e.initTaskFinished();
        p.setStatus("completed");
        p.setIterations(2);
        p.setToolCalls(1);
        p.setDurationMs(200);
      },
      trace);
  // What the other panels of the dashboard need: the pool, boots, failures, the sentinel.
  pool_pub.publish("pool.status", [](s::Event::Builder e) {
    auto t = e.initPoolStatus().initTiers(1)[0];
    t.setTier(s::SizeTier::SMALL);
    t.setWarm(1);
  });
  pool_pub.publish("vm.booted", [](s::Event::Builder e) {
    auto p = e.initVmBooted();
    p.setVmId("vm-b");
    p.setTier(s::SizeTier::SMALL);
    p.setBackend("qemu");
    p.setAccel("tcg");
    p.setBootMs(300);
    p.setRestored(true);
  });
  pool_pub.publish("vm.failed", [](s::Event::Builder e) {
    auto p = e.initVmFailed();
    p.setVmId("vm-c");
    p.setTier(s::SizeTier::SMALL);
    p.setReason("boot timed out");
  });
  orch_pub.publish("security.alert", [](s::Event::Builder e) {
    auto p = e.initSecurityAlert();
    p.setKind("egress_denied");
    p.setVmId("vm-b");
  });
  orch_pub.publish("sentinel.syscalls", [](s::Event::Builder e) {
    auto p = e.initSyscallCounts().initEntries(1)[0];
    p.setVmId("vm-b");
    p.setCount(99);
  });

  // --- the seed's metric names, with values.
  std::string text;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        text = scrape();
        return series_value(text, R"(neurovisor_agent_tasks{status="completed"})") == 1.0 &&
               series_value(text, "neurovisor_ebpf_syscall_total{vm_id=\"vm-b\"}") == 99.0;
      },
      15s))
      << text;
  EXPECT_EQ(series_value(text, R"(neurovisor_agent_tasks{status="running"})"), 0);
  EXPECT_EQ(series_value(text, R"(neurovisor_agent_tasks_total{status="completed"})"), 1);
  EXPECT_EQ(series_value(text, R"(neurovisor_cgroup_cpu_throttled_total{vm_id="vm-b"})"), 5);
  EXPECT_EQ(series_value(text, R"(neurovisor_cgroup_cpu_throttled_seconds_total{vm_id="vm-b"})"),
            0.012);
  // The leased VM's series went with its release; its periods stay in the all-VM sum.
  EXPECT_FALSE(series_value(text, R"(neurovisor_cgroup_cpu_throttled_total{vm_id="vm-a"})"));
  EXPECT_EQ(series_value(text, "neurovisor_cgroup_cpu_throttled_periods_total"), 10);

  // --- the spans, as the receiver got them.
  std::vector<SpanSeen> spans;
  std::set<std::string> services;
  ASSERT_TRUE(nv::test::wait_until(
      [&] {
        spans.clear();
        services.clear();
        std::istringstream lines(read_file(received));
        std::string line;
        while (std::getline(lines, line)) {
          rapidjson::Document d;
          d.Parse(line.c_str());
          if (d.HasParseError() || !d.HasMember("resourceSpans")) continue;
          for (const auto& rs : d["resourceSpans"].GetArray()) {
            std::string service = attr(rs["resource"]["attributes"], "service.name");
            services.insert(service);
            for (const auto& ss : rs["scopeSpans"].GetArray()) {
              EXPECT_STREQ(ss["scope"]["name"].GetString(), "nv-metrics-exporter");
              for (const auto& sp : ss["spans"].GetArray()) {
                SpanSeen x;
                x.service = service;
                x.trace_id = sp["traceId"].GetString();
                x.span_id = sp["spanId"].GetString();
                if (sp.HasMember("parentSpanId")) x.parent_id = sp["parentSpanId"].GetString();
                x.name = sp["name"].GetString();
                x.kind = sp["kind"].GetInt();
                x.status = sp["status"]["code"].GetInt();
                // 64-bit integers are decimal strings in OTLP/JSON (proto3 JSON mapping).
                x.start = std::stoll(sp["startTimeUnixNano"].GetString());
                x.end = std::stoll(sp["endTimeUnixNano"].GetString());
                for (const auto& a : sp["attributes"].GetArray()) {
                  x.attrs[a["key"].GetString()] = attr(sp["attributes"], a["key"].GetString());
                }
                spans.push_back(x);
              }
            }
          }
        }
        return spans.size() >= 6;
      },
      20s, 100ms))
      << "received: " << read_file(received) << "\nexporter: " << exporter.stderr_text();
  ASSERT_EQ(spans.size(), 6u) << read_file(received);
  EXPECT_EQ(services, (std::set<std::string>{"orchestrator", "llm-gateway", "sandbox-executor",
                                             "vm-pool-manager"}));
  std::map<std::string, std::vector<const SpanSeen*>> by_name;
  for (const auto& x : spans) {
    by_name[x.name].push_back(&x);
    EXPECT_EQ(x.trace_id, hex_trace) << x.name;
    EXPECT_EQ(x.span_id.size(), 16u) << x.name;
    EXPECT_LE(x.start, x.end) << x.name;
  }
  ASSERT_EQ(by_name["task"].size(), 1u);
  ASSERT_EQ(by_name["chat qwen2.5-coder:7b"].size(), 2u);
  ASSERT_EQ(by_name["execute_tool execute_code"].size(), 1u);
  ASSERT_EQ(by_name["vm.lease"].size(), 1u);
  ASSERT_EQ(by_name["exec python"].size(), 1u);
  const SpanSeen& task = *by_name["task"][0];
  const SpanSeen& tool = *by_name["execute_tool execute_code"][0];
  const SpanSeen& lease = *by_name["vm.lease"][0];
  const SpanSeen& run = *by_name["exec python"][0];
  // task → model call, task → tool call → lease → exec.
  EXPECT_EQ(task.parent_id, "");
  EXPECT_EQ(task.kind, 2);    // SPAN_KIND_SERVER
  EXPECT_EQ(task.status, 1);  // STATUS_CODE_OK
  EXPECT_EQ(task.service, "orchestrator");
  EXPECT_EQ(task.attrs.at("neurovisor.task.status"), "completed");
  for (const SpanSeen* chat : by_name["chat qwen2.5-coder:7b"]) {
    EXPECT_EQ(chat->parent_id, task.span_id);
    EXPECT_EQ(chat->kind, 3);  // SPAN_KIND_CLIENT
    EXPECT_EQ(chat->service, "llm-gateway");
    EXPECT_EQ(chat->end - chat->start, 10'000'000);  // durationMs 10
    EXPECT_EQ(chat->attrs.at("gen_ai.usage.output_tokens"), "12");
    EXPECT_GE(chat->start, task.start);
    EXPECT_LE(chat->end, task.end);
  }
  EXPECT_EQ(tool.parent_id, task.span_id);
  EXPECT_EQ(tool.end - tool.start, 40'000'000);
  EXPECT_EQ(tool.attrs.at("gen_ai.tool.name"), "execute_code");
  EXPECT_EQ(lease.parent_id, tool.span_id);
  EXPECT_EQ(lease.service, "vm-pool-manager");
  EXPECT_EQ(lease.attrs.at("neurovisor.vm_id"), "vm-a");
  EXPECT_EQ(lease.attrs.at("neurovisor.lease.released"), "true");
  EXPECT_EQ(run.parent_id, lease.span_id);
  EXPECT_EQ(run.service, "sandbox-executor");
  EXPECT_GE(run.start, lease.start);
  EXPECT_LE(run.end, lease.end);
  EXPECT_GE(lease.start, task.start);
  EXPECT_LE(tool.end, task.end);
  // The 503 was retried; all six spans counted as exported.
  EXPECT_TRUE(nv::test::wait_until(
      [&] { return series_value(scrape(), "neurovisor_trace_spans_exported_total") == 6.0; }, 5s))
      << scrape();

  // --- deploy/grafana: valid JSON, every metric a query names is served.
  std::string dash_text =
      read_file(nv::test::source_dir() + "/deploy/grafana/neurovisor-dashboard.json");
  rapidjson::Document dash;
  dash.Parse(dash_text.c_str());
  ASSERT_FALSE(dash.HasParseError()) << "offset " << dash.GetErrorOffset();
  ASSERT_TRUE(dash.HasMember("panels") && dash["panels"].IsArray());
  text = scrape();
  std::regex metric_re("neurovisor_[a-z0-9_]+");
  size_t queries = 0;
  std::set<std::string> names;
  for (const auto& panel : dash["panels"].GetArray()) {
    ASSERT_TRUE(panel.HasMember("targets")) << panel["title"].GetString();
    for (const auto& t : panel["targets"].GetArray()) {
      std::string expr = t["expr"].GetString();
      ++queries;
      size_t in_expr = 0;
      for (std::sregex_iterator m(expr.begin(), expr.end(), metric_re), end; m != end; ++m) {
        names.insert(m->str());
        ++in_expr;
      }
      EXPECT_GT(in_expr, 0u) << "a query names no NeuroVisor metric: " << expr;
    }
  }
  EXPECT_GE(queries, 20u);
  for (const auto& n : names) EXPECT_TRUE(serves(text, n)) << n << " is not served:\n" << text;
  // The seed's names are on the dashboard.
  EXPECT_TRUE(names.count("neurovisor_agent_tasks"));
  EXPECT_TRUE(names.count("neurovisor_cgroup_cpu_throttled_total"));

  // --- deploy/prometheus: promtool accepts the scrape config.
  std::string promtool = nv::test::find_program("promtool");
  if (!promtool.empty()) {
    auto check =
        nv::test::run({.binary = promtool,
                       .args = {"check", "config",
                                nv::test::source_dir() + "/deploy/prometheus/prometheus.yml"}});
    EXPECT_EQ(check.status.code, 0) << check.out << check.err;
    // And the scrape with the new names still passes promtool's lint.
    auto lint =
        nv::test::run({.binary = promtool, .args = {"check", "metrics"}, .stdin_text = text});
    EXPECT_EQ(lint.status.code, 0) << lint.out << lint.err;
  }

  auto st = exporter.terminate(15s);
  EXPECT_TRUE(st.clean()) << st.describe() << exporter.stderr_text();
  EXPECT_TRUE(orch.terminate(15s).clean());
  receiver.terminate(5s);
}

}  // namespace
