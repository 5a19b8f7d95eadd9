#include "bpf_loader.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace nv::sentinel {

std::string errno_text(int errnum) {
  char buf[128];
  // GNU strerror_r returns the message pointer (maybe not buf).
  const char* msg = strerror_r(errnum, buf, sizeof(buf));
  return msg ? std::string(msg) : std::string("errno ") + std::to_string(errnum);
}

std::string Error::text() const {
  std::string s = call;
  if (errnum != 0) s += ": " + errno_text(errnum) + " (errno " + std::to_string(errnum) + ")";
  if (!detail.empty()) s += " [" + detail + "]";
  return s;
}

namespace {

std::mutex g_messages_mu;
std::string g_messages;  // last warnings, bounded

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[512];
  int n = vsnprintf(line, sizeof(line), fmt, args);
  if (n <= 0) return n;
  std::string s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::lock_guard<std::mutex> lock(g_messages_mu);
  if (!g_messages.empty()) g_messages += " | ";
  g_messages += s;
  constexpr size_t kMax = 2048;  // keep the tail: the last lines say what failed
  if (g_messages.size() > kMax) g_messages.erase(0, g_messages.size() - kMax);
  return n;
}

}  // namespace

void capture_libbpf_messages() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(libbpf_print); });
}

std::string take_libbpf_messages() {
  std::lock_guard<std::mutex> lock(g_messages_mu);
  std::string out;
  out.swap(g_messages);
  return out;
}

std::vector<ProgramInfo> list_programs(bpf_object* obj) {
  std::vector<ProgramInfo> out;
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, obj) {
    out.push_back(ProgramInfo{bpf_program__name(prog), bpf_program__section_name(prog)});
  }
  return out;
}

void note_attach(std::vector<ProgramStatus>& statuses, const std::string& name, int errnum,
                 const std::string& what) {
  for (ProgramStatus& st : statuses) {
    if (st.name != name) continue;
    if (errnum == 0) {
      st.attached = true;
    } else {
      st.errnum = errnum;
      st.detail = what + ": " + errno_text(errnum);
      std::string msg = take_libbpf_messages();
      if (!msg.empty()) st.detail += " [" + msg + "]";
    }
  }
}

Status open_cgroup2_dir(const std::string& path, CgroupDir* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Fail("open(" + path + ")", errno);
  struct statfs sfs {};
  if (fstatfs(fd, &sfs) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Fail("fstatfs(" + path + ")", err);
  }
  if (sfs.f_type != CGROUP2_SUPER_MAGIC) {
    ::close(fd);
    return Status::Fail("fstatfs(" + path + ")", EINVAL,
                        "not a cgroup2 directory (cgroup v1 dirs cannot take cgroup BPF programs)");
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::Fail("fstat(" + path + ")", err);
  }
  out->fd = fd;
  // On cgroup2 (64-bit kernels >= 5.5) the kernfs node id is the inode number, which is the
  // value bpf_get_current_cgroup_id() reports for the dir's members.
  out->id = st.st_ino;
  return Status::Ok();
}

}  // namespace nv::sentinel
