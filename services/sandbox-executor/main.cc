// nv-sandbox-executor: the "exec" worker and the "sandbox" service (sandbox_service.h). Runs each ExecRequest once in a fresh microVM leased
// from this host's nv-vm-pool-manager, streams its output back through the broker, and has the
// VM destroyed afterwards. Runs unprivileged: it needs only group access to the guest channel
// sockets the pool manager hands it; every capability is dropped after start-up and a seccomp
// allow-list is installed.
//
// Start-up, in order:
//   1. options → ExecutorOptions (limits, guest rate limits, timeouts);
//   2. drop privileges (optional --run-as-uid/--run-as-gid, no capabilities, no_new_privs),
//      then announce service.started (it reads the privileges back with capget/prctl);
//   3. seccomp allow-list (zmq_service_profile), unless --no-seccomp;
//   4. ask the pool for its first status, register "exec" with that capacity;
//   5. serve; a poller keeps the advertised capacity = min(concurrency, in flight + warm +
//      booting VMs) so the broker sends work where VMs are ready.
#include <sched.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "common/config.h"
#include "common/log.h"
#include "common/seccomp_policy.h"
#include "common/service.h"
#include "executor.h"
#include "common/sandbox_route.h"
#include "pool_client.h"
#include "sandbox_service.h"

