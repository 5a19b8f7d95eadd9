// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Egress control for VM cgroup2 dirs: cgroup/connect4|6 and cgroup/sendmsg4|6.
 *
 * Attached to a VM's cgroup2 dir, these run for every connect() and every unconnected
 * sendmsg()/sendto() of a process in that dir or below it. The caller's policy is found by its
 * cgroup id (or the nearest ancestor that has one, else the default policy 0); the longest
 * matching rule of that policy decides; no matching rule means allow. A refusal makes the
 * syscall fail with EPERM and is reported on the ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sentinel_egress.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Return values of cgroup sock_addr programs. */
#define NV_VERDICT_REJECT 0
#define NV_VERDICT_PASS 1

/* Denials whose event was lost because the ring buffer was full (the denial itself stands). */
__u64 dropped_events = 0;

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NV_EGRESS_MAX_POLICIES);
  __type(key, __u64);   /* cgroup2 id */
  __type(value, __u32); /* policy id */
} policy_of_cgroup SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, NV_EGRESS_MAX_RULES);
  __uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
  __type(key, struct nv_egress_key4);
  __type(value, struct nv_egress_rule);
} rules_v4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, NV_EGRESS_MAX_RULES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct nv_egress_key6);
  __type(value, struct nv_egress_rule);
} rules_v6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} egress_events SEC(".maps");

static __always_inline __u32 current_policy(__u64 cg) {
  __u32* policy = bpf_map_lookup_elem(&policy_of_cgroup, &cg);
  if (policy) return *policy;
    /* A cgroup created below an attached dir: the nearest ancestor with a policy decides. */
#pragma unroll
  for (int level = NV_EGRESS_MAX_DEPTH; level >= 1; level--) {
    __u64 anc = bpf_get_current_ancestor_cgroup_id(level);
    if (anc == 0 || anc == cg) continue;
    policy = bpf_map_lookup_elem(&policy_of_cgroup, &anc);
    if (policy) return *policy;
  }
  return NV_EGRESS_DEFAULT_POLICY;
}

static __always_inline int report(struct bpf_sock_addr* ctx, __u32 hook, __u64 cg, __u32 policy,
                                  const struct nv_egress_rule* rule, __u32 family, const __u8* addr,
                                  __u32 addr_len) {
  struct nv_egress_event* e = bpf_ringbuf_reserve(&egress_events, sizeof(*e), 0);
  if (!e) {
    __sync_fetch_and_add(&dropped_events, 1);
    return NV_VERDICT_REJECT; /* still refuse: losing the report must not open the door */
  }
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  e->kind = NV_EV_EGRESS_DENY;
  e->hook = hook;
  e->ts_ns = bpf_ktime_get_ns();
  e->cgroup_id = cg;
  e->pid = (__u32)pid_tgid;
  e->tgid = pid_tgid >> 32;
  e->policy = policy;
  e->rule_id = rule->rule_id;
  e->family = family;
  e->protocol = ctx->protocol;
  e->port = bpf_ntohs((__u16)ctx->user_port);
  e->reserved = 0;
  __builtin_memset(e->addr, 0, sizeof(e->addr));
  if (addr_len == 4)
    __builtin_memcpy(e->addr, addr, 4);
  else
    __builtin_memcpy(e->addr, addr, 16);
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  bpf_ringbuf_submit(e, 0);
  return NV_VERDICT_REJECT;
}

static __always_inline int check_v4(struct bpf_sock_addr* ctx, __u32 hook, __u32 ip4_be,
                                    __u32 family, const __u8* report_addr, __u32 report_len) {
  __u64 cg = bpf_get_current_cgroup_id();
  struct nv_egress_key4 key = {};
  key.prefixlen = 32 + 32;
  key.policy = current_policy(cg);
  __builtin_memcpy(key.addr, &ip4_be, 4);
  struct nv_egress_rule* rule = bpf_map_lookup_elem(&rules_v4, &key);
  if (!rule || rule->action != NV_EGRESS_DENY) return NV_VERDICT_PASS;
  return report(ctx, hook, cg, key.policy, rule, family, report_addr, report_len);
}

static __always_inline int check_v6(struct bpf_sock_addr* ctx, __u32 hook) {
  __u32 w[4];
  w[0] = ctx->user_ip6[0];
  w[1] = ctx->user_ip6[1];
  w[2] = ctx->user_ip6[2];
  w[3] = ctx->user_ip6[3];
  /* ::ffff:a.b.c.d reaches the IPv4 destination through a dual-stack socket: judge it by the
	 * IPv4 rules, or the v4 deny list could be bypassed with a v6 socket. */
  if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff))
    return check_v4(ctx, hook, w[3], 6, (const __u8*)w, 16);

  __u64 cg = bpf_get_current_cgroup_id();
  struct nv_egress_key6 key = {};
  key.prefixlen = 32 + 128;
  key.policy = current_policy(cg);
  __builtin_memcpy(key.addr, w, 16);
  struct nv_egress_rule* rule = bpf_map_lookup_elem(&rules_v6, &key);
  if (!rule || rule->action != NV_EGRESS_DENY) return NV_VERDICT_PASS;
  return report(ctx, hook, cg, key.policy, rule, 6, (const __u8*)w, 16);
}

SEC("cgroup/connect4")
int nv_connect4(struct bpf_sock_addr* ctx) {
  __u32 ip = ctx->user_ip4;
  return check_v4(ctx, NV_HOOK_CONNECT4, ip, 4, (const __u8*)&ip, 4);
}

SEC("cgroup/connect6")
int nv_connect6(struct bpf_sock_addr* ctx) { return check_v6(ctx, NV_HOOK_CONNECT6); }

SEC("cgroup/sendmsg4")
int nv_sendmsg4(struct bpf_sock_addr* ctx) {
  __u32 ip = ctx->user_ip4;
  return check_v4(ctx, NV_HOOK_SENDMSG4, ip, 4, (const __u8*)&ip, 4);
}

SEC("cgroup/sendmsg6")
int nv_sendmsg6(struct bpf_sock_addr* ctx) { return check_v6(ctx, NV_HOOK_SENDMSG6); }
