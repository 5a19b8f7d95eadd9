#include "qemu_backend.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <mutex>
#include <thread>

#include "common/landlock.h"
#include "jail.h"
#include "jailed_vm.h"
#include "common/log.h"
#include "qmp.h"

namespace nv::vm {
namespace {

// The template memfd's number in the VMM (VmSpec::memory_fd), opened by QEMU as
// /proc/self/fd/3: its jail mounts a procfs of its own PID namespace.
constexpr int kMemoryFd = 3;
// The VM's TAP device (network.h), created in the VM's own network namespace by the pool
// manager; QEMU only reads and writes it (-netdev tap,fd=).
constexpr int kTapFd = 4;
// Migrations of VMs on template memory leave the shared RAM out (only device state travels).
constexpr const char* kIgnoreShared =
    R"({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})";
constexpr const char* kSendShared =
    R"({"capabilities": [{"capability": "x-ignore-shared", "state": false}]})";

// Paths as QEMU sees them.
struct VmPaths {
  std::string kernel;
  std::string rootfs;
  std::string run_dir;  // sockets
};

bool valid_vm_id(const std::string& id) {
  if (id.empty() || id.size() > 48) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

std::string tail_of(const std::string& path, size_t n = 1500) {
  auto r = read_file(path, 1 << 20);
  if (!r.ok()) return "";
  const std::string& s = r.value();
  return s.size() > n ? s.substr(s.size() - n) : s;
}

std::vector<std::string> build_argv(const QemuConfig& cfg, const std::string& accel,
                                    const VmSpec& spec, const VmPaths& p, bool incoming) {
  std::vector<std::string> a = {cfg.qemu_binary};
  auto add = [&a](std::initializer_list<std::string> xs) { a.insert(a.end(), xs); };
  add({"-name", "nv-" + spec.vm_id});
  // ACPI off: QEMU then lists the virtio-mmio devices on the kernel command line, which is how
  // the minimal guest kernel finds them (facts.md).
  const bool tmpl = spec.memory_fd >= 0;
  add({"-M", std::string("microvm,acpi=off") + (tmpl ? ",memory-backend=ram" : "")});
  add({"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"});
  // Device state saved alone (save_device_state: QEMU's xen-save-devices-state) carries no
  // configuration section, and a loader that expects one refuses it ("Configuration section
  // missing"); Xen's machines turn it off the same way. Set on every VM so that every stream
  // (templates, clones, captures, snapshots) has one format.
  add({"-global", "migration.send-configuration=off"});
  if (accel == "kvm") {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", "tcg,tb-size=" + std::to_string(cfg.tcg_tb_size_mib), "-cpu", "max"});
  }
  add({"-smp", std::to_string(spec.vcpus), "-m", std::to_string(spec.memory_mib)});
  if (tmpl) {
    add({"-object", "memory-backend-file,id=ram,size=" + std::to_string(spec.memory_mib) +
                        "M,mem-path=/proc/self/fd/" + std::to_string(kMemoryFd) +
                        ",share=" + (spec.memory_shared ? "on" : "off")});
  }
  add({"-kernel", p.kernel, "-append", cfg.kernel_cmdline});
  // Serial console → QEMU's stdout, which the backend points at <jail>/console.log.
  add({"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"});
  add({"-drive", "id=root,file=" + p.rootfs + ",format=raw,if=none,readonly=on", "-device",
       "virtio-blk-device,drive=root"});
  // Without a hardware RNG python3 in the guest stalls waiting for entropy (facts.md).
  add({"-device", "virtio-rng-device"});
  if (cfg.network) {  // every VM when networking is on: clones need their template's devices
    add({"-netdev", "tap,id=net0,fd=" + std::to_string(kTapFd), "-device",
         "virtio-net-device,netdev=net0"});
  }
  add({"-device", "virtio-serial-device,max_ports=3", "-chardev",
       "socket,id=agent,path=" + p.run_dir + "/agent.sock,server=on,wait=off", "-device",
       "virtserialport,chardev=agent,name=nv.agent"});
  // The inference bridge's port (guest.capnp InferenceRequest): on every VM, so templates,
  // clones and capture receivers have the same devices; the guest listens only when told.
  add({"-chardev", "socket,id=inference,path=" + p.run_dir + "/inference.sock,server=on,wait=off",
       "-device", "virtserialport,chardev=inference,name=nv.inference"});
  add({"-chardev", "socket,id=qmp,path=" + p.run_dir + "/qmp.sock,server=on,wait=off", "-mon",
       "chardev=qmp,mode=control"});
  if (cfg.sandbox) {
    add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  }
  if (incoming) add({"-incoming", "defer"});
  return a;
}

// Removes the VM's network namespace (network.h) when the VM object goes.
struct VmNetHold {
  std::shared_ptr<NetworkManager> net;
  std::string vm_id;
  VmNetHold() = default;
  VmNetHold(std::shared_ptr<NetworkManager> n, std::string id)
      : net(std::move(n)), vm_id(std::move(id)) {}
  VmNetHold(VmNetHold&& o) noexcept : net(std::move(o.net)), vm_id(std::move(o.vm_id)) {}
  VmNetHold& operator=(VmNetHold&& o) noexcept {
    std::swap(net, o.net);
    std::swap(vm_id, o.vm_id);
    return *this;
  }
  ~VmNetHold() {
    if (net) net->remove_vm(vm_id);
  }
};

class QemuVm : public JailedVm {
 public:
  QemuVm(VmInfo info, Jail jail, VmCgroup cg, JailedProcess proc, std::string console,
         bool template_ram, std::string restore_from, VmNetHold net)
      : JailedVm(std::move(info), std::move(jail), std::move(cg), std::move(proc)),
        net_(std::move(net)),
        template_ram_(template_ram),
        console_(std::move(console)),
        restore_from_(std::move(restore_from)) {}
  ~QemuVm() override { (void)destroy(Clock::now() + std::chrono::seconds(1)); }

  Status check_responsive(Deadline deadline) override {
    std::lock_guard lock(mu_);
    auto st = qmp_.run_state(deadline);
    if (!st.ok()) return st.error();
    if (st.value() != "running") {
      return make_error(ErrorCode::VM_FAILED, "guest not running: " + st.value());
    }
    return {};
  }

  Status snapshot(const std::string& path, Deadline deadline) override {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return sys_error("open(" + path + ")", errno);
    return send_state(fd.get(), template_ram_, deadline);
  }

  Status send_state(int fd, bool ignore_shared, Deadline deadline) override {
    std::lock_guard lock(mu_);
    if (auto r = qmp_.execute("stop", "", deadline); !r.ok()) return r.error();
    // Set either way: a clone inherits x-ignore-shared from its own restore, and a capture
    // must send the clone's (private) RAM with the receiver expecting it.
    if (auto r = qmp_.execute("migrate-set-capabilities",
                              ignore_shared ? kIgnoreShared : kSendShared, deadline);
        !r.ok()) {
      return r.error();
    }
    // QEMU 7.2 throttles migration to 32 MiB/s by default; a local file takes what it can.
    if (auto r =
            qmp_.execute("migrate-set-parameters", R"({"max-bandwidth": 10737418240})", deadline);
        !r.ok()) {
      return r.error();
    }
    if (Status s = qmp_.send_fd("snapshot", fd, deadline); !s.ok()) return s;
    if (auto r = qmp_.execute("migrate", R"({"uri": "fd:snapshot"})", deadline); !r.ok()) {
      return r.error();
    }
    return qmp_.wait_migration(deadline);
  }

  Status receive_state(int fd, Deadline deadline) override {
    std::lock_guard lock(mu_);
    if (Status s = qmp_.send_fd("incoming", fd, deadline); !s.ok()) return s;
    if (auto r = qmp_.execute("migrate-set-capabilities", kSendShared, deadline); !r.ok()) {
      return r.error();
    }
    if (auto r = qmp_.execute("migrate-incoming", R"({"uri": "fd:incoming"})", deadline); !r.ok()) {
      return r.error();
    }
    for (;;) {
      auto st = qmp_.run_state(deadline);
      if (!st.ok()) return st.error();
      if (st.value() == "paused" || st.value() == "postmigrate") return {};
      if (st.value() != "inmigrate") {
        return make_error(ErrorCode::VM_FAILED, "capture receiver ended in state " + st.value());
      }
      if (Clock::now() >= deadline) {
        return make_error(ErrorCode::TIMED_OUT, "capture receiver still inmigrate at deadline");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  Status save_device_state(int fd, Deadline deadline) override {
    std::lock_guard lock(mu_);
    if (auto r = qmp_.execute("stop", "", deadline); !r.ok()) return r.error();
    auto set = qmp_.add_fd(fd, deadline);
    if (!set.ok()) return set.error();
    const std::string id = std::to_string(set.value());
    auto saved = qmp_.execute("xen-save-devices-state",
                              R"({"filename": "/dev/fdset/)" + id + R"("})", deadline);
    auto removed = qmp_.execute("remove-fd", R"({"fdset-id": )" + id + "}", deadline);
    if (!saved.ok()) return saved.error();
    if (!removed.ok()) return removed.error();
    return {};
  }

  Status resume_guest(Deadline deadline) override {
    std::lock_guard lock(mu_);
    if (auto r = qmp_.execute("cont", "", deadline); !r.ok()) return r.error();
    return {};
  }

  // Feeds the snapshot to a VMM started with -incoming defer, then runs the guest (a snapshot
  // of a stopped guest arrives paused). On failure the error carries the VMM's last output.
  Status complete_restore(Deadline deadline) override {
    std::lock_guard lock(mu_);
    if (restore_from_.empty()) return {};
    const auto start = Clock::now();
    Status s = load_snapshot(deadline);
    if (!s.ok()) {
      Error e = s.error();
      std::string tail = tail_of(console_);
      if (!tail.empty()) e.message += "; VMM output: " + tail;
      return e;
    }
    restore_from_.clear();
    info_.restore_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return {};
  }

  QmpClient& qmp() { return qmp_; }
  void set_vmm_start_ms(double ms) { info_.vmm_start_ms = ms; }

 protected:
  bool stop_gracefully(Deadline deadline) override {
    // QEMU exits at once on "quit" (nothing to flush: the disk is read-only).
    bool asked = false;
    if (qmp_.connected()) {
      auto quit_deadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(300));
      asked = qmp_.execute("quit", "", quit_deadline).ok();
    }
    qmp_.close();
    return asked;
  }

 private:
  Status load_snapshot(Deadline deadline) {
    UniqueFd snap(::open(restore_from_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!snap.valid()) return sys_error("open(" + restore_from_ + ")", errno);
    if (Status s = qmp_.send_fd("snapshot", snap.get(), deadline); !s.ok()) return s;
    snap.reset();
    if (template_ram_) {
      if (auto r = qmp_.execute("migrate-set-capabilities", kIgnoreShared, deadline); !r.ok()) {
        return r.error();
      }
    }
    if (auto r = qmp_.execute("migrate-incoming", R"({"uri": "fd:snapshot"})", deadline); !r.ok()) {
      return r.error();
    }
    for (;;) {
      auto st = qmp_.run_state(deadline);
      if (!st.ok()) return st.error();
      if (st.value() == "running") return {};
      if (st.value() == "paused" || st.value() == "postmigrate" || st.value() == "prelaunch") {
        if (auto r = qmp_.execute("cont", "", deadline); !r.ok()) return r.error();
        continue;
      }
      if (st.value() != "inmigrate") {
        return make_error(ErrorCode::VM_FAILED, "restore ended in state " + st.value());
      }
      if (Clock::now() >= deadline) {
        return make_error(ErrorCode::TIMED_OUT, "restore still inmigrate at deadline");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  VmNetHold net_;            // declared first: destroyed after ~QemuVm stopped the VMM
  const bool template_ram_;  // guest RAM is a template memfd (snapshots leave it out)
  std::string console_;
  std::string restore_from_;  // set until complete_restore() loaded it
  QmpClient qmp_;
};

}  // namespace

QemuBackend::QemuBackend(QemuConfig config) : cfg_(std::move(config)) {
  if (cfg_.accel == "kvm" || cfg_.accel == "tcg") {
    accel_ = cfg_.accel;
    accel_reason_ = "configured (--accel " + cfg_.accel + ")";
  }
}

void QemuBackend::set_accel(std::string accel, std::string reason) {
  accel_ = std::move(accel);
  accel_reason_ = std::move(reason);
}

std::vector<std::string> QemuBackend::command_line(const VmSpec& spec, bool incoming) const {
  VmPaths p{"/vm/vmlinux", "/vm/rootfs.ext4", "/run"};
  if (!cfg_.use_jail) {
    p = {spec.kernel, spec.rootfs, cfg_.runtime_dir + "/vms/" + spec.vm_id + "/run"};
  }
  return build_argv(cfg_, accel_, spec, p, incoming);
}

Result<std::unique_ptr<RunningVm>> QemuBackend::boot(const VmSpec& spec, Deadline deadline) {
  auto vm = start(spec, deadline);
  if (!vm.ok()) return vm;
  if (Status s = vm.value()->complete_restore(deadline); !s.ok()) {
    (void)vm.value()->destroy(Clock::now() + std::chrono::milliseconds(500));
    return s.error();
  }
  return vm;
}

Result<std::unique_ptr<RunningVm>> QemuBackend::start(const VmSpec& spec, Deadline deadline) {
  if (!valid_vm_id(spec.vm_id)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "vm id must be [a-z0-9-]{1,48}: '" + spec.vm_id + "'");
  }
  for (const auto& f : {spec.kernel, spec.rootfs}) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) return sys_error("stat(" + f + ")", errno);
    // The VMM runs as an unprivileged uid and opens these through its jail's binds.
    if (cfg_.use_jail && !(st.st_mode & S_IROTH)) {
      return make_error(ErrorCode::INTERNAL, f + " is not world-readable; the jailed VMM (uid " +
                                                 std::to_string(cfg_.uid_base) +
                                                 "+) cannot open it: chmod a+r it");
    }
  }
  const bool restore = !spec.restore_from.empty();
  if (spec.incoming && (restore || spec.memory_fd < 0 || !spec.memory_shared)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "a capture receiver takes no restore file and needs shared template memory");
  }
  if (spec.memory_fd >= 0 && !spec.incoming) {
    struct stat st {};
    if (::fstat(spec.memory_fd, &st) != 0) return sys_error("fstat(template memory)", errno);
    if (static_cast<uint64_t>(st.st_size) != (uint64_t{spec.memory_mib} << 20)) {
      return make_error(ErrorCode::BAD_REQUEST, "template memory holds " +
                                                    std::to_string(st.st_size) + " bytes, the VM " +
                                                    std::to_string(spec.memory_mib) + " MiB");
    }
    if (spec.memory_shared == restore) {
      return make_error(ErrorCode::BAD_REQUEST,
                        restore ? "a restored VM maps template memory copy-on-write, not shared"
                                : "a cold boot on template memory must share it (the template)");
    }
  }
  if (restore && ::access(spec.restore_from.c_str(), R_OK) != 0) {
    return sys_error("access(" + spec.restore_from + ")", errno);
  }
  const uint64_t n = seq_++;
  const uid_t uid = cfg_.uid_base + static_cast<uid_t>(n % cfg_.uid_count);
  const std::string dir = cfg_.runtime_dir + "/vms/" + spec.vm_id;

  // 1. cgroup: created and limited before the process exists (the child joins it first).
  VmCgroup cg;
  if (cfg_.use_cgroup) {
    CgroupLimits lim;
    lim.memory_bytes = (uint64_t{spec.memory_mib} + cfg_.vmm_overhead_mib) << 20;
    lim.cpu_quota_percent = spec.vcpus * 100;
    lim.pids_max = cfg_.pids_max;
    auto c = VmCgroup::create(cfg_.cgroups, spec.vm_id, lim);
    if (!c.ok()) return c.error();
    cg = std::move(c.value());
  }
  // 2. jail dir with what QEMU needs, each with its reason.
  JailSpec js;
  js.dir = dir;
  js.uid = uid;
  js.gid = uid;
  js.isolate = cfg_.use_jail;
  js.writable_group = cfg_.channel_gid;
  js.writable_dirs = {"/run"};
  js.hostname = "nv-vmm";
  if (cfg_.use_jail) {
    js.binds = {
        {"/usr", "/usr", true, false, false, "the QEMU binary, its libraries, /usr/share/qemu"},
        {"/etc/ld.so.cache", "/etc/ld.so.cache", true, false, true, "dynamic loader's index"},
        {spec.kernel, "/vm/vmlinux", true, false, false, "guest kernel (-kernel)"},
        {spec.rootfs, "/vm/rootfs.ext4", true, false, false, "guest root disk, read-only"},
        {"/dev/null", "/dev/null", true, true, false, "stdio of the VMM"},
        {"/dev/urandom", "/dev/urandom", true, true, true, "glibc/QEMU fallbacks"},
    };
    if (accel_ == "kvm") {
      js.binds.push_back({"/dev/kvm", "/dev/kvm", false, true, false, "hardware virtualization"});
      if (group* g = ::getgrnam("kvm")) js.groups.push_back(g->gr_gid);
    }
  }
  auto jail = Jail::prepare(std::move(js));
  if (!jail.ok()) return jail.error();
  // Landlock: built now, in the parent (the paths resolve to the same inodes the jail's binds
  // show, and the jail dir exists now), enforced by the child before its uid drop. Read-only:
  // the jail and the images; execute: /usr (QEMU and its libraries); read-write: the socket dir
  // and the device nodes.
  landlock::PreparedRuleset ruleset;
  if (cfg_.use_jail && cfg_.landlock) {
    std::string why;
    if (landlock::available(&why)) {
      landlock::Ruleset rules;
      rules.read_only = {dir, spec.kernel, spec.rootfs, "/etc/ld.so.cache"};
      rules.execute = {"/usr"};
      rules.read_write = {dir + "/run", "/dev/null", "/dev/urandom"};
      if (accel_ == "kvm") rules.read_write.push_back("/dev/kvm");
      rules.skip_missing = true;
      ruleset = landlock::prepare(rules);
      if (!ruleset.ok()) {
        return make_error(ErrorCode::INTERNAL, "landlock ruleset: " + ruleset.outcome().text());
      }
      jail.value().set_landlock_fd(ruleset.fd());
    } else if (!landlock_warned_.exchange(true)) {
      log::warn("landlock unavailable; VMMs are confined by namespaces and seccomp only",
                {{"reason", why}});
    }
  }
  const std::string console = dir + "/console.log";
  UniqueFd log_fd(::open(console.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log_fd.valid()) return sys_error("open(" + console + ")", errno);

  auto procs = cg.open_procs();
  if (!procs.ok()) return procs.error();
  std::vector<int> proc_fds;
  for (auto& f : procs.value()) proc_fds.push_back(f.get());

  VmInfo info;
  info.vm_id = spec.vm_id;
  info.channel_kind = ChannelKind::unixStream;
  info.channel_path = dir + "/run/agent.sock";
  info.inference_path = dir + "/run/inference.sock";
  info.backend = "qemu";
  info.accel = accel_;
  info.restored = restore;
  info.jail_dir = dir;
  info.cgroup2_path = cg.cgroup2_path();

  // 3. spawn in the jail.
  const auto spawn_start = Clock::now();
  std::vector<std::pair<int, int>> pass_fds;
  if (spec.memory_fd >= 0) pass_fds.emplace_back(spec.memory_fd, kMemoryFd);
  VmNetHold net;
  UniqueFd tap;
  if (cfg_.network) {
    auto t = cfg_.network->create_vm(spec.vm_id);
    if (!t.ok()) return t.error();
    net = VmNetHold(cfg_.network, spec.vm_id);
    tap = std::move(t.value());
    pass_fds.emplace_back(tap.get(), kTapFd);
  }
  auto proc = jail.value().spawn(command_line(spec, restore || spec.incoming), proc_fds, pass_fds,
                                 log_fd.get());
  if (!proc.ok()) return proc.error();
  info.vmm_pid = proc.value().pid;
  auto vm = std::make_unique<QemuVm>(std::move(info), std::move(jail.value()), std::move(cg),
                                     std::move(proc.value()), console, spec.memory_fd >= 0,
                                     spec.restore_from, std::move(net));
  tap.reset();
  auto fail = [&vm, &console](const Error& e) -> Error {
    Error out = e;
    std::string tail = tail_of(console);
    (void)vm->destroy(Clock::now() + std::chrono::milliseconds(500));
    if (!tail.empty()) out.message += "; VMM output: " + tail;
    return out;
  };
  // 4. control channel.
  auto qmp = QmpClient::connect(dir + "/run/qmp.sock", deadline, vm->exit_fd());
  if (!qmp.ok()) return fail(qmp.error());
  vm->qmp() = std::move(qmp.value());
  vm->set_vmm_start_ms(
      std::chrono::duration<double, std::milli>(Clock::now() - spawn_start).count());
  return std::unique_ptr<RunningVm>(std::move(vm));
}

void QemuBackend::abort_probe() {
  std::lock_guard lock(probe_mu_);
  probe_aborted_ = true;
  if (probe_vm_) probe_vm_->kill_now();
}

Status QemuBackend::probe_accel(const VmSpec& probe, const ReadyCheck& ready,
                                std::chrono::milliseconds probe_timeout) {
  if (cfg_.accel == "kvm" || cfg_.accel == "tcg") {
    log::info("vm accel configured", {{"accel", accel_}, {"reason", accel_reason_}});
    return {};
  }
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    set_accel("tcg", "/dev/kvm unusable: open failed: " + errno_text(errno));
    log::info("vm accel decided", {{"accel", accel_}, {"reason", accel_reason_}});
    return {};
  }
  ::close(fd);
  {
    std::lock_guard lock(probe_mu_);
    if (probe_aborted_) {
      set_accel("tcg", "KVM probe skipped: stopping");
      return {};
    }
  }
  accel_ = "kvm";
  auto start = Clock::now();
  auto deadline = start + probe_timeout;
  auto vm = boot(probe, deadline);
  if (!vm.ok()) {
    set_accel("tcg", "KVM probe VM failed to start: " + vm.error().message);
  } else {
    {
      std::lock_guard lock(probe_mu_);
      probe_vm_ = vm.value().get();
      if (probe_aborted_) probe_vm_->kill_now();
    }
    Status s = ready(vm.value()->info(), deadline);
    {
      std::lock_guard lock(probe_mu_);
      probe_vm_ = nullptr;
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    if (s.ok()) {
      set_accel("kvm", "KVM probe VM answered Hello in " + std::to_string(ms) + " ms");
    } else {
      set_accel("tcg",
                "KVM probe VM gave no Hello within " + std::to_string(probe_timeout.count()) +
                    " ms (e.g. a nested-PVM host that only runs PVM guests): " + s.error().message);
    }
    (void)vm.value()->destroy(Clock::now() + std::chrono::seconds(2));
  }
  log::info("vm accel decided", {{"accel", accel_}, {"reason", accel_reason_}});
  return {};
}

}  // namespace nv::vm
