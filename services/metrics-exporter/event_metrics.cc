#include "event_metrics.h"

#include <capnp/schema.h>
#include <kj/exception.h>
#include <nv/schema/task.capnp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>
#include <vector>

namespace nv::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using Which = schema::Event::Which;

// Buckets, in seconds, chosen around what each duration is expected to be.
const prometheus::Histogram::BucketBoundaries kBootBuckets = {0.05, 0.1, 0.25, 0.5, 1, 2,
                                                              5,    10,  20,   30,  60};
const prometheus::Histogram::BucketBoundaries kAcquireBuckets = {0.001, 0.005, 0.01, 0.05, 0.1,
                                                                 0.5,   1,     5,    10,   30};
const prometheus::Histogram::BucketBoundaries kLeaseBuckets = {0.1, 0.5, 1,   5,   10,  30,
                                                               60,  120, 300, 600, 1800};
const prometheus::Histogram::BucketBoundaries kExecBuckets = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                              2.5,  5,    10,  30,   60,  300};
const prometheus::Histogram::BucketBoundaries kLlmBuckets = {0.1, 0.25, 0.5, 1,   2.5, 5,
                                                             10,  30,   60,  120, 300};
const prometheus::Histogram::BucketBoundaries kLoadBuckets = {0.01, 0.1, 0.5, 1,  2.5,
                                                              5,    10,  30,  60, 120};
const prometheus::Histogram::BucketBoundaries kFirstTokenBuckets = {0.05, 0.1, 0.25, 0.5, 1,  2,
                                                                    5,    10,  20,   60,  120};
const prometheus::Histogram::BucketBoundaries kTaskBuckets = {1,   5,   10,  30,  60,
                                                              120, 300, 600, 1800};

// A duration larger than this (a day, in ms) is not a plausible measurement.
constexpr double kMaxDurationMs = 86400.0 * 1000.0;

// The payload each topic must carry.
struct TopicSpec {
  std::string_view topic;
  Which payload;
};
constexpr TopicSpec kTopics[] = {
    {"service.started", Which::SERVICE_STARTED},
    {"service.stopping", Which::SERVICE_STOPPING},
    {"vm.booted", Which::VM_BOOTED},
    {"vm.acquired", Which::VM_ACQUIRED},
    {"vm.released", Which::VM_RELEASED},
    {"vm.failed", Which::VM_FAILED},
    {"vm.stats", Which::VM_STATS},
    {"pool.status", Which::POOL_STATUS},
    {"exec.started", Which::EXEC_STARTED},
    {"exec.finished", Which::EXEC_FINISHED},
    {"llm.call", Which::LLM_CALL},
    {"task.started", Which::TASK_STARTED},
    {"task.iteration", Which::TASK_ITERATION},
    {"task.finished", Which::TASK_FINISHED},
    {"security.alert", Which::SECURITY_ALERT},
    {"sentinel.status", Which::SENTINEL_STATUS},
    {"sentinel.syscalls", Which::SYSCALL_COUNTS},
    {"broker.status", Which::BROKER_STATUS},
    {"security.egress_denied", Which::EGRESS_DENIED},
};

// exec.finished `status` values (events.capnp: ok | error | timeout | killed).
constexpr std::string_view kExecStatuses[] = {"ok", "error", "timeout", "killed"};

bool label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
}

// The schema name of an enum value ("python"), or "" when the raw value is out of range or unset.
template <class E>
std::string enum_label(E value) {
  auto enumerants = capnp::Schema::from<E>().getEnumerants();
  auto raw = static_cast<uint16_t>(value);
  if (raw == 0 || raw >= enumerants.size()) return {};
  return enumerants[raw].getProto().getName().cStr();
}

// Whether `name` is a defined, non-unset enumerant name of E (TaskFinished.status is a name).
template <class E>
bool is_enumerant(std::string_view name) {
  auto enumerants = capnp::Schema::from<E>().getEnumerants();
  for (unsigned i = 1; i < enumerants.size(); ++i) {
    if (name == enumerants[i].getProto().getName().cStr()) return true;
  }
  return false;
}

bool duration_ok(double ms) { return std::isfinite(ms) && ms >= 0 && ms <= kMaxDurationMs; }

}  // namespace

