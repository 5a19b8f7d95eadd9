// nv-metrics-exporter and nv-audit against a real nv-orchestrator: child processes on a fresh
// runtime dir, events published over the real bus, /metrics scraped over real HTTP and checked
// with the real promtool, the history read back by nv-audit, and a clean SIGTERM for everyone.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/client.h"
#include "common/events.h"
#include "common/frames.h"
#include "support/http.h"
#include "support/process.h"

namespace {

using namespace std::chrono_literals;
using nv::test::Process;
using nv::test::ProcessOptions;

// The value of the series written exactly as `series` (name{labels} as the exporter prints it).
std::optional<double> series_value(const std::string& scrape, const std::string& series) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

// Each thread of `pid`: its id, name and effective capability mask (/proc/PID/task/TID/status).
struct ThreadCaps {
  std::string tid, comm;
  unsigned long long cap_eff = ~0ull;
};
std::vector<ThreadCaps> thread_caps(pid_t pid) {
  std::vector<ThreadCaps> out;
  std::error_code ec;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    ThreadCaps t;
    t.tid = entry.path().filename().string();
    std::ifstream comm(entry.path() / "comm");
    std::getline(comm, t.comm);
    std::ifstream status(entry.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("CapEff:", 0) == 0) t.cap_eff = std::stoull(line.substr(7), nullptr, 16);
    }
    out.push_back(t);
  }
  return out;
}

// One orchestrator and one exporter on their own runtime dir and loopback port.
class MetricsStack : public ::testing::Test {
 protected:
  void SetUp() override {
    if (nv::test::bin("nv-orchestrator").empty()) GTEST_SKIP() << "NV_BIN_DIR is not set";
    port_ = nv::test::free_loopback_port();
  }

  std::map<std::string, std::string> env() const { return {{"NV_RUNTIME_DIR", rt_.path()}}; }

  void start_orchestrator() {
    orchestrator_.emplace(Process::start({.binary = nv::test::bin("nv-orchestrator"),
                                          .args = {"--status-interval-ms", "300"},
                                          .env = env()}));
    ASSERT_TRUE(nv::test::wait_until(
        [&] { return rt_.has("events.sock") && rt_.has("clients.sock"); }, 10s))
        << orchestrator_->stderr_text();
  }

  void start_exporter(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--listen", "127.0.0.1:" + std::to_string(port_)};
    args.insert(args.end(), extra.begin(), extra.end());
    exporter_.emplace(Process::start(
        {.binary = nv::test::bin("nv-metrics-exporter"), .args = args, .env = env()}));
    ASSERT_TRUE(nv::test::wait_until(
        [&] {
          auto r = nv::test::http_get("127.0.0.1", port_, "/metrics", 500ms);
          return r && r->status == 200;
        },
        10s))
        << exporter_->stderr_text();
  }

  std::string scrape() {
    auto r = nv::test::http_get("127.0.0.1", port_, "/metrics");
    return r && r->status == 200 ? r->body : std::string();
  }

  // Scrapes until `series` has `value` (or 10 s pass); returns the last scrape for messages.
  bool wait_for_series(const std::string& series, double value, std::string* last = nullptr) {
    std::string text;
    bool ok = nv::test::wait_until(
        [&] {
          text = scrape();
          auto v = series_value(text, series);
          return v && *v == value;
        },
        10s, 100ms);
    if (last) *last = text;
    return ok;
  }

  nv::test::RunResult audit(std::vector<std::string> args) {
    return nv::test::run({.binary = nv::test::bin("nv-audit"), .args = std::move(args),
                          .env = env()},
                         20s);
  }

  void stop_all_and_check_clean() {
    if (exporter_) {
      auto st = exporter_->terminate(15s);
      EXPECT_TRUE(st.clean()) << "exporter: " << st.describe() << "\n" << exporter_->stderr_text();
    }
    if (orchestrator_) {
      auto st = orchestrator_->terminate(15s);
      EXPECT_TRUE(st.clean()) << "orchestrator: " << st.describe() << "\n"
                              << orchestrator_->stderr_text();
    }
    for (const auto& name : rt_.list()) {
      EXPECT_EQ(name.find(".sock"), std::string::npos) << "socket file left behind: " << name;
    }
  }

  nv::test::TempDir rt_{"nv-metrics"};
  int port_ = 0;
  std::optional<Process> orchestrator_;
  std::optional<Process> exporter_;
};

