#include "egress.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstdlib>
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
  if (!pin_dir_.empty()) {
    for (const std::string& d : {pin_dir_, pin_dir_ + "/maps", pin_dir_ + "/cgroups"}) {
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
        statuses_ = {ProgramStatus{"*", "sentinel_egress", "", false, false, errno,
                                   "mkdir(" + d + "): " + std::strerror(errno)}};
        return statuses_;
      }
    }
  }
  const std::string maps = pin_dir_.empty() ? "" : pin_dir_ + "/maps/";
  statuses_ =
      load_skeleton<sentinel_egress>("sentinel_egress", &skel_, [&maps](sentinel_egress* sk) {
        if (maps.empty()) return Status::Ok();
        // The policy lives in pinned maps: a predecessor's are reused (libbpf checks that they
        // match), so programs it left attached and ours judge by the same rules.
        for (bpf_map* m : {sk->maps.rules_v4, sk->maps.rules_v6, sk->maps.policy_of_cgroup}) {
          int err = bpf_map__set_pin_path(m, (maps + bpf_map__name(m)).c_str());
          if (err)
            return Status::Fail(std::string("bpf_map__set_pin_path(") + bpf_map__name(m) + ")",
                                -err);
        }
        return Status::Ok();
      });
  if (!skel_) return statuses_;
  skip_used_ids();
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
  // A predecessor's policy for this cgroup (pinned maps): replaced below, then erased.
  uint32_t old_policy = 0;
  bool had_old = bpf_map__lookup_elem(skel_->maps.policy_of_cgroup, &a.cg.id, sizeof(a.cg.id),
                                      &old_policy, sizeof(old_policy), 0) == 0;
  const std::string pins = pin_dir_.empty() ? "" : link_pin_dir(a.cg.id);
  std::vector<bool> fresh;  // per link: created (and pinned) by this call, not adopted

  // Order matters: the rules and the cgroup → policy entry exist before the programs attach, so
  // the first connect the programs see is judged by the full policy.
  auto undo = [&](Status failure) {
    for (const auto& [canon, id] : a.rule_ids) (void)erase_rule(a.policy, rule_table_[id].cidr);
    for (const auto& [canon, id] : a.rule_ids) rule_table_.erase(id);
    if (had_old) {
      bpf_map__update_elem(skel_->maps.policy_of_cgroup, &a.cg.id, sizeof(a.cg.id), &old_policy,
                           sizeof(old_policy), BPF_ANY);
    } else {
      bpf_map__delete_elem(skel_->maps.policy_of_cgroup, &a.cg.id, sizeof(a.cg.id), 0);
    }
    for (size_t i = 0; i < a.links.size(); ++i) {
      if (fresh[i] && !pins.empty()) bpf_link__unpin(a.links[i]);
    }
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
  if (!pins.empty() && ::mkdir(pins.c_str(), 0700) != 0 && errno != EEXIST)
    return undo(Status::Fail("mkdir(" + pins + ")", errno));
  for (bpf_program* prog : progs) {
    if (!bpf_program__autoload(prog)) continue;  // refused at load: reported by load()
    const std::string pin = pins.empty() ? "" : pins + "/" + bpf_program__name(prog);
    // A link a predecessor pinned is still attached and enforcing: adopt it and point it at our
    // program (same pinned maps), so the cgroup is never without its hook.
    bpf_link* link = nullptr;
    if (!pin.empty() && ::access(pin.c_str(), F_OK) == 0) {
      link = bpf_link__open(pin.c_str());
      if (link) {
        int err = bpf_link__update_program(link, prog);
        if (err) {
          // The old program still judges by the same maps; only its events go unread.
          note_attach(statuses_, bpf_program__name(prog), -err,
                      "bpf_link__update_program(" + pin + ")");
        }
        a.links.push_back(link);
        fresh.push_back(false);
        note_attach(statuses_, bpf_program__name(prog), 0, "");
        continue;
      }
      ::unlink(pin.c_str());  // not a link (or unreadable): attach afresh
    }
    link = bpf_program__attach_cgroup(prog, a.cg.fd);
    if (!link) {
      int e = errno;
      note_attach(statuses_, bpf_program__name(prog), e,
                  "bpf_program__attach_cgroup(" + cgroup2_dir + ")");
      return undo(Status::Fail(std::string("bpf_program__attach_cgroup(") +
                                   bpf_program__name(prog) + ", " + cgroup2_dir + ")",
                               e));
    }
    a.links.push_back(link);
    fresh.push_back(true);
    if (!pin.empty()) {
      int err = bpf_link__pin(link, pin.c_str());
      if (err) return undo(Status::Fail("bpf_link__pin(" + pin + ")", -err));
    }
    note_attach(statuses_, bpf_program__name(prog), 0, "");
  }
  if (a.links.empty())
    return undo(
        Status::Fail("attach_egress(" + cgroup2_dir + ")", ENODEV, "no egress program loaded"));
  if (had_old && old_policy != a.policy) erase_policy(old_policy);
  attached_.emplace(cgroup2_dir, std::move(a));
  return Status::Ok();
}

std::string Egress::link_pin_dir(uint64_t cgroup_id) const {
  return pin_dir_ + "/cgroups/" + std::to_string(cgroup_id);
}

void Egress::unpin(Attachment& a) {
  if (pin_dir_.empty()) return;
  for (bpf_link* l : a.links) bpf_link__unpin(l);
  ::rmdir(link_pin_dir(a.cg.id).c_str());
}