namespace {

using std::chrono::milliseconds;

void add_options(nv::Config& c) {
  nv::exec::add_limit_options(c);
  nv::guest::ChannelLimits g;
  c.add_int("concurrency", 4,
            "requests run at once at most (capacity is also bounded by the "
            "pool's warm and booting VMs)");
  c.add_int("host-grace-ms", 2000,
            "the VM is destroyed when no result came this long after the "
            "program's timeout");
  c.add_int("connect-timeout-ms", 15000, "connecting to a leased VM's agent and its Hello");
  c.add_int("file-timeout-ms", 10000, "each file written into or read from the guest");
  c.add_int("max-lease-wait-ms", 30000,
            "longest wait for a warm VM (also bounded by the "
            "request's deadline)");
  // If this executor dies holding a VM, the pool destroys it when the lease's lifetime ends.
  c.add_int("lease-margin-ms", 5000,
            "VM lease lifetime asked beyond connect + files + timeout + "
            "host grace");
  c.add_int("status-interval-ms", 500, "how often the pool's status refreshes the capacity");
  c.add_number("guest-rate-bytes", g.bytes_per_s, "bytes/s a guest may send (token bucket rate)");
  c.add_number("guest-burst-bytes", g.burst_bytes, "bytes a guest may send in one burst");
  c.add_number("guest-rate-msgs", g.messages_per_s, "frames/s a guest may send");
  c.add_number("guest-burst-msgs", g.burst_messages, "frames a guest may send in one burst");
  c.add_int("guest-max-frame-bytes", g.max_frame_bytes, "largest guest frame accepted");
  c.add_int("run-as-uid", -1, "switch to this uid after start-up (when started as root)");
  c.alias_flag("run-as-uid", "run-as");  // the spelling of the orchestrator and the exporter
  c.add_int("run-as-gid", -1, "switch to this gid: the group owning the guest channel sockets");
  c.add_bool("seccomp", true, "install the seccomp allow-list after start-up");
  // The "sandbox" service (sandboxes that live; sandbox_service.h).
  c.add_string("executor-name", "",
               "this executor's name in sandbox ids and its service \"sandbox.<name>\" "
               "([a-zA-Z0-9_], at most 40 bytes; \"\" = the host name with other bytes as _)");
  c.add_string("state-dir", "",
               "where the sandbox registry (executor.sqlite) lives across restarts; \"\" = "
               "<runtime-dir>/state");
  c.add_int("sandbox-lifetime-ms", 3600000, "a sandbox's lifetime when create gives none");
  c.add_int("max-sandbox-lifetime-ms", 86400000,
            "the longest lifetime create or keepalive may ask (longer: badRequest)");
  c.add_int("sandbox-idle-ms", 600000,
            "a running sandbox without a call this long is reaped, when create gives no idle "
            "timeout");
  c.add_int("max-sandboxes-per-owner", 8, "sandboxes an owner may hold (running or paused)");
  c.add_int("max-sandbox-memory-mib-per-owner", 4096,
            "RAM the running sandboxes of an owner may use together");
  c.add_int("sandbox-concurrency", 8, "sandbox calls handled at once, per service name");
  c.add_int("sandbox-reap-interval-ms", 1000, "how often lifetimes and idle timeouts are checked");
  c.add_int("sandbox-verify-ms", 5000,
            "how often the pool is asked which sandbox VMs it still holds (lost ones are reaped)");
  c.add_int("sandbox-lease-margin-ms", 60000,
            "a sandbox's pool lease lasts this long past its deadline");
  c.add_int("sandbox-file-timeout-ms", 30000, "one file or process call in a sandbox");
  // Host directories (issue 15; sandbox_mounts.h).
  c.add_string("mount-root", "",
               "a host directory sandboxes may mount (it or anything below it); repeatable or "
               "comma-separated; none = every mount is refused (mountRefused)");
  c.repeatable("mount-root");
  c.add_int("mount-quota-bytes", 256ll << 20,
            "bytes a read-write mount may hold beyond what was copied in (when the mount gives "
            "no quota)");
  c.add_int("mount-quota-files", 10000,
            "files and directories a read-write mount may hold beyond those copied in");
  c.add_string("mount-copier", "",
               "the nv-mount-copier program; \"\" = the one next to nv-sandbox-executor");
  // The inference bridge (issue 16; inference_bridge.h).
  c.add_int("inference-token-budget", 100000,
            "prompt + completion tokens of a sandbox's model calls when its InferencePolicy "
            "gives no tokenBudget");
  c.add_int("inference-timeout-ms", 300000, "one model call of the inference bridge");
}

// With --mount-root the executor spawns nv-mount-copier (posix_spawn), which inherits this filter:
// its calls are allowed too, each with its reason. clone stays without new namespaces.
void add_mount_copier_rules(nv::seccomp::Profile& profile) {
  std::vector<nv::seccomp::Rule> kept;
  for (const auto& r : profile.rules) {
    if (r.syscall != "clone") kept.push_back(r);
  }
  profile.rules = kept;
  const uint64_t new_ns = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                          CLONE_NEWNET | CLONE_NEWCGROUP;
  profile.rules.push_back(nv::seccomp::allow_if_masked(
      "clone", 0, new_ns, 0, "threads, and posix_spawn of nv-mount-copier (CLONE_VM|CLONE_VFORK)"));
  profile.rules.push_back(nv::seccomp::allow_if_masked(
      "prctl", 0, 0xffffffffull, PR_SET_NO_NEW_PRIVS,
      "nv-mount-copier sets no_new_privs before Landlock (PR_SET_NAME stays allowed too)"));
  for (const char* call : {"readlink", "readlinkat"}) {
    profile.rules.push_back(nv::seccomp::allow(call, "realpath of a mount's host directory"));
  }
  const char* spawn[] = {"execve",          "wait4",      "kill",       "dup2",
                         "set_tid_address", "arch_prctl", "close_range"};
  for (const char* call : spawn) {
    profile.rules.push_back(nv::seccomp::allow(call, "spawning and reaping nv-mount-copier"));
  }
  const char* copier[] = {"openat2",
                          "mkdirat",
                          "renameat",
                          "renameat2",
                          "fchmod",
                          "fsync",
                          "unlinkat",
                          "getdents64",
                          "pread64",
                          "access",
                          "landlock_create_ruleset",
                          "landlock_add_rule",
                          "landlock_restrict_self"};
  for (const char* call : copier) {
    profile.rules.push_back(nv::seccomp::allow(
        call, "nv-mount-copier (inherits this filter): confined reads/writes of one mount"));
  }
}

// The host name with every byte outside [a-zA-Z0-9_] as '_', at most 40 bytes.
std::string default_executor_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == 0) return "local";
  std::string name;
  for (const char* p = host; *p && name.size() < nv::kMaxExecutorNameBytes; ++p) {
    bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
    name += ok ? *p : '_';
  }
  return name;
}