TEST_F(MetricsStack, EventsBecomeMetricsThatPassPromtoolAndAuditShowsTheServices) {
  start_orchestrator();
  start_exporter();

  // Capabilities are per thread: the main thread and the HTTP (civetweb) threads that face the
  // network must hold none, even when the exporter was started as root.
  bool saw_http_thread = false;
  for (const auto& t : thread_caps(exporter_->pid())) {
    bool http = t.comm.rfind("civetweb", 0) == 0;
    saw_http_thread |= http;
    if (http || t.tid == std::to_string(exporter_->pid())) {
      EXPECT_EQ(t.cap_eff, 0u) << "thread " << t.tid << " (" << t.comm << ") has capabilities";
    }
  }
  EXPECT_TRUE(saw_http_thread);
  // And the seccomp allow-list is on (mode 2 = filter) once it has started.
  auto seccomp_mode = [&] {
    std::ifstream status("/proc/" + std::to_string(exporter_->pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("Seccomp:", 0) == 0) return std::stoi(line.substr(8));
    }
    return -1;
  };
  EXPECT_TRUE(nv::test::wait_until([&] { return seccomp_mode() == 2; }, 5s))
      << "Seccomp: " << seccomp_mode();

  zmq::context_t ctx(1);
  nv::EventPublisher pub(ctx, nv::bus::ipc_endpoint(rt_.file("events-in.sock")), "test",
                         "h/test/1");
  auto exec_ok = [](nv::schema::Event::Builder e) {
    auto p = e.initExecFinished();
    p.setLanguage(nv::schema::Language::PYTHON);
    p.setVmId("vm-7");
    p.setDurationMs(250);
    p.setStatus("ok");
  };
  pub.publish("exec.finished", exec_ok);
  pub.publish("exec.finished", exec_ok);
  pub.publish("vm.stats", [](nv::schema::Event::Builder e) {
    auto p = e.initVmStats();
    p.setVmId("vm-7");
    p.setMemoryBytes(4096);
    p.setCpuThrottledPeriods(3);
  });
  pub.publish("llm.call", [](nv::schema::Event::Builder e) {
    auto p = e.initLlmCall();
    p.setModel("qwen2.5-coder:7b");
    p.setDurationMs(1200);
    p.setCompletionTokens(42);
  });
  pub.publish("security.alert", [](nv::schema::Event::Builder e) {
    auto p = e.initSecurityAlert();
    p.setKind("egress_denied");
    p.setDetail("connect 10.0.0.1:80 \"denied\"\n");  // free text stays out of the labels
  });
  // Invalid: a language past the enum. Counted, and the exporter keeps serving.
  pub.publish("exec.finished", [](nv::schema::Event::Builder e) {
    auto p = e.initExecFinished();
    p.setLanguage(static_cast<nv::schema::Language>(77));
    p.setStatus("ok");
  });

  std::string text;
  EXPECT_TRUE(wait_for_series(
      R"(neurovisor_code_executions_total{language="python",status="ok"})", 2, &text))
      << text;
  EXPECT_EQ(series_value(text, R"(neurovisor_cgroup_memory_usage_bytes{vm_id="vm-7"})"), 4096);
  EXPECT_EQ(series_value(text, "neurovisor_cgroup_cpu_throttled_periods_total"), 3);
  EXPECT_EQ(series_value(text, R"(neurovisor_tokens_generated_total{model="qwen2.5-coder:7b"})"),
            42);
  EXPECT_EQ(series_value(text, R"(neurovisor_security_alerts_total{kind="egress_denied"})"), 1);
  EXPECT_EQ(series_value(text, R"(neurovisor_events_invalid_total{reason="bad_enum"})"), 1);
  EXPECT_EQ(series_value(
                text, R"(neurovisor_code_execution_duration_seconds_count{language="python"})"),
            2);
  // Both services are up: the orchestrator's start came from the replayed history.
  EXPECT_EQ(series_value(text, R"(neurovisor_services_up{service="orchestrator"})"), 1) << text;
  EXPECT_EQ(series_value(text, R"(neurovisor_services_up{service="metrics-exporter"})"), 1);
  // broker.status (every 300 ms here) shows the exporter's presence registration.
  EXPECT_TRUE(wait_for_series(R"(neurovisor_broker_workers{service="metrics-exporter"})", 1,
                              &text))
      << text;

  // Releasing the VM removes its series.
  pub.publish("vm.released", [](nv::schema::Event::Builder e) {
    auto p = e.initVmReleased();
    p.setVmId("vm-7");
    p.setTier(nv::schema::SizeTier::SMALL);
    p.setLeasedMs(900);
  });
  EXPECT_TRUE(wait_for_series(R"(neurovisor_vm_leased_seconds_count{tier="small"})", 1, &text))
      << text;
  EXPECT_FALSE(series_value(text, R"(neurovisor_cgroup_memory_usage_bytes{vm_id="vm-7"})"));

  // The registration is visible to `nv status` (the broker's nv.status).
  {
    nv::ClientOptions copts;
    copts.endpoint = nv::bus::ipc_endpoint(rt_.file("clients.sock"));
    nv::Client client(ctx, copts);
    capnp::MallocMessageBuilder mb;
    nv::bus::init_body<nv::schema::StatusRequest>(mb);
    auto reply = client.call("nv.status", &mb, 3000ms);
    ASSERT_TRUE(reply) << reply.error().to_string();
    auto status = reply->body.root<nv::schema::StatusReply>();
    ASSERT_TRUE(status);
    bool listed = false;
    for (auto s : status->getServices()) {
      listed |= std::string(s.getService().cStr()) == "metrics-exporter";
    }
    EXPECT_TRUE(listed);
  }

  // Kept for promtool, which runs last (it may be missing, which skips the test).
  std::string final_scrape = scrape();
  ASSERT_FALSE(final_scrape.empty());

  // nv-audit --since-start shows both services' service.started, as valid JSON lines.
  auto a = audit({"--since-start", "--wait-ms", "300", "--topic", "service."});
  ASSERT_TRUE(a.status.clean()) << a.status.describe() << a.err;
  std::set<std::string> started_by;
  std::istringstream lines(a.out);
  std::string line;
  while (std::getline(lines, line)) {
    rapidjson::Document doc;
    ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << "not JSON: " << line;
    ASSERT_TRUE(doc.IsObject() && doc.HasMember("topic") && doc.HasMember("service"));
    std::string topic = doc["topic"].GetString();
    EXPECT_EQ(topic.rfind("service.", 0), 0u) << line;
    if (topic == "service.started") {
      EXPECT_TRUE(doc.HasMember("serviceStarted")) << line;
      EXPECT_TRUE(started_by.insert(doc["service"].GetString()).second) << "twice: " << line;
    }
  }
  EXPECT_TRUE(started_by.count("orchestrator")) << a.out;
  EXPECT_TRUE(started_by.count("metrics-exporter")) << a.out;

  stop_all_and_check_clean();

  // promtool accepts the scrape (fed on stdin).
  std::string promtool = nv::test::find_program("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  auto check = nv::test::run({.binary = promtool, .args = {"check", "metrics"},
                              .stdin_text = final_scrape},
                             30s);
  EXPECT_TRUE(check.status.clean()) << check.status.describe() << "\n"
                                    << check.out << check.err << "\n--- scrape:\n"
                                    << final_scrape;
}

