#include "firecracker_backend.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <mutex>
#include <thread>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/log.h"
#include "jailed_vm.h"

namespace nv::vm {
namespace {

size_t collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() + size * n > (1 << 20)) return 0;  // API answers are small; refuse floods
  s->append(data, size * n);
  return size * n;
}

std::once_flag g_curl_once;

// JSON object text from (key, value) pairs, values already JSON-encoded.
class JsonObject {
 public:
  JsonObject& str(const char* k, const std::string& v) {
    w_.Key(k);
    w_.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
    return *this;
  }
  JsonObject& num(const char* k, uint64_t v) {
    w_.Key(k);
    w_.Uint64(v);
    return *this;
  }
  JsonObject& boolean(const char* k, bool v) {
    w_.Key(k);
    w_.Bool(v);
    return *this;
  }
  JsonObject& raw_object(const char* k, const std::string& json) {
    w_.Key(k);
    w_.RawValue(json.c_str(), json.size(), rapidjson::kObjectType);
    return *this;
  }
  std::string done() {
    w_.EndObject();
    return sb_.GetString();
  }
  JsonObject() { w_.StartObject(); }

 private:
  rapidjson::StringBuffer sb_;
  rapidjson::Writer<rapidjson::StringBuffer> w_{sb_};
};

bool valid_vm_id(const std::string& id) {
  if (id.empty() || id.size() > 48) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

class FirecrackerVm : public JailedVm {
 public:
  FirecrackerVm(VmInfo info, Jail jail, VmCgroup cg, JailedProcess proc, std::string api_sock)
      : JailedVm(std::move(info), std::move(jail), std::move(cg), std::move(proc)),
        api_(std::move(api_sock)) {}
  // Firecracker has no graceful "quit" for a running guest; the disk is read-only, so the
  // SIGKILL of JailedVm::destroy loses nothing.
  ~FirecrackerVm() override = default;

  Status check_responsive(Deadline deadline) override {
    auto r = api_.request("GET", "/", "", deadline);
    if (!r.ok()) return r.error();
    rapidjson::Document d;
    d.Parse(r.value().body.c_str());
    if (r.value().status != 200 || d.HasParseError() || !d.IsObject() || !d.HasMember("state") ||
        !d["state"].IsString()) {
      return make_error(ErrorCode::VM_FAILED, "GET / answered " + std::to_string(r.value().status));
    }
    if (std::string(d["state"].GetString()) != "Running") {
      return make_error(ErrorCode::VM_FAILED, std::string("guest state ") + d["state"].GetString());
    }
    return {};
  }
  Status snapshot(const std::string& path, Deadline deadline) override {
    // Firecracker writes inside its jail; the files are then moved to `path`.
    if (Status s = api_.call("PATCH", "/vm", JsonObject().str("state", "Paused").done(), deadline);
        !s.ok()) {
      return s;
    }
    std::string body = JsonObject()
                           .str("snapshot_type", "Full")
                           .str("snapshot_path", "/run/snapshot.state")
                           .str("mem_file_path", "/run/snapshot.mem")
                           .done();
    if (Status s = api_.call("PUT", "/snapshot/create", body, deadline); !s.ok()) return s;
    for (auto [from, to] : {std::pair{jail().host_path("/run/snapshot.state"), path},
                            std::pair{jail().host_path("/run/snapshot.mem"), path + ".mem"}}) {
      if (::rename(from.c_str(), to.c_str()) != 0) {
        return sys_error("rename(" + from + ", " + to + ")", errno);
      }
      // Restored VMMs run under other uids and must read the template (no lessee data in it).
      if (::chown(to.c_str(), 0, 0) != 0 || ::chmod(to.c_str(), 0644) != 0) {
        return sys_error("chown/chmod(" + to + ")", errno);
      }
    }
    return {};
  }

 private:
  FirecrackerApi api_;
};

}  // namespace

