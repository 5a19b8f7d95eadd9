// capture_in_place_test.cc — capture.h's capture in place without a VM: a child process stands
// in for a clone's VMM. It maps a sealed "template" memfd privately (as QEMU maps a template
// with share=off), writes some pages, and the capture must produce a sealed memfd holding the
// template with exactly those pages replaced, while the "guest" was paused for the copy.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "capture.h"

namespace nv::vm {
namespace {

constexpr uint32_t kMib = 4;  // the "VM's" RAM: 4 MiB = 1024 pages
constexpr uint64_t kBytes = uint64_t{kMib} << 20;
constexpr size_t kPage = 4096;

// The template's byte at `off`: never zero, so a lost page shows.
char template_byte(uint64_t off) { return static_cast<char>('a' + (off / kPage) % 26); }

TemplateMemory make_template() {
  auto mem = TemplateMemory::create("nv-template-test", kBytes);
  EXPECT_TRUE(mem.ok());
  std::vector<char> page(kPage);
  for (uint64_t off = 0; off < kBytes; off += kPage) {
    std::memset(page.data(), template_byte(off), kPage);
    EXPECT_EQ(::pwrite(mem.value().fd(), page.data(), kPage, static_cast<off_t>(off)),
              static_cast<ssize_t>(kPage));
  }
  EXPECT_TRUE(mem.value().seal().ok());
  return std::move(mem.value());
}

// A child process that maps and writes memory (`setup` returns its RAM, null on failure), says
// it is ready, then waits to be killed: it stands in for a VMM. Killed and reaped on destruction.
class FakeVmm {
 public:
  template <class Setup>
  explicit FakeVmm(Setup setup) {
    int ready[2];
    EXPECT_EQ(::pipe(ready), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      if (!setup()) ::_exit(1);
      (void)!::write(ready[1], "r", 1);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    EXPECT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
  }
  // A clone's VMM: maps `tmpl` privately (as QEMU maps a template with share=off), reads every
  // 16th page, writes the `written` pages (page index → byte; 0 = zeros).
  FakeVmm(const TemplateMemory& tmpl, const std::vector<std::pair<size_t, char>>& written)
      : FakeVmm([&]() -> void* {
          void* m = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, tmpl.fd(), 0);
          if (m == MAP_FAILED) return nullptr;
          char* ram = static_cast<char*>(m);
          volatile char sink = 0;
          for (uint64_t off = 0; off < kBytes; off += 16 * kPage) sink = sink + ram[off];
          for (auto [page, byte] : written) std::memset(ram + page * kPage, byte, kPage);
          return m;
        }) {}
  ~FakeVmm() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// The capture's view of the VMM: device state is a marker, pause and resume are recorded.
class ChildVm : public RunningVm {
 public:
  explicit ChildVm(pid_t pid) {
    info_.vm_id = "vm-test";
    info_.vmm_pid = pid;
  }
  const VmInfo& info() const override { return info_; }
  int exit_fd() const override { return -1; }
  bool alive() override { return true; }
  std::string exit_reason() override { return ""; }
  Status check_responsive(Deadline) override { return {}; }
  Status snapshot(const std::string&, Deadline) override { return {}; }
  Status destroy(Deadline) override { return {}; }
  Result<VmUsage> usage() override { return VmUsage{}; }
  Status save_device_state(int fd, Deadline) override {
    paused = true;
    const char marker[] = "DEVICE-STATE";
    EXPECT_EQ(::write(fd, marker, sizeof marker - 1), static_cast<ssize_t>(sizeof marker - 1));
    return {};
  }
  Status resume_guest(Deadline) override {
    resumed_after_pause = paused;
    paused = false;
    return {};
  }
  bool paused = false, resumed_after_pause = false;

