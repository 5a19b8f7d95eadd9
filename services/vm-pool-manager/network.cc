// network.cc — per-VM network namespaces, TAP devices, veths and the nftables policy
// (network.h). Interfaces and routes are set with iproute2's `ip` run inside the namespace
// (a child of a thread that joined it inherits it); the policy goes through libnftables.
#include "network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include <rapidjson/document.h>

#include "common/log.h"
#include "net_policy.h"

extern char** environ;

namespace nv::vm {

constexpr const char* kTap = "nvtap";    // the TAP in every VM namespace
constexpr const char* kVethVm = "nvup";  // the VM namespace's end of the veth
constexpr const char* kTable = "nv_egress";

struct NetworkManager::Vm {
  std::string vm_id;
  UniqueFd netns;
  UniqueFd tap;
  int block = -1;  // index of the /29 block, -1 while not attached
  std::string uplink_veth;
  ParsedPolicy policy;
  std::string sandbox_id, trace_id;
  std::map<std::string, uint64_t> denied_seen;  // destination|rule → count already reported
};

namespace {

std::string ip4(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// Runs `ip ARGS...` (iproute2) and waits; the error carries its stderr. `pass_fd` becomes the
// child's fd 3 (a namespace it names as /proc/self/fd/3: the pool manager's own /proc/PID/fd is
// closed to other processes once it dropped its privileges).
Status run_ip(const std::vector<std::string>& args, int pass_fd = -1) {
  std::vector<std::string> argv = {"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return sys_error("pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&fa, pass_fd, 3);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, "ip", &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  std::string err;
  if (rc == 0) {
    char buf[512];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 && err.size() < 4096) err.append(buf, n);
  }
  ::close(pipefd[0]);
  if (rc != 0) return sys_error("posix_spawnp(ip)", rc);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return make_error(ErrorCode::INTERNAL, cmd + ": " + describe_wait_status(status) + ": " + err);
  }
  return {};
}

// Runs an nft script with libnftables in the calling thread's namespace; `out` gets its output.
Status run_nft(const std::string& script, std::string* out = nullptr, bool json = false) {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return make_error(ErrorCode::INTERNAL, "nft_ctx_new failed");
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  if (json) nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
  int rc = nft_run_cmd_from_buffer(ctx, script.c_str());
  std::string err = nft_ctx_get_error_buffer(ctx);
  if (out) *out = nft_ctx_get_output_buffer(ctx);
  nft_ctx_free(ctx);
  if (rc != 0) return make_error(ErrorCode::INTERNAL, "libnftables: " + err);
  return {};
}

Status write_sysctl(const std::string& path, const std::string& value) {
  // /proc/sys/net resolves against the opening thread's network namespace.
  return write_file(path, value);
}

std::string elements(const std::vector<std::string>& xs) {
  if (xs.empty()) return "";
  std::string s = "    elements = { ";
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + xs[i];
  return s + " }\n";
}

std::string set_decl(const std::string& name, const std::string& type, const std::string& flags,
                     const std::vector<std::string>& elems) {
  return "  set " + name + " {\n    type " + type + "\n    flags " + flags + "\n" +
         (flags.find("interval") != std::string::npos ? "    auto-merge\n" : "") + elements(elems) +
         "  }\n";
}

// Denied destinations are remembered per rule in dynamic sets with per-element counters, polled
// for security.egress_denied events.
constexpr std::pair<const char*, const char*> kDeniedSets[] = {
    {"denied_always", "always-deny"},
    {"denied_limit", "connection limit"},
    {"denied_policy", "not allowed"},
};

}  // namespace

