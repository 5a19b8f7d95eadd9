/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Constants shared by every sentinel BPF program and the loader (services/ebpf-sentinel). */
#ifndef NV_BPF_SENTINEL_COMMON_H
#define NV_BPF_SENTINEL_COMMON_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Longest comm the kernel keeps (TASK_COMM_LEN). */
#define NV_COMM_LEN 16
/* Bytes kept of an exec'd file name; longer names are truncated (still NUL-terminated). */
#define NV_FILENAME_LEN 128
/* VM slots are 1..NV_MAX_VMS-1; slot 0 means "not tracked". */
#define NV_MAX_VMS 1024
/* Processes that can be tracked at once across all VMs (VMM + helpers + their children). */
#define NV_MAX_TRACKED_TGIDS 16384

/* First field of every ring-buffer record, so one callback can tell them apart. */
enum nv_event_kind {
  NV_EV_UNSET = 0,
  NV_EV_EXEC = 1,        /* sentinel_tracker: a tracked process called execve */
  NV_EV_EXIT = 2,        /* sentinel_tracker: a tracked process (thread group) exited */
  NV_EV_EGRESS_DENY = 3, /* sentinel_egress: connect/sendmsg refused */
  NV_EV_LSM_DENY = 4,    /* sentinel_lsm: file_open / socket_connect refused */
};

#endif /* NV_BPF_SENTINEL_COMMON_H */