std::string_view invalid_name(Invalid reason) {
  switch (reason) {
    case Invalid::malformed:
      return "malformed";
    case Invalid::unknown_topic:
      return "unknown_topic";
    case Invalid::topic_mismatch:
      return "topic_mismatch";
    case Invalid::bad_enum:
      return "bad_enum";
    case Invalid::bad_label:
      return "bad_label";
    case Invalid::bad_number:
      return "bad_number";
    case Invalid::too_many:
      return "too_many";
  }
  return "malformed";
}

std::string_view failure_class(std::string_view reason) {
  auto has = [&](std::string_view what) { return reason.find(what) != std::string_view::npos; };
  if (has("security")) return "security";
  if (has("lease expired")) return "lease_expired";  // its lessee died holding it
  if (has("oom") || has("out of memory")) return "oom";
  if (has("boot") && (has("timed out") || has("timeout"))) return "boot_timeout";
  if (has("timed out") || has("timeout")) return "timeout";
  if (has("vmm exited") || has("signal")) return "vmm_exited";
  if (has("boot")) return "boot_failed";
  return "other";
}

EventMetrics::EventMetrics(std::shared_ptr<prometheus::Registry> registry, Limits limits)
    : registry_(std::move(registry)),
      limits_(limits),
      events_(BuildCounter()
                  .Name("neurovisor_events_total")
                  .Help("Valid events received, by topic")
                  .Register(*registry_)),
      invalid_(BuildCounter()
                   .Name("neurovisor_events_invalid_total")
                   .Help("Events rejected by validation, by reason")
                   .Register(*registry_)),
      series_dropped_(BuildCounter()
                          .Name("neurovisor_series_dropped_total")
                          .Help("Per-VM series not created because the VM limit was reached")
                          .Register(*registry_)
                          .Add({})),
      services_up_(BuildGauge()
                       .Name("neurovisor_services_up")
                       .Help("Service instances started and not yet stopping")
                       .Register(*registry_)),
      pool_warm_(BuildGauge()
                     .Name("neurovisor_pool_warm_vms")
                     .Help("Booted idle VMs ready to lease, by size tier")
                     .Register(*registry_)),
      pool_active_(BuildGauge()
                       .Name("neurovisor_pool_active_vms")
                       .Help("Leased VMs, by size tier")
                       .Register(*registry_)),
      pool_booting_(BuildGauge()
                        .Name("neurovisor_pool_booting_vms")
                        .Help("VMs booting, by size tier")
                        .Register(*registry_)),
      vm_boot_(BuildHistogram()
                   .Name("neurovisor_vm_boot_seconds")
                   .Help("VMM start until the guest agent's Hello")
                   .Register(*registry_)),
      vm_acquire_(BuildHistogram()
                      .Name("neurovisor_vm_acquire_seconds")
                      .Help("Time a VM lease waited, by size tier")
                      .Register(*registry_)),
      vm_leased_(BuildHistogram()
                     .Name("neurovisor_vm_leased_seconds")
                     .Help("Time a VM was leased before release, by size tier")
                     .Register(*registry_)),
      vm_failures_(BuildCounter()
                       .Name("neurovisor_vm_failures_total")
                       .Help("VM failures, by class of reason")
                       .Register(*registry_)),
      memory_(BuildGauge()
                  .Name("neurovisor_cgroup_memory_usage_bytes")
                  .Help("cgroup memory usage of each live VM")
                  .Register(*registry_)),
      throttled_(BuildCounter()
                     .Name("neurovisor_cgroup_cpu_throttled_periods_total")
                     .Help("CPU periods in which VM cgroups were throttled, summed over VMs")
                     .Register(*registry_)
                     .Add({})),
      vm_throttled_(BuildCounter()
                        .Name("neurovisor_cgroup_cpu_throttled_total")
                        .Help("CFS periods in which each live VM's cgroup was throttled "
                              "(cpu.stat nr_throttled)")
                        .Register(*registry_)),
      vm_throttled_seconds_(BuildCounter()
                                .Name("neurovisor_cgroup_cpu_throttled_seconds_total")
                                .Help("Time each live VM's cgroup was throttled (cpu.stat "
                                      "throttled_usec, v1 throttled_time)")
                                .Register(*registry_)),
      exec_started_(BuildCounter()
                        .Name("neurovisor_code_executions_started_total")
                        .Help("Code executions started, by language")
                        .Register(*registry_)),
      exec_duration_(BuildHistogram()
                         .Name("neurovisor_code_execution_duration_seconds")
                         .Help("Executor wall time of a code execution, by language")
                         .Register(*registry_)),
      executions_(BuildCounter()
                      .Name("neurovisor_code_executions_total")
                      .Help("Code executions finished, by language and status")
                      .Register(*registry_)),
      llm_requests_(BuildCounter()
                        .Name("neurovisor_requests_total")
                        .Help("LLM calls, by model")
                        .Register(*registry_)),
      tokens_(BuildCounter()
                  .Name("neurovisor_tokens_generated_total")
                  .Help("Completion tokens generated, by model")
                  .Register(*registry_)),
      prompt_tokens_(BuildCounter()
                         .Name("neurovisor_prompt_tokens_total")
                         .Help("Prompt tokens sent, by model")
                         .Register(*registry_)),
      inference_(BuildHistogram()
                     .Name("neurovisor_inference_duration_seconds")
                     .Help("Duration of LLM calls, all models")
                     .Register(*registry_)
                     .Add({}, kLlmBuckets)),
      llm_duration_(BuildHistogram()
                        .Name("neurovisor_llm_call_duration_seconds")
                        .Help("Duration of LLM calls, by model")
                        .Register(*registry_)),
      model_load_(BuildHistogram()
                      .Name("neurovisor_model_load_duration_seconds")
                      .Help("Model load time reported by the model server, by model")
                      .Register(*registry_)),
      first_token_(BuildHistogram()
                       .Name("neurovisor_llm_time_to_first_token_seconds")
                       .Help("Time from a streamed LLM call's start to its first token, by "
                             "model")
                       .Register(*registry_)),
      tasks_started_(BuildCounter()
                         .Name("neurovisor_agent_tasks_started_total")
                         .Help("Agent tasks started")
                         .Register(*registry_)
                         .Add({})),
      iterations_(BuildCounter()
                      .Name("neurovisor_agent_iterations_total")
                      .Help("Agent loop iterations")
                      .Register(*registry_)
                      .Add({})),
      tool_calls_(BuildCounter()
                      .Name("neurovisor_agent_tool_calls_total")
                      .Help("Tool calls made by the model")
                      .Register(*registry_)
                      .Add({})),
      tasks_(BuildCounter()
                 .Name("neurovisor_agent_tasks_total")
                 .Help("Agent tasks finished, by status")
                 .Register(*registry_)),
      task_duration_(BuildHistogram()
                         .Name("neurovisor_agent_task_duration_seconds")
                         .Help("Duration of agent tasks")
                         .Register(*registry_)
                         .Add({}, kTaskBuckets)),
      agent_tasks_(BuildGauge()
                       .Name("neurovisor_agent_tasks")
                       .Help("Agent tasks by status: running now, or finished with that status")
                       .Register(*registry_)),
      alerts_(BuildCounter()
                  .Name("neurovisor_security_alerts_total")
                  .Help("Security alerts, by kind")
                  .Register(*registry_)),
      programs_(BuildGauge()
                    .Name("neurovisor_ebpf_programs_loaded")
                    .Help("Whether each eBPF program is loaded (1) or not (0)")
                    .Register(*registry_)),
      syscalls_(BuildCounter()
                    .Name("neurovisor_ebpf_syscall_total")
                    .Help("Syscalls made by each live VM's processes")
                    .Register(*registry_)),
      egress_denied_(BuildCounter()
                         .Name("neurovisor_egress_denied_total")
                         .Help("Guest connections and DNS lookups the sandbox's network policy "
                               "refused, by VM, sandbox and kind (lookup, connection)")
                         .Register(*registry_)),
      in_flight_(BuildGauge()
                     .Name("neurovisor_requests_in_flight")
                     .Help("Requests handed to workers and not yet answered, by service")
                     .Register(*registry_)),
      workers_(BuildGauge()
                   .Name("neurovisor_broker_workers")
                   .Help("Workers registered with the broker, by service")
                   .Register(*registry_)),
      queued_(BuildGauge()
                  .Name("neurovisor_broker_queued_requests")
                  .Help("Requests waiting for a worker, by service")
                  .Register(*registry_)) {
  // Every reason exists from the start, so a scrape shows 0 rather than nothing.
  for (auto r : {Invalid::malformed, Invalid::unknown_topic, Invalid::topic_mismatch,
                 Invalid::bad_enum, Invalid::bad_label, Invalid::bad_number, Invalid::too_many}) {
    invalid_.Add({{"reason", std::string(invalid_name(r))}});
  }
  agent_tasks_.Add({{"status", "running"}});
}

