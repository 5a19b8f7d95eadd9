// nv-vm-pool-manager: warm microVMs per size tier, leased to the sandbox-executor over this
// host's own ROUTER (ipc://$NV_RUNTIME_DIR/vm-pool.sock), never reused.
//
// Bus services (bus framing of frames.h, bodies of vm.capnp):
//   vm.lease   LeaseRequest  → Lease        (waits up to deadlineMs for a warm VM; the lease
//                                            lasts leaseMs, then the VM is destroyed unreleased)
//   vm.release ReleaseRequest→ ReleaseReply (destroys the VM; the pool boots a fresh one)
//   vm.status  PoolStatusRequest (or no body) → PoolStatus
// Bad input gets a typed Error (unknownTier, poolExhausted, unknownLease, badRequest, ...) and
// the service keeps serving. Events: vm.booted, vm.acquired, vm.released, vm.failed, vm.stats,
// pool.status.
//
// Start-up, in order: detect cgroups (v2, or the v1 hybrid) → lock the runtime dir (one pool
// manager per runtime dir) → create the backend → reclaim what a predecessor left (its VMMs,
// cgroup dirs, jails, templates: reclaim.h) → probe the accelerator with a real boot (qemu) →
// start the pool (snapshots first in --snapshot mode; a tier whose template fails is retried
// while the others serve) → bind the ROUTER → seccomp on the request-handling thread. The probe
// and the templates run beside the main thread, which watches for SIGTERM: start-up stops within
// moments and leaves nothing. Leases are fail-closed (--require-egress, the default): a VM is
// handed out only if the kernel shows the sentinel's egress programs on its cgroup2 dir. The pool's own threads (refill,
// monitor) spawn VMMs and stay outside that filter on purpose: seccomp filters are inherited
// across exec, and QEMU needs syscalls a pool-manager filter must not allow; VMMs get QEMU's own
// -sandbox filter and Landlock instead.
#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <mutex>
#include <sstream>
#include <thread>

#include <nv/schema/events.capnp.h>
#include <nv/schema/vm.capnp.h>

#include "cgroup.h"
#include "dns_service.h"
#include "common/log.h"
#include "common/seccomp_policy.h"
#include "common/service.h"
#include "firecracker_backend.h"
#include "guest_link.h"
#include "pool.h"
#include "qemu_backend.h"
#include "net_options.h"
#include "reclaim.h"
#include "sandbox_service.h"

