#include "egress.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sentinel_egress.h"
#include "sentinel_egress.skel.h"

namespace nv::sentinel {

namespace {

const char* hook_name(uint32_t hook) {
  switch (hook) {
    case NV_HOOK_CONNECT4:
      return "connect4";
    case NV_HOOK_CONNECT6:
      return "connect6";
    case NV_HOOK_SENDMSG4:
      return "sendmsg4";
    case NV_HOOK_SENDMSG6:
      return "sendmsg6";
    default:
      return "unknown";
  }
}

}  // namespace

Egress::~Egress() {
  // Links first (programs leave the cgroups), then the object.
  for (auto& [dir, a] : attached_) release(a);
  attached_.clear();
  if (skel_) sentinel_egress::destroy(skel_);
}

void Egress::release(Attachment& a) {
  for (bpf_link* l : a.links) bpf_link__destroy(l);
  a.links.clear();
  if (a.cg.fd >= 0) ::close(a.cg.fd);
  a.cg.fd = -1;
}

std::vector<ProgramStatus> Egress::load() {
  capture_libbpf_messages();
  statuses_ = load_skeleton<sentinel_egress>("sentinel_egress", &skel_,
                                             [](sentinel_egress*) { return Status::Ok(); });
  if (!skel_) return statuses_;
  for (const EgressRule& r : default_egress_rules()) {
    Status st = write_rule(NV_EGRESS_DEFAULT_POLICY, r, &default_rule_ids_);
    if (!st.ok()) {
      for (ProgramStatus& ps : statuses_) {
        ps.errnum = st.error().errnum;
        ps.detail = "default policy: " + st.error().text();
      }
      sentinel_egress::destroy(skel_);
      skel_ = nullptr;
      return statuses_;
    }
  }
  return statuses_;
}

Status Egress::write_rule(uint32_t policy, const EgressRule& rule,
                          std::map<std::string, uint32_t>* ids) {
  Cidr c;
  Status st = parse_cidr(rule.cidr, &c);
  if (!st.ok()) return st;
  std::string canon = c.text();
  uint32_t id;
  auto existing = ids->find(canon);
  if (existing != ids->end()) {
    id = existing->second;  // same CIDR: replace action and reason, keep the id
  } else {
    id = next_rule_id_++;
  }
  nv_egress_rule value{};
  value.action = rule.action == EgressAction::kDeny ? NV_EGRESS_DENY : NV_EGRESS_ALLOW;
  value.rule_id = id;
  int err;
  if (c.family == 4) {
    nv_egress_key4 key{};
    key.prefixlen = 32 + static_cast<uint32_t>(c.prefix);
    key.policy = policy;
    memcpy(key.addr, c.addr.data(), 4);
    err = bpf_map__update_elem(skel_->maps.rules_v4, &key, sizeof(key), &value, sizeof(value),
                               BPF_ANY);
  } else {
    nv_egress_key6 key{};
    key.prefixlen = 32 + static_cast<uint32_t>(c.prefix);
    key.policy = policy;
    memcpy(key.addr, c.addr.data(), 16);
    err = bpf_map__update_elem(skel_->maps.rules_v6, &key, sizeof(key), &value, sizeof(value),
                               BPF_ANY);
  }
  if (err)
    return Status::Fail(
        "bpf_map_update_elem(rules_v" + std::to_string(c.family) + ", " + canon + ")", -err);
  (*ids)[canon] = id;
  EgressRule stored = rule;
  stored.cidr = canon;
  rule_table_[id] = StoredRule{c, stored};
  return Status::Ok();
}

Status Egress::erase_rule(uint32_t policy, const Cidr& c) {
  int err;
  if (c.family == 4) {
    nv_egress_key4 key{};
    key.prefixlen = 32 + static_cast<uint32_t>(c.prefix);
    key.policy = policy;
    memcpy(key.addr, c.addr.data(), 4);
    err = bpf_map__delete_elem(skel_->maps.rules_v4, &key, sizeof(key), 0);
  } else {
    nv_egress_key6 key{};
    key.prefixlen = 32 + static_cast<uint32_t>(c.prefix);
    key.policy = policy;
    memcpy(key.addr, c.addr.data(), 16);
    err = bpf_map__delete_elem(skel_->maps.rules_v6, &key, sizeof(key), 0);
  }
  if (err && err != -ENOENT)
    return Status::Fail("bpf_map_delete_elem(rules, " + c.text() + ")", -err);
  return Status::Ok();
}

Status Egress::attach(const std::string& cgroup2_dir, const EgressPolicy& policy,
                      const std::string& vm_id) {
  if (!skel_) return Status::Fail("attach_egress(" + cgroup2_dir + ")", ENODEV, "not loaded");
  if (attached_.count(cgroup2_dir))
    return Status::Fail("attach_egress(" + cgroup2_dir + ")", EEXIST, "already attached");
  Attachment a;
  a.vm_id = vm_id;
  Status st = open_cgroup2_dir(cgroup2_dir, &a.cg);
  if (!st.ok()) return st;
  a.policy = next_policy_++;

  // Order matters: the rules and the cgroup → policy entry exist before the programs attach, so
  // the first connect the programs see is judged by the full policy.
  auto undo = [&](Status failure) {
    for (const auto& [canon, id] : a.rule_ids) (void)erase_rule(a.policy, rule_table_[id].cidr);
    for (const auto& [canon, id] : a.rule_ids) rule_table_.erase(id);
    bpf_map__delete_elem(skel_->maps.policy_of_cgroup, &a.cg.id, sizeof(a.cg.id), 0);
    release(a);
    return failure;
  };
  for (const EgressRule& r : policy.effective()) {
    st = write_rule(a.policy, r, &a.rule_ids);
    if (!st.ok()) return undo(st);
  }
  uint64_t cg_id = a.cg.id;
  int err = bpf_map__update_elem(skel_->maps.policy_of_cgroup, &cg_id, sizeof(cg_id), &a.policy,
                                 sizeof(a.policy), BPF_ANY);
  if (err) return undo(Status::Fail("bpf_map_update_elem(policy_of_cgroup)", -err));

  bpf_program* progs[] = {skel_->progs.nv_connect4, skel_->progs.nv_connect6,
                          skel_->progs.nv_sendmsg4, skel_->progs.nv_sendmsg6};
  for (bpf_program* prog : progs) {
    if (!bpf_program__autoload(prog)) continue;  // refused at load: reported by load()
    bpf_link* link = bpf_program__attach_cgroup(prog, a.cg.fd);
    if (!link) {
      int e = errno;
      note_attach(statuses_, bpf_program__name(prog), e,
                  "bpf_program__attach_cgroup(" + cgroup2_dir + ")");
      return undo(Status::Fail(std::string("bpf_program__attach_cgroup(") +
                                   bpf_program__name(prog) + ", " + cgroup2_dir + ")",
                               e));
    }
    note_attach(statuses_, bpf_program__name(prog), 0, "");
    a.links.push_back(link);
  }
  if (a.links.empty())
    return undo(
        Status::Fail("attach_egress(" + cgroup2_dir + ")", ENODEV, "no egress program loaded"));
  attached_.emplace(cgroup2_dir, std::move(a));
  return Status::Ok();
}

Status Egress::detach(const std::string& cgroup2_dir) {
  auto it = attached_.find(cgroup2_dir);
  if (it == attached_.end())
    return Status::Fail("detach_egress(" + cgroup2_dir + ")", ENOENT, "not attached");
  Attachment& a = it->second;
  release(a);  // programs leave the cgroup first; then the policy goes
  for (const auto& [canon, id] : a.rule_ids) {
    (void)erase_rule(a.policy, rule_table_[id].cidr);
    rule_table_.erase(id);
  }
  bpf_map__delete_elem(skel_->maps.policy_of_cgroup, &a.cg.id, sizeof(a.cg.id), 0);
  attached_.erase(it);
  return Status::Ok();
}

Status Egress::set_rule(const std::string& cgroup2_dir, const EgressRule& rule) {
  auto it = attached_.find(cgroup2_dir);
  if (it == attached_.end())
    return Status::Fail("egress_set_rule(" + cgroup2_dir + ")", ENOENT, "not attached");
  return write_rule(it->second.policy, rule, &it->second.rule_ids);
}

Status Egress::remove_rule(const std::string& cgroup2_dir, const std::string& cidr) {
  auto it = attached_.find(cgroup2_dir);
  if (it == attached_.end())
    return Status::Fail("egress_remove_rule(" + cgroup2_dir + ")", ENOENT, "not attached");
  Cidr c;
  Status st = parse_cidr(cidr, &c);
  if (!st.ok()) return st;
  auto id = it->second.rule_ids.find(c.text());
  if (id == it->second.rule_ids.end())
    return Status::Fail("egress_remove_rule(" + cidr + ")", ENOENT, "no such rule");
  st = erase_rule(it->second.policy, c);
  if (!st.ok()) return st;
  rule_table_.erase(id->second);
  it->second.rule_ids.erase(id);
  return Status::Ok();
}

std::vector<EgressRule> Egress::rules(const std::string& cgroup2_dir) const {
  std::vector<EgressRule> out;
  auto it = attached_.find(cgroup2_dir);
  if (it == attached_.end()) return out;
  for (const auto& [canon, id] : it->second.rule_ids) {
    auto r = rule_table_.find(id);
    if (r != rule_table_.end()) out.push_back(r->second.rule);
  }
  return out;
}

Status Egress::add_ring(ring_buffer** rb, Callbacks* callbacks) {
  if (!skel_) return Status::Fail("add_ring(egress_events)", ENODEV, "egress not loaded");
  callbacks_ = callbacks;
  int fd = bpf_map__fd(skel_->maps.egress_events);
  if (*rb == nullptr) {
    *rb = ring_buffer__new(fd, &Egress::on_record, this, nullptr);
    if (!*rb) return Status::Fail("ring_buffer__new(egress_events)", errno);
    return Status::Ok();
  }
  int err = ring_buffer__add(*rb, fd, &Egress::on_record, this);
  if (err) return Status::Fail("ring_buffer__add(egress_events)", -err);
  return Status::Ok();
}

uint64_t Egress::dropped_events() const {
  return skel_ ? __atomic_load_n(&skel_->bss->dropped_events, __ATOMIC_RELAXED) : 0;
}

int Egress::on_record(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Egress*>(ctx);
  if (size < sizeof(nv_egress_event)) return 0;
  nv_egress_event e;
  memcpy(&e, data, sizeof(e));
  if (e.kind != NV_EV_EGRESS_DENY) return 0;
  EgressDenial d;
  for (const auto& [dir, a] : self->attached_) {
    if (a.policy == e.policy) {
      d.cgroup_dir = dir;
      d.vm_id = a.vm_id;
    }
  }
  d.ts_ns = e.ts_ns;
  d.cgroup_id = e.cgroup_id;
  d.pid = static_cast<pid_t>(e.pid);
  d.tgid = static_cast<pid_t>(e.tgid);
  d.comm = std::string(e.comm, strnlen(e.comm, sizeof(e.comm)));
  d.hook = hook_name(e.hook);
  d.family = static_cast<int>(e.family);
  d.protocol = static_cast<int>(e.protocol);
  // A v4-mapped destination prints as ::ffff:a.b.c.d.
  d.address = address_text(e.family == 4 ? 4 : 6, e.addr);
  d.port = e.port;
  auto r = self->rule_table_.find(e.rule_id);
  if (r != self->rule_table_.end()) {
    d.rule = r->second.rule.cidr;
    d.reason = r->second.rule.reason;
  }
  if (self->callbacks_ && self->callbacks_->on_egress_denial) self->callbacks_->on_egress_denial(d);
  return 0;
}

}  // namespace nv::sentinel