nv::exec::SandboxOptions sandbox_options_from(const nv::ServiceContext& ctx,
                                              const nv::exec::ExecutorOptions& exec) {
  const auto& c = ctx.config;
  nv::exec::SandboxOptions o;
  o.executor = c.str("executor-name").empty() ? default_executor_name() : c.str("executor-name");
  o.limits = exec.limits;
  o.default_lifetime = milliseconds(c.integer("sandbox-lifetime-ms"));
  o.max_lifetime = milliseconds(c.integer("max-sandbox-lifetime-ms"));
  o.default_idle = milliseconds(c.integer("sandbox-idle-ms"));
  o.max_per_owner =
      static_cast<uint32_t>(std::max<int64_t>(0, c.integer("max-sandboxes-per-owner")));
  o.max_memory_mib_per_owner =
      static_cast<uint32_t>(std::max<int64_t>(0, c.integer("max-sandbox-memory-mib-per-owner")));
  o.reap_interval = milliseconds(std::max<int64_t>(10, c.integer("sandbox-reap-interval-ms")));
  o.verify_every = milliseconds(c.integer("sandbox-verify-ms"));
  o.lease_margin = milliseconds(c.integer("sandbox-lease-margin-ms"));
  o.file_timeout = milliseconds(c.integer("sandbox-file-timeout-ms"));
  o.inference_token_budget =
      static_cast<uint64_t>(std::max<int64_t>(1, c.integer("inference-token-budget")));
  o.connect_timeout = exec.connect_timeout;
  o.host_grace = exec.host_grace;
  o.lease_wait = exec.max_lease_wait;
  o.channel = exec.channel;
  // A file op's reply carries the data: it must fit a bus frame.
  uint64_t frame_room = ctx.limits.max_frame_bytes > (64u << 10)
                            ? ctx.limits.max_frame_bytes - (64u << 10)
                            : ctx.limits.max_frame_bytes;
  o.max_file_bytes = std::min<uint64_t>(32u << 20, frame_room);
  for (const auto& root : nv::split_commas(c.str("mount-root"))) {
    char buf[PATH_MAX];
    // Unresolvable roots are left out (and said so): a mount under them is refused.
    if (::realpath(root.c_str(), buf)) {
      o.mounts.roots.emplace_back(buf);
    } else {
      nv::log::warn("--mount-root does not resolve; ignored", {{"root", root}});
    }
  }
  o.mounts.quota_bytes =
      static_cast<uint64_t>(std::max<int64_t>(0, c.integer("mount-quota-bytes")));
  o.mounts.quota_files =
      static_cast<uint32_t>(std::clamp<int64_t>(c.integer("mount-quota-files"), 0, UINT32_MAX));
  o.mounts.copier = c.str("mount-copier");
  return o;
}

nv::exec::ExecutorOptions options_from(const nv::ServiceContext& ctx) {
  const auto& c = ctx.config;
  nv::exec::ExecutorOptions o;
  o.limits = nv::exec::limits_from(c);
  o.concurrency = static_cast<uint32_t>(std::max<int64_t>(1, c.integer("concurrency")));
  o.host_grace = milliseconds(c.integer("host-grace-ms"));
  o.connect_timeout = milliseconds(c.integer("connect-timeout-ms"));
  o.file_timeout = milliseconds(c.integer("file-timeout-ms"));
  o.max_lease_wait = milliseconds(c.integer("max-lease-wait-ms"));
  o.lease_margin = milliseconds(c.integer("lease-margin-ms"));
  o.channel.bytes_per_s = c.number("guest-rate-bytes");
  o.channel.burst_bytes = c.number("guest-burst-bytes");
  o.channel.messages_per_s = c.number("guest-rate-msgs");
  o.channel.burst_messages = c.number("guest-burst-msgs");
  o.channel.max_frame_bytes = static_cast<uint32_t>(c.integer("guest-max-frame-bytes"));
  o.pool.endpoint = ctx.endpoints.vm_pool;
  o.pool.limits = ctx.limits;
  o.max_result_bytes = ctx.limits.max_frame_bytes > (1u << 20)
                           ? ctx.limits.max_frame_bytes - (512u << 10)
                           : ctx.limits.max_frame_bytes;
  return o;
}

// Every problem with the options in one message (empty when fine).
std::string check(const nv::exec::ExecutorOptions& o) {
  std::string bad;
  auto need = [&](bool ok, const char* what) {
    if (!ok) bad += std::string(bad.empty() ? "" : "; ") + what;
  };
  need(o.channel.bytes_per_s > 0 && o.channel.burst_bytes >= o.channel.max_frame_bytes,
       "--guest-rate-bytes must be > 0 and --guest-burst-bytes >= --guest-max-frame-bytes");
  need(o.channel.messages_per_s > 0 && o.channel.burst_messages >= 1,
       "--guest-rate-msgs must be > 0 and --guest-burst-msgs >= 1");
  need(o.limits.default_timeout_ms > 0 && o.limits.default_timeout_ms <= o.limits.max_timeout_ms,
       "--default-timeout-ms must be in 1..--max-timeout-ms");
  need(o.limits.default_output_cap <= o.limits.max_output_cap,
       "--default-output-cap must be <= --max-output-cap");
  need(o.max_result_bytes > o.limits.max_output_cap,
       "--max-output-cap must be below --max-frame-bytes");
  need(o.host_grace.count() >= 0, "--host-grace-ms must be >= 0");
  need(o.lease_margin.count() >= 0, "--lease-margin-ms must be >= 0");
  return bad;
}

