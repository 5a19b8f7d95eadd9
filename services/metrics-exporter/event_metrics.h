// event_metrics.h — the event → metric mapping of nv-metrics-exporter, free of sockets and HTTP
// so it is tested by feeding events in and reading the registry out.
//
// Every event is validated before anything is changed: the topic must be known and match the
// payload, enums must be in range, label values short and of a safe alphabet, numbers finite and
// not negative. A rejected event changes nothing but neurovisor_events_invalid_total{reason}.
//
// Label cardinality stays bounded:
//   - per-VM series (memory, syscalls) exist only between a VM's first vm.stats /
//     sentinel.syscalls entry and its vm.released / vm.failed (or until it has been silent for
//     Limits::vm_idle_ns, see expire_idle_vms), and at most Limits::max_vms at once;
//   - every other free-text label (model, kind, service, program, backend, ...) keeps at most
//     Limits::max_label_values distinct values per label; later new values are counted as "other".
//
// Metrics (labels in braces):
//   neurovisor_events_total{topic}                    every valid event
//   neurovisor_events_invalid_total{reason}           rejected events (reasons: see Invalid)
//   neurovisor_series_dropped_total                   per-VM series not created (max_vms reached)
//   neurovisor_services_up{service}                   instances started and not stopping
//   neurovisor_pool_warm_vms{tier}, neurovisor_pool_active_vms{tier},
//   neurovisor_pool_booting_vms{tier}                 pool.status
//   neurovisor_vm_boot_seconds{backend,accel,restored}  histogram, vm.booted
//   neurovisor_vm_acquire_seconds{tier}               histogram, vm.acquired
//   neurovisor_vm_leased_seconds{tier}                histogram, vm.released
//   neurovisor_vm_failures_total{reason_class}        vm.failed (see failure_class)
//   neurovisor_cgroup_memory_usage_bytes{vm_id}       vm.stats; removed on release/failure
//   neurovisor_cgroup_cpu_throttled_periods_total     vm.stats, summed increments over VMs
//   neurovisor_cgroup_cpu_throttled_total{vm_id}      vm.stats: the VM cgroup's throttled CFS
//                                                     periods (cpu.stat nr_throttled, v1 and v2);
//                                                     the seed's name; removed like memory
//   neurovisor_cgroup_cpu_throttled_seconds_total{vm_id}  vm.stats: time throttled (v2
//                                                     throttled_usec, v1 throttled_time)
//   neurovisor_code_executions_started_total{language}  exec.started
//   neurovisor_code_execution_duration_seconds{language}  histogram, exec.finished
//   neurovisor_code_executions_total{language,status}   exec.finished
//   neurovisor_requests_total{model}, neurovisor_tokens_generated_total{model},
//   neurovisor_prompt_tokens_total{model}, neurovisor_inference_duration_seconds (histogram),
//   neurovisor_llm_call_duration_seconds{model}, neurovisor_model_load_duration_seconds{model}
//                                                     llm.call (load observed when loadMs > 0)
//   neurovisor_llm_time_to_first_token_seconds{model}  histogram, llm.call of streamed calls
//                                                     (observed when firstTokenMs > 0)
//   neurovisor_agent_tasks_started_total              task.started
//   neurovisor_agent_iterations_total, neurovisor_agent_tool_calls_total  task.iteration
//   neurovisor_agent_tasks_total{status}, neurovisor_agent_task_duration_seconds  task.finished
//   neurovisor_agent_tasks{status}                    the seed's name: status="running" is the
//                                                     tasks started and not finished now, every
//                                                     other status the tasks finished with it
//                                                     (= neurovisor_agent_tasks_total). A gauge:
//                                                     it falls when a running task ends, and a
//                                                     counter without _total fails promtool
//   neurovisor_security_alerts_total{kind}            security.alert
//   neurovisor_ebpf_programs_loaded{program}          sentinel.status (1 loaded, 0 not)
//   neurovisor_ebpf_syscall_total{vm_id}              sentinel.syscalls; removed like memory
//   neurovisor_egress_denied_total{vm_id,sandbox_id,kind}  security.egress_denied: the count of
//                                                     each event summed; kind "lookup" (rule
//                                                     "nxdomain: …", the DNS responder) or
//                                                     "connection"; per-VM, removed like memory
//   neurovisor_requests_in_flight{service}, neurovisor_broker_workers{service},
//   neurovisor_broker_queued_requests{service}        broker.status
#pragma once