namespace {

// Calls fn(key) for each key of `map` until it returns false (bpf_map_get_next_key order).
template <class Key, class Fn>
void for_each_key(bpf_map* map, Fn fn) {
  Key key{}, next{};
  void* prev = nullptr;
  while (bpf_map__get_next_key(map, prev, &next, sizeof(next)) == 0) {
    key = next;
    prev = &key;
    if (!fn(key)) return;
  }
}

// Deletes every rule of `policy` from one LPM trie (deleting restarts the walk).
template <class Key>
void erase_policy_rules(bpf_map* rules, uint32_t policy) {
  for (bool again = true; again;) {
    again = false;
    for_each_key<Key>(rules, [&](const Key& k) {
      if (k.policy != policy) return true;
      bpf_map__delete_elem(rules, &k, sizeof(k), 0);
      again = true;
      return false;
    });
  }
}

// The highest policy and rule ids in one LPM trie.
template <class Key>
void max_ids(bpf_map* rules, uint32_t* max_policy, uint32_t* max_rule) {
  for_each_key<Key>(rules, [&](const Key& k) {
    *max_policy = std::max(*max_policy, k.policy);
    nv_egress_rule v{};
    if (bpf_map__lookup_elem(rules, &k, sizeof(k), &v, sizeof(v), 0) == 0)
      *max_rule = std::max(*max_rule, v.rule_id);
    return true;
  });
}

}  // namespace

void Egress::erase_policy(uint32_t policy) {
  if (!skel_) return;
  erase_policy_rules<nv_egress_key4>(skel_->maps.rules_v4, policy);
  erase_policy_rules<nv_egress_key6>(skel_->maps.rules_v6, policy);
}

void Egress::skip_used_ids() {
  uint32_t max_rule = 0, max_policy = 0;
  max_ids<nv_egress_key4>(skel_->maps.rules_v4, &max_policy, &max_rule);
  max_ids<nv_egress_key6>(skel_->maps.rules_v6, &max_policy, &max_rule);
  bpf_map* cgroups = skel_->maps.policy_of_cgroup;
  for_each_key<uint64_t>(cgroups, [&](const uint64_t& k) {
    uint32_t pol = 0;
    if (bpf_map__lookup_elem(cgroups, &k, sizeof(k), &pol, sizeof(pol), 0) == 0)
      max_policy = std::max(max_policy, pol);
    return true;
  });
  next_rule_id_ = std::max(next_rule_id_, max_rule + 1);
  next_policy_ = std::max(next_policy_, max_policy + 1);
}

size_t Egress::sweep_stale_pins() {
  if (pin_dir_.empty() || !skel_) return 0;
  size_t removed = 0;
  const std::string root = pin_dir_ + "/cgroups";
  DIR* d = ::opendir(root.c_str());
  if (!d) return 0;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  ::closedir(d);
  for (const auto& name : names) {
    const std::string dir = root + "/" + name;
    uint64_t cg_id = std::strtoull(name.c_str(), nullptr, 10);
    bool adopted = false;
    for (const auto& [path, a] : attached_) adopted = adopted || a.cg.id == cg_id;
    if (adopted) continue;
    // A link whose cgroup is gone was detached by the kernel and reports cgroup id 0.
    bool live = false;
    DIR* ld = ::opendir(dir.c_str());
    std::vector<std::string> files;
    while (ld) {
      dirent* e = ::readdir(ld);
      if (!e) break;
      if (e->d_name[0] == '.') continue;
      files.push_back(dir + "/" + e->d_name);
    }
    if (ld) ::closedir(ld);
    for (const auto& f : files) {
      int fd = bpf_obj_get(f.c_str());
      if (fd < 0) continue;
      bpf_link_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.cgroup.cgroup_id != 0) live = true;
      ::close(fd);
    }
    if (live) continue;  // still enforcing on a live cgroup nobody named: keep it (fail-safe)
    for (const auto& f : files) ::unlink(f.c_str());
    ::rmdir(dir.c_str());
    uint32_t pol = 0;
    if (bpf_map__lookup_elem(skel_->maps.policy_of_cgroup, &cg_id, sizeof(cg_id), &pol, sizeof(pol),
                             0) == 0) {
      bpf_map__delete_elem(skel_->maps.policy_of_cgroup, &cg_id, sizeof(cg_id), 0);
      erase_policy(pol);
    }
    ++removed;
  }
  return removed;
}

size_t Egress::release_pins() {
  if (pin_dir_.empty()) return 0;
  std::vector<std::string> gone;
  for (const auto& [dir, a] : attached_) {
    if (::access(dir.c_str(), F_OK) != 0) gone.push_back(dir);
  }
  for (const auto& dir : gone) (void)detach(dir);
  size_t kept = attached_.size();
  if (kept == 0) {
    sweep_stale_pins();
    // Nothing enforces through the pins any more: the maps' pins and the dirs go too.
    ::rmdir((pin_dir_ + "/cgroups").c_str());
    if (::access((pin_dir_ + "/cgroups").c_str(), F_OK) != 0) {
      if (skel_) {
        for (bpf_map* m :
             {skel_->maps.rules_v4, skel_->maps.rules_v6, skel_->maps.policy_of_cgroup})
          bpf_map__unpin(m, nullptr);
      }
      ::rmdir((pin_dir_ + "/maps").c_str());
      ::rmdir(pin_dir_.c_str());
    } else {
      kept = 1;  // a live cgroup's pins nobody adopted remain
    }
  }
  return kept;
}

Status Egress::detach(const std::string& cgroup2_dir) {
  auto it = attached_.find(cgroup2_dir);
  if (it == attached_.end())
    return Status::Fail("detach_egress(" + cgroup2_dir + ")", ENOENT, "not attached");
  Attachment& a = it->second;
  unpin(a);    // pinned links would stay attached without their pins going first
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
