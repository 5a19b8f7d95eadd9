#include "jailed_vm.h"

#include <sys/wait.h>

#include <cerrno>
#include <csignal>

#include "common/log.h"

namespace nv::vm {
namespace {
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);  // P_PIDFD (linux/wait.h)
}

JailedVm::JailedVm(VmInfo info, Jail jail, VmCgroup cg, JailedProcess proc)
    : info_(std::move(info)), jail_(std::move(jail)), cg_(std::move(cg)), proc_(std::move(proc)) {}

JailedVm::~JailedVm() { (void)destroy(Clock::now() + std::chrono::seconds(1)); }

bool JailedVm::alive() {
  return !reaped_.load() && !wait_readable(proc_.pidfd.get(), Clock::now());
}

std::string JailedVm::exit_reason() {
  std::lock_guard lock(mu_);
  reap(false);
  return reaped_ ? describe_wait_status(status_) : "";
}

Status JailedVm::destroy(Deadline deadline) {
  std::lock_guard lock(mu_);
  if (destroyed_) return {};
  const int pidfd = proc_.pidfd.get();
  bool asked = false;
  if (!reaped_ && !wait_readable(pidfd, Clock::now())) asked = stop_gracefully(deadline);
  if (!reaped_ && !wait_readable(pidfd, asked ? deadline : Clock::now())) {
    if (pidfd_send_signal(pidfd, SIGKILL) != 0 && errno != ESRCH) {
      log::syscall_error("pidfd_send_signal(SIGKILL)", errno, {{"vm_id", info_.vm_id}});
    }
  }
  reap(true);
  Status first;
  if (Status s = cg_.destroy(); !s.ok()) first = s;
  if (Status s = jail_.remove(); !s.ok() && first.ok()) first = s;
  destroyed_ = first.ok();
  return first;
}

void JailedVm::kill_now() {
  if (reaped_.load()) return;
  if (pidfd_send_signal(proc_.pidfd.get(), SIGKILL) != 0 && errno != ESRCH) {
    log::syscall_error("pidfd_send_signal(SIGKILL)", errno, {{"vm_id", info_.vm_id}});
  }
}

void JailedVm::reap(bool block) {
  if (reaped_) return;
  siginfo_t si{};
  for (;;) {
    int r = ::waitid(kPidfdIdType, static_cast<id_t>(proc_.pidfd.get()), &si,
                     WEXITED | (block ? 0 : WNOHANG));
    if (r == 0) break;
    if (errno == EINTR) continue;
    if (errno == ECHILD) reaped_ = true;  // someone else reaped it; it is gone either way
    return;
  }
  if (si.si_pid == 0) return;  // WNOHANG and still running
  status_ = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status;
  reaped_ = true;
}

}  // namespace nv::vm