std::string check_sandbox(const nv::exec::SandboxOptions& o) {
  std::string bad;
  auto need = [&](bool ok, const char* what) {
    if (!ok) bad += std::string(bad.empty() ? "" : "; ") + what;
  };
  need(nv::valid_executor_name(o.executor), "--executor-name must be 1..40 bytes of [a-zA-Z0-9_]");
  need(o.max_lifetime.count() > 0 && o.max_lifetime.count() <= UINT32_MAX,
       "--max-sandbox-lifetime-ms must be in 1..4294967295");
  need(o.default_lifetime.count() > 0 && o.default_lifetime <= o.max_lifetime,
       "--sandbox-lifetime-ms must be in 1..--max-sandbox-lifetime-ms");
  need(o.default_idle.count() > 0 && o.default_idle <= o.max_lifetime,
       "--sandbox-idle-ms must be in 1..--max-sandbox-lifetime-ms");
  need(o.lease_margin.count() >= 0, "--sandbox-lease-margin-ms must be >= 0");
  need(o.file_timeout.count() > 0, "--sandbox-file-timeout-ms must be > 0");
  return bad;
}

// capacity = min(concurrency, in flight + warm + booting); 0 while the pool is unreachable.
uint32_t capacity_for(const nv::exec::PoolCounts& c, uint32_t in_flight, uint32_t concurrency) {
  return std::min<uint32_t>(concurrency, in_flight + c.warm + c.booting);
}

// No capabilities at all, and --run-as-uid/--run-as-gid, applied before any thread starts.
nv::Result<nv::PrivilegeSpec> privileges(const nv::Config& c) {
  nv::PrivilegeSpec spec;
  if (c.integer("run-as-uid") >= 0) spec.uid = static_cast<uid_t>(c.integer("run-as-uid"));
  if (c.integer("run-as-gid") >= 0) spec.gid = static_cast<gid_t>(c.integer("run-as-gid"));
  return spec;
}

