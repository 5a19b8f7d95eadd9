// Events in, metric values out: nv::metrics::EventMetrics against a real prometheus-cpp registry,
// read back through Registry::Collect() exactly as a scrape would.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/events.h"
#include "event_metrics.h"

namespace {

using nv::schema::Event;
using Labels = std::vector<std::pair<std::string, std::string>>;

class EventMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override { make({}); }
  void make(nv::metrics::Limits limits) {
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<nv::metrics::EventMetrics>(registry_, limits);
  }

  // Builds an event on `topic` from `service`/`instance`, lets `fill` set the payload, and
  // applies it under `frame_topic` (defaults to `topic`).
  nv::Status send(const std::string& topic, const std::function<void(Event::Builder)>& fill,
                  const std::string& service = "test", const std::string& instance = "h/test/1",
                  const std::string& frame_topic = "") {
    capnp::MallocMessageBuilder mb;
    auto e = mb.initRoot<Event>();
    nv::stamp_event(e, topic, service, instance, "", nv::schema::Severity::INFO);
    if (fill) fill(e);
    return metrics_->apply(frame_topic.empty() ? topic : frame_topic, e.asReader());
  }

  // The sample of `name` whose labels are exactly `labels`; nullopt when there is none.
  std::optional<prometheus::ClientMetric> sample(const std::string& name, Labels labels) const {
    std::sort(labels.begin(), labels.end());
    for (const auto& family : registry_->Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        Labels have;
        for (const auto& l : m.label) have.emplace_back(l.name, l.value);
        std::sort(have.begin(), have.end());
        if (have == labels) return m;
      }
    }
    return std::nullopt;
  }
  double counter(const std::string& name, Labels labels = {}) const {
    auto m = sample(name, std::move(labels));
    return m ? m->counter.value : -1;
  }
  double gauge(const std::string& name, Labels labels = {}) const {
    auto m = sample(name, std::move(labels));
    return m ? m->gauge.value : -1;
  }
  // Number of series of `name` carrying label `label`.
  size_t series_with(const std::string& name, const std::string& label) const {
    size_t n = 0;
    for (const auto& family : registry_->Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        for (const auto& l : m.label) n += (l.name == label);
      }
    }
    return n;
  }
  double invalid(const std::string& reason) const {
    return counter("neurovisor_events_invalid_total", {{"reason", reason}});
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<nv::metrics::EventMetrics> metrics_;
};

// The cumulative count of the bucket with upper bound `le`; -1 when there is no such bucket.
int64_t bucket(const prometheus::ClientMetric& m, double le) {
  for (const auto& b : m.histogram.bucket) {
    if (b.upper_bound == le) return static_cast<int64_t>(b.cumulative_count);
  }
  return -1;
}

auto exec_finished(nv::schema::Language lang, const char* status, double ms) {
  return [=](Event::Builder e) {
    auto p = e.initExecFinished();
    p.setLanguage(lang);
    p.setVmId("vm-1");
    p.setDurationMs(ms);
    p.setStatus(status);
  };
}

auto vm_stats(const char* vm, uint64_t memory, uint64_t throttled) {
  return [=](Event::Builder e) {
    auto p = e.initVmStats();
    p.setVmId(vm);
    p.setMemoryBytes(memory);
    p.setCpuThrottledPeriods(throttled);
  };
}

auto syscalls(std::vector<std::pair<std::string, uint64_t>> entries) {
  return [=](Event::Builder e) {
    auto list = e.initSyscallCounts().initEntries(static_cast<unsigned>(entries.size()));
    for (unsigned i = 0; i < entries.size(); ++i) {
      list[i].setVmId(entries[i].first);
      list[i].setCount(entries[i].second);
    }
  };
}

