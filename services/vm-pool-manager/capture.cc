#include "capture.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <future>
#include <mutex>
#include <sstream>
#include <vector>

#include "common/log.h"

namespace nv::vm {

// Backends without capture (Firecracker, test fakes) answer badRequest.
Status RunningVm::send_state(int, bool, Deadline) {
  return make_error(ErrorCode::BAD_REQUEST, "this VMM backend cannot capture a running VM");
}
Status RunningVm::receive_state(int, Deadline) {
  return make_error(ErrorCode::BAD_REQUEST, "this VMM backend cannot capture a running VM");
}
Status RunningVm::resume_guest(Deadline) {
  return make_error(ErrorCode::BAD_REQUEST, "this VMM backend cannot capture a running VM");
}
Status RunningVm::save_device_state(int, Deadline) {
  return make_error(ErrorCode::BAD_REQUEST, "this VMM backend cannot capture a running VM");
}

namespace {
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
constexpr size_t kPage = 4096;
constexpr size_t kChunk = 1 << 20;

bool all_zero(const char* p, size_t n) { return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0; }

// Copies the data extents of `in` to `out` (same offsets), skipping zero pages: both stay
// sparse. Files and memfds (tmpfs) both answer SEEK_DATA/SEEK_HOLE.
Status copy_sparse(int in, int out, uint64_t bytes, const std::string& what) {
  std::vector<char> buf(kChunk);
  off_t pos = 0;
  const off_t end = static_cast<off_t>(bytes);
  while (pos < end) {
    off_t data = ::lseek(in, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return sys_error("lseek(SEEK_DATA) " + what, errno);
    }
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) return sys_error("lseek(SEEK_HOLE) " + what, errno);
    hole = std::min(hole, end);
    for (off_t off = data; off < hole;) {
      size_t n = static_cast<size_t>(std::min<off_t>(kChunk, hole - off));
      ssize_t got = ::pread(in, buf.data(), n, off);
      if (got <= 0) return sys_error("pread " + what, got < 0 ? errno : EIO);
      for (size_t p = 0; p < static_cast<size_t>(got); p += kPage) {
        size_t len = std::min(kPage, static_cast<size_t>(got) - p);
        if (all_zero(buf.data() + p, len)) continue;
        if (::pwrite(out, buf.data() + p, len, off + static_cast<off_t>(p)) !=
            static_cast<ssize_t>(len)) {
          return sys_error("pwrite " + what, errno);
        }
      }
      off += got;
    }
    pos = hole;
  }
  return {};
}
// Frees the all-zero pages of a memfd (FALLOC_FL_PUNCH_HOLE): an incoming migration reads every
// page it is told is zero, and a read of a tmpfs hole allocates it, so the receiver leaves the
// whole VM size allocated. Runs of zero pages become holes again (reads of them see zeros).
Status punch_zero_pages(int fd, uint64_t bytes) {
  // Read in place (no copy) through a read-only PRIVATE mapping: a shared one of this O_RDWR
  // memfd would count as writable (VM_MAYWRITE) and make F_SEAL_WRITE fail with EBUSY while it
  // exists. Unmapped before the seal all the same.
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (map == MAP_FAILED) return sys_error("mmap(captured memory)", errno);
  const char* base = static_cast<const char*>(map);
  Status out;
  off_t run_start = -1;
  auto punch = [&](off_t end) {
    if (run_start < 0 || !out.ok()) return;
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, run_start, end - run_start) !=
        0) {
      out = sys_error("fallocate(PUNCH_HOLE) on the captured memory", errno);
    }
    run_start = -1;
  };
  for (uint64_t at = 0; at < bytes && out.ok(); at += kPage) {
    if (all_zero(base + at, static_cast<size_t>(std::min<uint64_t>(kPage, bytes - at)))) {
      if (run_start < 0) run_start = static_cast<off_t>(at);
    } else {
      punch(static_cast<off_t>(at));
    }
  }
  punch(static_cast<off_t>(bytes));
  ::munmap(map, bytes);
  return out;
}
}  // namespace

