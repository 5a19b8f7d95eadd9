#include "landlock.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nv::landlock {

namespace {

// Kernel ABI (include/uapi/linux/landlock.h). Defined here so the helper does not depend on the
// age of the installed kernel headers.
constexpr unsigned kCreateRulesetVersion = 1u << 0;
constexpr int kRulePathBeneath = 1;

constexpr uint64_t kExecute = 1ull << 0;
constexpr uint64_t kWriteFile = 1ull << 1;
constexpr uint64_t kReadFile = 1ull << 2;
constexpr uint64_t kReadDir = 1ull << 3;
constexpr uint64_t kRemoveDir = 1ull << 4;
constexpr uint64_t kRemoveFile = 1ull << 5;
constexpr uint64_t kMakeChar = 1ull << 6;
constexpr uint64_t kMakeDir = 1ull << 7;
constexpr uint64_t kMakeReg = 1ull << 8;
constexpr uint64_t kMakeSock = 1ull << 9;
constexpr uint64_t kMakeFifo = 1ull << 10;
constexpr uint64_t kMakeBlock = 1ull << 11;
constexpr uint64_t kMakeSym = 1ull << 12;
constexpr uint64_t kRefer = 1ull << 13;     // ABI 2
constexpr uint64_t kTruncate = 1ull << 14;  // ABI 3
constexpr uint64_t kIoctlDev = 1ull << 15;  // ABI 5

// Rights that make sense on a regular file (the kernel refuses the others with EINVAL there).
constexpr uint64_t kFileRights = kExecute | kWriteFile | kReadFile | kTruncate | kIoctlDev;

struct RulesetAttr {
  uint64_t handled_access_fs;  // only the fs field: the kernel accepts a shorter struct
};

struct __attribute__((packed)) PathBeneathAttr {
  uint64_t allowed_access;
  int32_t parent_fd;
};

// Every fs right the kernel of this ABI knows.
uint64_t handled_for_abi(int abi) {
  uint64_t r = kExecute | kWriteFile | kReadFile | kReadDir | kRemoveDir | kRemoveFile | kMakeChar |
               kMakeDir | kMakeReg | kMakeSock | kMakeFifo | kMakeBlock | kMakeSym;
  if (abi >= 2) r |= kRefer;
  if (abi >= 3) r |= kTruncate;
  if (abi >= 5) r |= kIoctlDev;
  return r;
}

Outcome fail(Outcome o, std::string call, int errnum) {
  o.ok = false;
  o.call = std::move(call);
  o.errnum = errnum;
  o.log.push_back(o.text());
  return o;
}

}  // namespace

std::string Outcome::text() const {
  if (ok)
    return "ok (landlock abi " + std::to_string(abi) + ", " + std::to_string(log.size()) +
           " steps)";
  char buf[128];
  const char* msg = strerror_r(errnum, buf, sizeof(buf));
  return call + ": " + (msg ? msg : "?") + " (errno " + std::to_string(errnum) + ")";
}

Ruleset vmm_ruleset(const VmmPaths& p) {
  Ruleset r;
  r.execute.push_back(p.vmm_binary);
  r.execute.insert(r.execute.end(), p.loaders.begin(), p.loaders.end());
  r.read_only = p.support;
  r.read_only.insert(r.read_only.end(), p.images.begin(), p.images.end());
  if (!p.vm_dir.empty()) r.read_write.push_back(p.vm_dir);
  r.read_write.insert(r.read_write.end(), p.devices.begin(), p.devices.end());
  r.skip_missing = true;  // hosts differ in library dirs and devices
  return r;
}

int abi_version() {
  long v = syscall(SYS_landlock_create_ruleset, nullptr, 0, kCreateRulesetVersion);
  if (v < 0) return -errno;
  return static_cast<int>(v);
}

bool available(std::string* why) {
  int v = abi_version();
  if (v >= 1) return true;
  if (why) {
    if (v == -ENOSYS)
      *why = "landlock_create_ruleset: ENOSYS (kernel built without CONFIG_SECURITY_LANDLOCK)";
    else if (v == -EOPNOTSUPP)
      *why = "landlock_create_ruleset: EOPNOTSUPP (Landlock disabled at boot; add it to lsm=)";
    else
      *why = "landlock_create_ruleset: errno " + std::to_string(-v);
  }
  return false;
}

