// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* BPF LSM enforcement for tracked VM processes, for hosts whose kernel accepts BPF LSM programs
 * (on the development kernel every trampoline program is refused with EPERM at load; the loader
 * reports that and the rest of the sentinel keeps running; Landlock confines VMMs there).
 *
 * - file_open: a tracked process may not open a file listed in denied_inodes.
 * - socket_connect: a tracked process may not connect AF_INET/AF_INET6 sockets at all (VMMs talk
 *   to their guest over vsock/virtio-serial and to the host over AF_UNIX; they need no IP). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "sentinel_lsm.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NV_EPERM 1
#define NV_AF_INET 2
#define NV_AF_INET6 10

/* Same definition as in sentinel_tracker.bpf.c: the loader makes this object share the tracker's
 * map (bpf_map__reuse_fd) so both see the same tracked processes. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NV_MAX_TRACKED_TGIDS);
  __type(key, __u32);
  __type(value, __u32);
} tracked_tgids SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, struct nv_inode_key);
  __type(value, __u8);
} denied_inodes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 64 * 1024);
} lsm_events SEC(".maps");

/* Events lost because the ring buffer was full. */
__u64 dropped_events = 0;

static __always_inline void report(__u32 hook, __u32 slot, __u32 family, __u64 dev, __u64 ino) {
  struct nv_lsm_event* e = bpf_ringbuf_reserve(&lsm_events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped_events, 1);
    return;
  }
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  e->kind = NV_EV_LSM_DENY;
  e->hook = hook;
  e->ts_ns = bpf_ktime_get_ns();
  e->slot = slot;
  e->pid = (__u32)pid_tgid;
  e->tgid = pid_tgid >> 32;
  e->family = family;
  e->dev = dev;
  e->ino = ino;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  bpf_ringbuf_submit(e, 0);
}

static __always_inline __u32 current_slot(void) {
  __u32 tgid = bpf_get_current_pid_tgid() >> 32;
  __u32* slot = bpf_map_lookup_elem(&tracked_tgids, &tgid);
  return slot ? *slot : 0;
}

SEC("lsm/file_open")
int BPF_PROG(nv_file_open, struct file* file, int ret) {
  if (ret != 0) return ret; /* an earlier LSM already refused */
  __u32 slot = current_slot();
  if (slot == 0) return 0;
  struct nv_inode_key key = {};
  key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  key.ino = BPF_CORE_READ(file, f_inode, i_ino);
  if (!bpf_map_lookup_elem(&denied_inodes, &key)) return 0;
  report(NV_LSM_FILE_OPEN, slot, 0, key.dev, key.ino);
  return -NV_EPERM;
}

SEC("lsm/socket_connect")
int BPF_PROG(nv_socket_connect, struct socket* sock, struct sockaddr* address, int addrlen,
             int ret) {
  if (ret != 0) return ret;
  __u32 slot = current_slot();
  if (slot == 0) return 0;
  __u32 family = BPF_CORE_READ(address, sa_family);
  if (family != NV_AF_INET && family != NV_AF_INET6) return 0;
  report(NV_LSM_SOCKET_CONNECT, slot, family, 0, 0);
  return -NV_EPERM;
}
