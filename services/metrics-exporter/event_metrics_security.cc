// event_metrics_security.cc — the security, sentinel, egress and broker events of EventMetrics
// (event_metrics.h; split from event_metrics.cc by concern).
#include <algorithm>
#include <string>
#include <string_view>

#include "event_metrics.h"

namespace nv::metrics {

// -------------------------------------------------------------------------------- security

EventMetrics::Check EventMetrics::on_security_alert(schema::SecurityAlert::Reader p) {
  std::string kind = p.getKind();
  if (auto e = check_label("kind", kind)) return e;
  alerts_.Add({{"kind", bounded("kind", kind)}}).Increment();
  return {};
}

EventMetrics::Check EventMetrics::on_sentinel_status(schema::SentinelStatus::Reader p) {
  auto programs = p.getPrograms();
  if (programs.size() > limits_.max_list_entries) return Rejection{Invalid::too_many, "programs"};
  for (auto prog : programs) {
    if (auto e = check_label("program", prog.getName().cStr())) return e;
  }
  for (auto prog : programs) {
    programs_.Add({{"program", bounded("program", prog.getName().cStr())}})
        .Set(prog.getLoaded() ? 1 : 0);
  }
  return {};
}

EventMetrics::Check EventMetrics::on_syscall_counts(schema::SyscallCounts::Reader p,
                                                    int64_t time_ns) {
  auto entries = p.getEntries();
  if (entries.size() > limits_.max_list_entries) return Rejection{Invalid::too_many, "entries"};
  for (auto e : entries) {
    if (auto bad = check_label("vm_id", e.getVmId().cStr())) return bad;
  }
  for (auto e : entries) {
    std::string vm_id = e.getVmId();
    VmSeries* s = vm(vm_id);
    if (!s) continue;
    s->last_seen_ns = std::max(s->last_seen_ns, time_ns);
    if (!s->syscalls) s->syscalls = &syscalls_.Add({{"vm_id", vm_id}});
    uint64_t count = e.getCount();
    uint64_t delta = count >= s->last_syscalls ? count - s->last_syscalls : count;
    if (delta > 0) s->syscalls->Increment(static_cast<double>(delta));
    s->last_syscalls = count;
  }
  return {};
}

EventMetrics::Check EventMetrics::on_egress_denied(schema::EgressDenied::Reader p,
                                                   int64_t time_ns) {
  const std::string vm_id = p.getVmId();
  // A VM leased for one task (not a sandbox) has no sandbox id: its series says "none".
  const std::string sandbox_id = p.getSandboxId().size() ? p.getSandboxId().cStr() : "none";
  if (auto e = check_label("vm_id", vm_id)) return e;
  if (auto e = check_label("sandbox_id", sandbox_id)) return e;
  if (p.getCount() == 0) return Rejection{Invalid::bad_number, "count is 0"};
  VmSeries* s = vm(vm_id);
  if (!s) return {};
  s->last_seen_ns = std::max(s->last_seen_ns, time_ns);
  const bool lookup = std::string_view(p.getRule().cStr()).starts_with("nxdomain");
  prometheus::Counter*& c = lookup ? s->egress_lookup : s->egress_connection;
  if (!c) {
    c = &egress_denied_.Add(
        {{"vm_id", vm_id}, {"sandbox_id", sandbox_id}, {"kind", lookup ? "lookup" : "connection"}});
  }
  c->Increment(static_cast<double>(p.getCount()));
  return {};
}

// ---------------------------------------------------------------------------------- broker

EventMetrics::Check EventMetrics::on_broker_status(schema::BrokerStatus::Reader p) {
  std::string service = p.getService();
  if (auto e = check_label("service", service)) return e;
  auto label = bounded("service", service);
  in_flight_.Add({{"service", label}}).Set(p.getInFlight());
  workers_.Add({{"service", label}}).Set(p.getWorkers());
  queued_.Add({{"service", label}}).Set(p.getQueued());
  return {};
}

}  // namespace nv::metrics
