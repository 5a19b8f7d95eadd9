// firecracker_backend.h — VMs under Firecracker, configured over its REST API.
//
// The API is HTTP/1.1 with JSON bodies on a Unix socket (--api-sock), reached with libcurl's
// CURLOPT_UNIX_SOCKET_PATH. A cold boot is
//   PUT /boot-source {kernel_image_path, boot_args}
//   PUT /drives/rootfs {drive_id, path_on_host, is_root_device, is_read_only}
//   PUT /machine-config {vcpu_count, mem_size_mib, smt}
//   PUT /vsock {guest_cid, uds_path}         (hybrid vsock: the guest channel)
//   PUT /entropy {}                          (virtio-rng)
//   PUT /actions {action_type: InstanceStart}
// A snapshot is PATCH /vm {state: Paused} + PUT /snapshot/create {snapshot_path, mem_file_path,
// snapshot_type: Full}; a restore is PUT /snapshot/load {snapshot_path, mem_backend {File, path},
// resume_vm: true} on a fresh process. Paths in bodies are as the VMM sees them inside its jail.
//
// The guest channel is Firecracker's hybrid vsock: connect to uds_path, send "CONNECT 6000\n",
// read "OK <port>\n", then the stream is the guest agent's (nv_guest_channel's hybridVsock kind).
//
// Firecracker cannot be installed on the development machines: this backend is tested against
// tests/fixtures/fake_firecracker.py, which checks every request against the published API spec
// (swagger/firecracker.yaml). It has not run against a real Firecracker here.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>
#include <vector>

#include "backend.h"
#include "cgroup.h"
#include "jail.h"

namespace nv::vm {

// A minimal client for the Firecracker API socket.
class FirecrackerApi {
 public:
  explicit FirecrackerApi(std::string socket_path) : socket_(std::move(socket_path)) {}
  struct Response {
    long status = 0;
    std::string body;
  };
  // One request; `body` "" sends none. Transport failures are errors; HTTP statuses are not.
  Result<Response> request(const std::string& method, const std::string& path,
                           const std::string& body, Deadline deadline) const;
  // A request that must answer 2xx; otherwise an error with Firecracker's fault_message.
  Status call(const std::string& method, const std::string& path, const std::string& body,
              Deadline deadline) const;
  // Retries GET / until the socket answers or the deadline passes (or exit_fd turns readable).
  Status wait_up(Deadline deadline, int exit_fd) const;

 private:
  std::string socket_;
};

struct FirecrackerConfig {
  // The VMM command: firecracker itself, or an interpreter + script for the test fake.
  std::vector<std::string> command = {"/usr/bin/firecracker"};
  std::string runtime_dir = "/run/neurovisor";
  std::string kernel_cmdline =
      "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda ro init=/sbin/nv-guest-agent quiet";
  uint32_t vsock_port = 6000;  // the guest agent's AF_VSOCK port
  uint32_t guest_cid = 3;
  uint32_t vmm_overhead_mib = 64;  // Firecracker's own footprint is small
  uint32_t pids_max = 64;
  bool use_jail = true;
  bool use_cgroup = true;
  uid_t uid_base = 990000;
  uint32_t uid_count = 10000;
  gid_t channel_gid = 0;
  std::vector<BindMount> extra_binds;  // what `command` needs beyond the defaults
  CgroupLayout cgroups;
};

class FirecrackerBackend : public Backend {
 public:
  explicit FirecrackerBackend(FirecrackerConfig config);
  std::string name() const override { return "firecracker"; }
  std::string accel() const override { return "kvm"; }  // Firecracker is KVM-only
  std::string accel_reason() const override { return "Firecracker runs only on KVM"; }
  bool supports_snapshot() const override { return true; }
  // Snapshot files: `path` (VM state) and `path + ".mem"` (guest memory).
  Result<std::unique_ptr<RunningVm>> boot(const VmSpec& spec, Deadline deadline) override;

 private:
  FirecrackerConfig cfg_;
  std::atomic<uint64_t> seq_{0};
};

}  // namespace nv::vm
