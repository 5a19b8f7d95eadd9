// qemu_guest.h — boots one real microVM (QEMU microvm, TCG) from the image guest/build.sh made
// (${NV_BUILD_DIR}/guest/{vmlinux,rootfs.ext4}) and connects to its agent over the
// virtio-serial port; shared by the vm tests that drive the agent directly (guest_vm_test,
// sandbox_vm_test). `skip` is set when the image or QEMU is missing, `error` when the boot
// failed (with the console and QEMU logs).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "guest/host/guest_channel.h"

extern char** environ;

namespace nv::guest {

inline std::string build_dir() {
  const char* d = std::getenv("NV_BUILD_DIR");
  return d ? d : "build";
}

inline bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

inline std::string find_qemu() {
  for (const char* p : {"/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// The host TSC rate for tsc_early_khz (skips the guest's TSC calibration under TCG).
inline std::string tsc_khz() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      double mhz = std::stod(line.substr(line.find(':') + 1));
      return std::to_string(static_cast<long>(mhz * 1000));
    }
  }
  return "";
}

inline std::string read_file(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct QemuGuest {
  using Clock = std::chrono::steady_clock;
  std::string kernel, rootfs, qemu, dir, sock, console;
  std::string skip, error;
  pid_t pid = -1;
  Clock::time_point boot_start;
  Clock::duration boot_to_hello{};
  std::unique_ptr<GuestChannel> channel;

  ~QemuGuest() { stop(); }

  void boot(int mem_mib) {
    const std::string g = build_dir() + "/guest";
    kernel = g + "/vmlinux";
    rootfs = g + "/rootfs.ext4";
    qemu = find_qemu();
    if (!exists(kernel) || !exists(rootfs)) {
      skip = "no guest image at " + g + " (run ./nv setup or guest/build.sh " + g +
             " BUILD/bin/nv-guest-agent)";
      return;
    }
    if (qemu.empty()) {
      skip = "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)";
      return;
    }
    char tmpl[] = "/tmp/nv-guest-vm-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      skip = "mkdtemp failed";
      return;
    }
    dir = tmpl;
    sock = dir + "/agent.sock";
    console = dir + "/console.log";
    std::string append =
        "console=ttyS0 root=/dev/vda ro rootfstype=ext4 "
        "init=/sbin/nv-guest-agent reboot=t panic=-1 quiet";
    if (auto k = tsc_khz(); !k.empty()) append += " tsc_early_khz=" + k;
    std::vector<std::string> args = {qemu,
                                     "-M",
                                     "microvm,acpi=off",
                                     "-accel",
                                     "tcg",
                                     "-cpu",
                                     "max",
                                     "-m",
                                     std::to_string(mem_mib),
                                     "-smp",
                                     "1",
                                     "-nodefaults",
                                     "-no-user-config",
                                     "-nographic",
                                     "-no-reboot",
                                     "-kernel",
                                     kernel,
                                     "-append",
                                     append,
                                     "-drive",
                                     "id=root,file=" + rootfs + ",format=raw,if=none,readonly=on",
                                     "-device",
                                     "virtio-blk-device,drive=root",
                                     "-device",
                                     "virtio-rng-device",
                                     "-device",
                                     "virtio-serial-device",
                                     "-chardev",
                                     "socket,id=agent,path=" + sock + ",server=on,wait=off",
                                     "-device",
                                     "virtserialport,chardev=agent,name=nv.agent",
                                     "-serial",
                                     "file:" + console};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    boot_start = Clock::now();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    std::string qlog = dir + "/qemu.log";
    posix_spawn_file_actions_addopen(&fa, 1, qlog.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&pid, qemu.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      error = "posix_spawn(" + qemu + ") failed: " + std::strerror(rc);
      return;
    }
    auto ch = GuestChannel::connect(sock, ChannelKind::unix_stream, 6000,
                                    Clock::now() + std::chrono::seconds(60));
    if (!ch.ok()) {
      error = "no Hello: " + ch.error().message + "\nconsole:\n" + read_file(console) +
              "\nqemu:\n" + read_file(qlog);
      return;
    }
    boot_to_hello = Clock::now() - boot_start;
    channel = std::move(ch.value());
  }

  void stop() {
    channel.reset();
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
    if (!dir.empty()) std::system(("rm -rf " + dir).c_str());
  }
};

}  // namespace nv::guest