namespace {

using nv::vm::SizeTier;
namespace schema = nv::schema;

void add_options(nv::Config& c) {
  c.add_string("backend", "qemu", "VMM backend: qemu | firecracker");
  c.add_string("accel", "auto", "qemu accelerator: auto (boot probe) | kvm | tcg");
  c.add_string("kernel", "",
               "guest kernel (guest/build.sh); default: BIN/../guest/vmlinux, "
               "BIN/../share/neurovisor/guest/vmlinux, "
               "else /var/lib/neurovisor/guest/vmlinux");
  c.add_string("rootfs", "",
               "guest root image, read-only; default: BIN/../guest/rootfs.ext4, "
               "BIN/../share/neurovisor/guest/rootfs.ext4, "
               "else /var/lib/neurovisor/guest/rootfs.ext4");
  c.add_string("tiers", "small,medium,large", "size tiers served, comma-separated");
  c.alias_flag("tiers", "size");  // the seed's spelling (`neurovisor --size large`)
  c.add_int("warm", 1, "idle VMs kept ready per tier");
  c.range("warm", 0, 256).alias_env("warm", "NEUROVISOR_POOL_SIZE");  // the seed's variable
  c.add_int("max", 4, "VMs per tier at most (warm + leased + booting)");
  c.range("max", 1, 4096).alias_env("max", "NEUROVISOR_MAX_VMS");  // the seed's variable
  c.add_bool("snapshot", true,
             "fill the pool by restoring a per-tier snapshot whose RAM clones share copy-on-write "
             "(reseeded; --no-snapshot: cold-boot every VM)");
  c.add_string("snapshot-dir", "", "where snapshots go (default RUNTIME/snapshots)");
  c.add_bool("snapshot-warm-up", true,
             "run each language once in the snapshot template, so clones start with the "
             "interpreters in their page cache");
  c.add_int("lease-deadline-ms", 5000, "how long a lease waits when the request sets no deadline");
  // A lessee that dies (a SIGKILLed executor) never releases: its VM is destroyed when the
  // lease's lifetime ends.
  c.add_int("lease-ttl-ms", 600000, "lease lifetime when the request asks for none (leaseMs 0)");
  c.add_int("max-lease-ttl-ms", 3600000, "longest lease lifetime granted; more is badRequest");
  c.add_int("max-sandbox-ttl-ms", 24 * 3600 * 1000,
            "longest lifetime of a sandbox lease (vm.lease with sandbox set, vm.extend)");
  c.add_string("state-dir", "",
               "what survives a restart: the sandbox registry (pool.sqlite), paused sandboxes, "
               "snapshots (default $NV_STATE_DIR, else RUNTIME/state)");
  c.add_bool("fork-kits", true,
             "keep a fork kit per tier, a copy of its template and a VMM started on it, so a "
             "fork copies and starts nothing while the caller waits (costs each template's "
             "allocated bytes once more and one idle VMM per tier; with --state-dir)");
  c.add_int("boot-timeout-ms", 60000, "VMM start → agent Hello, per VM");
  c.add_int("refill-threads", 2, "VMs booted in parallel");
  c.add_int("stats-interval-ms", 5000, "interval of vm.stats events (cgroup usage per VM)");
  c.add_string("qemu-binary", "/usr/bin/qemu-system-x86_64", "QEMU system emulator");
  c.add_string("firecracker-binary", "/usr/bin/firecracker", "Firecracker binary");
  c.add_string("channel-group", "", "group that may connect to guest channels (the executor's)");
  c.add_bool("jail", true, "run each VMM in its jail (namespaces, pivot_root, uid, Landlock)");
  c.add_bool("seccomp", true, "seccomp allow-list on the request-handling thread");
  // What the jails need, each for a reason: cap_sys_admin (clone3 into new namespaces, bind
  // mounts, pivot_root), cap_setuid/cap_setgid (the VMM's uid/gid and groups), cap_chown and
  // cap_fowner (the jail's socket dir, snapshot files), cap_kill (VMMs run under other uids),
  // cap_dac_override (cgroup files and VM sockets owned by others), cap_sys_ptrace (a capture
  // in place reads the guest RAM a VMM wrote from /proc/<vmm>/mem; capture.h).
  c.add_string("keep-caps",
               "cap_sys_admin,cap_setuid,cap_setgid,cap_chown,cap_fowner,cap_kill,cap_dac_override,"
               "cap_sys_ptrace",
               "capabilities kept after start-up (all others are dropped)");
  nv::vm::add_network_options(c);
  c.add_int("max-inflight", 256, "lease/release requests handled at once; more get overloaded");
  c.add_bool("require-egress", true,
             "fail-closed: lease only VMs whose cgroup has nv-ebpf-sentinel's egress programs "
             "attached (checked in the kernel per lease; else egressUnenforced). "
             "--no-require-egress: lease without them (stacks that run no sentinel)");
}

// One pool manager per runtime dir: a second one would reclaim the first one's VMs. The lock is
// held for the process's lifetime (flock dies with it, so a SIGKILLed predecessor frees it).
bool lock_runtime_dir(const std::string& runtime_dir, int* fd_out, std::string* problem) {
  std::string path = runtime_dir + "/vm-pool-manager.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    *problem = "open(" + path + "): " + std::strerror(errno);
    return false;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    *problem = "another nv-vm-pool-manager serves " + runtime_dir + " (" + path + " is locked)";
    ::close(fd);
    return false;
  }
  *fd_out = fd;
  return true;
}

// Pool callbacks → bus events.
// An explicit path wins; else the build tree's guest/ beside bin/ (./nv setup puts it there),
// else the installed one (`./nv install`: PREFIX/bin and PREFIX/share/neurovisor/guest), else
// /var/lib/neurovisor/guest.
std::string guest_file(const std::string& given, const std::string& name) {
  if (!given.empty()) return given;
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    for (const char* rel : {"/../guest/", "/../share/neurovisor/guest/"}) {
      std::string candidate = dir + rel + name;
      if (::access(candidate.c_str(), R_OK) == 0) return candidate;
    }
  }
  return "/var/lib/neurovisor/guest/" + name;
}

// vm.stats: one VM's cgroup usage.
void publish_stats(nv::EventPublisher& ev, const std::string& vm_id, const nv::vm::VmUsage& u) {
  ev.publish("vm.stats", [&](schema::Event::Builder e) {
    auto s = e.initVmStats();
    s.setVmId(vm_id);
    s.setMemoryBytes(u.memory_bytes);
    s.setCpuThrottledPeriods(u.cpu_throttled_periods);
    s.setCpuThrottledUs(u.cpu_throttled_us);
    s.setCpuUsageUs(u.cpu_usage_us);
    s.setPids(u.pids);
  });
}