TEST_F(EventMetricsTest, ExecFinishedCountsAndObservesDuration) {
  ASSERT_TRUE(send("exec.finished", exec_finished(nv::schema::Language::PYTHON, "ok", 200)));
  ASSERT_TRUE(send("exec.finished", exec_finished(nv::schema::Language::PYTHON, "ok", 3000)));
  ASSERT_TRUE(send("exec.finished", exec_finished(nv::schema::Language::BASH, "timeout", 40)));
  EXPECT_EQ(counter("neurovisor_code_executions_total", {{"language", "python"}, {"status", "ok"}}),
            2);
  EXPECT_EQ(
      counter("neurovisor_code_executions_total", {{"language", "bash"}, {"status", "timeout"}}),
      1);
  auto h = sample("neurovisor_code_execution_duration_seconds", {{"language", "python"}});
  ASSERT_TRUE(h);
  EXPECT_EQ(h->histogram.sample_count, 2u);
  EXPECT_DOUBLE_EQ(h->histogram.sample_sum, 3.2);
  EXPECT_EQ(bucket(*h, 0.1), 0);
  EXPECT_EQ(bucket(*h, 0.25), 1);
  EXPECT_EQ(bucket(*h, 2.5), 1);
  EXPECT_EQ(bucket(*h, 5), 2);
  EXPECT_EQ(counter("neurovisor_events_total", {{"topic", "exec.finished"}}), 3);
}

TEST_F(EventMetricsTest, MemorySeriesLivesUntilTheVmIsReleased) {
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-a", 1000, 10)));
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-a", 5000, 25)));
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-b", 7000, 5)));
  EXPECT_EQ(gauge("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-a"}}), 5000);
  EXPECT_EQ(gauge("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-b"}}), 7000);
  EXPECT_EQ(counter("neurovisor_cgroup_cpu_throttled_periods_total"), 30);  // 25 + 5
  EXPECT_EQ(metrics_->tracked_vms(), 2u);

  ASSERT_TRUE(send("vm.released", [](Event::Builder e) {
    auto p = e.initVmReleased();
    p.setVmId("vm-a");
    p.setTier(nv::schema::SizeTier::SMALL);
    p.setLeasedMs(1500);
  }));
  EXPECT_FALSE(sample("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-a"}}));
  EXPECT_EQ(gauge("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-b"}}), 7000);
  EXPECT_EQ(series_with("neurovisor_cgroup_memory_usage_bytes", "vm_id"), 1u);
  EXPECT_EQ(metrics_->tracked_vms(), 1u);
  // The aggregate counter keeps what the released VM contributed.
  EXPECT_EQ(counter("neurovisor_cgroup_cpu_throttled_periods_total"), 30);
  auto leased = sample("neurovisor_vm_leased_seconds", {{"tier", "small"}});
  ASSERT_TRUE(leased);
  EXPECT_DOUBLE_EQ(leased->histogram.sample_sum, 1.5);
}

TEST_F(EventMetricsTest, SyscallSeriesCountsIncrementsAndIsRemovedOnFailure) {
  ASSERT_TRUE(send("sentinel.syscalls", syscalls({{"vm-a", 100}, {"vm-b", 7}})));
  ASSERT_TRUE(send("sentinel.syscalls", syscalls({{"vm-a", 150}})));
  EXPECT_EQ(counter("neurovisor_ebpf_syscall_total", {{"vm_id", "vm-a"}}), 150);
  EXPECT_EQ(counter("neurovisor_ebpf_syscall_total", {{"vm_id", "vm-b"}}), 7);

  ASSERT_TRUE(send("vm.failed", [](Event::Builder e) {
    auto p = e.initVmFailed();
    p.setVmId("vm-a");
    p.setTier(nv::schema::SizeTier::MEDIUM);
    p.setReason("vmm exited: signal 9");
  }));
  EXPECT_FALSE(sample("neurovisor_ebpf_syscall_total", {{"vm_id", "vm-a"}}));
  EXPECT_EQ(series_with("neurovisor_ebpf_syscall_total", "vm_id"), 1u);
  EXPECT_EQ(counter("neurovisor_vm_failures_total", {{"reason_class", "vmm_exited"}}), 1);
}

