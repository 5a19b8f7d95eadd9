// nv-ebpf-sentinel: the eBPF layer as a service.
//
// It loads what the kernel accepts (and publishes sentinel.status naming what it could not, with
// the errno), learns which processes and cgroups are VMs from vm.booted / vm.released / vm.failed
// events (the history first, then live), tracks each VMM tree, attaches the egress policy to the
// VM's cgroup2 dir, and turns what the programs see into events:
//   egress denial      -> security.alert {kind egress_denied, action denied}
//   exec in a VMM tree -> security.alert {kind vmm_exec, action vm_destroy_requested}
//                         (the pool manager destroys a VM named in a security.alert)
//   BPF LSM denial     -> security.alert {kind lsm_denied}
//   syscall counts     -> sentinel.syscalls every --counts-interval-ms
#include <nv/schema/bus.capnp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include <map>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/seccomp_policy.h"
#include "common/service.h"
#include "sentinel.h"

namespace {

using nv::schema::Event;

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string s; std::getline(ss, s, ',');) {
    if (!s.empty()) out.push_back(s);
  }
  return out;
}

void add_options(nv::Config& c) {
  c.add_string("egress-deny", "",
               "extra CIDRs every VM cgroup may not connect to (comma-separated), on top of the "
               "defaults: link-local/metadata and private ranges");
  c.add_string("egress-allow", "", "CIDRs punched through the deny list (comma-separated)");
  c.add_bool("lsm", true, "try to load the BPF LSM programs (reported when the kernel refuses)");
  c.add_int("counts-interval-ms", 5000, "interval of sentinel.syscalls events");
  c.add_bool("seccomp", true, "install the seccomp allow-list after start-up");
  c.add_string("bpffs", "/sys/fs/bpf",
               "a bpffs (mounted there if it is not one yet) where egress links and policy maps "
               "are pinned, so VM egress stays enforced when the sentinel dies; '' = no pins");
}

// The pin dir of this stack: one per runtime dir, so stacks side by side (tests) never adopt or
// sweep each other's pins. "/run/neurovisor" → BPFFS/neurovisor/_run_neurovisor.
std::string pin_dir_for(const std::string& bpffs, const std::string& runtime_dir) {
  std::string key;
  for (char ch : runtime_dir)
    key += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' ? ch : '_';
  if (key.size() > 200) key = key.substr(key.size() - 200);
  return bpffs + "/neurovisor/" + key;
}

// bpffs is not mounted at /sys/fs/bpf on every host (it is not on ours): mount it, as systemd
// does at boot. Returns "" or what failed.
std::string ensure_bpffs(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == 0xcafe4a11UL) {
    return "";  // BPF_FS_MAGIC
  }
  ::mkdir(path.c_str(), 0700);
  if (::mount("bpf", path.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
    return "mount(bpf, " + path + "): " + std::strerror(errno);
  }
  nv::log::info("mounted a bpffs", {{"path", path}});
  return "";
}

struct VmRecord {
  std::string cgroup;
  uint32_t pid = 0;
};

class SentinelService {
 public:
  explicit SentinelService(nv::ServiceContext& ctx) : ctx_(ctx) {
    for (auto& cidr : split(ctx.config.str("egress-deny"))) {
      policy_.rules.push_back({cidr, nv::sentinel::EgressAction::kDeny, "operator deny list"});
    }
    for (auto& cidr : split(ctx.config.str("egress-allow"))) {
      policy_.rules.push_back({cidr, nv::sentinel::EgressAction::kAllow, "operator allow list"});
    }
  }

