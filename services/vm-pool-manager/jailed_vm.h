// jailed_vm.h — what every VMM-backed RunningVm shares, whatever the VMM: the VMM process
// (pid + pidfd), its jail and its cgroup, exit detection and reaping, and the teardown order.
//
// destroy():  ask the VMM to stop (backend hook: QEMU "quit"; Firecracker has none)
//          →  SIGKILL at the deadline (or at once without a graceful stop)
//          →  reap (waitid on the pidfd)  →  remove the cgroup  →  remove the jail dir.
// The cgroup is removed only after the VMM is reaped (a cgroup with tasks cannot go) and the
// jail after that (its mounts die with the VMM's mount namespace).
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "backend.h"
#include "cgroup.h"
#include "jail.h"

namespace nv::vm {

class JailedVm : public RunningVm {
 public:
  JailedVm(VmInfo info, Jail jail, VmCgroup cg, JailedProcess proc);
  // Tears down without the backend's graceful stop (subclass members are gone by now):
  // subclasses call destroy() in their own destructors to get it.
  ~JailedVm() override;

  const VmInfo& info() const final { return info_; }
  int exit_fd() const final { return proc_.pidfd.get(); }
  // Lock-free (a lease checks it under the pool's lock while a health check may hold ours).
  bool alive() final;
  std::string exit_reason() final;
  Status destroy(Deadline deadline) final;
  // Lock-free: the pidfd stays open as long as this object lives.
  void kill_now() final;
  Result<VmUsage> usage() final { return cg_.usage(); }

 protected:
  // Asks a still-running VMM to exit on its own; called by destroy() with mu_ held. Returns true
  // when it asked (destroy then waits until the deadline before SIGKILL), false to kill at once.
  virtual bool stop_gracefully(Deadline /*deadline*/) { return false; }
  const Jail& jail() const { return jail_; }

  std::mutex mu_;  // serializes the control channel and teardown
  VmInfo info_;

 private:
  void reap(bool block);  // mu_ held

  Jail jail_;
  VmCgroup cg_;
  JailedProcess proc_;
  std::atomic<bool> reaped_{false};
  bool destroyed_ = false;
  int status_ = 0;
};

}  // namespace nv::vm