// security.egress_denied (issue 16): per-VM/sandbox counters of denied lookups and connections,
// summing each event's folded count; removed with the VM; a 0 count or a bad id is invalid.
TEST_F(EventMetricsTest, EgressDenialsAreCountedPerSandboxAndKind) {
  auto denied = [](const char* vm, const char* sandbox, const char* rule, uint64_t count) {
    return [=](Event::Builder e) {
      auto p = e.initEgressDenied();
      p.setVmId(vm);
      p.setSandboxId(sandbox);
      p.setDestination("other.test");
      p.setRule(rule);
      p.setCount(count);
    };
  };
  ASSERT_TRUE(send("security.egress_denied",
                   denied("vm-a", "sbx-1", "nxdomain: not on the allow list", 1)));
  ASSERT_TRUE(send("security.egress_denied",
                   denied("vm-a", "sbx-1", "nxdomain: not on the allow list", 9)));
  ASSERT_TRUE(send("security.egress_denied", denied("vm-a", "sbx-1", "not allowed", 2)));
  ASSERT_TRUE(send("security.egress_denied", denied("vm-b", "", "connection limit", 1)));
  EXPECT_EQ(counter("neurovisor_egress_denied_total",
                    {{"vm_id", "vm-a"}, {"sandbox_id", "sbx-1"}, {"kind", "lookup"}}),
            10);
  EXPECT_EQ(counter("neurovisor_egress_denied_total",
                    {{"vm_id", "vm-a"}, {"sandbox_id", "sbx-1"}, {"kind", "connection"}}),
            2);
  EXPECT_EQ(counter("neurovisor_egress_denied_total",
                    {{"vm_id", "vm-b"}, {"sandbox_id", "none"}, {"kind", "connection"}}),
            1);
  EXPECT_FALSE(send("security.egress_denied", denied("vm-a", "sbx-1", "nxdomain: x", 0)));
  EXPECT_FALSE(send("security.egress_denied", denied("vm a", "sbx-1", "nxdomain: x", 1)));
  EXPECT_EQ(counter("neurovisor_egress_denied_total",
                    {{"vm_id", "vm-a"}, {"sandbox_id", "sbx-1"}, {"kind", "lookup"}}),
            10);
  ASSERT_TRUE(send("vm.failed", [](Event::Builder e) { e.initVmFailed().setVmId("vm-a"); }));
  EXPECT_EQ(series_with("neurovisor_egress_denied_total", "vm_id"), 1u);  // vm-b's
}

TEST_F(EventMetricsTest, VmSeriesAreCappedAndTheOverflowCounted) {
  nv::metrics::Limits limits;
  limits.max_vms = 1;
  make(limits);
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-a", 1, 0)));
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-b", 2, 0)));
  EXPECT_EQ(series_with("neurovisor_cgroup_memory_usage_bytes", "vm_id"), 1u);
  EXPECT_EQ(counter("neurovisor_series_dropped_total"), 1);
  // Room again once vm-a is gone.
  ASSERT_TRUE(send("vm.failed", [](Event::Builder e) { e.initVmFailed().setVmId("vm-a"); }));
  ASSERT_TRUE(send("vm.stats", vm_stats("vm-b", 2, 0)));
  EXPECT_EQ(gauge("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-b"}}), 2);
}