 private:
  VmInfo info_;
};

class CaptureInPlace : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("nv-capture-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  CaptureSpec spec() const {
    CaptureSpec cs;
    cs.receiver_id = "cap-test";
    cs.memory_mib = kMib;
    cs.state_path = (dir_ / "device.state").string();
    return cs;
  }
  std::filesystem::path dir_;
};

// Every page: the child's own bytes where it wrote, the template's elsewhere.
void expect_capture(const TemplateMemory& mem,
                    const std::vector<std::pair<size_t, char>>& written) {
  std::vector<char> got(kPage);
  for (size_t page = 0; page < kBytes / kPage; ++page) {
    ASSERT_EQ(::pread(mem.fd(), got.data(), kPage, static_cast<off_t>(page * kPage)),
              static_cast<ssize_t>(kPage));
    char want = template_byte(page * kPage);
    for (auto [p, b] : written) {
      if (p == page) want = b;
    }
    ASSERT_EQ(got[0], want) << "page " << page;
    ASSERT_EQ(got[kPage - 1], want) << "page " << page;
  }
}

const std::vector<std::pair<size_t, char>> kWritten = {{0, 'X'}, {3, 'Y'},    {4, 'Y'},
                                                       {5, 'Z'}, {500, '\0'}, {1023, 'Q'}};

TEST_F(CaptureInPlace, TemplatePlusWrittenPagesSealedWhileTheGuestWasPaused) {
  TemplateMemory tmpl = make_template();
  FakeVmm vmm(tmpl, kWritten);
  ChildVm vm(vmm.pid());
  auto cap = begin_capture_in_place(vm, spec(), nullptr);
  ASSERT_TRUE(cap.ok()) << cap.error().to_string();
  ASSERT_TRUE(cap.value()) << "the child's private memfd mapping was not found";
  EXPECT_FALSE(cap.value()->memory.sealed());  // begin leaves it open for finish
  EXPECT_FALSE(vm.paused);
  ASSERT_TRUE(
      finish_capture_in_place(vm, *cap.value(), Clock::now() + std::chrono::seconds(5)).ok());
  EXPECT_TRUE(vm.resumed_after_pause);
  EXPECT_FALSE(cap.value()->from_spare);
  EXPECT_EQ(cap.value()->written_bytes, kWritten.size() * kPage);
  EXPECT_TRUE(cap.value()->memory.sealed());
  expect_capture(cap.value()->memory, kWritten);
  // Sealed: nobody writes it any more.
  char x = 'w';
  EXPECT_EQ(::pwrite(cap.value()->memory.fd(), &x, 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  std::string state(64, '\0');
  int fd = ::open(spec().state_path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  state.resize(static_cast<size_t>(::read(fd, state.data(), state.size())));
  ::close(fd);
  EXPECT_EQ(state, "DEVICE-STATE");
}

TEST_F(CaptureInPlace, UsesASpareOfTheSameTemplateOnly) {
  TemplateMemory tmpl = make_template();
  FakeVmm vmm(tmpl, kWritten);
  ChildVm vm(vmm.pid());
  // A copy of another template (another inode) is left alone.
  TemplateMemory other = make_template();
  auto foreign = copy_template(other.fd(), kBytes, "nv-fork-other");
  ASSERT_TRUE(foreign.ok());
  std::optional<TemplateCopy> spare = std::move(foreign.value());
  auto cap = begin_capture_in_place(vm, spec(), &spare);
  ASSERT_TRUE(cap.ok() && cap.value());
  EXPECT_FALSE(cap.value()->from_spare);
  EXPECT_TRUE(spare.has_value());
  // A copy of this template is taken.
  auto own = copy_template(tmpl.fd(), kBytes, "nv-fork-own");
  ASSERT_TRUE(own.ok());
  spare = std::move(own.value());
  auto cap2 = begin_capture_in_place(vm, spec(), &spare);
  ASSERT_TRUE(cap2.ok() && cap2.value());
  EXPECT_TRUE(cap2.value()->from_spare);
  EXPECT_FALSE(spare.has_value());
  ASSERT_TRUE(
      finish_capture_in_place(vm, *cap2.value(), Clock::now() + std::chrono::seconds(5)).ok());
  expect_capture(cap2.value()->memory, kWritten);
}

TEST_F(CaptureInPlace, AnonymousRamIsNoTemplateMapping) {
  // A cold-booted VMM's RAM is anonymous: begin answers "not in place" (null), no error.
  FakeVmm vmm([]() -> void* {
    void* m = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    std::memset(m, 1, kBytes);
    return m;
  });
  ChildVm vm(vmm.pid());
  auto cap = begin_capture_in_place(vm, spec(), nullptr);
  ASSERT_TRUE(cap.ok()) << cap.error().to_string();
  EXPECT_FALSE(cap.value());
}

}  // namespace
}  // namespace nv::vm