#include <nv/schema/events.capnp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"

namespace nv::metrics {

struct Limits {
  size_t max_label_bytes = 128;          // a longer label value makes the event invalid
  size_t max_label_values = 256;         // distinct values per free-text label, then "other"
  size_t max_vms = 4096;                 // VMs with per-VM series at once
  size_t max_instances = 1024;           // service instances tracked for neurovisor_services_up
  size_t max_list_entries = 4096;        // entries in one pool.status / sentinel.* list
  int64_t vm_idle_ns = 600'000'000'000;  // expire_idle_vms: a VM silent this long is forgotten
};

// Why an event was rejected: the `reason` label of neurovisor_events_invalid_total.
enum class Invalid {
  malformed,       // framing, Cap'n Proto or version problem (counted by the subscriber side)
  unknown_topic,   // a topic this exporter does not know
  topic_mismatch,  // the frame topic, the event's topic field and the payload disagree
  bad_enum,        // an enum (or enum-like text such as a status) out of range
  bad_label,       // a label value empty, too long, or outside [A-Za-z0-9_.:/@+-]
  bad_number,      // NaN, infinite or negative where a duration or amount is expected
  too_many,        // a list longer than Limits::max_list_entries
};
std::string_view invalid_name(Invalid reason);

// The bounded class of a vm.failed reason text: vmm_exited, boot_timeout, timeout, security,
// lease_expired, oom, boot_failed, or other.
std::string_view failure_class(std::string_view reason);

class EventMetrics {
 public:
  explicit EventMetrics(std::shared_ptr<prometheus::Registry> registry, Limits limits = {});
  EventMetrics(const EventMetrics&) = delete;
  EventMetrics& operator=(const EventMetrics&) = delete;

  // Validates `event` (received under frame topic `topic`) and updates the metrics. Changes
  // nothing but the invalid counter when the event is rejected, and says why. Never throws.
  // Not thread-safe (one applying thread); scrapes may run concurrently on other threads.
  Status apply(std::string_view topic, schema::Event::Reader event) noexcept;

  // Counts `n` events rejected before they could be read (bad framing, version, Cap'n Proto).
  void count_malformed(uint64_t n);

  // Forgets VMs whose last vm.stats / sentinel.syscalls entry was published more than
  // Limits::vm_idle_ns before `now_ns` (unix ns): their release was never seen (the pool
  // manager died, an event was dropped). Returns how many were forgotten. Compares with the
  // publisher's clock, so keep vm_idle_ns far above any clock skew between hosts.
  size_t expire_idle_vms(int64_t now_ns);

  // VMs that currently have per-VM series.
  size_t tracked_vms() const { return vms_.size(); }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  struct VmSeries {
    prometheus::Gauge* memory = nullptr;           // neurovisor_cgroup_memory_usage_bytes{vm_id}
    prometheus::Counter* syscalls = nullptr;       // neurovisor_ebpf_syscall_total{vm_id}
    prometheus::Counter* egress_lookup = nullptr;  // neurovisor_egress_denied_total{…lookup}
    prometheus::Counter* egress_connection = nullptr;  // …{…,kind="connection"}
    prometheus::Counter* throttled = nullptr;  // neurovisor_cgroup_cpu_throttled_total{vm_id}
    prometheus::Counter* throttled_seconds = nullptr;  // ..._cpu_throttled_seconds_total{vm_id}
    uint64_t last_throttled_us = 0;                    // cpuThrottledUs at the last vm.stats
    uint64_t last_throttled = 0;                       // cpuThrottledPeriods at the last vm.stats
    uint64_t last_syscalls = 0;                        // count at the last sentinel.syscalls entry
    int64_t last_seen_ns = 0;                          // timeNs of the last event that updated it
  };
  struct Rejection {
    Invalid reason;
    std::string detail;
  };
  using Check = std::optional<Rejection>;