class BusEvents : public nv::vm::PoolEvents {
 public:
  explicit BusEvents(nv::EventPublisher& ev) : ev_(ev) {}
  void on_booted(const nv::vm::VmInfo& vm, SizeTier tier, double boot_ms) override {
    ev_.publish("vm.booted", [&](schema::Event::Builder e) {
      auto b = e.initVmBooted();
      b.setVmId(vm.vm_id);
      b.setTier(tier);
      b.setBackend(vm.backend);
      b.setAccel(vm.accel);
      b.setBootMs(boot_ms);
      b.setRestored(vm.restored);
      b.setVmmPid(static_cast<uint32_t>(vm.vmm_pid));
      b.setCgroupPath(vm.cgroup2_path);
    });
  }
  void on_acquired(const std::string& id, SizeTier tier, double wait_ms) override {
    ev_.publish(
        "vm.acquired",
        [&](schema::Event::Builder e) {
          auto b = e.initVmAcquired();
          b.setVmId(id);
          b.setTier(tier);
          b.setWaitMs(wait_ms);
        },
        nv::log::current_trace_id());  // the lease request's trace: the span builder needs it
  }
  void on_released(const std::string& id, SizeTier tier, const std::string& reason,
                   double leased_ms) override {
    ev_.publish(
        "vm.released",
        [&](schema::Event::Builder e) {
          auto b = e.initVmReleased();
          b.setVmId(id);
          b.setTier(tier);
          b.setReason(reason);
          b.setLeasedMs(leased_ms);
        },
        nv::log::current_trace_id());  // "" when the monitor reclaims an expired lease
  }
  void on_final_usage(const std::string& id, const nv::vm::VmUsage& u) override {
    publish_stats(ev_, id, u);
  }
  void on_failed(const std::string& id, SizeTier tier, const std::string& reason,
                 pid_t pid) override {
    ev_.publish(
        "vm.failed",
        [&](schema::Event::Builder e) {
          auto b = e.initVmFailed();
          b.setVmId(id);
          b.setTier(tier);
          b.setReason(reason);
          b.setVmmPid(static_cast<uint32_t>(pid));
        },
        {}, schema::Severity::WARNING);
  }
  void on_status(const nv::vm::PoolStatusInfo& s) override {
    // Only changes are published (the pool calls this on every state transition).
    std::string key;
    for (const auto& t : s.tiers) {
      key += std::to_string(t.warm) + "/" + std::to_string(t.active) + "/" +
             std::to_string(t.booting) + "/" + std::to_string(t.waiting) + "/" +
             std::to_string(t.template_failures) + ";";
    }
    if (key == last_) return;
    last_ = key;
    ev_.publish("pool.status", [&](schema::Event::Builder e) {
      auto list = e.initPoolStatus().initTiers(static_cast<unsigned>(s.tiers.size()));
      for (unsigned i = 0; i < s.tiers.size(); ++i) fill_tier(list[i], s.tiers[i]);
    });
  }
  static void fill_tier(schema::TierStatus::Builder b, const nv::vm::TierStatusInfo& t) {
    b.setTier(t.tier);
    b.setWarm(t.warm);
    b.setActive(t.active);
    b.setBooting(t.booting);
    b.setWarmTarget(t.warm_target);
    b.setMax(t.max);
    b.setWaiting(t.waiting);
    b.setTemplateError(t.template_error);
    b.setTemplateFailures(t.template_failures);
    b.setForkKits(t.fork_kits);
  }

 private:
  nv::EventPublisher& ev_;
  std::string last_;  // guarded by the pool's lock (on_status runs under it)
};

// Answers produced by handler threads, sent by the loop thread (ZeroMQ sockets are not
// thread-safe); an eventfd wakes the loop.
struct Answer {
  std::vector<std::string> routing;
  nv::bus::Header header;
  std::optional<nv::Error> error;
  std::shared_ptr<capnp::MallocMessageBuilder> body;
};

class Outbox {
 public:
  Outbox() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Outbox() { ::close(fd_); }
  int fd() const { return fd_; }
  void push(Answer a) {
    {
      std::lock_guard lock(mu_);
      q_.push_back(std::move(a));
    }
    uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }
  std::deque<Answer> take() {
    uint64_t v;
    (void)!::read(fd_, &v, sizeof v);
    std::lock_guard lock(mu_);
    return std::exchange(q_, {});
  }

 private:
  int fd_;
  std::mutex mu_;
  std::deque<Answer> q_;
};