CapturedVm::~CapturedVm() {
  if (owns_state_file && !state_path.empty()) ::unlink(state_path.c_str());
}

uint64_t fd_allocated_bytes(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

namespace {
Result<std::unique_ptr<CapturedVm>> capture_by_migration(Backend& backend, RunningVm& source,
                                                         const CaptureSpec& spec,
                                                         Deadline deadline) {
  const auto start = Clock::now();
  auto out = std::make_unique<CapturedVm>();
  out->vcpus = spec.vcpus;
  out->memory_mib = spec.memory_mib;
  auto mem =
      TemplateMemory::create("nv-capture-" + spec.receiver_id, uint64_t{spec.memory_mib} << 20);
  if (!mem.ok()) return mem.error();
  out->memory = std::move(mem.value());

  VmSpec rs;
  rs.vm_id = spec.receiver_id;
  rs.vcpus = spec.vcpus;
  rs.memory_mib = spec.memory_mib;
  rs.kernel = spec.kernel;
  rs.rootfs = spec.rootfs;
  rs.memory_fd = out->memory.fd();
  rs.memory_shared = true;
  rs.incoming = true;
  auto recv = backend.start(rs, deadline);
  if (!recv.ok()) {
    return make_error(recv.error().code, "capture receiver: " + recv.error().message);
  }
  std::unique_ptr<RunningVm> receiver = std::move(recv.value());
  const double receiver_ms = ms_between(start, Clock::now());
  auto fail = [&](const std::string& step, const Error& e) -> Error {
    (void)receiver->destroy(Clock::now() + std::chrono::milliseconds(500));
    return make_error(e.code, "capture: " + step + ": " + e.message);
  };
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return fail("socketpair", sys_error("socketpair", errno));
  }
  UniqueFd a(sv[0]), b(sv[1]);
  // The receiver must be listening before the source sends; receive_state() waits for the whole
  // load, so it runs beside the source's send.
  auto received =
      std::async(std::launch::async, [&] { return receiver->receive_state(b.get(), deadline); });
  const auto pause_start = Clock::now();
  Status sent = source.send_state(a.get(), false, deadline);
  const double sent_ms = ms_between(pause_start, Clock::now());
  Status got = received.get();
  // The source runs again whatever happened to the receiver.
  Status resumed = source.resume_guest(deadline);
  out->pause_ms = ms_between(pause_start, Clock::now());
  a.reset();
  b.reset();
  if (!sent.ok()) return fail("migrating the source", sent.error());
  if (!got.ok()) return fail("loading into the receiver", got.error());
  if (!resumed.ok()) return fail("resuming the source", resumed.error());
  out->state_path = spec.state_path;
  const auto save_start = Clock::now();
  if (Status s = receiver->snapshot(spec.state_path, deadline); !s.ok()) {
    ::unlink(spec.state_path.c_str());
    return fail("saving the device state", s.error());
  }
  const double save_ms = ms_between(save_start, Clock::now());
  const auto quit_start = Clock::now();
  Status gone = receiver->destroy(Clock::now() + std::chrono::milliseconds(1000));
  const double quit_ms = ms_between(quit_start, Clock::now());
  receiver.reset();
  if (!gone.ok()) {
    return make_error(gone.error().code, "capture: receiver teardown: " + gone.error().message);
  }
  // The receiver is reaped (destroy() waits for it): its shared mapping is gone, bar a /proc
  // reader still holding its address space, which seal() waits out. With free_zero_pages the
  // caller seals (seal_capture) before any VMM maps the memory.
  if (!spec.free_zero_pages) {
    if (Status s = out->memory.seal(); !s.ok()) return s.error();
  }
  out->capture_ms = ms_between(start, Clock::now());
  log::info("vm captured", {{"receiver", spec.receiver_id},
                            {"receiver_start_ms", receiver_ms},
                            {"migrate_ms", sent_ms},
                            {"pause_ms", out->pause_ms},
                            {"device_state_ms", save_ms},
                            {"receiver_quit_ms", quit_ms},
                            {"capture_ms", out->capture_ms},
                            {"memfd_allocated_bytes", fd_allocated_bytes(out->memory.fd())}});
  return out;
}

// ------------------------------------------------------------------------- capture in place

// The VMM's guest RAM mapping: `bytes` long, private, at offset 0 of a memfd.
struct PrivateRam {
  uint64_t start = 0;
  ino_t ino = 0;
};

std::optional<PrivateRam> find_private_ram(pid_t pid, uint64_t bytes) {
  auto maps = read_file("/proc/" + std::to_string(pid) + "/maps", 16 << 20);
  if (!maps.ok()) return std::nullopt;
  std::istringstream in(maps.value());
  std::string line;
  while (std::getline(in, line)) {
    // start-end perms offset dev inode path (proc(5))
    unsigned long long lo = 0, hi = 0, offset = 0, inode = 0;
    char perms[8] = {}, dev[32] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %31s %llu %n", &lo, &hi, perms, &offset, dev,
                    &inode, &path_at) < 6) {
      continue;
    }
    if (hi - lo != bytes || offset != 0 || perms[3] != 'p' || path_at <= 0) continue;
    if (line.compare(static_cast<size_t>(path_at), 7, "/memfd:") != 0) continue;
    return PrivateRam{lo, static_cast<ino_t>(inode)};
  }
  return std::nullopt;
}

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
constexpr uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62, kFileOrShared = 1ull << 61;