TEST_F(MetricsStack, AuditFollowPrintsLiveEventsOnceAndStopsOnSigterm) {
  start_orchestrator();
  zmq::context_t ctx(1);
  nv::EventPublisher pub(ctx, nv::bus::ipc_endpoint(rt_.file("events-in.sock")), "test",
                         "h/test/1");
  pub.publish("task.started", [](nv::schema::Event::Builder e) {
    e.initTaskStarted().setModel("before");
  });
  Process follow = Process::start({.binary = nv::test::bin("nv-audit"),
                                   .args = {"--follow", "--since-start", "--topic=task.",
                                            "--topic", "vm.booted"},
                                   .env = env()});
  // The history event arrives first.
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return follow.stdout_text().find("\"before\"") != std::string::npos; }, 10s))
      << follow.stderr_text();
  pub.publish("task.started", [](nv::schema::Event::Builder e) {
    e.initTaskStarted().setModel("after");
  });
  pub.publish("llm.call", [](nv::schema::Event::Builder e) {  // filtered out by --topic
    e.initLlmCall().setModel("hidden");
  });
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return follow.stdout_text().find("\"after\"") != std::string::npos; }, 10s))
      << follow.stdout_text() << follow.stderr_text();
  auto st = follow.terminate(10s);
  // SIGTERM ends --follow like every client's interrupt: exit 143 and one line saying so.
  EXPECT_TRUE(st.exited() && st.code == 143) << st.describe() << follow.stderr_text();
  EXPECT_NE(follow.stderr_text().find("nv-audit: SIGTERM: stopped reading the event stream"),
            std::string::npos)
      << follow.stderr_text();
  std::string out = follow.stdout_text();
  EXPECT_EQ(out.find("hidden"), std::string::npos) << out;
  // Each event once: "before" came from the history and must not repeat live.
  size_t first = out.find("\"before\"");
  EXPECT_EQ(out.find("\"before\"", first + 1), std::string::npos) << out;
  // Lines are ordered as published.
  EXPECT_LT(first, out.find("\"after\""));
  stop_all_and_check_clean();
}

