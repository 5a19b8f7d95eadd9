// Egress control (bpf/sentinel_egress.bpf.c): cgroup/connect4|6 and cgroup/sendmsg4|6 attached to
// VM cgroup2 dirs, each dir with its own editable policy (egress_policy.h).
//
// Which sockets are covered: the kernel runs cgroup sock_addr programs for a socket according to
// the cgroup the socket was *created* in. So the VMM (jail child) must be moved into its cgroup
// before it creates sockets, i.e. before exec; a socket created outside and passed in is not
// checked. The policy is chosen by the calling task's cgroup (or its nearest ancestor with a
// policy; else the default policy).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bpf_loader.h"
#include "egress_policy.h"
#include "events.h"
#include "status.h"

struct sentinel_egress;  // bpftool skeleton
struct ring_buffer;
struct bpf_link;

namespace nv::sentinel {

class Egress {
 public:
  Egress() = default;
  ~Egress();
  Egress(const Egress&) = delete;
  Egress& operator=(const Egress&) = delete;

  // Enforcement that outlives this process (call before load()): the policy maps and every
  // cgroup's links are pinned below `dir` (in a bpffs): maps/{rules_v4,rules_v6,
  // policy_of_cgroup} and cgroups/<cgroup id>/{nv_connect4,...}. A pinned link stays attached
  // when the process dies (SIGKILL, crash), so the VM's egress stays denied. The next load()
  // reuses the pinned maps, and attach() of a cgroup with pinned links adopts them (points them
  // at the new programs, rewrites its policy) without a moment unenforced. "" = nothing pinned
  // (the programs leave with the process).
  void set_pin_dir(std::string dir) { pin_dir_ = std::move(dir); }
  // open → load → fill the default policy (id 0). Nothing is attached until attach().
  std::vector<ProgramStatus> load();
  // Clean shutdown with a pin dir: unpins the links of cgroups that are gone (their VM was
  // destroyed), keeps the pins of live ones (their enforcement must survive a restart), and
  // removes the maps' pins and the dir once nothing is pinned. Returns how many stay pinned.
  size_t release_pins();
  // Unpins the links of cgroups that no longer exist (pins a dead predecessor left for VMs
  // destroyed meanwhile), whether adopted or not. Returns how many were removed.
  size_t sweep_stale_pins();
  bool loaded() const { return skel_ != nullptr; }
  const std::vector<ProgramStatus>& statuses() const { return statuses_; }

  // Gives `cgroup2_dir` (and every cgroup below it) `policy`, then attaches the four programs to
  // it. All or nothing: on failure nothing stays attached. vm_id is reported with denials.
  Status attach(const std::string& cgroup2_dir, const EgressPolicy& policy,
                const std::string& vm_id = {});
  // Detaches and forgets the dir's policy.
  Status detach(const std::string& cgroup2_dir);
  // Adds or replaces (same CIDR) one rule of an attached dir's policy; takes effect at once.
  Status set_rule(const std::string& cgroup2_dir, const EgressRule& rule);
  // Removes the rule with this CIDR from an attached dir's policy.
  Status remove_rule(const std::string& cgroup2_dir, const std::string& cidr);
  // The dir's current rules (canonical CIDRs).
  std::vector<EgressRule> rules(const std::string& cgroup2_dir) const;

  Status add_ring(ring_buffer** rb, Callbacks* callbacks);
  // Denial events lost because the ring buffer was full (the denials themselves stood).
  uint64_t dropped_events() const;

 private:
  struct Attachment {
    std::string vm_id;
    CgroupDir cg;
    uint32_t policy = 0;
    std::vector<bpf_link*> links;
    std::map<std::string, uint32_t> rule_ids;  // canonical CIDR → rule id
  };
  struct StoredRule {
    Cidr cidr;
    EgressRule rule;
  };

  static int on_record(void* ctx, void* data, size_t size);
  Status write_rule(uint32_t policy, const EgressRule& rule, std::map<std::string, uint32_t>* ids);
  Status erase_rule(uint32_t policy, const Cidr& cidr);
  void release(Attachment& a);
  // Deletes every rule of `policy` found in the maps (an adopted cgroup's old policy).
  void erase_policy(uint32_t policy);
  // After load() on reused maps: rule and policy ids start above every id already in them.
  void skip_used_ids();
  std::string link_pin_dir(uint64_t cgroup_id) const;
  void unpin(Attachment& a);

  sentinel_egress* skel_ = nullptr;
  std::vector<ProgramStatus> statuses_;
  std::map<std::string, Attachment> attached_;  // by cgroup2 dir path
  std::map<std::string, uint32_t> default_rule_ids_;
  std::map<uint32_t, StoredRule> rule_table_;  // rule id → rule, for denial reports
  uint32_t next_rule_id_ = 1;
  uint32_t next_policy_ = 1;  // 0 is the default policy
  Callbacks* callbacks_ = nullptr;
  std::string pin_dir_;
};

}  // namespace nv::sentinel
