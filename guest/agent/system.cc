// system.cc — see system.h.
#include "guest/agent/system.h"

#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace nv::guest::agent {

namespace {

std::string errno_text(const std::string& call, int err) {
  return call + " failed: " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += c;
        }
    }
  }
  return out;
}

struct MountStep {
  const char* what;  // source / fs type
  const char* target;
  const char* fstype;
  unsigned long flags;
  const char* data;
  mode_t dir_mode;
  const char* reason;
};

// Order matters: /dev before /dev/pts and /dev/shm; /run before /run/nv.
const MountStep kMounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, 0555,
     "boot_id, /proc/self for interpreters"},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, 0555,
     "/sys/class/virtio-ports names the agent's channel"},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755", 0755,
     "device nodes (the kernel may have mounted it already: EBUSY is fine)"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666", 0755,
     "pseudo-terminals for programs that want one"},
    {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=25%", 01777,
     "POSIX shared memory (python multiprocessing)"},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=50%", 01777,
     "the writable scratch; the root filesystem is read-only"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4m", 0755,
     "runtime state (/run/nv/vm-id)"},
};

void bring_up_loopback() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    log_line("warn", errno_text("socket(AF_INET) for lo", errno));
    return;
  }
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
    log_line("warn", errno_text("ioctl(SIOCGIFFLAGS, lo)", errno));
  } else {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
      log_line("warn", errno_text("ioctl(SIOCSIFFLAGS, lo up)", errno));
    }
  }
  ::close(s);
}

void reopen_console() {
  int fd = ::open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;  // nowhere to log; keep going
  for (int i = 0; i < 3; ++i) ::dup2(fd, i);
  if (fd > 2) ::close(fd);
}

}  // namespace

void log_line(const char* level, const std::string& message) {
  struct timespec ts {};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  char head[96];
  std::snprintf(head, sizeof head, "{\"uptime_s\":%ld.%03ld,\"level\":\"%s\",", ts.tv_sec,
                ts.tv_nsec / 1000000, level);
  std::string line = std::string(head) + "\"service\":\"nv-guest-agent\",\"msg\":\"" +
                     json_escape(message) + "\"}\n";
  ssize_t w = ::write(2, line.data(), line.size());
  (void)w;
}

void init_system() {
  for (const MountStep& m : kMounts) {
    if (::mkdir(m.target, m.dir_mode) < 0 && errno != EEXIST) {
      log_line("warn", errno_text(std::string("mkdir(") + m.target + ")", errno));
    }
    if (::mount(m.what, m.target, m.fstype, m.flags, m.data) < 0) {
      if (errno == EBUSY) continue;  // already mounted (devtmpfs by the kernel)
      log_line("error",
               errno_text(std::string("mount(") + m.fstype + ", " + m.target + ") for " + m.reason,
                          errno));
    }
    if (std::strcmp(m.target, "/dev") == 0) reopen_console();
  }
  if (::mkdir("/run/nv", 0755) < 0 && errno != EEXIST) {
    log_line("warn", errno_text("mkdir(/run/nv)", errno));
  }
  bring_up_loopback();
}

void mount_home(const char* dir, int uid, int gid) {
  // The mount point comes with the image (guest/build.sh); the root filesystem is read-only.
  std::string data = "mode=0755,size=50%";
  if (uid >= 0)
    data += ",uid=" + std::to_string(uid) + ",gid=" + std::to_string(gid >= 0 ? gid : uid);
  if (::mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) < 0) {
    log_line("error",
             errno_text(std::string("mount(tmpfs, ") + dir + ") for the run user's home", errno));
  }
}

void protect_from_oom() {
  int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, "-1000", 5) != 5) {
    log_line("warn", errno_text("write(/proc/self/oom_score_adj, -1000)", errno));
  }
  if (fd >= 0) ::close(fd);
}

std::string LinuxSystemOps::add_entropy(std::string_view bytes) {
  // struct rand_pool_info ends in a flexible array of __u32; build it in a word buffer.
  std::vector<uint32_t> buf(2 + (bytes.size() + 3) / 4, 0);
  auto* info = reinterpret_cast<struct rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(bytes.size() * 8);
  info->buf_size = static_cast<int>(bytes.size());
  std::memcpy(info->buf, bytes.data(), bytes.size());
  int fd = ::open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_text("open(/dev/urandom)", errno);
  std::string err;
  if (::ioctl(fd, RNDADDENTROPY, info) < 0) err = errno_text("ioctl(RNDADDENTROPY)", errno);
  // RNDADDENTROPY only mixes into the input pool: once the CRNG is ready, Linux reseeds it from
  // there at most every interval (up to 60 s), so VMs restored from one snapshot would draw the
  // same bytes until then (forks of a sandbox did: 3 distinct uuids out of 4). RNDRESEEDCRNG
  // reseeds it now (Linux >= 4.17; random(4)).
  if (err.empty() && ::ioctl(fd, RNDRESEEDCRNG) < 0) {
    err = errno_text("ioctl(RNDRESEEDCRNG)", errno);
  }
  ::close(fd);
  return err;
}

std::string LinuxSystemOps::set_clock(int64_t unix_time_ns) {
  struct timespec ts {
    static_cast<time_t>(unix_time_ns / 1000000000), static_cast<long>(unix_time_ns % 1000000000)
  };
  if (::clock_settime(CLOCK_REALTIME, &ts) < 0) return errno_text("clock_settime", errno);
  return "";
}

std::string LinuxSystemOps::set_identity(const std::string& vm_id) {
  if (::sethostname(vm_id.data(), vm_id.size()) < 0) return errno_text("sethostname", errno);
  const char* tmp = "/run/nv/vm-id.tmp";
  int fd = ::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_text("open(/run/nv/vm-id.tmp)", errno);
  std::string line = vm_id + "\n";
  ssize_t w = ::write(fd, line.data(), line.size());
  int werr = errno;
  ::close(fd);
  if (w != static_cast<ssize_t>(line.size())) return errno_text("write(/run/nv/vm-id)", werr);
  if (::rename(tmp, "/run/nv/vm-id") < 0) return errno_text("rename(/run/nv/vm-id)", errno);
  return "";
}

std::string LinuxSystemOps::boot_id() {
  char buf[64] = {0};
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  ssize_t r = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  std::string id(buf, r > 0 ? static_cast<size_t>(r) : 0);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

uint64_t LinuxSystemOps::uptime_ms() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void power_off() {
  log_line("info", "shutdown requested: sync, kill all, reset");
  ::sync();
  ::kill(-1, SIGKILL);
  ::sync();
  ::reboot(RB_AUTOBOOT);
  // Only reached when reboot() is refused (not PID 1 / no CAP_SYS_BOOT, e.g. on a build host).
  log_line("error", errno_text("reboot(RB_AUTOBOOT)", errno));
  ::_exit(0);
}

}  // namespace nv::guest::agent
