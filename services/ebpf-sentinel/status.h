// Error values of the sentinel library: no exception crosses its API; every failure names the call
// that failed and the errno it returned, so a log line is actionable on its own.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace nv::sentinel {

struct Error {
  std::string call;    // what failed, with its argument: "bpf_object__load(sentinel_lsm)"
  int errnum = 0;      // positive errno (0 when the failure is not a syscall's)
  std::string detail;  // extra context, e.g. the last libbpf message before the failure
  // "call: strerror(errnum) [detail]"
  std::string text() const;
};

class [[nodiscard]] Status {
 public:
  static Status Ok() { return Status(); }
  static Status Fail(std::string call, int errnum, std::string detail = {}) {
    Status s;
    s.error_ = Error{std::move(call), errnum, std::move(detail)};
    return s;
  }
  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *error_; }
  // "ok" or the error's text.
  std::string text() const { return ok() ? std::string("ok") : error_->text(); }

 private:
  std::optional<Error> error_;
};

// How one BPF program fared at load and attach.
struct ProgramStatus {
  std::string name;       // program (function) name in the .bpf.c file, e.g. "nv_sys_enter"
  std::string object;     // skeleton it belongs to, e.g. "sentinel_tracker"
  std::string section;    // ELF section = program type/hook, e.g. "tp_btf/sys_enter"
  bool loaded = false;    // accepted by the verifier / kernel
  bool attached = false;  // attached at least once (cgroup programs attach per cgroup dir)
  int errnum = 0;         // errno of the failed step (load or attach), 0 when all went well
  std::string detail;     // which step failed and libbpf's last message, empty on success
};

// strerror(errnum) without the thread-safety problems of strerror().
std::string errno_text(int errnum);

}  // namespace nv::sentinel
