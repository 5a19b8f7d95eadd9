#include "template_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

namespace nv::vm {
namespace {
constexpr int kSeals = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;
}

Result<TemplateMemory> TemplateMemory::create(const std::string& name, uint64_t bytes) {
  if (bytes == 0) return make_error(ErrorCode::BAD_REQUEST, "template memory size is 0");
  TemplateMemory m;
  m.fd_.reset(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!m.fd_.valid()) return sys_error("memfd_create(" + name + ")", errno);
  if (::ftruncate(m.fd_.get(), static_cast<off_t>(bytes)) != 0) {
    return sys_error("ftruncate(memfd " + name + ")", errno);
  }
  m.bytes_ = bytes;
  return m;
}

Status TemplateMemory::seal(std::chrono::milliseconds wait_for_writers) {
  if (!fd_.valid()) return make_error(ErrorCode::INTERNAL, "template memory: no memfd");
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + wait_for_writers;
  for (;;) {
    if (::fcntl(fd_.get(), F_ADD_SEALS, kSeals) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EBUSY) return sys_error("fcntl(F_ADD_SEALS) on the template memory", err);
    // A writable shared mapping still exists (a VMM not yet gone, a /proc reader holding a
    // reaped VMM's address space): it goes away by itself, so wait for it, boundedly.
    if (std::chrono::steady_clock::now() >= deadline) {
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      return make_error(ErrorCode::VM_FAILED,
                        "fcntl(F_ADD_SEALS) on the template memory: EBUSY for " +
                            std::to_string(waited.count()) +
                            " ms (a shared writable mapping of it still exists); not sealed, "
                            "retry",
                        true);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!sealed()) {
    return make_error(ErrorCode::INTERNAL, "template memory: seals did not stick");
  }
  return {};
}

bool TemplateMemory::sealed() const {
  int s = fd_.valid() ? ::fcntl(fd_.get(), F_GET_SEALS) : -1;
  return s >= 0 && (s & kSeals) == kSeals;
}

}  // namespace nv::vm
