/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Records sentinel_tracker.bpf.c writes to its ring buffer; read by services/ebpf-sentinel. */
#ifndef NV_BPF_SENTINEL_TRACKER_H
#define NV_BPF_SENTINEL_TRACKER_H

#include "sentinel_common.h"

/* One exec or exit of a process in a tracked VM tree (kind says which). */
struct nv_proc_event {
  __u32 kind;      /* NV_EV_EXEC or NV_EV_EXIT */
  __u32 slot;      /* VM slot the process is tracked under */
  __u64 ts_ns;     /* bpf_ktime_get_ns() at the event */
  __u64 cgroup_id; /* cgroup2 id of the process */
  __u32 pid;       /* thread id that exec'd / the exiting leader's pid */
  __u32 tgid;      /* process id */
  __u32 ppid;      /* parent's process id */
  __s32 exit_code; /* NV_EV_EXIT: task->exit_code (status << 8 | signal) */
  __u32 old_pid;   /* NV_EV_EXEC: thread id before exec (differs if a thread exec'd) */
  __u32 reserved;
  char comm[NV_COMM_LEN];
  char filename[NV_FILENAME_LEN]; /* NV_EV_EXEC: path passed to execve */
};

#endif /* NV_BPF_SENTINEL_TRACKER_H */