TEST_F(MetricsStack, AuditSinceStartWhilePublishingShowsEveryEventOnceInOrder) {
  start_orchestrator();
  zmq::context_t ctx(1);
  nv::EventPublisher pub(ctx, nv::bus::ipc_endpoint(rt_.file("events-in.sock")), "test",
                         "h/test/1");
  constexpr uint32_t kEvents = 600;
  std::atomic<uint32_t> published{0};
  std::thread publisher([&] {
    for (uint32_t i = 1; i <= kEvents; ++i) {
      pub.publish("task.iteration", [i](nv::schema::Event::Builder e) {
        e.initTaskIteration().setIteration(i);
      });
      published = i;
      std::this_thread::sleep_for(1ms);
    }
  });
  // nv-audit joins while events are flowing: some reach it from the history, some live, and the
  // ones published while it subscribes could be in both or (if it were wrong) in neither.
  ASSERT_TRUE(nv::test::wait_until([&] { return published.load() >= kEvents / 4; }, 10s));
  Process audit_proc = Process::start({.binary = nv::test::bin("nv-audit"),
                                       .args = {"--since-start", "--follow", "--topic",
                                                "task.iteration"},
                                       .env = env()});
  publisher.join();
  auto count_lines = [&] {
    auto out = audit_proc.stdout_text();
    return static_cast<uint32_t>(std::count(out.begin(), out.end(), '\n'));
  };
  EXPECT_TRUE(nv::test::wait_until([&] { return count_lines() >= kEvents; }, 15s))
      << count_lines() << " lines\n" << audit_proc.stderr_text();
  std::this_thread::sleep_for(300ms);  // a duplicate would arrive about now
  auto st = audit_proc.terminate(10s);
  EXPECT_TRUE(st.exited() && st.code == 143) << st.describe() << audit_proc.stderr_text();

  std::vector<uint32_t> seen;
  std::istringstream lines(audit_proc.stdout_text());
  std::string line;
  while (std::getline(lines, line)) {
    rapidjson::Document doc;
    ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << line;
    ASSERT_TRUE(doc.HasMember("taskIteration")) << line;
    const auto& ti = doc["taskIteration"];
    seen.push_back(ti.HasMember("iteration") ? ti["iteration"].GetUint() : 0);
  }
  ASSERT_EQ(seen.size(), kEvents);
  for (uint32_t i = 0; i < kEvents; ++i) {
    ASSERT_EQ(seen[i], i + 1) << "event " << i + 1 << " missing, repeated or out of order";
  }
  stop_all_and_check_clean();
}

TEST_F(MetricsStack, PushgatewayReceivesThePushedMetrics) {
  std::string gateway_bin = nv::test::find_program("prometheus-pushgateway");
  if (gateway_bin.empty()) GTEST_SKIP() << "prometheus-pushgateway is not installed";
  int gw_port = nv::test::free_loopback_port();
  Process gateway = Process::start(
      {.binary = gateway_bin,
       .args = {"--web.listen-address=127.0.0.1:" + std::to_string(gw_port)}});
  ASSERT_TRUE(nv::test::wait_until(
      [&] { return nv::test::http_get("127.0.0.1", gw_port, "/metrics", 500ms).has_value(); },
      10s))
      << gateway.stderr_text();
  start_orchestrator();
  start_exporter({"--pushgateway-url", "http://127.0.0.1:" + std::to_string(gw_port),
                  "--push-interval-s", "1", "--push-instance", "itest"});
  std::string text;
  bool pushed = nv::test::wait_until(
      [&] {
        auto r = nv::test::http_get("127.0.0.1", gw_port, "/metrics", 1s);
        text = r ? r->body : "";
        return series_value(text, R"(neurovisor_services_up{instance="itest",job="neurovisor",)"
                                  R"(service="metrics-exporter"})") == 1.0;
      },
      15s, 200ms);
  EXPECT_TRUE(pushed) << text << exporter_->stderr_text();
  stop_all_and_check_clean();
  gateway.terminate(5s);
}

TEST_F(MetricsStack, AuditSaysSoWhenTheOrchestratorIsDown) {
  auto a = audit({"--wait-ms", "100"});
  EXPECT_EQ(a.status.code, 3) << a.status.describe() << a.err;
  EXPECT_NE(a.err.find("./nv up"), std::string::npos) << a.err;
  EXPECT_TRUE(a.out.empty());
}

TEST_F(MetricsStack, BadUsageExitsWith2) {
  EXPECT_EQ(audit({"--no-such-flag"}).status.code, 2);
  EXPECT_EQ(audit({"positional"}).status.code, 2);
  EXPECT_EQ(audit({"--wait-ms", "soon"}).status.code, 2);
  auto help = audit({"--help"});
  EXPECT_EQ(help.status.code, 0);
  EXPECT_NE(help.out.find("--since-start"), std::string::npos);
  auto exporter = nv::test::run({.binary = nv::test::bin("nv-metrics-exporter"),
                                 .args = {"--listen", "nonsense"},
                                 .env = env()},
                                20s);
  EXPECT_EQ(exporter.status.code, 2) << exporter.err;
  exporter = nv::test::run({.binary = nv::test::bin("nv-metrics-exporter"),
                            .args = {"--pushgateway-url", "ftp://x"},
                            .env = env()},
                           20s);
  EXPECT_EQ(exporter.status.code, 2) << exporter.err;
}

}  // namespace