int run(nv::ServiceContext& ctx) {
  auto opt = options_from(ctx);
  if (auto bad = check(opt); !bad.empty()) {
    nv::log::error("bad options", {{"error", bad}});
    return 2;
  }
  auto sbx_opt = sandbox_options_from(ctx, opt);
  if (auto bad = check_sandbox(sbx_opt); !bad.empty()) {
    nv::log::error("bad options", {{"error", bad}});
    return 2;
  }
  // The registry is opened before the seccomp filter and the privilege drop settle what this
  // process may open.
  std::string state_dir = ctx.config.str("state-dir");
  if (state_dir.empty()) state_dir = ctx.runtime_dir + "/state";
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  auto registry = nv::exec::SandboxRegistry::open(
      std::filesystem::absolute(state_dir + "/executor.sqlite").string());
  if (!registry) {
    nv::log::error("cannot open the sandbox registry", {{"error", registry.error().message}});
    return 1;
  }
  // 2. Privileges: nothing below needs any capability.
  nv::PrivilegeSpec spec;
  if (ctx.config.integer("run-as-uid") >= 0) {
    spec.uid = static_cast<uid_t>(ctx.config.integer("run-as-uid"));
  }
  if (ctx.config.integer("run-as-gid") >= 0) {
    spec.gid = static_cast<gid_t>(ctx.config.integer("run-as-gid"));
  }
  if (auto st = nv::drop_privileges(spec); !st) {
    nv::log::error("cannot drop privileges", {{"error", st.error().message}});
    return 1;
  }
  // service.started reports the privileges now held; it reads them with capget/prctl, which the
  // allow-list below refuses, so it goes first.
  ctx.announce_started({ctx.endpoints.workers, ctx.endpoints.vm_pool});
  // 3. Seccomp: the executor only talks over sockets (bus, pool manager, guest channels).
  if (ctx.config.boolean("seccomp")) {
    auto profile = nv::seccomp::zmq_service_profile("sandbox-executor");
    // Beyond a generic bus service (each with its reason; base_rules lacks it as of writing):
    profile.rules.push_back(nv::seccomp::allow(
        "rt_sigtimedwait", "service_main's signal thread waits for SIGTERM/SIGINT with it"));
    for (const char* call : {"pread64", "pwrite64", "fsync", "fdatasync", "ftruncate"}) {
      profile.rules.push_back(nv::seccomp::allow(
          call, "SQLite: the sandbox registry's database and its write-ahead log"));
    }
    for (const char* call : {"inotify_init1", "inotify_add_watch", "inotify_rm_watch"}) {
      profile.rules.push_back(nv::seccomp::allow(
          call, "nv_guest_channel: wakes when a VM's channel socket appears in its directory"));
    }
    if (!sbx_opt.mounts.roots.empty()) add_mount_copier_rules(profile);
    nv::seccomp::InstallOptions io;
    io.log = [](const std::string& line) { nv::log::debug(line); };
    auto r = nv::seccomp::install(profile, io);
    if (!r.ok) {
      nv::log::error("cannot install the seccomp filter", {{"error", r.text()}});
      return 1;
    }
    nv::log::info("seccomp allow-list installed", {{"rules", r.rules_added}});
  } else {
    nv::log::warn("seccomp disabled by --no-seccomp");
  }

  nv::exec::Executor executor(ctx.zmq, opt, ctx.events);
  uint32_t initial = 0;
  {
    nv::exec::PoolClient pool(ctx.zmq, opt.pool);
    auto st = pool.status(milliseconds(2000));
    if (st) {
      initial = capacity_for(st.value(), 0, opt.concurrency);
      nv::log::info("vm pool found", {{"endpoint", opt.pool.endpoint},
                                      {"backend", st->backend},
                                      {"accel", st->accel},
                                      {"warm", st->warm},
                                      {"max", st->max}});
    } else {
      nv::log::warn("vm pool not answering yet; registering with capacity 0",
                    {{"endpoint", opt.pool.endpoint}, {"error", st.error().message}});
    }
  }
  nv::Worker worker(ctx.zmq, ctx.worker_options("exec", initial),
                    [&executor](std::shared_ptr<nv::Request> r) { executor.handle(r); });

  // The "sandbox" service: sandboxes from the registry are settled with the pool first (the
  // pool may still be starting: asked again until it answers).
  sbx_opt.llm = nv::exec::bus_llm(
      ctx.zmq, ctx.client_options(),
      milliseconds(std::max<int64_t>(1000, ctx.config.integer("inference-timeout-ms"))));
  nv::exec::SandboxService sandboxes(sbx_opt, nv::exec::bus_pool(ctx.zmq, opt.pool),
                                     nv::exec::channel_connect(opt.channel), ctx.events,
                                     std::move(registry.value()));
  while (!ctx.stop) {
    auto st = sandboxes.recover();
    if (st) break;
    nv::log::warn("sandbox registry: cannot settle with the pool yet; retrying",
                  {{"error", st.error().message}});
    std::this_thread::sleep_for(milliseconds(1000));
  }
  sandboxes.start_reaper();
  auto sbx_capacity =
      static_cast<uint32_t>(std::max<int64_t>(1, ctx.config.integer("sandbox-concurrency")));
  auto sbx_handler = [&sandboxes](std::shared_ptr<nv::Request> r) { sandboxes.handle(r); };
  nv::Worker sbx_any(ctx.zmq, ctx.worker_options("sandbox", sbx_capacity), sbx_handler);
  nv::Worker sbx_own(ctx.zmq, ctx.worker_options("sandbox." + sbx_opt.executor, sbx_capacity),
                     sbx_handler);
  std::thread sbx_any_thread([&] { sbx_any.run(ctx.stop); });
  std::thread sbx_own_thread([&] { sbx_own.run(ctx.stop); });
  nv::log::info("sandbox service registered",
                {{"services", "sandbox, sandbox." + sbx_opt.executor}, {"state_dir", state_dir}});

  // 5. Capacity follows the pool.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread poller([&] {
    std::optional<nv::exec::PoolClient> pool;
    pool.emplace(ctx.zmq, opt.pool);
    bool was_ok = true;
    std::unique_lock lock(mu);
    while (!done) {
      lock.unlock();
      auto st = pool->status(milliseconds(1000));
      uint32_t cap = 0;
      if (st) {
        cap = capacity_for(st.value(), executor.in_flight(), opt.concurrency);
        if (!was_ok) nv::log::info("vm pool answering again");
      } else {
        if (was_ok)
          nv::log::warn("vm pool not answering: capacity 0", {{"error", st.error().message}});
        pool.emplace(ctx.zmq, opt.pool);  // drop what the dead peer had queued
      }
      was_ok = st.ok();
      if (cap != worker.capacity()) {
        nv::log::debug("capacity", {{"capacity", cap}, {"in_flight", executor.in_flight()}});
      }
      worker.set_capacity(cap);
      lock.lock();
      cv.wait_for(lock, milliseconds(ctx.config.integer("status-interval-ms")),
                  [&] { return done; });
    }
  });
  worker.run(ctx.stop);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  poller.join();
  sbx_any_thread.join();
  sbx_own_thread.join();
  sandboxes.stop_reaper();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nv::service_main(
      argc, argv,
      nv::ServiceSpec{"sandbox-executor",
                      "runs code in throw-away microVMs for the \"exec\" service", add_options, run,
                      true, privileges});
}