std::unique_ptr<nv::vm::Backend> make_backend(nv::ServiceContext& ctx,
                                              const nv::vm::CgroupLayout& layout, gid_t group,
                                              std::shared_ptr<nv::vm::NetworkManager> net,
                                              std::string* problem) {
  auto& c = ctx.config;
  if (c.str("backend") == "qemu") {
    nv::vm::QemuConfig q;
    q.qemu_binary = c.str("qemu-binary");
    q.runtime_dir = ctx.runtime_dir;
    q.accel = c.str("accel");
    q.use_jail = c.boolean("jail");
    q.channel_gid = group;
    q.cgroups = layout;
    q.network = std::move(net);
    return std::make_unique<nv::vm::QemuBackend>(q);
  }
  if (c.str("backend") == "firecracker") {
    nv::vm::FirecrackerConfig f;
    f.command = {c.str("firecracker-binary")};
    f.runtime_dir = ctx.runtime_dir;
    f.use_jail = c.boolean("jail");
    f.channel_gid = group;
    f.cgroups = layout;
    return std::make_unique<nv::vm::FirecrackerBackend>(f);
  }
  *problem = "--backend must be qemu or firecracker, not '" + c.str("backend") + "'";
  return nullptr;
}

int run(nv::ServiceContext& ctx) {
  auto& c = ctx.config;
  // --- options → pool options, every problem reported at once --------------------------------
  std::vector<std::string> problems;
  nv::vm::PoolOptions po;
  po.kernel = guest_file(c.str("kernel"), "vmlinux");
  po.rootfs = guest_file(c.str("rootfs"), "rootfs.ext4");
  po.snapshot = c.boolean("snapshot");
  po.snapshot_warm_up = c.boolean("snapshot-warm-up");
  po.snapshot_dir =
      c.str("snapshot-dir").empty() ? ctx.runtime_dir + "/snapshots" : c.str("snapshot-dir");
  po.default_lease_deadline = std::chrono::milliseconds(c.integer("lease-deadline-ms"));
  po.default_lease_ttl = std::chrono::milliseconds(c.integer("lease-ttl-ms"));
  po.max_lease_ttl = std::chrono::milliseconds(c.integer("max-lease-ttl-ms"));
  if (c.integer("lease-ttl-ms") < 1 || c.integer("max-lease-ttl-ms") < c.integer("lease-ttl-ms") ||
      c.integer("max-lease-ttl-ms") > int64_t{UINT32_MAX}) {
    problems.push_back("need 1 <= --lease-ttl-ms <= --max-lease-ttl-ms <= " +
                       std::to_string(UINT32_MAX));
  }
  po.max_sandbox_ttl = std::chrono::milliseconds(c.integer("max-sandbox-ttl-ms"));
  if (c.integer("max-sandbox-ttl-ms") < c.integer("lease-ttl-ms") ||
      c.integer("max-sandbox-ttl-ms") > int64_t{UINT32_MAX}) {
    problems.push_back("need --lease-ttl-ms <= --max-sandbox-ttl-ms <= " +
                       std::to_string(UINT32_MAX));
  }
  po.state_dir = c.str("state-dir");
  po.fork_kits = c.boolean("fork-kits");
  if (po.state_dir.empty()) {
    const char* env = std::getenv("NV_STATE_DIR");
    po.state_dir = env && *env ? env : ctx.runtime_dir + "/state";
  }
  po.boot_timeout = std::chrono::milliseconds(c.integer("boot-timeout-ms"));
  po.refill_threads = static_cast<unsigned>(std::max<int64_t>(1, c.integer("refill-threads")));
  int64_t warm = c.integer("warm"), max = c.integer("max");
  if (warm < 0 || max < 1 || warm > max) {
    problems.push_back("need 0 <= --warm <= --max and --max >= 1");
  }
  po.tiers.clear();
  std::stringstream sizes(c.str("size"));
  for (std::string name; std::getline(sizes, name, ',');) {
    SizeTier t;
    if (!nv::vm::parse_tier(name, &t)) {
      problems.push_back("--tiers: unknown tier '" + name + "' (small, medium, large)");
      continue;
    }
    for (const auto& d :
         nv::vm::default_tiers(static_cast<uint32_t>(warm), static_cast<uint32_t>(max))) {
      if (d.tier == t) po.tiers.push_back(d);
    }
  }
  gid_t group = 0;
  if (!c.str("channel-group").empty()) {
    if (struct group* g = ::getgrnam(c.str("channel-group").c_str())) {
      group = g->gr_gid;
    } else {
      problems.push_back("--channel-group: no group '" + c.str("channel-group") + "'");
    }
  }
  for (const auto& f : {po.kernel, po.rootfs}) {
    if (::access(f.c_str(), R_OK) != 0) {
      problems.push_back(f + " is missing: build it with guest/build.sh OUT_DIR AGENT");
    }
  }
  // The uplink namespace is opened while this process may still read other processes' /proc.
  nv::vm::UniqueFd uplink_fd;
  if (c.boolean("net")) {
    const std::string up =
        c.str("net-uplink-netns").empty() ? "/proc/self/ns/net" : c.str("net-uplink-netns");
    uplink_fd = nv::vm::UniqueFd(::open(up.c_str(), O_RDONLY | O_CLOEXEC));
    if (!uplink_fd.valid()) {
      problems.push_back("--net-uplink-netns: open(" + up + "): " + std::strerror(errno));
    }
  }
  // Privileges first, before this process starts any thread of its own (capability sets are
  // per thread): only what VMM jails need is kept.
  if (::geteuid() == 0) {
    auto caps = nv::parse_caps(
        c.str("keep-caps") + (c.boolean("net") ? ",cap_net_admin" : "") +
        (c.boolean("net") && !c.str("net-dns-upstream").empty() ? ",cap_net_bind_service" : ""));
    if (!caps) {
      problems.push_back("--keep-caps: " + caps.error().message);
    } else {
      nv::PrivilegeSpec ps;
      ps.keep = caps.value();
      if (auto s = nv::drop_privileges(ps); !s) problems.push_back(s.error().message);
    }
  }
  auto layout = nv::vm::CgroupLayout::detect();
  nv::log::info("cgroups detected", {{"mode", layout.mode_name()}, {"reason", layout.reason}});
  if (layout.mode == nv::vm::CgroupLayout::Mode::none) problems.push_back(layout.reason);
  std::string backend_problem;
  std::unique_ptr<nv::vm::Backend> backend;
  int lock_fd = -1;
  if (problems.empty()) {
    std::string why;
    if (!lock_runtime_dir(ctx.runtime_dir, &lock_fd, &why)) problems.push_back(why);
  }
  std::shared_ptr<nv::vm::dns::Responder> dns;  // lives longer than the pool that feeds it
  if (problems.empty()) {
    if (auto s = layout.prepare(); !s) problems.push_back(s.error().message);
    if (c.boolean("net") && uplink_fd.valid()) {
      auto nm = nv::vm::NetworkManager::create(nv::vm::network_config(c, uplink_fd.get()));
      if (!nm.ok()) {
        problems.push_back("--net: " + nm.error().message);
      } else {
        po.network = nm.value();
      }
      // The sandboxes' resolvers (dns_service.h): one responder thread for every networked VM.
      if (problems.empty() && !c.str("net-dns-upstream").empty()) {
        auto r = nv::vm::dns::start_pool_responder(c.str("net-dns-upstream"), ctx.events);
        if (!r.ok()) {
          problems.push_back(r.error().message);
        } else {
          dns = std::move(r.value());
          po.network->set_observer(std::make_shared<nv::vm::dns::PoolDnsObserver>(dns));
        }
      }
    }
    if (problems.empty()) backend = make_backend(ctx, layout, group, po.network, &backend_problem);
    if (problems.empty() && !backend) problems.push_back(backend_problem);
  }
  if (!problems.empty()) {
    std::string all;
    for (auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    nv::log::error("cannot start", {{"error", all}});
    return 2;
  }
  // Whatever a predecessor of this runtime dir left (it was SIGKILLed, say): before we serve.
  {
    auto r = nv::vm::reclaim_leftovers(layout, ctx.runtime_dir + "/vms", po.snapshot_dir, {});
    if (!r.vms.empty() || r.files_removed > 0) {
      std::string ids;
      for (const auto& id : r.vms) ids += (ids.empty() ? "" : ",") + id;
      nv::log::warn("reclaimed a predecessor's leftovers",
                    {{"vms", ids},
                     {"vmm_processes_killed", static_cast<int64_t>(r.vmm_processes_killed)},
                     {"cgroup_dirs_removed", static_cast<int64_t>(r.cgroup_dirs_removed)},
                     {"jail_dirs_removed", static_cast<int64_t>(r.jail_dirs_removed)},
                     {"files_removed", static_cast<int64_t>(r.files_removed)}});
    }
    for (const auto& p : r.problems) nv::log::error("reclaim failed", {{"error", p}});
  }
  if (c.boolean("require-egress")) {
    po.lease_check = [](const nv::vm::VmInfo& vm) {
      return nv::vm::egress_hooks_attached(vm.cgroup2_path);
    };
  }
  nv::vm::ChannelGuestLink guest;
  BusEvents events(ctx.events);
  nv::vm::Pool pool(po, *backend, guest, events);
  // Start-up (the accelerator probe, a template per tier) takes seconds to minutes under TCG; it
  // runs beside this thread, which keeps watching for SIGTERM: on one, the probe VM and the
  // templates in progress are killed and start-up ends within moments (nothing is left behind).
  std::atomic<bool> start_done{false};
  nv::Status started;
  std::thread starter([&] {
    if (auto* q = dynamic_cast<nv::vm::QemuBackend*>(backend.get())) {
      nv::vm::VmSpec probe;
      probe.vm_id = "probe-" + nv::vm::random_hex(4);
      probe.kernel = po.kernel;
      probe.rootfs = po.rootfs;
      (void)q->probe_accel(probe, [&](const nv::vm::VmInfo& vm, nv::vm::Deadline d) {
        return guest.wait_ready(vm, d);
      });
    }
    if (!ctx.stop.load()) started = pool.start();
    start_done = true;
  });
  bool aborted = false;
  while (!start_done.load()) {
    if (ctx.stop.load() && !aborted) {
      nv::log::info("stopping during start-up");
      aborted = true;
      if (auto* q = dynamic_cast<nv::vm::QemuBackend*>(backend.get())) q->abort_probe();
      pool.interrupt();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  starter.join();
  if (aborted || ctx.stop.load()) {
    pool.stop();
    layout.remove_parents();
    ::unlink((ctx.runtime_dir + "/vm-pool-manager.lock").c_str());
    return 0;
  }
  if (!started) {
    nv::log::error("pool did not start", {{"error", started.error().message}});
    pool.stop();
    return 1;
  }

  // --- the ROUTER --------------------------------------------------------------------------
  zmq::socket_t router(ctx.zmq, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(ctx.limits.max_frame_bytes));
  try {
    router.bind(ctx.endpoints.vm_pool);
  } catch (const zmq::error_t& e) {
    nv::log::error("bind failed", {{"endpoint", ctx.endpoints.vm_pool}, {"error", e.what()}});
    pool.stop();
    return 1;
  }
  // The executor connects as its own user: the socket belongs to the channel group.
  std::string sock_path = nv::bus::ipc_path(ctx.endpoints.vm_pool);
  if (!sock_path.empty()) {
    if (group != 0 && ::chown(sock_path.c_str(), 0, group) != 0) {
      nv::log::syscall_error("chown(" + sock_path + ")", errno);
    }
    ::chmod(sock_path.c_str(), 0660);
  }
  ctx.announce_started({ctx.endpoints.vm_pool});

  if (c.boolean("seccomp")) {
    nv::seccomp::InstallOptions io;
    io.all_threads = false;  // this thread and the handler threads it starts; see the top
    auto r = nv::seccomp::install(nv::seccomp::pool_manager_profile(), io);
    if (!r.ok) {
      nv::log::error("seccomp install failed", {{"error", r.text()}});
      pool.stop();
      return 1;
    }
  }

  Outbox outbox;
  // Requests in flight, each on its own thread, capped by --max-inflight: leases (which may wait
  // up to their deadline for a VM) apart from everything else, so leases waiting for a full
  // pool never make the vm.release that frees a VM answer overloaded.
  std::atomic<int> inflight{0}, lease_inflight{0};
  const int max_inflight = static_cast<int>(c.integer("max-inflight"));
  const std::string me = "vm-pool-manager";
  auto reply_header = [&](const nv::bus::Message& m) {
    nv::bus::Header h;
    h.kind = nv::bus::Kind::REPLY;
    h.service = m.header.service;
    h.request_id = m.header.request_id;
    h.trace_id = m.header.trace_id;
    return h;
  };
  auto send_answer = [&](Answer& a) {
    if (a.error) {
      nv::bus::send_error(router, a.routing, a.header.request_id, me, *a.error, a.header.trace_id);
    } else {
      nv::bus::send(router, a.routing, a.header, nv::bus::encode_body(*a.body));
    }
  };
  // Runs `work` (lease / release may block) on its own thread; its answer goes via the outbox.
  auto offload = [&](nv::bus::Message& m, std::atomic<int>& counter,
                     std::function<Answer(Answer)> work) {
    Answer a{m.routing, reply_header(m), std::nullopt, nullptr};
    if (counter.load() >= max_inflight) {
      a.error = nv::make_error(
          nv::ErrorCode::OVERLOADED,
          "vm-pool-manager has " + std::to_string(max_inflight) + " requests in flight; try again",
          true);
      send_answer(a);
      return;
    }
    counter++;
    std::thread([&, a = std::move(a), work = std::move(work)]() mutable {
      outbox.push(work(std::move(a)));
      counter--;
    }).detach();
  };

  // Sandbox services run on the pool's sandbox threads (outside this thread's seccomp filter:
  // they spawn VMMs and write the SQLite registry); the request thread only waits.
  // A sandbox vm.lease waits for its VM on its request thread (counted with the other waiting
  // leases); only its registry write and the other sandbox services use the sandbox threads.
  auto serve_sandbox = [&](nv::bus::Message& m) {
    const std::string svc = m.header.service;
    auto body = std::make_shared<nv::bus::BodyReader>(std::move(m.body));
    offload(m, svc == "vm.lease" ? lease_inflight : inflight, [&pool, svc, body](Answer a) {
      auto out = nv::vm::serve_sandbox_request(pool, svc, body);
      if (!out.ok()) {
        a.error = out.error();
      } else {
        a.body = out.value();
      }
      return a;
    });
  };
  auto handle = [&](nv::bus::Message& m) {
    const std::string& svc = m.header.service;
    if (m.header.kind == nv::bus::Kind::HEARTBEAT) {
      // The client's liveness (client.h): while its requests are outstanding it heartbeats and
      // takes silence for a stall. A lease may wait longer than that for a VM: answer each.
      nv::bus::Header h;
      h.kind = nv::bus::Kind::HEARTBEAT;
      h.interval_ms = m.header.interval_ms;
      nv::bus::send(router, m.routing, h, zmq::message_t(),
                    static_cast<int>(zmq::send_flags::dontwait));
      return;
    }
    if (m.header.kind != nv::bus::Kind::REQUEST) return;  // cancels etc.: nothing to do
    if (nv::vm::is_sandbox_service(svc)) {
      serve_sandbox(m);
    } else if (svc == "vm.status") {
      Answer a{m.routing, reply_header(m), std::nullopt,
               std::make_shared<capnp::MallocMessageBuilder>()};
      auto st = pool.status();
      auto b = nv::bus::init_body<schema::PoolStatus>(*a.body);
      b.setBackend(st.backend);
      b.setAccel(st.accel);
      auto list = b.initTiers(static_cast<unsigned>(st.tiers.size()));
      for (unsigned i = 0; i < st.tiers.size(); ++i) BusEvents::fill_tier(list[i], st.tiers[i]);
      send_answer(a);
    } else if (svc == "vm.lease") {
      auto req = m.body.root<schema::LeaseRequest>();
      if (!req) {
        Answer a{m.routing, reply_header(m), req.error(), nullptr};
        send_answer(a);
        return;
      }
      if (req.value().getSandbox()) {
        serve_sandbox(m);
        return;
      }
      SizeTier tier = req.value().getTier();
      uint32_t dl = req.value().getDeadlineMs();
      if (dl == 0) dl = m.header.deadline_ms;
      uint32_t ttl = req.value().getLeaseMs();  // 0 = default; above the maximum: badRequest
      std::string trace = req.value().getTraceId();
      offload(m, lease_inflight, [&pool, tier, dl, ttl, trace](Answer a) {
        nv::log::TraceScope scope(trace);
        auto l = pool.lease(tier, std::chrono::milliseconds(dl), std::chrono::milliseconds(ttl));
        if (!l) {
          a.error = l.error();
          return a;
        }
        a.body = std::make_shared<capnp::MallocMessageBuilder>();
        nv::vm::fill_lease(nv::bus::init_body<schema::Lease>(*a.body), l.value());
        return a;
      });
    } else if (svc == "vm.release") {
      auto req = m.body.root<schema::ReleaseRequest>();
      if (!req) {
        Answer a{m.routing, reply_header(m), req.error(), nullptr};
        send_answer(a);
        return;
      }
      std::string id = req.value().getVmId(), reason = req.value().getReason();
      std::string trace = req.value().getTraceId();
      if (reason.empty()) reason = "released";
      offload(m, inflight, [&pool, id, reason, trace](Answer a) {
        nv::log::TraceScope scope(trace);
        if (auto s = nv::vm::on_pool_thread(pool, [&] { return pool.release(id, reason); }); !s) {
          a.error = s.error();
          return a;
        }
        a.body = std::make_shared<capnp::MallocMessageBuilder>();
        nv::bus::init_body<schema::ReleaseReply>(*a.body).setVmId(id);
        return a;
      });
    } else {
      Answer a{m.routing, reply_header(m),
               nv::make_error(
                   nv::ErrorCode::UNKNOWN_SERVICE,
                   "vm-pool-manager serves vm.lease, vm.release, vm.status, vm.extend, vm.fork, "
                   "vm.snapshot, vm.snapshots, vm.snapshot.delete, vm.pause, vm.resume, "
                   "vm.leases; not '" +
                       svc + "'"),
               nullptr};
      send_answer(a);
    }
  };

  // --- presence on the bus and security alerts ------------------------------------------------
  // Registered with capacity 0 so `nv status` lists the pool manager; it takes no broker work.
  nv::Worker presence(ctx.zmq, ctx.worker_options("vm-pool-manager", 0),
                      [](std::shared_ptr<nv::Request> r) {
                        r->fail(nv::make_error(nv::ErrorCode::BAD_REQUEST,
                                               "vm-pool-manager is reached on its own socket"));
                      });
  std::thread presence_thread([&] { presence.run(ctx.stop); });
  // A security.alert that names one of our VMs (the sentinel saw its VMM exec, say) destroys it.
  nv::EventSubscriber alerts(ctx.zmq, ctx.endpoints.events_out, {"security.alert"}, ctx.curve_keys,
                             ctx.curve_server_key);
  auto on_alert = [&](nv::schema::Event::Reader e) {
    if (!e.isSecurityAlert()) return;
    auto a = e.getSecurityAlert();
    std::string id = a.getVmId();
    if (id.empty() || id.size() > 128) return;
    std::string why = "security alert: " + std::string(a.getKind().cStr()) + " (" +
                      std::string(a.getDetail().cStr()).substr(0, 200) + ")";
    std::thread([&pool, id, why] {
      if (auto s = nv::vm::on_pool_thread(pool, [&] { return pool.destroy(id, why); }); s.ok()) {
        nv::log::warn("vm destroyed after a security alert", {{"vm_id", id}, {"why", why}});
      }
    }).detach();
  };

  // --- the loop ----------------------------------------------------------------------------
  auto stats_every =
      std::chrono::milliseconds(std::max<int64_t>(500, c.integer("stats-interval-ms")));
  auto next_stats = std::chrono::steady_clock::now() + stats_every;
  std::vector<zmq::message_t> frames;
  while (!ctx.stop.load()) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, outbox.fd(), ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(200));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) nv::log::error("zmq poll failed", {{"error", e.what()}});
      continue;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      for (auto& a : outbox.take()) send_answer(a);
    }
    while (auto ev = alerts.receive(std::chrono::milliseconds(0))) on_alert(ev->event);
    while (nv::bus::recv_frames(router, frames)) {
      nv::bus::Message m;
      nv::bus::ParseError failure;
      // Every send/receive here is [routing][empty][Header][body] (frames.h).
      if (!nv::bus::parse(frames, true, ctx.limits, &m, &failure)) {
        if (!failure.routing.empty()) {
          nv::bus::send_error(router, failure.routing, failure.request_id, me, failure.error);
        }
        continue;
      }
      try {
        handle(m);
      } catch (const std::exception& e) {  // the dispatch boundary: nothing escapes as a crash
        Answer a{m.routing, reply_header(m), nv::make_error(nv::ErrorCode::INTERNAL, e.what()),
                 nullptr};
        send_answer(a);
      }
    }
    if (std::chrono::steady_clock::now() >= next_stats) {
      next_stats = std::chrono::steady_clock::now() + stats_every;
      for (const auto& vm : pool.live_vms()) {
        auto u = pool.usage(vm.vm_id);
        if (!u) continue;
        publish_stats(ctx.events, vm.vm_id, u.value());
      }
    }
    if (po.network) nv::vm::publish_denied(*po.network, ctx.events);
  }
  // Drain: waiting leases end with shuttingDown, releases finish, answers go out — within the
  // 2 s every service has after SIGTERM (pool.stop() kills VMs in progress and every VMM at once).
  nv::log::info("draining",
                {{"inflight", static_cast<int64_t>(inflight.load() + lease_inflight.load())}});
  std::thread stopper([&] { pool.stop(); });
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (inflight.load() + lease_inflight.load() > 0 && std::chrono::steady_clock::now() < until) {
    for (auto& a : outbox.take()) send_answer(a);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& a : outbox.take()) send_answer(a);
  stopper.join();
  presence_thread.join();
  layout.remove_parents();
  if (!sock_path.empty()) ::unlink(sock_path.c_str());
  ::unlink((ctx.runtime_dir + "/vm-pool-manager.lock").c_str());
  if (lock_fd >= 0) ::close(lock_fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  nv::ServiceSpec spec;
  spec.name = "vm-pool-manager";
  spec.summary = "warm microVMs per size tier, leased once and destroyed on release";
  spec.add_options = add_options;
  spec.run = run;
  return nv::service_main(argc, argv, spec);
}