// The policy table of one VM (network.h has the order and why).
std::string egress_ruleset(const std::vector<DenyEntry>& deny, const ParsedPolicy& p,
                           const std::string& gateway) {
  std::vector<std::string> d4, d6, a4, a4p, a6, a6p;
  for (const auto& d : deny) (d.prefix.v6 ? d6 : d4).push_back(d.prefix.text());
  for (const auto& c : p.cidrs) {
    if (c.port) {
      (c.v6 ? a6p : a4p).push_back(c.cidr + " . " + std::to_string(c.port));
    } else {
      (c.v6 ? a6 : a4).push_back(c.cidr);
    }
  }
  std::ostringstream s;
  s << "table inet " << kTable << " {\n"
    << set_decl("deny4", "ipv4_addr", "interval", d4)
    << set_decl("deny6", "ipv6_addr", "interval", d6)
    << set_decl("allow4", "ipv4_addr", "interval", a4)
    << set_decl("allow4p", "ipv4_addr . inet_service", "interval", a4p)
    << set_decl("allow6", "ipv6_addr", "interval", a6)
    << set_decl("allow6p", "ipv6_addr . inet_service", "interval", a6p)
    << set_decl("dns4", "ipv4_addr", "timeout", {}) << set_decl("dns6", "ipv6_addr", "timeout", {});
  for (const auto& [name, rule] : kDeniedSets) {
    (void)rule;
    s << "  set " << name << " {\n    type ipv4_addr . inet_proto . inet_service\n"
      << "    flags dynamic, timeout\n    timeout 10m\n    size 1024\n    counter\n  }\n";
  }
  auto log_denied = [](const char* set) {
    return std::string("meta l4proto { tcp, udp } update @") + set +
           " { ip daddr . meta l4proto . th dport }";
  };
  s << "  chain input {\n    type filter hook input priority filter; policy drop;\n"
    << "    iif \"lo\" accept\n    ct state established,related accept\n"
    << "    iifname \"" << kTap << "\" ip daddr " << gateway
    << " meta l4proto { tcp, udp } th dport 53 accept\n    counter drop\n  }\n";
  s << "  chain forward {\n    type filter hook forward priority filter; policy drop;\n"
    << "    iifname \"" << kVethVm << "\" oifname \"" << kTap
    << "\" ct state established,related accept\n"
    << "    iifname != \"" << kTap << "\" counter drop\n"
    << "    limit rate over " << p.bandwidth << " bytes/second burst "
    << std::max<uint64_t>(p.bandwidth / 4, 65536) << " bytes counter drop\n"
    << "    ct state established,related accept\n"
    << "    ip daddr @deny4 " << log_denied("denied_always") << "\n"
    << "    ip daddr @deny4 counter drop\n    ip6 daddr @deny6 counter drop\n"
    << "    ct state new ct count over " << p.max_connections << " " << log_denied("denied_limit")
    << " counter drop\n"
    << "    ip daddr @allow4 accept\n    ip daddr . th dport @allow4p accept\n"
    << "    ip daddr @dns4 accept\n    ip6 daddr @allow6 accept\n"
    << "    ip6 daddr . th dport @allow6p accept\n    ip6 daddr @dns6 accept\n"
    << "    ip daddr 0.0.0.0/0 " << log_denied("denied_policy") << "\n"
    << "    counter drop\n  }\n";
  s << "  chain postrouting {\n    type nat hook postrouting priority srcnat;\n"
    << "    oifname \"" << kVethVm << "\" masquerade\n  }\n}\n";
  return s.str();
}

namespace {

// The DNS responder's handle on one VM's dynamic sets.
class VmEgressSet final : public EgressSet {
 public:
  explicit VmEgressSet(int netns_fd) : netns_(::dup(netns_fd)) {}
  Status allow_address(const std::string& ip, std::chrono::seconds ttl) override {
    auto p = parse_prefix(ip);
    if (!p || ip.find('/') != std::string::npos) {
      return make_error(ErrorCode::BAD_REQUEST, "not an IP address: '" + ip.substr(0, 64) + "'");
    }
    const long secs = std::clamp<long>(static_cast<long>(ttl.count()), 1, 86400);
    std::string addr = p->text();
    addr = addr.substr(0, addr.find('/'));
    const std::string set = p->v6 ? "dns6" : "dns4";
    const std::string cmd = "add element inet " + std::string(kTable) + " " + set + " { " + addr +
                            " timeout " + std::to_string(secs) + "s }\n";
    return in_netns(netns_.get(), [&] { return run_nft(cmd); });
  }

 private:
  UniqueFd netns_;
};

}  // namespace