PreparedRuleset::~PreparedRuleset() {
  if (fd_ >= 0) close(fd_);
}

PreparedRuleset::PreparedRuleset(PreparedRuleset&& other) noexcept
    : fd_(other.fd_), outcome_(std::move(other.outcome_)) {
  other.fd_ = -1;
}

PreparedRuleset& PreparedRuleset::operator=(PreparedRuleset&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    outcome_ = std::move(other.outcome_);
    other.fd_ = -1;
  }
  return *this;
}

PreparedRuleset prepare(const Ruleset& rules) {
  PreparedRuleset prepared;
  Outcome& o = prepared.outcome_;
  // Step 1: which rights can this kernel enforce?
  int abi = abi_version();
  if (abi < 1) {
    o = fail(o, "landlock_create_ruleset(VERSION)", -abi);
    return prepared;
  }
  o.abi = abi;
  o.handled_fs = handled_for_abi(abi);
  o.log.push_back("landlock abi " + std::to_string(abi));

  // Step 2: a ruleset handling all of them: anything not granted below is refused.
  RulesetAttr attr{o.handled_fs};
  int ruleset = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0));
  if (ruleset < 0) {
    o = fail(o, "landlock_create_ruleset", errno);
    return prepared;
  }

  // Step 3: one path_beneath rule per listed path.
  const uint64_t read = kReadFile | kReadDir;
  const uint64_t write = kWriteFile | kRemoveDir | kRemoveFile | kMakeDir | kMakeReg | kMakeSock |
                         kMakeFifo | kMakeSym | kRefer | kTruncate;
  struct Group {
    const std::vector<std::string>* paths;
    uint64_t rights;
    const char* name;
  } groups[] = {{&rules.read_only, read, "ro"},
                {&rules.read_write, read | write | kIoctlDev, "rw"},
                {&rules.execute, read | kExecute, "exec"}};
  for (const Group& g : groups) {
    for (const std::string& path : *g.paths) {
      int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
      if (fd < 0) {
        int err = errno;
        if (err == ENOENT && rules.skip_missing) {
          o.log.push_back(std::string("skip missing ") + g.name + " " + path);
          continue;
        }
        close(ruleset);
        o = fail(o, "open(" + path + ", O_PATH)", err);
        return prepared;
      }
      struct stat st {};
      if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        close(ruleset);
        o = fail(o, "fstat(" + path + ")", err);
        return prepared;
      }
      uint64_t allowed = g.rights & o.handled_fs;
      if (!S_ISDIR(st.st_mode)) allowed &= kFileRights;
      PathBeneathAttr pb{allowed, fd};
      long r = syscall(SYS_landlock_add_rule, ruleset, kRulePathBeneath, &pb, 0);
      int err = errno;
      close(fd);
      if (r != 0) {
        close(ruleset);
        o = fail(o, "landlock_add_rule(" + path + ")", err);
        return prepared;
      }
      o.log.push_back(std::string("allow ") + g.name + " " + path);
    }
  }
  prepared.fd_ = ruleset;
  o.ok = true;
  return prepared;
}

int enforce(int ruleset_fd) noexcept {
  // no_new_privs is required unless the caller has CAP_SYS_ADMIN; we want it anyway.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  if (syscall(SYS_landlock_restrict_self, ruleset_fd, 0) != 0) return errno;
  return 0;
}

Outcome restrict_self(const Ruleset& rules) {
  PreparedRuleset prepared = prepare(rules);
  Outcome o = prepared.outcome();
  if (!prepared.ok()) return o;
  o.ok = false;
  // Step 4: enforce. Check which call failed for the report.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return fail(o, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
  if (syscall(SYS_landlock_restrict_self, prepared.fd(), 0) != 0)
    return fail(o, "landlock_restrict_self", errno);
  o.ok = true;
  o.log.push_back("restricted");
  return o;
}

}  // namespace nv::landlock