  int run() {
    nv::sentinel::Callbacks cb;
    cb.on_egress_denial = [this](const nv::sentinel::EgressDenial& d) {
      alert("egress_denied", d.vm_id, static_cast<uint32_t>(d.tgid),
            d.hook + " " + d.address + ":" + std::to_string(d.port) + " by " + d.comm +
                " denied by rule " + d.rule + " (" + d.reason + ")",
            "denied");
    };
    cb.on_exec_alert = [this](const nv::sentinel::ExecAlert& a) {
      alert("vmm_exec", a.vm_id, static_cast<uint32_t>(a.tgid),
            "process " + std::to_string(a.tgid) + " in the VMM tree exec'd " + a.filename,
            "vm_destroy_requested");
    };
    cb.on_lsm_denial = [this](const nv::sentinel::LsmDenial& d) {
      alert("lsm_denied", d.vm_id, static_cast<uint32_t>(d.tgid), d.hook + " by " + d.comm,
            "denied");
    };
    sentinel_ = std::make_unique<nv::sentinel::Sentinel>(cb);
    nv::sentinel::LoadOptions lo;
    lo.lsm = ctx_.config.boolean("lsm");
    if (const std::string bpffs = ctx_.config.str("bpffs"); !bpffs.empty()) {
      std::string problem = ensure_bpffs(bpffs);
      if (problem.empty()) {
        ::mkdir((bpffs + "/neurovisor").c_str(), 0700);
        lo.pin_dir = pin_dir_for(bpffs, ctx_.runtime_dir);
      } else {
        nv::log::error("no bpffs: egress enforcement will not outlive this process",
                       {{"error", problem}});
      }
    }
    auto programs = sentinel_->load(lo);
    size_t loaded = 0;
    for (auto& p : programs) {
      loaded += p.loaded ? 1 : 0;
      nv::log::info(
          p.loaded ? "bpf program loaded" : "bpf program unavailable",
          {{"program", p.name}, {"section", p.section}, {"errno", p.errnum}, {"detail", p.detail}});
    }
    ctx_.events.publish("sentinel.status", [&](Event::Builder e) {
      auto list = e.initSentinelStatus().initPrograms(static_cast<unsigned>(programs.size()));
      for (unsigned i = 0; i < programs.size(); ++i) {
        list[i].setName(programs[i].name);
        list[i].setLoaded(programs[i].loaded);
        list[i].setErrno(programs[i].errnum);
        list[i].setDetail(programs[i].detail.empty() ? programs[i].section : programs[i].detail);
      }
    });
    // Presence on the bus so `nv status` lists the sentinel.
    nv::Worker presence(
        ctx_.zmq, ctx_.worker_options("ebpf-sentinel", 0), [](std::shared_ptr<nv::Request> r) {
          r->fail(nv::make_error(nv::ErrorCode::BAD_REQUEST, "the sentinel takes no requests"));
        });
    std::thread presence_thread([&] { presence.run(ctx_.stop); });

    nv::EventSubscriber sub(ctx_.zmq, ctx_.endpoints.events_out, {"vm."}, ctx_.curve_keys,
                            ctx_.curve_server_key);
    catch_up();
    // Pins a dead predecessor left for VMs destroyed meanwhile (their cgroups are gone).
    if (size_t n = sentinel_->sweep_egress_pins(); n > 0) {
      nv::log::info("removed stale egress pins", {{"cgroups", static_cast<int64_t>(n)}});
    }
    ctx_.announce_started({ctx_.endpoints.events_out, ctx_.endpoints.events_in});
    if (!install_seccomp()) return 1;
    nv::log::info("sentinel ready", {{"programs_loaded", loaded}, {"programs", programs.size()}});

    auto interval = std::chrono::milliseconds(ctx_.config.integer("counts-interval-ms"));
    auto next_counts = std::chrono::steady_clock::now() + interval;
    while (!ctx_.stop.load()) {
      // BPF ring buffers and bus events are both drained every 20 ms at most.
      sentinel_->poll(0);
      while (auto ev = sub.receive(std::chrono::milliseconds(0))) on_vm_event(ev->event);
      if (auto ev = sub.receive(std::chrono::milliseconds(20))) on_vm_event(ev->event);
      if (std::chrono::steady_clock::now() >= next_counts) {
        publish_counts();
        next_counts = std::chrono::steady_clock::now() + interval;
      }
    }
    sentinel_->poll(0);
    publish_counts();
    presence_thread.join();
    // Live VMs keep their pinned egress links through a restart; those of destroyed VMs go, and
    // with the last one the pin dir (nothing is left after `nv down`).
    size_t kept = sentinel_->release_egress_pins();
    for (auto& [id, vm] : vms_) (void)sentinel_->untrack_vm(id);
    nv::log::info("egress pins at exit", {{"cgroups_kept", static_cast<int64_t>(kept)}});
    return 0;
  }

 private:
  // After start-up: the sentinel profile (bpf, perf_event_open and the bus), kill on the rest.
  bool install_seccomp() {
    if (!ctx_.config.boolean("seccomp")) {
      nv::log::warn("seccomp disabled by --no-seccomp");
      return true;
    }
    auto profile = nv::seccomp::sentinel_profile();
    nv::seccomp::InstallOptions io;
    io.log = [](const std::string& line) { nv::log::debug(line); };
    auto r = nv::seccomp::install(profile, io);
    if (!r.ok) {
      nv::log::error("cannot install the seccomp filter", {{"error", r.text()}});
      return false;
    }
    nv::log::info("seccomp allow-list installed", {{"rules", r.rules_added}});
    return true;
  }