Result<std::shared_ptr<NetworkManager>> NetworkManager::create(NetworkConfig config) {
  std::shared_ptr<NetworkManager> m(new NetworkManager(std::move(config)));
  if (!m->cfg_.enabled) return m;
  auto range = parse_prefix(m->cfg_.range);
  if (!range || range->v6 || range->len < 8 || range->len > 26) {
    return make_error(ErrorCode::BAD_REQUEST,
                      "--net-range must be an IPv4 CIDR /8../26, got '" + m->cfg_.range + "'");
  }
  for (const auto& d : m->cfg_.deny) {
    if (!parse_prefix(d)) return make_error(ErrorCode::BAD_REQUEST, "--net-deny '" + d + "'");
  }
  uint32_t base = 0;
  std::memcpy(&base, range->addr.data(), 4);
  m->range_base_ = ntohl(base);
  m->range_blocks_ = 1u << (32 - range->len - 3);
  m->used_blocks_.assign(m->range_blocks_, false);
  const std::string uplink =
      m->cfg_.uplink_netns.empty() ? "/proc/self/ns/net" : m->cfg_.uplink_netns;
  m->uplink_fd_ = UniqueFd(m->cfg_.uplink_fd >= 0 ? ::fcntl(m->cfg_.uplink_fd, F_DUPFD_CLOEXEC, 3)
                                                  : ::open(uplink.c_str(), O_RDONLY | O_CLOEXEC));
  if (!m->uplink_fd_.valid()) return sys_error("open(" + uplink + ")", errno);
  m->deny_ = always_deny_list(m->cfg_);
  if (m->cfg_.uplink_netns.empty()) {
    // The host's own namespace is the uplink: it forwards and masquerades the range (the only
    // change to the host's ruleset; table ip nv_uplink, replaced at every start).
    const std::string nat =
        "add table ip nv_uplink\nflush table ip nv_uplink\n"
        "table ip nv_uplink {\n  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat;\n    ip saddr " +
        range->text() + " oifname != \"nvb*\" masquerade\n  }\n}\n";
    if (Status s = write_sysctl("/proc/sys/net/ipv4/ip_forward", "1"); !s.ok()) return s.error();
    if (Status s = run_nft(nat); !s.ok()) return s.error();
  }
  // Leftovers of a previous run (a pool manager that died): its VM namespaces died with their
  // VMMs, taking their veth ends; uplink ends named nvb<block> that outlived them go now.
  (void)in_netns(m->uplink_fd_.get(), [] {
    std::vector<std::string> stale;
    if (struct if_nameindex* names = ::if_nameindex()) {  // netlink, in this thread's namespace
      for (struct if_nameindex* n = names; n->if_index != 0; ++n) {
        if (std::strncmp(n->if_name, "nvb", 3) == 0) stale.emplace_back(n->if_name);
      }
      ::if_freenameindex(names);
    }
    for (const auto& name : stale) {
      Status s = run_ip({"link", "del", name});
      log::info("reclaimed stale uplink veth",
                {{"veth", name}, {"ok", s.ok() ? "true" : s.error().message}});
    }
    return Status{};
  });
  // Started here, on the thread that creates the manager (before any seccomp filter).
  m->cleaner_ = std::thread([p = m.get()] { p->cleanup_loop(); });
  return m;
}

NetworkManager::NetworkManager(NetworkConfig config) : cfg_(std::move(config)) {}

NetworkManager::~NetworkManager() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, vm] : vms_) ids.push_back(id);
  }
  for (auto& id : ids) remove_vm(id);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cleanup_cv_.notify_all();
  }
  if (cleaner_.joinable()) cleaner_.join();
}

Result<ParsedPolicy> NetworkManager::parse(bool allow, const std::vector<std::string>& entries,
                                           uint32_t max_connections, uint64_t bandwidth) const {
  return parse_policy(cfg_, deny_, allow, entries, max_connections, bandwidth);
}

Result<UniqueFd> NetworkManager::create_vm(const std::string& vm_id) {
  auto vm = std::make_unique<Vm>();
  vm->vm_id = vm_id;
  Status st;
  std::thread t([&] {
    // A namespace of its own for this thread only (unshare(2) changes the calling thread).
    if (::unshare(CLONE_NEWNET) != 0) {
      st = sys_error("unshare(CLONE_NEWNET)", errno);
      return;
    }
    vm->netns = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!vm->netns.valid()) {
      st = sys_error("open(/proc/thread-self/ns/net)", errno);
      return;
    }
    vm->tap = UniqueFd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!vm->tap.valid()) {
      st = sys_error("open(/dev/net/tun)", errno);
      return;
    }
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTap);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(vm->tap.get(), TUNSETIFF, &ifr) != 0) st = sys_error("ioctl(TUNSETIFF)", errno);
  });
  t.join();
  if (!st.ok()) return st.error();
  UniqueFd out(::fcntl(vm->tap.get(), F_DUPFD_CLOEXEC, 3));
  if (!out.valid()) return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno);
  std::lock_guard lock(mu_);
  vms_[vm_id] = std::move(vm);
  return out;
}

