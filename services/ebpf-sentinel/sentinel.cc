#include "sentinel.h"

#include <bpf/libbpf.h>

#include <cerrno>

#include "egress.h"
#include "lsm.h"
#include "tracker.h"

namespace nv::sentinel {

Sentinel::Sentinel(Callbacks callbacks) : callbacks_(std::move(callbacks)) {}

Sentinel::~Sentinel() {
  // The ring buffer holds the maps' fds and our callbacks: it goes first.
  if (rb_) ring_buffer__free(rb_);
  rb_ = nullptr;
  lsm_.reset();     // shares the tracker's map: before the tracker
  egress_.reset();  // links leave the cgroups
  tracker_.reset();
}

std::vector<ProgramStatus> Sentinel::load(const LoadOptions& options) {
  if (!programs_.empty()) return programs_;  // loaded once per Sentinel
  auto append = [this](const std::vector<ProgramStatus>& v) {
    programs_.insert(programs_.end(), v.begin(), v.end());
  };
  // Tracker first: the LSM programs share its tracked_tgids map.
  if (options.tracker) {
    tracker_ = std::make_unique<Tracker>();
    append(tracker_->load(options.count_self));
  }
  if (options.egress) {
    egress_ = std::make_unique<Egress>();
    egress_->set_pin_dir(options.pin_dir);
    append(egress_->load());
  }
  if (options.lsm) {
    lsm_ = std::make_unique<Lsm>();
    append(lsm_->load(tracker_ ? tracker_->tracked_tgids_fd() : -1));
  }
  // One ring_buffer polls every object's ring. A failure here is reported on each program of
  // that object (its events would never be delivered).
  auto ring = [this](const std::string& object, Status st) {
    if (st.ok()) return;
    for (ProgramStatus& p : programs_) {
      if (p.object != object) continue;
      p.errnum = st.error().errnum;
      p.detail = "ring buffer: " + st.error().text();
    }
  };
  if (tracker_ && tracker_->loaded())
    ring("sentinel_tracker", tracker_->add_ring(&rb_, &callbacks_));
  if (egress_ && egress_->loaded()) ring("sentinel_egress", egress_->add_ring(&rb_, &callbacks_));
  if (lsm_ && lsm_->loaded())
    ring("sentinel_lsm", lsm_->add_ring(&rb_, &callbacks_, tracker_.get()));
  return programs_;
}

std::optional<ProgramStatus> Sentinel::program(const std::string& name) const {
  // Egress programs attach per cgroup: their live "attached" flag is in the Egress object.
  if (egress_) {
    for (const ProgramStatus& p : egress_->statuses())
      if (p.name == name) return p;
  }
  for (const ProgramStatus& p : programs_)
    if (p.name == name) return p;
  return std::nullopt;
}

Status Sentinel::track_vm(const std::string& vm_id, pid_t vmm_pid, const std::string& cgroup2_dir) {
  if (!tracker_ || !tracker_->loaded())
    return Status::Fail("track_vm(" + vm_id + ")", ENODEV, "sentinel_tracker not loaded");
  return tracker_->track(vm_id, vmm_pid, cgroup2_dir);
}

Status Sentinel::untrack_vm(const std::string& vm_id) {
  if (!tracker_ || !tracker_->loaded())
    return Status::Fail("untrack_vm(" + vm_id + ")", ENODEV, "sentinel_tracker not loaded");
  return tracker_->untrack(vm_id);
}

std::map<std::string, uint64_t> Sentinel::syscall_counts() const {
  if (!tracker_ || !tracker_->loaded()) return {};
  return tracker_->syscall_counts();
}

std::optional<uint64_t> Sentinel::syscall_count(const std::string& vm_id) const {
  if (!tracker_ || !tracker_->loaded()) return std::nullopt;
  return tracker_->syscall_count(vm_id);
}

Status Sentinel::set_syscall_counting(bool on) {
  if (!tracker_ || !tracker_->loaded())
    return Status::Fail("set_syscall_counting", ENODEV, "sentinel_tracker not loaded");
  return tracker_->set_counting(on);
}

Status Sentinel::attach_egress(const std::string& cgroup2_dir, const EgressPolicy& policy,
                               const std::string& vm_id) {
  if (!egress_ || !egress_->loaded())
    return Status::Fail("attach_egress(" + cgroup2_dir + ")", ENODEV, "sentinel_egress not loaded");
  return egress_->attach(cgroup2_dir, policy, vm_id);
}

size_t Sentinel::sweep_egress_pins() {
  return egress_ && egress_->loaded() ? egress_->sweep_stale_pins() : 0;
}

size_t Sentinel::release_egress_pins() {
  return egress_ && egress_->loaded() ? egress_->release_pins() : 0;
}

Status Sentinel::detach_egress(const std::string& cgroup2_dir) {
  if (!egress_ || !egress_->loaded())
    return Status::Fail("detach_egress(" + cgroup2_dir + ")", ENODEV, "sentinel_egress not loaded");
  return egress_->detach(cgroup2_dir);
}

Status Sentinel::egress_set_rule(const std::string& cgroup2_dir, const EgressRule& rule) {
  if (!egress_ || !egress_->loaded())
    return Status::Fail("egress_set_rule(" + cgroup2_dir + ")", ENODEV,
                        "sentinel_egress not loaded");
  return egress_->set_rule(cgroup2_dir, rule);
}

Status Sentinel::egress_remove_rule(const std::string& cgroup2_dir, const std::string& cidr) {
  if (!egress_ || !egress_->loaded())
    return Status::Fail("egress_remove_rule(" + cgroup2_dir + ")", ENODEV,
                        "sentinel_egress not loaded");
  return egress_->remove_rule(cgroup2_dir, cidr);
}

std::vector<EgressRule> Sentinel::egress_rules(const std::string& cgroup2_dir) const {
  if (!egress_ || !egress_->loaded()) return {};
  return egress_->rules(cgroup2_dir);
}

Status Sentinel::lsm_deny_file(const std::string& path) {
  if (!lsm_ || !lsm_->loaded())
    return Status::Fail("lsm_deny_file(" + path + ")", ENODEV, "sentinel_lsm not loaded");
  return lsm_->deny_file(path);
}

int Sentinel::poll(int timeout_ms, Status* error) {
  if (!rb_) {
    if (error) *error = Status::Fail("poll", ENODEV, "no ring buffer (nothing loaded)");
    return -1;
  }
  int n = ring_buffer__poll(rb_, timeout_ms);
  if (n == -EINTR) return 0;
  if (n < 0) {
    if (error) *error = Status::Fail("ring_buffer__poll", -n);
    return -1;
  }
  events_delivered_ += static_cast<uint64_t>(n);
  return n;
}

uint64_t Sentinel::events_dropped() const {
  uint64_t n = 0;
  if (tracker_) n += tracker_->dropped_events();
  if (egress_) n += egress_->dropped_events();
  if (lsm_) n += lsm_->dropped_events();
  return n;
}

int Sentinel::event_fd() const { return rb_ ? ring_buffer__epoll_fd(rb_) : -1; }

}  // namespace nv::sentinel
