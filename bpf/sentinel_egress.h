/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps and records of sentinel_egress.bpf.c; the loader fills the rule tries. */
#ifndef NV_BPF_SENTINEL_EGRESS_H
#define NV_BPF_SENTINEL_EGRESS_H

#include "sentinel_common.h"

/* Policy 0 is the default policy: it applies to a cgroup under the attach point that has no
 * policy of its own. The loader fills it with the default deny list. */
#define NV_EGRESS_DEFAULT_POLICY 0
#define NV_EGRESS_MAX_POLICIES 4096
#define NV_EGRESS_MAX_RULES 65536
/* How many cgroup2 levels the programs walk up to find the policy of a nested cgroup. */
#define NV_EGRESS_MAX_DEPTH 16

enum nv_egress_action {
  NV_EGRESS_ALLOW = 1,
  NV_EGRESS_DENY = 2,
};

enum nv_egress_hook {
  NV_HOOK_CONNECT4 = 1,
  NV_HOOK_CONNECT6 = 2,
  NV_HOOK_SENDMSG4 = 3,
  NV_HOOK_SENDMSG6 = 4,
};

/* LPM keys: the prefix covers the 32 policy bits first, then the address bits, so one trie holds
 * every policy and the longest (most specific) rule of the caller's policy wins. */
struct nv_egress_key4 {
  __u32 prefixlen; /* 32 + address prefix length */
  __u32 policy;
  __u8 addr[4]; /* network byte order */
};

struct nv_egress_key6 {
  __u32 prefixlen; /* 32 + address prefix length */
  __u32 policy;
  __u8 addr[16]; /* network byte order */
};

struct nv_egress_rule {
  __u32 action;  /* nv_egress_action */
  __u32 rule_id; /* index into the loader's rule table, for the report */
};

/* A refused connect()/sendmsg(). */
struct nv_egress_event {
  __u32 kind; /* NV_EV_EGRESS_DENY */
  __u32 hook; /* nv_egress_hook */
  __u64 ts_ns;
  __u64 cgroup_id;
  __u32 pid;
  __u32 tgid;
  __u32 policy;
  __u32 rule_id;
  __u32 family;   /* 4 or 6 (a v4-mapped v6 address is reported as 6, matched as 4) */
  __u32 protocol; /* IPPROTO_TCP / IPPROTO_UDP / ... */
  __u16 port;     /* host byte order */
  __u16 reserved;
  __u8 addr[16]; /* v4: first 4 bytes; network byte order */
  char comm[NV_COMM_LEN];
};

#endif /* NV_BPF_SENTINEL_EGRESS_H */