Result<VmNetInfo> NetworkManager::attach(const std::string& vm_id, const ParsedPolicy& policy,
                                         const std::string& sandbox_id,
                                         const std::string& trace_id) {
  VmNetInfo info;
  info.allow = policy.allow;
  info.entries = policy.entries;
  if (!policy.allow) return info;
  int netns = -1;
  int block = -1;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) {
      return make_error(ErrorCode::INTERNAL, "vm " + vm_id + " has no network namespace");
    }
    if (it->second->block >= 0) return make_error(ErrorCode::INTERNAL, "vm already attached");
    for (uint32_t i = 1; i < range_blocks_; ++i) {  // block 0 holds the network address
      if (!used_blocks_[i]) {
        block = static_cast<int>(i);
        used_blocks_[i] = true;
        break;
      }
    }
    if (block < 0) {
      return make_error(ErrorCode::POOL_EXHAUSTED, "no free address block in " + cfg_.range);
    }
    it->second->block = block;
    it->second->policy = policy;
    it->second->sandbox_id = sandbox_id;
    it->second->trace_id = trace_id;
    netns = it->second->netns.get();
  }
  const uint32_t base = range_base_ + static_cast<uint32_t>(block) * 8;
  const std::string gw = ip4(base + 1), guest = ip4(base + 2), up = ip4(base + 5),
                    mine = ip4(base + 6);
  char veth[IFNAMSIZ];
  std::snprintf(veth, sizeof veth, "nvb%x", block);
  std::string rules = cfg_.no_filter ? "table inet " + std::string(kTable) +
                                           " {\n  chain postrouting {\n    type nat hook "
                                           "postrouting priority srcnat;\n    oifname \"" +
                                           kVethVm + "\" masquerade\n  }\n}\n"
                                     : egress_ruleset(deny_, policy, gw);
  Status s = in_netns(netns, [&]() -> Status {
    for (const auto& cmd :
         std::vector<std::vector<std::string>>{{"link", "set", "lo", "up"},
                                               {"addr", "add", gw + "/30", "dev", kTap},
                                               {"link", "set", kTap, "up"},
                                               {"link", "add", kVethVm, "type", "veth", "peer",
                                                "name", veth, "netns", "/proc/self/fd/3"},
                                               {"addr", "add", mine + "/30", "dev", kVethVm},
                                               {"link", "set", kVethVm, "up"},
                                               {"route", "add", "default", "via", up}}) {
      if (Status r = run_ip(cmd, uplink_fd_.get()); !r.ok()) return r;
    }
    if (Status r = write_sysctl("/proc/sys/net/ipv4/ip_forward", "1"); !r.ok()) return r;
    return run_nft(rules);
  });
  if (s.ok()) {
    s = in_netns(uplink_fd_.get(), [&]() -> Status {
      if (Status r = run_ip({"addr", "add", up + "/30", "dev", veth}); !r.ok()) return r;
      return run_ip({"link", "set", veth, "up"});
    });
  }
  {
    std::lock_guard lock(mu_);
    if (auto it = vms_.find(vm_id); it != vms_.end()) it->second->uplink_veth = veth;
  }
  if (!s.ok()) return s.error();
  info.mac = "02:" + [] {
    std::string hex = random_hex(5), mac;
    for (size_t i = 0; i < hex.size(); i += 2) mac += (i ? ":" : "") + hex.substr(i, 2);
    return mac;
  }();
  info.ipv4 = guest + "/30";
  info.gateway = gw;
  std::shared_ptr<NetworkObserver> obs;
  {
    std::lock_guard lock(mu_);
    obs = observer_;
  }
  if (obs) {
    VmNetworkView v;
    v.vm_id = vm_id;
    v.sandbox_id = sandbox_id;
    v.trace_id = trace_id;
    v.netns_fd = netns;
    v.gateway = gw;
    v.guest_ipv4 = guest;
    v.domains = policy.domains;
    v.egress = std::make_shared<VmEgressSet>(netns);
    obs->network_up(v);
  }
  return info;
}

std::optional<ParsedPolicy> NetworkManager::policy_of(const std::string& vm_id) const {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end() || it->second->block < 0) return std::nullopt;
  return it->second->policy;
}