void EventMetrics::count_malformed(uint64_t n) {
  if (n > 0) invalid_.Add({{"reason", "malformed"}}).Increment(static_cast<double>(n));
}

void EventMetrics::reject(const Rejection& r) {
  invalid_.Add({{"reason", std::string(invalid_name(r.reason))}}).Increment();
}

Status EventMetrics::apply(std::string_view topic, schema::Event::Reader event) noexcept {
  Check problem;
  try {
    problem = apply_payload(topic, event);
  } catch (const kj::Exception& e) {
    problem = Rejection{Invalid::malformed, e.getDescription().cStr()};
  } catch (const std::exception& e) {
    problem = Rejection{Invalid::malformed, e.what()};
  }
  if (!problem) return {};
  try {
    reject(*problem);
  } catch (...) {  // a failed counter update must not take the exporter down
  }
  return make_error(ErrorCode::BAD_REQUEST,
                    std::string(invalid_name(problem->reason)) + ": " + problem->detail);
}

EventMetrics::Check EventMetrics::check_label(std::string_view what, std::string_view value) const {
  if (value.empty()) return Rejection{Invalid::bad_label, std::string(what) + " is empty"};
  if (value.size() > limits_.max_label_bytes) {
    return Rejection{Invalid::bad_label, std::string(what) + " is longer than " +
                                             std::to_string(limits_.max_label_bytes) + " bytes"};
  }
  for (char c : value) {
    if (!label_char(c)) {
      return Rejection{Invalid::bad_label, std::string(what) +
                                               " has a character outside "
                                               "[A-Za-z0-9_.:/@+-]"};
    }
  }
  return {};
}