Result<FirecrackerApi::Response> FirecrackerApi::request(const std::string& method,
                                                         const std::string& path,
                                                         const std::string& body,
                                                         Deadline deadline) const {
  std::call_once(g_curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* c = curl_easy_init();
  if (!c) return make_error(ErrorCode::INTERNAL, "curl_easy_init failed");
  Response resp;
  std::string url = "http://localhost" + path;
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: application/json");
  if (!body.empty()) headers = curl_slist_append(headers, "Content-Type: application/json");
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, left.count())));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp.body);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  if (!body.empty()) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) {
    return make_error(rc == CURLE_OPERATION_TIMEDOUT ? ErrorCode::TIMED_OUT : ErrorCode::VM_FAILED,
                      "Firecracker API " + method + " " + path + ": " + curl_easy_strerror(rc));
  }
  return resp;
}

Status FirecrackerApi::call(const std::string& method, const std::string& path,
                            const std::string& body, Deadline deadline) const {
  auto r = request(method, path, body, deadline);
  if (!r.ok()) return r.error();
  if (r.value().status >= 200 && r.value().status < 300) return {};
  std::string fault = r.value().body;
  rapidjson::Document d;
  d.Parse(fault.c_str());
  if (!d.HasParseError() && d.IsObject() && d.HasMember("fault_message") &&
      d["fault_message"].IsString()) {
    fault = d["fault_message"].GetString();
  }
  return make_error(ErrorCode::VM_FAILED, "Firecracker API " + method + " " + path + " → " +
                                              std::to_string(r.value().status) + ": " + fault);
}