TEST_F(EventMetricsTest, SilentVmsAreForgottenAfterTheIdleLimit) {
  nv::metrics::Limits limits;
  limits.vm_idle_ns = 1000;
  make(limits);
  auto at = [](int64_t time_ns, const char* vm) {
    return [=](Event::Builder e) {
      vm_stats(vm, 1, 0)(e);
      e.setTimeNs(time_ns);
    };
  };
  ASSERT_TRUE(send("vm.stats", at(10'000, "vm-old")));
  ASSERT_TRUE(send("vm.stats", at(10'900, "vm-new")));
  EXPECT_EQ(metrics_->expire_idle_vms(11'000), 0u);  // 1000 ns is not more than the limit
  EXPECT_EQ(metrics_->expire_idle_vms(11'001), 1u);
  EXPECT_FALSE(sample("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-old"}}));
  EXPECT_EQ(gauge("neurovisor_cgroup_memory_usage_bytes", {{"vm_id", "vm-new"}}), 1);
  EXPECT_EQ(metrics_->tracked_vms(), 1u);
}

TEST_F(EventMetricsTest, InvalidEventsChangeNothingButTheInvalidCounter) {
  // Language beyond the enum.
  auto st = send("exec.finished", exec_finished(static_cast<nv::schema::Language>(99), "ok", 10));
  EXPECT_FALSE(st);
  EXPECT_EQ(invalid("bad_enum"), 1);
  // Language never set.
  EXPECT_FALSE(send("exec.finished", exec_finished(nv::schema::Language::UNSET, "ok", 10)));
  // A status that is not one of ok | error | timeout | killed.
  EXPECT_FALSE(send("exec.finished", exec_finished(nv::schema::Language::SH, "exploded", 10)));
  EXPECT_EQ(invalid("bad_enum"), 3);
  // Duration NaN, negative.
  EXPECT_FALSE(send("exec.finished", exec_finished(nv::schema::Language::SH, "ok",
                                                   std::numeric_limits<double>::quiet_NaN())));
  EXPECT_FALSE(send("exec.finished", exec_finished(nv::schema::Language::SH, "ok", -1)));
  EXPECT_EQ(invalid("bad_number"), 2);
  EXPECT_EQ(series_with("neurovisor_code_executions_total", "language"), 0u);
  EXPECT_EQ(series_with("neurovisor_code_execution_duration_seconds", "language"), 0u);

  // Frame topic differs from the event's; payload differs from the topic.
  EXPECT_FALSE(send("exec.finished", exec_finished(nv::schema::Language::SH, "ok", 1), "test",
                    "h/test/1", "exec.started"));
  EXPECT_FALSE(send("vm.booted", exec_finished(nv::schema::Language::SH, "ok", 1)));
  EXPECT_EQ(invalid("topic_mismatch"), 2);
  // A topic nobody defined.
  EXPECT_FALSE(send("vm.exploded", nullptr));
  EXPECT_EQ(invalid("unknown_topic"), 1);

  // Labels: too long, a character outside the safe alphabet, empty.
  auto llm = [](std::string model) {
    return [model](Event::Builder e) {
      auto p = e.initLlmCall();
      p.setModel(model);
      p.setDurationMs(10);
    };
  };
  EXPECT_FALSE(send("llm.call", llm(std::string(200, 'm'))));
  EXPECT_FALSE(send("llm.call", llm("bad model\n")));
  EXPECT_FALSE(send("llm.call", llm("")));
  EXPECT_EQ(invalid("bad_label"), 3);
  EXPECT_EQ(series_with("neurovisor_requests_total", "model"), 0u);

  // Severity beyond the enum.
  EXPECT_FALSE(send("task.started", [](Event::Builder e) {
    e.initTaskStarted();
    e.setSeverity(static_cast<nv::schema::Severity>(42));
  }));
  EXPECT_EQ(invalid("bad_enum"), 4);
  EXPECT_EQ(counter("neurovisor_agent_tasks_started_total"), 0);

  // Nothing valid arrived, so no topic was counted.
  EXPECT_EQ(series_with("neurovisor_events_total", "topic"), 0u);
}

TEST_F(EventMetricsTest, MalformedCountFromTheSubscriberSide) {
  metrics_->count_malformed(3);
  EXPECT_EQ(invalid("malformed"), 3);
  EXPECT_EQ(invalid("bad_label"), 0);  // every reason is exported from the start
}

TEST_F(EventMetricsTest, ServicesUpCountsInstances) {
  auto started = [](Event::Builder e) { e.initServiceStarted().setVersion("0.1.0"); };
  auto stopping = [](Event::Builder e) { e.setServiceStopping(); };
  ASSERT_TRUE(send("service.started", started, "orchestrator", "h/orchestrator/1"));
  ASSERT_TRUE(send("service.started", started, "exec", "h/exec/2"));
  ASSERT_TRUE(send("service.started", started, "exec", "h/exec/3"));
  ASSERT_TRUE(send("service.started", started, "exec", "h/exec/3"));  // repeated: same instance
  EXPECT_EQ(gauge("neurovisor_services_up", {{"service", "orchestrator"}}), 1);
  EXPECT_EQ(gauge("neurovisor_services_up", {{"service", "exec"}}), 2);
  ASSERT_TRUE(send("service.stopping", stopping, "exec", "h/exec/2"));
  EXPECT_EQ(gauge("neurovisor_services_up", {{"service", "exec"}}), 1);
  ASSERT_TRUE(send("service.stopping", stopping, "exec", "h/exec/3"));
  EXPECT_EQ(gauge("neurovisor_services_up", {{"service", "exec"}}), 0);
}

TEST_F(EventMetricsTest, PoolStatusSetsTierGauges) {
  ASSERT_TRUE(send("pool.status", [](Event::Builder e) {
    auto tiers = e.initPoolStatus().initTiers(2);
    tiers[0].setTier(nv::schema::SizeTier::SMALL);
    tiers[0].setWarm(3);
    tiers[0].setActive(1);
    tiers[1].setTier(nv::schema::SizeTier::LARGE);
    tiers[1].setWarm(0);
    tiers[1].setActive(2);
    tiers[1].setBooting(1);
  }));
  EXPECT_EQ(gauge("neurovisor_pool_warm_vms", {{"tier", "small"}}), 3);
  EXPECT_EQ(gauge("neurovisor_pool_active_vms", {{"tier", "small"}}), 1);
  EXPECT_EQ(gauge("neurovisor_pool_active_vms", {{"tier", "large"}}), 2);
  EXPECT_EQ(gauge("neurovisor_pool_booting_vms", {{"tier", "large"}}), 1);
  // One bad tier rejects the whole event: the small tier keeps its value.
  EXPECT_FALSE(send("pool.status", [](Event::Builder e) {
    auto tiers = e.initPoolStatus().initTiers(2);
    tiers[0].setTier(nv::schema::SizeTier::SMALL);
    tiers[0].setWarm(9);
    tiers[1].setTier(nv::schema::SizeTier::UNSET);
  }));
  EXPECT_EQ(gauge("neurovisor_pool_warm_vms", {{"tier", "small"}}), 3);
}

TEST_F(EventMetricsTest, VmBootedAndAcquired) {
  ASSERT_TRUE(send("vm.booted", [](Event::Builder e) {
    auto p = e.initVmBooted();
    p.setVmId("vm-1");
    p.setTier(nv::schema::SizeTier::SMALL);
    p.setBackend("qemu");
    p.setAccel("kvm");
    p.setBootMs(420);
  }));
  auto boot = sample("neurovisor_vm_boot_seconds",
                     {{"backend", "qemu"}, {"accel", "kvm"}, {"restored", "false"}});
  ASSERT_TRUE(boot);
  EXPECT_EQ(boot->histogram.sample_count, 1u);
  EXPECT_DOUBLE_EQ(boot->histogram.sample_sum, 0.42);
  ASSERT_TRUE(send("vm.acquired", [](Event::Builder e) {
    auto p = e.initVmAcquired();
    p.setVmId("vm-1");
    p.setTier(nv::schema::SizeTier::SMALL);
    p.setWaitMs(3);
  }));
  auto acquire = sample("neurovisor_vm_acquire_seconds", {{"tier", "small"}});
  ASSERT_TRUE(acquire);
  EXPECT_DOUBLE_EQ(acquire->histogram.sample_sum, 0.003);
  EXPECT_FALSE(send("vm.acquired", [](Event::Builder e) {
    auto p = e.initVmAcquired();
    p.setVmId("vm-1");
    p.setTier(static_cast<nv::schema::SizeTier>(7));
  }));
}

TEST_F(EventMetricsTest, LlmCallFeedsRequestsTokensAndDurations) {
  auto call = [](double ms, double load_ms) {
    return [=](Event::Builder e) {
      auto p = e.initLlmCall();
      p.setModel("qwen2.5-coder:7b");
      p.setApi("ollama");
      p.setDurationMs(ms);
      p.setLoadMs(load_ms);
      p.setPromptTokens(100);
      p.setCompletionTokens(40);
      p.setOutcome("ok");
    };
  };
  ASSERT_TRUE(send("llm.call", call(1500, 800)));
  ASSERT_TRUE(send("llm.call", call(500, 0)));
  const Labels model{{"model", "qwen2.5-coder:7b"}};
  EXPECT_EQ(counter("neurovisor_requests_total", model), 2);
  EXPECT_EQ(counter("neurovisor_tokens_generated_total", model), 80);
  EXPECT_EQ(counter("neurovisor_prompt_tokens_total", model), 200);
  auto inference = sample("neurovisor_inference_duration_seconds", {});
  ASSERT_TRUE(inference);
  EXPECT_EQ(inference->histogram.sample_count, 2u);
  EXPECT_DOUBLE_EQ(inference->histogram.sample_sum, 2.0);
  auto per_model = sample("neurovisor_llm_call_duration_seconds", model);
  ASSERT_TRUE(per_model);
  EXPECT_EQ(per_model->histogram.sample_count, 2u);
  auto load = sample("neurovisor_model_load_duration_seconds", model);
  ASSERT_TRUE(load);
  EXPECT_EQ(load->histogram.sample_count, 1u);  // the call with loadMs 0 loaded nothing
  EXPECT_DOUBLE_EQ(load->histogram.sample_sum, 0.8);
}

// Streamed calls carry their time to first token; calls that streamed nothing (0) are not
// observed, and a bad figure is refused.
TEST_F(EventMetricsTest, TimeToFirstTokenHistogram) {
  auto call = [](double first_ms) {
    return [=](Event::Builder e) {
      auto p = e.initLlmCall();
      p.setModel("qwen3:4b");
      p.setApi("openai");
      p.setDurationMs(3000);
      p.setFirstTokenMs(first_ms);
      p.setOutcome("ok");
    };
  };
  ASSERT_TRUE(send("llm.call", call(420)));
  ASSERT_TRUE(send("llm.call", call(80)));
  ASSERT_TRUE(send("llm.call", call(0)));
  EXPECT_FALSE(send("llm.call", call(-5)));
  auto ttft = sample("neurovisor_llm_time_to_first_token_seconds", {{"model", "qwen3:4b"}});
  ASSERT_TRUE(ttft);
  EXPECT_EQ(ttft->histogram.sample_count, 2u);
  EXPECT_DOUBLE_EQ(ttft->histogram.sample_sum, 0.5);
  // 0.08 s falls in the 0.1 s bucket, 0.42 s in the 0.5 s one (cumulative counts).
  EXPECT_EQ(ttft->histogram.bucket[0].cumulative_count, 0u);  // le 0.05
  EXPECT_EQ(ttft->histogram.bucket[1].cumulative_count, 1u);  // le 0.1
  EXPECT_EQ(ttft->histogram.bucket[3].cumulative_count, 2u);  // le 0.5
}

TEST_F(EventMetricsTest, TasksIterationsAndStatuses) {
  ASSERT_TRUE(send("task.started", [](Event::Builder e) { e.initTaskStarted().setModel("m"); }));
  for (uint32_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(send("task.iteration", [i](Event::Builder e) {
      auto p = e.initTaskIteration();
      p.setIteration(i);
      p.setToolCalls(2);
    }));
  }
  ASSERT_TRUE(send("task.finished", [](Event::Builder e) {
    auto p = e.initTaskFinished();
    p.setStatus("completed");
    p.setDurationMs(12000);
  }));
  EXPECT_FALSE(send("task.finished", [](Event::Builder e) {
    e.initTaskFinished().setStatus("unset");  // the enum's unset name is not a real status
  }));
  EXPECT_FALSE(
      send("task.finished", [](Event::Builder e) { e.initTaskFinished().setStatus("bogus"); }));
  EXPECT_EQ(counter("neurovisor_agent_tasks_started_total"), 1);
  EXPECT_EQ(counter("neurovisor_agent_iterations_total"), 3);
  EXPECT_EQ(counter("neurovisor_agent_tool_calls_total"), 6);
  EXPECT_EQ(counter("neurovisor_agent_tasks_total", {{"status", "completed"}}), 1);
  EXPECT_EQ(series_with("neurovisor_agent_tasks_total", "status"), 1u);
  auto duration = sample("neurovisor_agent_task_duration_seconds", {});
  ASSERT_TRUE(duration);
  EXPECT_DOUBLE_EQ(duration->histogram.sample_sum, 12.0);
}

TEST_F(EventMetricsTest, AlertKindsAreBoundedToMaxLabelValues) {
  nv::metrics::Limits limits;
  limits.max_label_values = 2;
  make(limits);
  auto alert = [](const char* kind) {
    return [=](Event::Builder e) {
      auto p = e.initSecurityAlert();
      p.setKind(kind);
      p.setAction("denied");
    };
  };
  ASSERT_TRUE(send("security.alert", alert("egress_denied")));
  ASSERT_TRUE(send("security.alert", alert("egress_denied")));
  ASSERT_TRUE(send("security.alert", alert("vmm_exec")));
  ASSERT_TRUE(send("security.alert", alert("lsm_denied")));
  ASSERT_TRUE(send("security.alert", alert("rate_limited")));
  EXPECT_EQ(counter("neurovisor_security_alerts_total", {{"kind", "egress_denied"}}), 2);
  EXPECT_EQ(counter("neurovisor_security_alerts_total", {{"kind", "vmm_exec"}}), 1);
  EXPECT_EQ(counter("neurovisor_security_alerts_total", {{"kind", "other"}}), 2);
  EXPECT_EQ(series_with("neurovisor_security_alerts_total", "kind"), 3u);
}

TEST_F(EventMetricsTest, SentinelProgramsAndBrokerStatus) {
  ASSERT_TRUE(send("sentinel.status", [](Event::Builder e) {
    auto programs = e.initSentinelStatus().initPrograms(2);
    programs[0].setName("sys_enter_count");
    programs[0].setLoaded(true);
    programs[1].setName("lsm_file_open");
    programs[1].setLoaded(false);
    programs[1].setErrno(1);
  }));
  EXPECT_EQ(gauge("neurovisor_ebpf_programs_loaded", {{"program", "sys_enter_count"}}), 1);
  EXPECT_EQ(gauge("neurovisor_ebpf_programs_loaded", {{"program", "lsm_file_open"}}), 0);

  ASSERT_TRUE(send("broker.status", [](Event::Builder e) {
    auto p = e.initBrokerStatus();
    p.setService("exec");
    p.setWorkers(2);
    p.setInFlight(3);
    p.setQueued(4);
  }));
  EXPECT_EQ(gauge("neurovisor_requests_in_flight", {{"service", "exec"}}), 3);
  EXPECT_EQ(gauge("neurovisor_broker_workers", {{"service", "exec"}}), 2);
  EXPECT_EQ(gauge("neurovisor_broker_queued_requests", {{"service", "exec"}}), 4);
}

TEST_F(EventMetricsTest, OversizedListsAreRejected) {
  nv::metrics::Limits limits;
  limits.max_list_entries = 2;
  make(limits);
  EXPECT_FALSE(send("sentinel.syscalls", syscalls({{"a", 1}, {"b", 1}, {"c", 1}})));
  EXPECT_EQ(invalid("too_many"), 1);
  EXPECT_EQ(series_with("neurovisor_ebpf_syscall_total", "vm_id"), 0u);
}

TEST(FailureClass, MapsReasonsToBoundedClasses) {
  using nv::metrics::failure_class;
  EXPECT_EQ(failure_class("vmm exited: signal 9"), "vmm_exited");
  EXPECT_EQ(failure_class("boot timed out"), "boot_timeout");
  EXPECT_EQ(failure_class("guest agent timed out"), "timeout");
  EXPECT_EQ(failure_class("security alert"), "security");
  EXPECT_EQ(failure_class("oom killed"), "oom");
  EXPECT_EQ(failure_class("lease expired: not released within its 30000 ms lifetime (the lessee "
                          "died or hung); the VM was destroyed"),
            "lease_expired");
  EXPECT_EQ(failure_class("boot failed: no kernel"), "boot_failed");
  EXPECT_EQ(failure_class("something else"), "other");
  EXPECT_EQ(failure_class(""), "other");
}

}  // namespace