void NetworkManager::remove_vm(const std::string& vm_id) {
  std::unique_ptr<Vm> vm;
  std::shared_ptr<NetworkObserver> obs;
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end()) return;
    vm = std::move(it->second);
    vms_.erase(it);
    obs = observer_;
  }
  if (vm->block >= 0 && obs) obs->network_down(vm_id);
  vm->tap.reset();
  vm->netns.reset();
  // The veth goes on the cleanup thread: VMs are destroyed on threads under the service's
  // seccomp filter, which a spawned `ip` would inherit (and die of). Its block is free again
  // only once the veth (and with it the uplink address) is gone.
  std::lock_guard lock(mu_);
  cleanup_.push_back({vm->uplink_veth, vm->block});
  cleanup_cv_.notify_one();
}

void NetworkManager::cleanup_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (!cleanup_cv_.wait_for(lock, std::chrono::seconds(1),
                              [this] { return stopping_ || !cleanup_.empty(); })) {
      lock.unlock();
      poll_denied();
      lock.lock();
      continue;
    }
    if (cleanup_.empty() && stopping_) return;
    auto [veth, block] = cleanup_.front();
    cleanup_.pop_front();
    lock.unlock();
    if (!veth.empty()) {
      // Deleting one end deletes the pair now (the namespace itself is freed asynchronously).
      Status s = in_netns(uplink_fd_.get(), [&] {
        // Gone already when the kernel freed the VM namespace first (the pair dies with it).
        if (::if_nametoindex(veth.c_str()) == 0) return Status{};
        return run_ip({"link", "del", veth});
      });
      if (!s.ok()) log::warn("veth removal failed", {{"veth", veth}, {"error", s.error().message}});
    }
    lock.lock();
    if (block >= 0) used_blocks_[static_cast<size_t>(block)] = false;
  }
}

void NetworkManager::poll_denied() {
  struct Target {
    std::string vm_id, sandbox_id, trace_id;
    std::shared_ptr<UniqueFd> netns;  // a dup: the VM may go meanwhile
  };
  std::vector<Target> targets;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, vm] : vms_) {
      if (vm->block < 0) continue;
      auto fd = std::make_shared<UniqueFd>(::fcntl(vm->netns.get(), F_DUPFD_CLOEXEC, 3));
      if (fd->valid()) targets.push_back({id, vm->sandbox_id, vm->trace_id, fd});
    }
  }
  for (const auto& t : targets) {
    std::vector<std::pair<std::string, std::string>> outputs;  // rule, JSON
    (void)in_netns(t.netns->get(), [&] {
      for (const auto& [set, rule] : kDeniedSets) {
        std::string out;
        if (run_nft(std::string("list set inet ") + kTable + " " + set, &out, true).ok()) {
          outputs.emplace_back(rule, out);
        }
      }
      return Status{};
    });
    std::vector<DeniedReport> reports;
    std::lock_guard lock(mu_);
    auto it = vms_.find(t.vm_id);
    if (it == vms_.end()) continue;
    for (const auto& [rule, json] : outputs) {
      rapidjson::Document d;
      if (d.Parse(json.c_str()).HasParseError() || !d.IsObject() || !d.HasMember("nftables")) {
        continue;
      }
      for (const auto& item : d["nftables"].GetArray()) {
        if (!item.IsObject() || !item.HasMember("set") || !item["set"].HasMember("elem")) continue;
        for (const auto& e : item["set"]["elem"].GetArray()) {
          if (!e.IsObject() || !e.HasMember("elem")) continue;
          const auto& el = e["elem"];
          if (!el.HasMember("val") || !el["val"].HasMember("concat") || !el.HasMember("counter")) {
            continue;
          }
          const auto& c = el["val"]["concat"];
          if (!c.IsArray() || c.Size() != 3 || !c[0].IsString() || !c[1].IsString() ||
              !c[2].IsInt()) {
            continue;
          }
          const std::string dest = std::string(c[0].GetString()) + ":" +
                                   std::to_string(c[2].GetInt()) + "/" + c[1].GetString();
          const uint64_t packets = el["counter"]["packets"].GetUint64();
          uint64_t& seen = it->second->denied_seen[dest + "|" + rule];
          if (packets > seen && reports.size() < 16) {
            reports.push_back({t.vm_id, t.sandbox_id, t.trace_id, dest, rule, packets - seen});
            seen = packets;
          }
        }
      }
    }
    denied_.insert(denied_.end(), reports.begin(), reports.end());
    if (denied_.size() > 4096) denied_.erase(denied_.begin(), denied_.end() - 4096);
  }
}

std::vector<DeniedReport> NetworkManager::take_denied() {
  std::lock_guard lock(mu_);
  return std::exchange(denied_, {});
}

void NetworkManager::set_observer(std::shared_ptr<NetworkObserver> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

}  // namespace nv::vm