Status FirecrackerApi::wait_up(Deadline deadline, int exit_fd) const {
  for (;;) {
    auto r = request("GET", "/", "", std::min(deadline, Clock::now() + std::chrono::seconds(1)));
    if (r.ok() && r.value().status == 200) return {};
    if (exit_fd >= 0 && wait_readable(exit_fd, Clock::now())) {
      return make_error(ErrorCode::VM_FAILED, "Firecracker exited before its API answered");
    }
    if (Clock::now() >= deadline) {
      return make_error(ErrorCode::TIMED_OUT, "Firecracker API " + socket_ +
                                                  " not up before deadline" +
                                                  (r.ok() ? "" : ": " + r.error().message));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

FirecrackerBackend::FirecrackerBackend(FirecrackerConfig config) : cfg_(std::move(config)) {}

Result<std::unique_ptr<RunningVm>> FirecrackerBackend::boot(const VmSpec& spec, Deadline deadline) {
  if (!valid_vm_id(spec.vm_id)) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "vm id must be [a-z0-9-]{1,48}: '" + spec.vm_id + "'");
  }
  if (cfg_.command.empty()) return make_error(ErrorCode::BAD_REQUEST, "no firecracker command");
  const bool restore = !spec.restore_from.empty();
  const uint64_t n = seq_++;
  const uid_t uid = cfg_.uid_base + static_cast<uid_t>(n % cfg_.uid_count);
  const std::string dir = cfg_.runtime_dir + "/vms/" + spec.vm_id;

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
  JailSpec js;
  js.dir = dir;
  js.uid = uid;
  js.gid = uid;
  js.isolate = cfg_.use_jail;
  js.writable_group = cfg_.channel_gid;
  js.writable_dirs = {"/run"};
  js.hostname = "nv-vmm";
  // Inside the jail the VMM sees fixed paths; without one (tests) the host paths are used.
  std::string kernel = spec.kernel, rootfs = spec.rootfs, run = dir + "/run";
  std::string snap_state = spec.restore_from, snap_mem = spec.restore_from + ".mem";
  if (cfg_.use_jail) {
    js.binds = {
        {spec.kernel, "/vm/vmlinux", true, false, false, "guest kernel (boot-source)"},
        {spec.rootfs, "/vm/rootfs.ext4", true, false, false, "guest root disk, read-only"},
        {"/dev/kvm", "/dev/kvm", false, true, true, "hardware virtualization"},
        {"/dev/null", "/dev/null", true, true, false, "stdio of the VMM"},
        {"/dev/urandom", "/dev/urandom", true, true, true, "entropy device backend"},
    };
    if (restore) {
      js.binds.push_back({spec.restore_from, "/snap/vm.state", true, false, false, "snapshot"});
      js.binds.push_back({spec.restore_from + ".mem", "/snap/vm.mem", true, false, false,
                          "snapshot guest memory (mapped private)"});
      snap_state = "/snap/vm.state";
      snap_mem = "/snap/vm.mem";
    }
    for (const auto& b : cfg_.extra_binds) js.binds.push_back(b);
    kernel = "/vm/vmlinux";
    rootfs = "/vm/rootfs.ext4";
    run = "/run";
  }
  auto jail = Jail::prepare(std::move(js));
  if (!jail.ok()) return jail.error();
  const std::string log_path = dir + "/vmm.log";
  UniqueFd log_fd(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log_fd.valid()) return sys_error("open(" + log_path + ")", errno);
  auto procs = cg.open_procs();
  if (!procs.ok()) return procs.error();
  std::vector<int> proc_fds;
  for (auto& f : procs.value()) proc_fds.push_back(f.get());

  std::vector<std::string> argv = cfg_.command;
  argv.insert(argv.end(), {"--api-sock", run + "/api.sock", "--id", spec.vm_id});
  auto proc = jail.value().spawn(argv, proc_fds, {}, log_fd.get());
  if (!proc.ok()) return proc.error();

  VmInfo info;
  info.vm_id = spec.vm_id;
  info.vmm_pid = proc.value().pid;
  info.channel_kind = ChannelKind::hybridVsock;
  info.channel_path = dir + "/run/vsock.sock";
  info.vsock_port = cfg_.vsock_port;
  info.backend = "firecracker";
  info.accel = "kvm";
  info.restored = restore;
  info.jail_dir = dir;
  info.cgroup2_path = cg.cgroup2_path();
  const std::string api_host = dir + "/run/api.sock";
  auto vm = std::make_unique<FirecrackerVm>(std::move(info), std::move(jail.value()), std::move(cg),
                                            std::move(proc.value()), api_host);
  auto fail = [&vm, &log_path](const Error& e) -> Error {
    Error out = e;
    auto r = read_file(log_path, 4096);
    (void)vm->destroy(Clock::now() + std::chrono::milliseconds(500));
    if (r.ok() && !r.value().empty()) out.message += "; VMM output: " + r.value();
    return out;
  };
  FirecrackerApi api(api_host);
  if (Status s = api.wait_up(deadline, vm->exit_fd()); !s.ok()) return fail(s.error());
  if (restore) {
    // Only a fresh process accepts /snapshot/load; the vsock device comes back with the same
    // uds_path (/run/vsock.sock), which is this VM's own jail.
    std::string body =
        JsonObject()
            .str("snapshot_path", snap_state)
            .raw_object(
                "mem_backend",
                JsonObject().str("backend_type", "File").str("backend_path", snap_mem).done())
            .boolean("resume_vm", true)
            .done();
    if (Status s = api.call("PUT", "/snapshot/load", body, deadline); !s.ok()) {
      return fail(s.error());
    }
    return std::unique_ptr<RunningVm>(std::move(vm));
  }
  const std::pair<std::string, std::string> steps[] = {
      {"/boot-source",
       JsonObject().str("kernel_image_path", kernel).str("boot_args", cfg_.kernel_cmdline).done()},
      {"/drives/rootfs", JsonObject()
                             .str("drive_id", "rootfs")
                             .str("path_on_host", rootfs)
                             .boolean("is_root_device", true)
                             .boolean("is_read_only", true)
                             .done()},
      {"/machine-config", JsonObject()
                              .num("vcpu_count", spec.vcpus)
                              .num("mem_size_mib", spec.memory_mib)
                              .boolean("smt", false)
                              .done()},
      {"/vsock",
       JsonObject().num("guest_cid", cfg_.guest_cid).str("uds_path", run + "/vsock.sock").done()},
      {"/entropy", "{}"},
      {"/actions", JsonObject().str("action_type", "InstanceStart").done()},
  };
  for (const auto& [path, body] : steps) {
    if (Status s = api.call("PUT", path, body, deadline); !s.ok()) return fail(s.error());
  }
  return std::unique_ptr<RunningVm>(std::move(vm));
}

}  // namespace nv::vm
