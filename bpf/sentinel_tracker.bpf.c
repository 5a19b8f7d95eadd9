// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Tracks the process trees of VMs: syscall counts per VM slot, exec and exit events.
 *
 * A process is tracked when its tgid is in tracked_tgids (the VMM pid, added by the loader, and
 * every process forked from a tracked one) or when its cgroup2 id is in tracked_cgroups (the
 * VM's cgroup2 dir). Everything else pays one hash lookup per syscall and is otherwise ignored. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "sentinel_tracker.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load: the sentinel's own tgid is never tracked. */
const volatile __u32 sentinel_tgid = 0;

/* Written by the loader through the mmap'ed .bss: skip the cgroup lookup while no VM is tracked
 * by cgroup, so untracked processes pay a single lookup per syscall. */
__u32 tracked_cgroup_count = 0;

/* Events lost because the ring buffer was full; read by the loader through the mmap'ed .bss. */
__u64 dropped_events = 0;

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NV_MAX_TRACKED_TGIDS);
  __type(key, __u32);   /* tgid */
  __type(value, __u32); /* VM slot */
} tracked_tgids SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NV_MAX_VMS);
  __type(key, __u64);   /* cgroup2 id (inode number of the cgroup2 dir) */
  __type(value, __u32); /* VM slot */
} tracked_cgroups SEC(".maps");

/* Per-CPU so the hot path never contends; the loader sums the CPUs. Indexed by VM slot: an array
 * is the cheapest "map keyed by VM" for the per-syscall path. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NV_MAX_VMS);
  __type(key, __u32);
  __type(value, __u64);
} syscall_counts SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} proc_events SEC(".maps");

static __always_inline __u32 slot_of(__u32 tgid) {
  __u32* slot = bpf_map_lookup_elem(&tracked_tgids, &tgid);
  if (slot) return *slot;
  if (tracked_cgroup_count == 0) return 0;
  /* Current task only: the helper reads the caller's cgroup2 membership. */
  __u64 cg = bpf_get_current_cgroup_id();
  slot = bpf_map_lookup_elem(&tracked_cgroups, &cg);
  return slot ? *slot : 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(nv_sys_enter, struct pt_regs* regs, long id) {
  __u32 tgid = bpf_get_current_pid_tgid() >> 32;
  __u32 slot = slot_of(tgid);
  if (slot == 0 || tgid == sentinel_tgid) return 0;
  __u64* count = bpf_map_lookup_elem(&syscall_counts, &slot);
  if (count) *count += 1; /* per-CPU slot: no atomics needed */
  return 0;
}

/* A process forked from a tracked one joins its VM. Threads share the tgid and need nothing. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(nv_process_fork, struct task_struct* parent, struct task_struct* child) {
  __u32 ptgid = parent->tgid;
  __u32 ctgid = child->tgid;
  if (ptgid == ctgid) return 0;
  __u32* slot = bpf_map_lookup_elem(&tracked_tgids, &ptgid);
  if (!slot) return 0;
  __u32 s = *slot;
  bpf_map_update_elem(&tracked_tgids, &ctgid, &s, BPF_ANY);
  return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(nv_process_exec, struct task_struct* p, pid_t old_pid, struct linux_binprm* bprm) {
  __u32 tgid = p->tgid;
  __u32 slot = slot_of(tgid); /* the exec'ing task is current */
  if (slot == 0) return 0;
  struct nv_proc_event* e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped_events, 1); /* ring full: counted, reported by the loader */
    return 0;
  }
  e->kind = NV_EV_EXEC;
  e->slot = slot;
  e->ts_ns = bpf_ktime_get_ns();
  e->cgroup_id = bpf_get_current_cgroup_id();
  e->pid = p->pid;
  e->tgid = tgid;
  e->ppid = BPF_CORE_READ(p, real_parent, tgid);
  e->exit_code = 0;
  e->old_pid = old_pid;
  e->reserved = 0;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
  bpf_ringbuf_submit(e, 0);
  return 0;
}

/* Kernel 6.18 passes (task, group_dead); group_dead is true once per thread group, when its last
 * thread exits. Older kernels pass only the task: this program then fails to load and the loader
 * reports it with the errno instead of guessing. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(nv_process_exit, struct task_struct* p, bool group_dead) {
  if (!group_dead) return 0;
  __u32 tgid = p->tgid;
  __u32 slot = slot_of(tgid);
  if (slot == 0) return 0;
  bpf_map_delete_elem(&tracked_tgids, &tgid);
  struct nv_proc_event* e = bpf_ringbuf_reserve(&proc_events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped_events, 1);
    return 0;
  }
  e->kind = NV_EV_EXIT;
  e->slot = slot;
  e->ts_ns = bpf_ktime_get_ns();
  e->cgroup_id = bpf_get_current_cgroup_id();
  e->pid = p->pid;
  e->tgid = tgid;
  e->ppid = BPF_CORE_READ(p, real_parent, tgid);
  e->exit_code = p->exit_code;
  e->old_pid = 0;
  e->reserved = 0;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  e->filename[0] = '\0';
  bpf_ringbuf_submit(e, 0);
  return 0;
}