// Copies the pages of the mapping at `ram` that are the VMM's own (written since it mapped the
// template: anonymous copy-on-write pages, present or swapped) from /proc/<pid>/mem into `out`
// at the same offsets. Returns the bytes copied. The guest must be paused.
Result<uint64_t> copy_written_pages(const UniqueFd& pagemap, const UniqueFd& mem,
                                    const PrivateRam& ram, const TemplateMemory& out) {
  const uint64_t pages = out.bytes() / kPage;
  std::vector<uint64_t> entries(std::min<uint64_t>(pages, 1 << 16));
  std::vector<char> buf(kChunk);
  uint64_t copied = 0;
  // Runs of written pages, each read into the buffer and written at the same offset.
  uint64_t run_start = 0, run_len = 0;
  auto flush = [&]() -> Status {
    const uint64_t off = run_start * kPage, len = run_len * kPage;
    run_len = 0;
    for (uint64_t done = 0; done < len;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len - done));
      ssize_t got = ::pread(mem.get(), buf.data(), n, static_cast<off_t>(ram.start + off + done));
      if (got <= 0) return sys_error("pread(/proc/<vmm>/mem)", got < 0 ? errno : EIO);
      if (::pwrite(out.fd(), buf.data(), static_cast<size_t>(got),
                   static_cast<off_t>(off + done)) != got) {
        return sys_error("pwrite(capture memfd)", errno);
      }
      done += static_cast<uint64_t>(got);
    }
    copied += len;
    return {};
  };
  for (uint64_t first = 0; first < pages; first += entries.size()) {
    const uint64_t n = std::min<uint64_t>(entries.size(), pages - first);
    const off_t at = static_cast<off_t>((ram.start / kPage + first) * sizeof(uint64_t));
    ssize_t got = ::pread(pagemap.get(), entries.data(), n * sizeof(uint64_t), at);
    if (got != static_cast<ssize_t>(n * sizeof(uint64_t))) {
      return sys_error("pread(/proc/<vmm>/pagemap)", got < 0 ? errno : EIO);
    }
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t e = entries[i], page = first + i;
      const bool own = ((e & kPresent) && !(e & kFileOrShared)) || (e & kSwapped);
      if (own && run_len > 0 && run_start + run_len == page) {
        ++run_len;
        continue;
      }
      if (run_len > 0) {
        if (Status s = flush(); !s.ok()) return s.error();
      }
      if (own) {
        run_start = page;
        run_len = 1;
      }
    }
  }
  if (run_len > 0) {
    if (Status s = flush(); !s.ok()) return s.error();
  }
  return copied;
}

}  // namespace

namespace {
std::atomic<bool> in_place_refused{false};
}  // namespace

bool capture_in_place_refused() { return in_place_refused.load(); }