std::string EventMetrics::bounded(const std::string& label, std::string_view value) {
  auto& seen = label_values_[label];
  std::string v(value);
  if (seen.count(v)) return v;
  if (seen.size() >= limits_.max_label_values) return "other";
  seen.insert(v);
  return v;
}

EventMetrics::VmSeries* EventMetrics::vm(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  if (it != vms_.end()) return &it->second;
  if (vms_.size() >= limits_.max_vms) {
    series_dropped_.Increment();
    return nullptr;
  }
  return &vms_[vm_id];
}

void EventMetrics::forget_vm(const std::string& vm_id) {
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return;
  if (it->second.memory) memory_.Remove(it->second.memory);
  if (it->second.syscalls) syscalls_.Remove(it->second.syscalls);
  if (it->second.egress_lookup) egress_denied_.Remove(it->second.egress_lookup);
  if (it->second.egress_connection) egress_denied_.Remove(it->second.egress_connection);
  if (it->second.throttled) vm_throttled_.Remove(it->second.throttled);
  if (it->second.throttled_seconds) vm_throttled_seconds_.Remove(it->second.throttled_seconds);
  vms_.erase(it);
}

size_t EventMetrics::expire_idle_vms(int64_t now_ns) {
  std::vector<std::string> idle;
  for (const auto& [id, s] : vms_) {
    if (now_ns - s.last_seen_ns > limits_.vm_idle_ns) idle.push_back(id);
  }
  for (const auto& id : idle) forget_vm(id);
  return idle.size();
}

