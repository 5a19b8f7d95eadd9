/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps and records of sentinel_lsm.bpf.c (BPF LSM; refused with EPERM on some hosts). */
#ifndef NV_BPF_SENTINEL_LSM_H
#define NV_BPF_SENTINEL_LSM_H

#include "sentinel_common.h"

enum nv_lsm_hook {
  NV_LSM_FILE_OPEN = 1,
  NV_LSM_SOCKET_CONNECT = 2,
};

/* A file a tracked VM process must not open, by device and inode. */
struct nv_inode_key {
  __u64 dev; /* superblock s_dev, kernel form: major << 20 | minor */
  __u64 ino;
};

struct nv_lsm_event {
  __u32 kind; /* NV_EV_LSM_DENY */
  __u32 hook; /* nv_lsm_hook */
  __u64 ts_ns;
  __u32 slot;
  __u32 pid;
  __u32 tgid;
  __u32 family; /* NV_LSM_SOCKET_CONNECT: address family */
  __u64 dev;    /* NV_LSM_FILE_OPEN */
  __u64 ino;
  char comm[NV_COMM_LEN];
};

#endif /* NV_BPF_SENTINEL_LSM_H */