  Check apply_payload(std::string_view topic, schema::Event::Reader event);
  Check on_service(schema::Event::Reader event, bool started);
  Check on_vm_booted(schema::VmBooted::Reader p);
  Check on_vm_acquired(schema::VmAcquired::Reader p);
  Check on_vm_released(schema::VmReleased::Reader p);
  Check on_vm_failed(schema::VmFailed::Reader p);
  Check on_vm_stats(schema::VmStats::Reader p, int64_t time_ns);
  Check on_pool_status(schema::PoolStatusEvent::Reader p);
  Check on_exec_started(schema::ExecStarted::Reader p);
  Check on_exec_finished(schema::ExecFinished::Reader p);
  Check on_llm_call(schema::LlmCall::Reader p);
  Check on_task_iteration(schema::TaskIteration::Reader p);
  Check on_task_finished(schema::TaskFinished::Reader p);
  Check on_security_alert(schema::SecurityAlert::Reader p);
  Check on_sentinel_status(schema::SentinelStatus::Reader p);
  Check on_egress_denied(schema::EgressDenied::Reader p, int64_t time_ns);
  Check on_syscall_counts(schema::SyscallCounts::Reader p, int64_t time_ns);
  Check on_broker_status(schema::BrokerStatus::Reader p);

  Check check_label(std::string_view what, std::string_view value) const;
  // `value`, or "other" once `label` has max_label_values distinct values and this is new.
  std::string bounded(const std::string& label, std::string_view value);
  // The series of `vm_id`, created if there is room; nullptr when max_vms is reached.
  VmSeries* vm(const std::string& vm_id);
  void forget_vm(const std::string& vm_id);
  void reject(const Rejection& r);

  std::shared_ptr<prometheus::Registry> registry_;
  Limits limits_;

  prometheus::Family<prometheus::Counter>& events_;
  prometheus::Family<prometheus::Counter>& invalid_;
  prometheus::Counter& series_dropped_;
  prometheus::Family<prometheus::Gauge>& services_up_;
  prometheus::Family<prometheus::Gauge>& pool_warm_;
  prometheus::Family<prometheus::Gauge>& pool_active_;
  prometheus::Family<prometheus::Gauge>& pool_booting_;
  prometheus::Family<prometheus::Histogram>& vm_boot_;
  prometheus::Family<prometheus::Histogram>& vm_acquire_;
  prometheus::Family<prometheus::Histogram>& vm_leased_;
  prometheus::Family<prometheus::Counter>& vm_failures_;
  prometheus::Family<prometheus::Gauge>& memory_;
  prometheus::Counter& throttled_;
  prometheus::Family<prometheus::Counter>& vm_throttled_;
  prometheus::Family<prometheus::Counter>& vm_throttled_seconds_;
  prometheus::Family<prometheus::Counter>& exec_started_;
  prometheus::Family<prometheus::Histogram>& exec_duration_;
  prometheus::Family<prometheus::Counter>& executions_;
  prometheus::Family<prometheus::Counter>& llm_requests_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Histogram& inference_;
  prometheus::Family<prometheus::Histogram>& llm_duration_;
  prometheus::Family<prometheus::Histogram>& model_load_;
  prometheus::Family<prometheus::Histogram>& first_token_;
  prometheus::Counter& tasks_started_;
  prometheus::Counter& iterations_;
  prometheus::Counter& tool_calls_;
  prometheus::Family<prometheus::Counter>& tasks_;
  prometheus::Histogram& task_duration_;
  prometheus::Family<prometheus::Gauge>& agent_tasks_;
  int64_t tasks_running_ = 0;  // task.started minus task.finished, never below 0
  prometheus::Family<prometheus::Counter>& alerts_;
  prometheus::Family<prometheus::Gauge>& programs_;
  prometheus::Family<prometheus::Counter>& syscalls_;
  prometheus::Family<prometheus::Counter>& egress_denied_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Gauge>& queued_;

  std::map<std::string, VmSeries> vms_;
  std::map<std::string, std::set<std::string>> instances_;  // service -> instances up
  size_t instance_count_ = 0;
  std::map<std::string, std::set<std::string>> label_values_;  // label -> values seen
};

}  // namespace nv::metrics