EventMetrics::Check EventMetrics::apply_payload(std::string_view topic,
                                                schema::Event::Reader event) {
  // Envelope: version, topic agreement, severity in range.
  if (event.getVersion() != schema::SCHEMA_VERSION) {
    return Rejection{Invalid::malformed, "schema version " + std::to_string(event.getVersion())};
  }
  if (std::string_view(event.getTopic().cStr()) != topic) {
    return Rejection{Invalid::topic_mismatch, "frame topic differs from the event's topic"};
  }
  const TopicSpec* spec = nullptr;
  for (const auto& t : kTopics) {
    if (t.topic == topic) spec = &t;
  }
  if (!spec) return Rejection{Invalid::unknown_topic, "unknown topic"};
  if (event.which() != spec->payload) {
    return Rejection{Invalid::topic_mismatch, "payload does not match topic " + std::string(topic)};
  }
  if (static_cast<uint16_t>(event.getSeverity()) > static_cast<uint16_t>(schema::Severity::ALERT)) {
    return Rejection{Invalid::bad_enum, "severity out of range"};
  }

  Check problem;
  switch (event.which()) {
    case Which::SERVICE_STARTED:
      problem = on_service(event, true);
      break;
    case Which::SERVICE_STOPPING:
      problem = on_service(event, false);
      break;
    case Which::VM_BOOTED:
      problem = on_vm_booted(event.getVmBooted());
      break;
    case Which::VM_ACQUIRED:
      problem = on_vm_acquired(event.getVmAcquired());
      break;
    case Which::VM_RELEASED:
      problem = on_vm_released(event.getVmReleased());
      break;
    case Which::VM_FAILED:
      problem = on_vm_failed(event.getVmFailed());
      break;
    case Which::VM_STATS:
      problem = on_vm_stats(event.getVmStats(), event.getTimeNs());
      break;
    case Which::POOL_STATUS:
      problem = on_pool_status(event.getPoolStatus());
      break;
    case Which::EXEC_STARTED:
      problem = on_exec_started(event.getExecStarted());
      break;
    case Which::EXEC_FINISHED:
      problem = on_exec_finished(event.getExecFinished());
      break;
    case Which::LLM_CALL:
      problem = on_llm_call(event.getLlmCall());
      break;
    case Which::TASK_STARTED:
      tasks_started_.Increment();
      agent_tasks_.Add({{"status", "running"}}).Set(static_cast<double>(++tasks_running_));
      break;
    case Which::TASK_ITERATION:
      problem = on_task_iteration(event.getTaskIteration());
      break;
    case Which::TASK_FINISHED:
      problem = on_task_finished(event.getTaskFinished());
      break;
    case Which::SECURITY_ALERT:
      problem = on_security_alert(event.getSecurityAlert());
      break;
    case Which::SENTINEL_STATUS:
      problem = on_sentinel_status(event.getSentinelStatus());
      break;
    case Which::SYSCALL_COUNTS:
      problem = on_syscall_counts(event.getSyscallCounts(), event.getTimeNs());
      break;
    case Which::BROKER_STATUS:
      problem = on_broker_status(event.getBrokerStatus());
      break;
    case Which::EGRESS_DENIED:
      problem = on_egress_denied(event.getEgressDenied(), event.getTimeNs());
      break;
    default:
      return Rejection{Invalid::topic_mismatch, "no payload handler"};
  }
  if (problem) return problem;
  events_.Add({{"topic", std::string(topic)}}).Increment();
  return {};
}

// ----------------------------------------------------------------------------------- services

EventMetrics::Check EventMetrics::on_service(schema::Event::Reader event, bool started) {
  std::string service = event.getService();
  std::string instance = event.getInstance();
  if (auto p = check_label("service", service)) return p;
  if (instance.empty() || instance.size() > limits_.max_label_bytes) {
    return Rejection{Invalid::bad_label, "instance is empty or too long"};
  }
  auto label = bounded("service", service);
  auto& up = instances_[label];
  if (started) {
    if (!up.count(instance) && instance_count_ < limits_.max_instances) {
      up.insert(instance);
      ++instance_count_;
    }
  } else if (up.erase(instance)) {
    --instance_count_;
  }
  services_up_.Add({{"service", label}}).Set(static_cast<double>(up.size()));
  return {};
}

// ---------------------------------------------------------------------------------------- VMs

