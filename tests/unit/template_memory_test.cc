// TemplateMemory: the RAM every restored clone maps. Once sealed, nobody — not the pool manager,
// not a VMM taken over by its guest, not root reopening it through /proc — can change what the
// next clone starts from, while private copy-on-write mappings (what QEMU uses) still work.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "template_memory.h"

namespace nv::vm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kBytes = 1 << 20;

// Another process (the capture's receiver VMM, say) holding a shared writable mapping of the
// memfd until it reads a byte from `release_fd`, then exiting. Writes 'm' to `ready_fd` once
// mapped. Returns its pid.
pid_t child_mapping_shared(int memfd, int ready_fd, int release_fd) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (p == MAP_FAILED) ::_exit(2);
  static_cast<char*>(p)[0] = 'x';
  (void)!::write(ready_fd, "m", 1);
  char c;
  (void)!::read(release_fd, &c, 1);
  ::_exit(0);
}

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
  Status s = m.value().seal(0ms);
  ASSERT_FALSE(s.ok());  // EBUSY: the writer still maps it
  EXPECT_EQ(s.error().code, ErrorCode::VM_FAILED);
  EXPECT_TRUE(s.error().retryable);
  EXPECT_FALSE(m.value().sealed());
  ::munmap(p, kBytes);
  EXPECT_TRUE(m.value().seal().ok());
  EXPECT_TRUE(m.value().sealed());
}

// The fork EBUSY race: the seal comes while another process still maps the memfd shared and
// writable. It must wait for that mapping to go (then seal), or fail typed and retryable after
// its bound, the memfd left unsealed (so no clone is handed it); never report sealed when not.
TEST(TemplateMemoryTest, SealWaitsForAnotherProcesssWritableMappingToGo) {
  auto m = TemplateMemory::create("nv-test", kBytes);
  ASSERT_TRUE(m.ok()) << m.error().message;
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  pid_t pid = child_mapping_shared(m.value().fd(), ready[1], release[0]);
  ASSERT_GT(pid, 0);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  // Bounded: the mapping outlasts the wait → retryable vmFailed, still unsealed.
  Status early = m.value().seal(200ms);
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code, ErrorCode::VM_FAILED);
  EXPECT_TRUE(early.error().retryable);
  EXPECT_NE(early.error().message.find("EBUSY"), std::string::npos) << early.error().message;
  EXPECT_FALSE(m.value().sealed());
  // The process lets go (exits) 300 ms into a seal that may wait long enough: it seals.
  std::thread letgo([&] {
    std::this_thread::sleep_for(300ms);
    (void)!::write(release[1], "r", 1);
  });
  Status s = m.value().seal(60s);
  letgo.join();
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(status, 0);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(m.value().sealed());
  EXPECT_EQ(::pwrite(m.value().fd(), "y", 1, 0), -1);  // really sealed
  for (int fd : {ready[0], ready[1], release[0], release[1]}) ::close(fd);
}

// Our own read-only look at the memfd (zero-page freeing reads it in place) must not be a
// mapping that blocks the seal: a PRIVATE read-only mapping does not count as writable.
TEST(TemplateMemoryTest, APrivateReadOnlyMappingDoesNotBlockTheSeal) {
  auto m = TemplateMemory::create("nv-test", kBytes);
  ASSERT_TRUE(m.ok()) << m.error().message;
  void* shared_ro = ::mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, m.value().fd(), 0);
  ASSERT_NE(shared_ro, MAP_FAILED);
  // A shared mapping of the O_RDWR memfd may be mprotect()ed writable: it blocks the seal.
  EXPECT_FALSE(m.value().seal(0ms).ok());
  ::munmap(shared_ro, kBytes);
  void* private_ro = ::mmap(nullptr, kBytes, PROT_READ, MAP_PRIVATE, m.value().fd(), 0);
  ASSERT_NE(private_ro, MAP_FAILED);
  EXPECT_TRUE(m.value().seal(0ms).ok());
  EXPECT_TRUE(m.value().sealed());
  ::munmap(private_ro, kBytes);
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
