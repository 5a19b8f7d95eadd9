#include "lsm.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>

#include "bpf_loader.h"
#include "sentinel_lsm.h"
#include "sentinel_lsm.skel.h"
#include "tracker.h"

namespace nv::sentinel {

Lsm::~Lsm() {
  if (skel_) sentinel_lsm::destroy(skel_);
}

std::vector<ProgramStatus> Lsm::load(int tracked_tgids_fd) {
  capture_libbpf_messages();
  statuses_ =
      load_skeleton<sentinel_lsm>("sentinel_lsm", &skel_, [tracked_tgids_fd](sentinel_lsm* s) {
        if (tracked_tgids_fd < 0)
          return Status::Fail("bpf_map__reuse_fd(tracked_tgids)", EBADF,
                              "the tracker did not load, so no process is known to confine");
        int err = bpf_map__reuse_fd(s->maps.tracked_tgids, tracked_tgids_fd);
        if (err) return Status::Fail("bpf_map__reuse_fd(tracked_tgids)", -err);
        return Status::Ok();
      });
  if (!skel_) {
    // libbpf's EPERM hint is about RLIMIT_MEMLOCK; on kernels that account BPF memory to memcg
    // (5.11+) that is not it. Say what we know instead of leaving the hint alone.
    for (ProgramStatus& st : statuses_) {
      if (st.errnum == EPERM)
        st.detail =
            "kernel refused the BPF LSM (trampoline) program with EPERM; the other "
            "objects load on their own; file confinement falls back to Landlock. " +
            st.detail;
    }
    return statuses_;
  }
  struct {
    bpf_program* prog;
    bpf_link** link;
  } progs[] = {{skel_->progs.nv_file_open, &skel_->links.nv_file_open},
               {skel_->progs.nv_socket_connect, &skel_->links.nv_socket_connect}};
  for (auto& p : progs) {
    if (!bpf_program__autoload(p.prog)) continue;
    bpf_link* link = bpf_program__attach_lsm(p.prog);
    int err = link ? 0 : errno;
    if (link) *p.link = link;
    note_attach(statuses_, bpf_program__name(p.prog), err, "bpf_program__attach_lsm");
  }
  return statuses_;
}

Status Lsm::deny_file(const std::string& path) {
  if (!skel_ || !bpf_program__autoload(skel_->progs.nv_file_open))
    return Status::Fail("lsm_deny_file(" + path + ")", ENODEV, "lsm/file_open not loaded");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return Status::Fail("stat(" + path + ")", errno);
  nv_inode_key key{};
  // st_dev is the userspace encoding; the kernel's s_dev is major << 20 | minor.
  key.dev = (static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev);
  key.ino = st.st_ino;
  uint8_t one = 1;
  int err = bpf_map__update_elem(skel_->maps.denied_inodes, &key, sizeof(key), &one, sizeof(one),
                                 BPF_ANY);
  if (err) return Status::Fail("bpf_map_update_elem(denied_inodes, " + path + ")", -err);
  return Status::Ok();
}

Status Lsm::add_ring(ring_buffer** rb, Callbacks* callbacks, const Tracker* tracker) {
  if (!skel_) return Status::Fail("add_ring(lsm_events)", ENODEV, "lsm not loaded");
  callbacks_ = callbacks;
  tracker_ = tracker;
  int fd = bpf_map__fd(skel_->maps.lsm_events);
  if (*rb == nullptr) {
    *rb = ring_buffer__new(fd, &Lsm::on_record, this, nullptr);
    if (!*rb) return Status::Fail("ring_buffer__new(lsm_events)", errno);
    return Status::Ok();
  }
  int err = ring_buffer__add(*rb, fd, &Lsm::on_record, this);
  if (err) return Status::Fail("ring_buffer__add(lsm_events)", -err);
  return Status::Ok();
}

uint64_t Lsm::dropped_events() const {
  return skel_ ? __atomic_load_n(&skel_->bss->dropped_events, __ATOMIC_RELAXED) : 0;
}

int Lsm::on_record(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Lsm*>(ctx);
  if (size < sizeof(nv_lsm_event)) return 0;
  nv_lsm_event e;
  memcpy(&e, data, sizeof(e));
  if (e.kind != NV_EV_LSM_DENY) return 0;
  LsmDenial d;
  d.vm_id = self->tracker_ ? self->tracker_->vm_of_slot(e.slot) : "";
  d.ts_ns = e.ts_ns;
  d.pid = static_cast<pid_t>(e.pid);
  d.tgid = static_cast<pid_t>(e.tgid);
  d.comm = std::string(e.comm, strnlen(e.comm, sizeof(e.comm)));
  d.hook = e.hook == NV_LSM_FILE_OPEN ? "file_open" : "socket_connect";
  d.family = static_cast<int>(e.family);
  d.dev = e.dev;
  d.ino = e.ino;
  if (self->callbacks_ && self->callbacks_->on_lsm_denial) self->callbacks_->on_lsm_denial(d);
  return 0;
}

}  // namespace nv::sentinel