  // VMs booted before we started: the orchestrator's history says which are still alive.
  void catch_up() {
    nv::Client client(ctx_.zmq, ctx_.client_options());
    capnp::MallocMessageBuilder mb;
    auto req = nv::bus::init_body<nv::schema::HistoryRequest>(mb);
    req.setTopicPrefix("vm.");
    auto r = client.call("nv.events", &mb, std::chrono::milliseconds(3000));
    if (!r) {
      nv::log::warn("no event history; tracking only VMs booted from now on",
                    {{"error", r.error().to_string()}});
      return;
    }
    auto reply = r->body.root<nv::schema::HistoryReply>();
    if (!reply) return;
    for (auto e : reply->getEvents()) on_vm_event(e);
  }

  void on_vm_event(Event::Reader e) {
    switch (e.which()) {
      case Event::VM_BOOTED: {
        auto b = e.getVmBooted();
        std::string id = b.getVmId();
        if (id.empty() || id.size() > 64 || vms_.count(id)) return;
        VmRecord vm{b.getCgroupPath(), b.getVmmPid()};
        auto st = sentinel_->track_vm(id, static_cast<pid_t>(vm.pid), vm.cgroup);
        if (!st) nv::log::warn("track_vm failed", {{"vm_id", id}, {"error", st.text()}});
        if (!vm.cgroup.empty()) {
          auto eg = sentinel_->attach_egress(vm.cgroup, policy_, id);
          if (!eg) nv::log::warn("egress attach failed", {{"vm_id", id}, {"error", eg.text()}});
        }
        vms_[id] = vm;
        nv::log::info("tracking vm", {{"vm_id", id}, {"vmm_pid", vm.pid}, {"cgroup", vm.cgroup}});
        return;
      }
      case Event::VM_RELEASED:
        forget(e.getVmReleased().getVmId());
        return;
      case Event::VM_FAILED:
        forget(e.getVmFailed().getVmId());
        return;
      default:
        return;
    }
  }

  void forget(const std::string& id) {
    auto it = vms_.find(id);
    if (it == vms_.end()) return;
    if (!it->second.cgroup.empty()) (void)sentinel_->detach_egress(it->second.cgroup);
    (void)sentinel_->untrack_vm(id);
    vms_.erase(it);
  }

  void alert(const std::string& kind, const std::string& vm_id, uint32_t pid,
             const std::string& detail, const std::string& action) {
    nv::log::warn("security alert", {{"kind", kind}, {"vm_id", vm_id}, {"detail", detail}});
    ctx_.events.publish(
        "security.alert",
        [&](Event::Builder e) {
          auto a = e.initSecurityAlert();
          a.setKind(kind);
          a.setVmId(vm_id);
          a.setPid(pid);
          a.setDetail(detail);
          a.setAction(action);
        },
        {}, nv::schema::Severity::ALERT);
  }

  void publish_counts() {
    auto counts = sentinel_->syscall_counts();
    if (counts.empty()) return;
    ctx_.events.publish("sentinel.syscalls", [&](Event::Builder e) {
      auto list = e.initSyscallCounts().initEntries(static_cast<unsigned>(counts.size()));
      unsigned i = 0;
      for (auto& [id, n] : counts) {
        list[i].setVmId(id);
        list[i].setCount(n);
        ++i;
      }
    });
  }

  nv::ServiceContext& ctx_;
  nv::sentinel::EgressPolicy policy_;
  std::unique_ptr<nv::sentinel::Sentinel> sentinel_;
  std::map<std::string, VmRecord> vms_;
};

// What BPF needs and nothing else (design.md §1): programs and maps (bpf, perfmon), cgroup
// socket hooks (net_admin), map memory on older kernels (sys_resource), BPF LSM (sys_admin).
nv::Result<nv::PrivilegeSpec> privileges(const nv::Config&) {
  auto caps = nv::parse_caps("cap_bpf,cap_perfmon,cap_net_admin,cap_sys_resource,cap_sys_admin");
  if (!caps) return caps.error();
  nv::PrivilegeSpec spec;
  spec.keep = caps.value();
  return spec;
}

int run(nv::ServiceContext& ctx) {
  SentinelService s(ctx);
  return s.run();
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"ebpf-sentinel", "eBPF syscall/exec tracing and egress control for VMs",
                      add_options, run, true, privileges});
}
