// netns.cc — network namespaces of networked VMs (egress.h, network.h).
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "egress.h"
#include "sysutil.h"

namespace nv::vm {

Status in_netns(int netns_fd, const std::function<Status()>& fn) {
  if (netns_fd < 0) return make_error(ErrorCode::BAD_REQUEST, "in_netns: no namespace fd");
  Status out;
  // A thread of its own: setns(2) changes only the calling thread's network namespace, and this
  // one ends right after, so no other work ever runs in the VM's namespace by accident.
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      out = sys_error("setns(CLONE_NEWNET)", errno);
      return;
    }
    out = fn();
  });
  t.join();
  return out;
}

}  // namespace nv::vm
