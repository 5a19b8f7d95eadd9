// TemplateMemory: the RAM every restored clone maps. Once sealed, nobody — not the pool manager,
// not a VMM taken over by its guest, not root reopening it through /proc — can change what the
// next clone starts from, while private copy-on-write mappings (what QEMU uses) still work.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "template_memory.h"

namespace nv::vm {
namespace {

constexpr uint64_t kBytes = 1 << 20;

TEST(TemplateMemoryTest, RefusesAZeroSize) {
  auto m = TemplateMemory::create("nv-test", 0);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ErrorCode::BAD_REQUEST);
}

TEST(TemplateMemoryTest, CannotBeSealedWhileTheTemplateMapsItShared) {
  auto m = TemplateMemory::create("nv-test", kBytes);
  ASSERT_TRUE(m.ok()) << m.error().message;
  // The template VMM: a shared writable mapping, as QEMU's share=on memory backend makes.
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, m.value().fd(), 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  std::memcpy(p, "template-state", 14);
  Status s = m.value().seal();
  EXPECT_FALSE(s.ok());  // EBUSY: the writer still maps it
  EXPECT_FALSE(m.value().sealed());
  ::munmap(p, kBytes);
  EXPECT_TRUE(m.value().seal().ok());
  EXPECT_TRUE(m.value().sealed());
}

TEST(TemplateMemoryTest, SealedMemoryRefusesEveryWriteButAllowsCopyOnWrite) {
  auto made = TemplateMemory::create("nv-test", kBytes);
  ASSERT_TRUE(made.ok()) << made.error().message;
  TemplateMemory& m = made.value();
  ASSERT_EQ(::pwrite(m.fd(), "template-state", 14, 0), 14);
  ASSERT_TRUE(m.seal().ok());

  // What a VMM holds: the memfd reopened read-write through /proc (QEMU's mem-path).
  std::string path = "/proc/self/fd/" + std::to_string(m.fd());
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  errno = 0;
  EXPECT_EQ(::pwrite(fd, "poison", 6, 0), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::ftruncate(fd, 0), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  void* shared = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  EXPECT_EQ(shared, MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, 0), -1);  // F_SEAL_SEAL: the seals cannot be changed
  EXPECT_EQ(errno, EPERM);

  // A clone: a private writable mapping sees the template and keeps its writes to itself.
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(std::memcmp(p, "template-state", 14), 0);
  std::memcpy(p, "clone-writes!!", 14);
  ::munmap(p, kBytes);
  char buf[15] = {};
  ASSERT_EQ(::pread(fd, buf, 14, 0), 14);
  EXPECT_STREQ(buf, "template-state");  // the next clone starts from the template again
  ::close(fd);
}

}  // namespace
}  // namespace nv::vm