EventMetrics::Check EventMetrics::on_vm_booted(schema::VmBooted::Reader p) {
  if (enum_label(p.getTier()).empty()) return Rejection{Invalid::bad_enum, "tier"};
  std::string backend = p.getBackend(), accel = p.getAccel();
  if (auto e = check_label("backend", backend)) return e;
  if (auto e = check_label("accel", accel)) return e;
  if (auto e = check_label("vm_id", p.getVmId().cStr())) return e;
  if (!duration_ok(p.getBootMs())) return Rejection{Invalid::bad_number, "bootMs"};
  vm_boot_
      .Add({{"backend", bounded("backend", backend)},
            {"accel", bounded("accel", accel)},
            {"restored", p.getRestored() ? "true" : "false"}},
           kBootBuckets)
      .Observe(p.getBootMs() / 1000.0);
  return {};
}

EventMetrics::Check EventMetrics::on_vm_acquired(schema::VmAcquired::Reader p) {
  auto tier = enum_label(p.getTier());
  if (tier.empty()) return Rejection{Invalid::bad_enum, "tier"};
  if (auto e = check_label("vm_id", p.getVmId().cStr())) return e;
  if (!duration_ok(p.getWaitMs())) return Rejection{Invalid::bad_number, "waitMs"};
  vm_acquire_.Add({{"tier", tier}}, kAcquireBuckets).Observe(p.getWaitMs() / 1000.0);
  return {};
}

EventMetrics::Check EventMetrics::on_vm_released(schema::VmReleased::Reader p) {
  auto tier = enum_label(p.getTier());
  if (tier.empty()) return Rejection{Invalid::bad_enum, "tier"};
  std::string vm_id = p.getVmId();
  if (auto e = check_label("vm_id", vm_id)) return e;
  if (!duration_ok(p.getLeasedMs())) return Rejection{Invalid::bad_number, "leasedMs"};
  // The VM's series go first: a scrape that sees this release counted never sees them.
  forget_vm(vm_id);
  vm_leased_.Add({{"tier", tier}}, kLeaseBuckets).Observe(p.getLeasedMs() / 1000.0);
  return {};
}

EventMetrics::Check EventMetrics::on_vm_failed(schema::VmFailed::Reader p) {
  // A VM that failed while booting may have no tier yet; only a value past the enum is bad.
  auto raw_tier = static_cast<uint16_t>(p.getTier());
  if (raw_tier > static_cast<uint16_t>(schema::SizeTier::LARGE)) {
    return Rejection{Invalid::bad_enum, "tier"};
  }
  std::string vm_id = p.getVmId();
  if (auto e = check_label("vm_id", vm_id)) return e;
  std::string reason = p.getReason();
  forget_vm(vm_id);  // first, as in on_vm_released
  vm_failures_.Add({{"reason_class", std::string(failure_class(reason))}}).Increment();
  return {};
}

EventMetrics::Check EventMetrics::on_vm_stats(schema::VmStats::Reader p, int64_t time_ns) {
  std::string vm_id = p.getVmId();
  if (auto e = check_label("vm_id", vm_id)) return e;
  VmSeries* s = vm(vm_id);
  if (!s) return {};  // over the VM limit: counted in neurovisor_series_dropped_total
  s->last_seen_ns = std::max(s->last_seen_ns, time_ns);
  if (!s->memory) s->memory = &memory_.Add({{"vm_id", vm_id}});
  s->memory->Set(static_cast<double>(p.getMemoryBytes()));
  uint64_t throttled = p.getCpuThrottledPeriods();
  // The cgroup's counter only grows; a smaller value means a new cgroup under the same id.
  uint64_t delta = throttled >= s->last_throttled ? throttled - s->last_throttled : throttled;
  if (delta > 0) throttled_.Increment(static_cast<double>(delta));
  s->last_throttled = throttled;
  if (!s->throttled) s->throttled = &vm_throttled_.Add({{"vm_id", vm_id}});
  if (delta > 0) s->throttled->Increment(static_cast<double>(delta));
  uint64_t us = p.getCpuThrottledUs();
  uint64_t us_delta = us >= s->last_throttled_us ? us - s->last_throttled_us : us;
  if (!s->throttled_seconds) s->throttled_seconds = &vm_throttled_seconds_.Add({{"vm_id", vm_id}});
  if (us_delta > 0) s->throttled_seconds->Increment(static_cast<double>(us_delta) / 1e6);
  s->last_throttled_us = us;
  return {};
}