Result<std::unique_ptr<CapturedVm>> begin_capture_in_place(RunningVm& source,
                                                           const CaptureSpec& spec,
                                                           std::optional<TemplateCopy>* spare) {
  const auto start = Clock::now();
  const pid_t pid = source.info().vmm_pid;
  const uint64_t bytes = uint64_t{spec.memory_mib} << 20;
  if (pid <= 0) return std::unique_ptr<CapturedVm>();
  auto ram = find_private_ram(pid, bytes);
  if (!ram) return std::unique_ptr<CapturedVm>();
  auto out = std::make_unique<CapturedVm>();
  // Reading the VMM's memory needs ptrace access to it (CAP_SYS_PTRACE: VMMs run under other
  // uids). Without it, captures migrate (slower, same result).
  const std::string proc = "/proc/" + std::to_string(pid);
  out->source_mem = UniqueFd(::open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC));
  out->source_pagemap = UniqueFd(::open((proc + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
  if (!out->source_mem.valid() || !out->source_pagemap.valid()) {
    static std::once_flag warned;
    const int err = errno;
    if (err == EACCES || err == EPERM) in_place_refused.store(true);
    std::call_once(warned, [&] {
      log::warn("capture in place unavailable, captures migrate instead",
                {{"error", std::string("open(" + proc + "/mem, pagemap): ") + std::strerror(err)},
                 {"hint", "the pool manager needs CAP_SYS_PTRACE (--keep-caps)"}});
    });
    return std::unique_ptr<CapturedVm>();
  }
  out->vcpus = spec.vcpus;
  out->memory_mib = spec.memory_mib;
  out->in_place = true;
  out->source_pid = pid;
  out->ram_start = ram->start;
  // The state file exists from here on (empty until finish): VMMs that will restore it may be
  // started in between, and a start checks the file is there.
  UniqueFd state(::open(spec.state_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!state.valid()) return sys_error("open(" + spec.state_path + ")", errno);
  out->state_path = spec.state_path;
  out->owns_state_file = true;
  // The template's content, before the source pauses: a spare, or a copy of the memfd the VMM
  // maps (reached through /proc/<pid>/map_files, which needs CAP_SYS_ADMIN).
  out->from_spare =
      spare && *spare && (*spare)->base_ino == ram->ino && (*spare)->memory.bytes() == bytes;
  if (out->from_spare) {
    out->memory = std::move((*spare)->memory);
    spare->reset();
  } else {
    char range[64];
    std::snprintf(range, sizeof range, "%llx-%llx", static_cast<unsigned long long>(ram->start),
                  static_cast<unsigned long long>(ram->start + bytes));
    const std::string link = "/proc/" + std::to_string(pid) + "/map_files/" + range;
    UniqueFd base(::open(link.c_str(), O_RDONLY | O_CLOEXEC));
    if (!base.valid()) return sys_error("open(" + link + ")", errno);
    auto copy = copy_template(base.get(), bytes, "nv-capture-" + spec.receiver_id);
    if (!copy.ok()) return copy.error();
    out->memory = std::move(copy.value().memory);
  }
  out->template_copy_ms = ms_between(start, Clock::now());
  return out;
}

Status finish_capture_in_place(RunningVm& source, CapturedVm& cap, Deadline deadline) {
  const auto start = Clock::now();
  UniqueFd state(::open(cap.state_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!state.valid()) return sys_error("open(" + cap.state_path + ")", errno);
  Status saved = source.save_device_state(state.get(), deadline);
  state.reset();
  const double device_ms = ms_between(start, Clock::now());
  const PrivateRam ram{cap.ram_start, 0};
  Result<uint64_t> written =
      saved.ok() ? copy_written_pages(cap.source_pagemap, cap.source_mem, ram, cap.memory)
                 : Result<uint64_t>(saved.error());
  // The source runs again whatever happened.
  Status resumed = source.resume_guest(deadline);
  cap.pause_ms = ms_between(start, Clock::now());
  if (!written.ok()) {
    return make_error(written.error().code, "capture in place: " + written.error().message);
  }
  if (!resumed.ok()) {
    return make_error(resumed.error().code,
                      "capture: resuming the source: " + resumed.error().message);
  }
  cap.written_bytes = written.value();
  if (Status s = cap.memory.seal(); !s.ok()) return s;
  cap.capture_ms = cap.template_copy_ms + ms_between(start, Clock::now());
  log::info("vm captured in place",
            {{"from_spare", cap.from_spare},
             {"template_copy_ms", cap.template_copy_ms},
             {"device_state_ms", device_ms},
             {"written_bytes", cap.written_bytes},
             {"pause_ms", cap.pause_ms},
             {"capture_ms", cap.capture_ms},
             {"memfd_allocated_bytes", fd_allocated_bytes(cap.memory.fd())}});
  return {};
}

Result<std::unique_ptr<CapturedVm>> capture(Backend& backend, RunningVm& source,
                                            const CaptureSpec& spec, Deadline deadline) {
  if (!backend.capture()) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "the " + backend.name() + " backend cannot capture a running VM");
  }
  auto in_place = begin_capture_in_place(source, spec, nullptr);
  if (!in_place.ok()) return in_place.error();
  if (!in_place.value()) return capture_by_migration(backend, source, spec, deadline);
  if (Status s = finish_capture_in_place(source, *in_place.value(), deadline); !s.ok()) {
    return s.error();
  }
  return std::move(in_place.value());
}

Result<TemplateCopy> copy_template(int base_fd, uint64_t bytes, const std::string& name) {
  struct stat st {};
  if (::fstat(base_fd, &st) != 0) return sys_error("fstat(template memfd)", errno);
  auto mem = TemplateMemory::create(name, bytes);
  if (!mem.ok()) return mem.error();
  if (Status s = copy_sparse(base_fd, mem.value().fd(), bytes, "template → " + name); !s.ok()) {
    return s.error();
  }
  return TemplateCopy{std::move(mem.value()), st.st_ino};
}

Status seal_capture(CapturedVm& cap) {
  if (cap.memory.sealed()) return {};  // in place: sealed, zero pages never written
  const auto start = Clock::now();
  if (Status s = punch_zero_pages(cap.memory.fd(), cap.memory.bytes()); !s.ok()) return s;
  if (Status s = cap.memory.seal(); !s.ok()) return s;
  cap.seal_ms = ms_between(start, Clock::now());
  log::info("captured memory sealed", {{"zero_pages_freed_ms", cap.seal_ms},
                                       {"allocated_bytes", fd_allocated_bytes(cap.memory.fd())}});
  return {};
}

Status save_memory(const TemplateMemory& memory, const std::string& path, uint64_t* allocated) {
  UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!f.valid()) return sys_error("open(" + path + ")", errno);
  if (::ftruncate(f.get(), static_cast<off_t>(memory.bytes())) != 0) {
    return sys_error("ftruncate(" + path + ")", errno);
  }
  if (Status s = copy_sparse(memory.fd(), f.get(), memory.bytes(), "template memory → " + path);
      !s.ok()) {
    return s;
  }
  if (::fsync(f.get()) != 0) return sys_error("fsync(" + path + ")", errno);
  if (allocated) *allocated = allocated_bytes(path);
  return {};
}

Result<TemplateMemory> load_memory(const std::string& path, uint64_t bytes,
                                   const std::string& name) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) return sys_error("open(" + path + ")", errno);
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) return sys_error("fstat(" + path + ")", errno);
  if (static_cast<uint64_t>(st.st_size) != bytes) {
    return make_error(ErrorCode::INTERNAL, path + " holds " + std::to_string(st.st_size) +
                                               " bytes, the VM's RAM is " + std::to_string(bytes));
  }
  auto mem = TemplateMemory::create(name, bytes);
  if (!mem.ok()) return mem.error();
  if (Status s = copy_sparse(f.get(), mem.value().fd(), bytes, path + " → memfd"); !s.ok()) {
    return s.error();
  }
  if (Status s = mem.value().seal(); !s.ok()) return s.error();
  return mem;
}

}  // namespace nv::vm