EventMetrics::Check EventMetrics::on_pool_status(schema::PoolStatusEvent::Reader p) {
  auto tiers = p.getTiers();
  if (tiers.size() > limits_.max_list_entries) return Rejection{Invalid::too_many, "tiers"};
  std::vector<std::string> names;
  for (auto t : tiers) {
    names.push_back(enum_label(t.getTier()));
    if (names.back().empty()) return Rejection{Invalid::bad_enum, "tier"};
  }
  for (unsigned i = 0; i < tiers.size(); ++i) {
    pool_warm_.Add({{"tier", names[i]}}).Set(tiers[i].getWarm());
    pool_active_.Add({{"tier", names[i]}}).Set(tiers[i].getActive());
    pool_booting_.Add({{"tier", names[i]}}).Set(tiers[i].getBooting());
  }
  return {};
}

// ------------------------------------------------------------------------------- executions

EventMetrics::Check EventMetrics::on_exec_started(schema::ExecStarted::Reader p) {
  auto language = enum_label(p.getLanguage());
  if (language.empty()) return Rejection{Invalid::bad_enum, "language"};
  exec_started_.Add({{"language", language}}).Increment();
  return {};
}

EventMetrics::Check EventMetrics::on_exec_finished(schema::ExecFinished::Reader p) {
  auto language = enum_label(p.getLanguage());
  if (language.empty()) return Rejection{Invalid::bad_enum, "language"};
  std::string status = p.getStatus();
  bool known = false;
  for (auto s : kExecStatuses) known |= (s == status);
  if (!known) return Rejection{Invalid::bad_enum, "status"};
  if (!duration_ok(p.getDurationMs())) return Rejection{Invalid::bad_number, "durationMs"};
  exec_duration_.Add({{"language", language}}, kExecBuckets).Observe(p.getDurationMs() / 1000.0);
  executions_.Add({{"language", language}, {"status", status}}).Increment();
  return {};
}

// ------------------------------------------------------------------------------------- LLM

EventMetrics::Check EventMetrics::on_llm_call(schema::LlmCall::Reader p) {
  std::string model = p.getModel();
  if (auto e = check_label("model", model)) return e;
  if (!duration_ok(p.getDurationMs())) return Rejection{Invalid::bad_number, "durationMs"};
  if (!duration_ok(p.getLoadMs())) return Rejection{Invalid::bad_number, "loadMs"};
  if (!duration_ok(p.getFirstTokenMs())) return Rejection{Invalid::bad_number, "firstTokenMs"};
  auto label = bounded("model", model);
  llm_requests_.Add({{"model", label}}).Increment();
  tokens_.Add({{"model", label}}).Increment(p.getCompletionTokens());
  prompt_tokens_.Add({{"model", label}}).Increment(p.getPromptTokens());
  double seconds = p.getDurationMs() / 1000.0;
  inference_.Observe(seconds);
  llm_duration_.Add({{"model", label}}, kLlmBuckets).Observe(seconds);
  if (p.getLoadMs() > 0) {
    model_load_.Add({{"model", label}}, kLoadBuckets).Observe(p.getLoadMs() / 1000.0);
  }
  if (p.getFirstTokenMs() > 0) {
    first_token_.Add({{"model", label}}, kFirstTokenBuckets).Observe(p.getFirstTokenMs() / 1000.0);
  }
  return {};
}

// ----------------------------------------------------------------------------------- tasks

EventMetrics::Check EventMetrics::on_task_iteration(schema::TaskIteration::Reader p) {
  iterations_.Increment();
  tool_calls_.Increment(p.getToolCalls());
  return {};
}

EventMetrics::Check EventMetrics::on_task_finished(schema::TaskFinished::Reader p) {
  std::string status = p.getStatus();
  if (!is_enumerant<schema::TaskStatus>(status)) return Rejection{Invalid::bad_enum, "status"};
  if (!duration_ok(p.getDurationMs())) return Rejection{Invalid::bad_number, "durationMs"};
  tasks_.Add({{"status", status}}).Increment();
  agent_tasks_.Add({{"status", status}}).Increment();
  tasks_running_ = std::max<int64_t>(0, tasks_running_ - 1);
  agent_tasks_.Add({{"status", "running"}}).Set(static_cast<double>(tasks_running_));
  task_duration_.Observe(p.getDurationMs() / 1000.0);
  return {};
}

}  // namespace nv::metrics
