// sandbox_service_test.cc — the "sandbox" service through a real broker and the typed client,
// without VMs: the pool is a fake that hands out leases (SandboxPool), and each "VM" is the real
// guest agent's Session (guest/agent) served on a socketpair in a thread, with a temp dir as its
// writable root. The clock is a fake the test moves; the reaper is driven by reap(now).
//
// Proves: validation answers badRequest; another owner's id answers exactly like a missing one;
// per-owner limits (count, memory) answer sandboxLimit; exec streams "started" then output on a
// live sandbox, twice on the same agent; one operation at a time per sandbox; idle timeout and
// lifetime reap with a sandbox.reaped event saying why; keepalive postpones the idle reaping;
// destroyed sandboxes answer get for 10 minutes, then unknownSandbox; a VM the pool reports lost
// is reaped "vm lost: ..."; the SQLite registry brings sandboxes back after a restart of the
// service (running → reachable, paused → paused, missing → reaped with an event).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <mutex>
#include <regex>

#include "bus_harness.h"
#include "common/events.h"
#include "common/sandbox_client.h"
#include "guest/agent/session.h"
#include "tests/unit/agent_on_socketpair.h"
#include "sandbox-executor/sandbox_service.h"

namespace nv::test {
namespace {

using exec::SandboxOptions;
using exec::SandboxService;
using exec::VmLease;
using sandbox::SandboxClient;
using std::chrono::milliseconds;

// One guest agent Session per connection, on a socketpair, in a thread.
class FakeGuest {
 public:
  explicit FakeGuest(std::string root) : root_(std::move(root)) {
    cfg_.languages = guest::agent::default_languages();
    cfg_.writable_roots = {root_};
    cfg_.default_cwd = root_;
  }
  ~FakeGuest() {
    std::lock_guard g(mu_);
    for (auto& c : conns_) {
      ::shutdown(c.fd, SHUT_RDWR);
      c.thread.join();
      ::close(c.fd);
    }
  }
  // A new connection: the host end's fd.
  int connect() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    std::lock_guard g(mu_);
    int fd = sv[1];
    conns_.push_back({fd, std::thread([this, fd] { serve(fd); })});
    return sv[0];
  }
  // The VM dies: every connection closes and no new one is accepted.
  void kill() {
    dead_ = true;
    std::lock_guard g(mu_);
    for (auto& c : conns_) ::shutdown(c.fd, SHUT_RDWR);
  }
  bool dead() const { return dead_; }

 private:
  void serve(int fd) { (void)guest::serve_session(cfg_, ops_, fd); }
  struct Conn {
    int fd;
    std::thread thread;
  };
  std::string root_;
  guest::agent::AgentConfig cfg_;
  guest::FakeOps ops_;
  std::mutex mu_;
  std::vector<Conn> conns_;
  std::atomic<bool> dead_{false};
};

// The pool manager's sandbox leases, in memory. Shared by the service instances of a test (a
// restart of the executor keeps the pool).
class FakePool : public exec::SandboxPool {
 public:
  explicit FakePool(std::string dir) : dir_(std::move(dir)) {}
  struct Vm {
    schema::LeaseState state = schema::LeaseState::RUNNING;
    std::string sandbox_id, owner, note;
    std::shared_ptr<FakeGuest> guest;
  };
  Result<VmLease> lease(const std::string&, const exec::SandboxLeaseSpec& s) override {
    std::lock_guard g(mu);
    if (!s.from_snapshot.empty() && !snapshots_.count(s.owner + "/" + s.from_snapshot)) {
      return make_error(ErrorCode::UNKNOWN_SNAPSHOT, "no snapshot " + s.from_snapshot);
    }
    return add(s.sandbox_id, s.owner);
  }
  Status release(const std::string&, const std::string& vm, const std::string&) override {
    std::lock_guard g(mu);
    if (auto it = vms.find(vm); it != vms.end()) {
      it->second.guest->kill();
      vms.erase(it);
      ++released;
    }
    return {};
  }
  Result<VmLease> extend(const std::string&, const std::string& vm, milliseconds l) override {
    std::lock_guard g(mu);
    if (!vms.count(vm)) return make_error(ErrorCode::UNKNOWN_LEASE, "no lease " + vm);
    last_extend = l;
    return lease_of(vm);
  }
  Result<exec::ForkOutcome> fork(const std::string&, const std::string& vm, uint32_t n,
                                 milliseconds, const std::vector<std::string>& ids) override {
    std::lock_guard g(mu);
    if (!vms.count(vm)) return make_error(ErrorCode::UNKNOWN_LEASE, "no lease " + vm);
    exec::ForkOutcome out;
    for (uint32_t i = 0; i < n; ++i) out.leases.push_back(add(ids[i], vms[vm].owner));
    return out;
  }
  Result<exec::SnapshotRecord> snapshot(const std::string&, const std::string& vm,
                                        const std::string& name,
                                        const std::string& owner) override {
    std::lock_guard g(mu);
    exec::SnapshotRecord r;
    r.name = name;
    r.owner = owner;
    r.source_vm_id = vm;
    snapshots_[owner + "/" + name] = r;
    return r;
  }
  Result<std::vector<exec::SnapshotRecord>> snapshots(const std::string& owner) override {
    std::lock_guard g(mu);
    std::vector<exec::SnapshotRecord> out;
    for (auto& [k, v] : snapshots_) {
      if (v.owner == owner) out.push_back(v);
    }
    return out;
  }
  Result<exec::SnapshotRecord> delete_snapshot(const std::string&, const std::string& name,
                                               const std::string& owner) override {
    std::lock_guard g(mu);
    auto it = snapshots_.find(owner + "/" + name);
    if (it == snapshots_.end()) return make_error(ErrorCode::UNKNOWN_SNAPSHOT, "no " + name);
    auto r = it->second;
    snapshots_.erase(it);
    return r;
  }
  Result<VmLease> pause(const std::string&, const std::string& vm) override {
    std::lock_guard g(mu);
    if (!vms.count(vm)) return make_error(ErrorCode::UNKNOWN_LEASE, "no lease " + vm);
    vms[vm].state = schema::LeaseState::PAUSED;
    return lease_of(vm);
  }
  Result<VmLease> resume(const std::string&, const std::string& vm, milliseconds) override {
    std::lock_guard g(mu);
    if (!vms.count(vm)) return make_error(ErrorCode::UNKNOWN_LEASE, "no lease " + vm);
    vms[vm].state = schema::LeaseState::RUNNING;
    return lease_of(vm);
  }
  Result<std::vector<VmLease>> leases(const std::string&) override {
    std::lock_guard g(mu);
    std::vector<VmLease> out;
    for (auto& [id, v] : vms) out.push_back(lease_of(id));
    return out;
  }
  // The connector the service uses: a new agent connection to the VM's guest.
  exec::ChannelConnect connector() {
    return [this](const VmLease& l,
                  guest::Deadline deadline) -> guest::Result<std::unique_ptr<guest::GuestChannel>> {
      std::shared_ptr<FakeGuest> g;
      {
        std::lock_guard lock(mu);
        auto it = vms.find(l.vm_id);
        if (it != vms.end() && it->second.state == schema::LeaseState::RUNNING) {
          g = it->second.guest;
        }
      }
      if (!g || g->dead()) {
        return guest::ChannelError{guest::ChannelErrc::connect_failed, "no such VM running",
                                   schema::Error::Code::UNSET};
      }
      return guest::GuestChannel::adopt(g->connect(), deadline);
    };
  }

  std::mutex mu;
  std::map<std::string, Vm> vms;
  int released = 0;
  milliseconds last_extend{0};
  uint32_t memory_mib = 512;

 private:
  VmLease add(const std::string& sandbox_id, const std::string& owner) {
    std::string id = "vm-" + std::to_string(++next_);
    auto root = dir_ + "/" + id;
    std::filesystem::create_directories(root);
    vms[id] =
        Vm{schema::LeaseState::RUNNING, sandbox_id, owner, "", std::make_shared<FakeGuest>(root)};
    return lease_of(id);
  }
  VmLease lease_of(const std::string& id) {
    VmLease l;
    l.vm_id = id;
    l.channel_kind = "unixStream";
    l.memory_mib = memory_mib;
    l.vcpus = 1;
    l.sandbox_id = vms[id].sandbox_id;
    l.state = vms[id].state;
    l.note = vms[id].note;
    return l;
  }
  std::string dir_;
  int next_ = 0;
  std::map<std::string, exec::SnapshotRecord> snapshots_;
};

// One executor's sandbox service, registered as "sandbox" and "sandbox.t1".
class Executor {
 public:
  Executor(BrokerHarness& bus, FakePool& pool, SandboxOptions opt, const std::string& db)
      : events_(bus.ctx, bus.events_in(), "sandbox-executor", "test/sandbox-executor/1") {
    auto reg = exec::SandboxRegistry::open(db);
    EXPECT_TRUE(reg.ok());
    // The service owns its pool; the test keeps the fake for all instances.
    struct Borrowed : exec::SandboxPool {
      explicit Borrowed(FakePool& p) : p(p) {}
      FakePool& p;
      Result<VmLease> lease(const std::string& t, const exec::SandboxLeaseSpec& s) override {
        return p.lease(t, s);
      }
      Status release(const std::string& t, const std::string& v, const std::string& w) override {
        return p.release(t, v, w);
      }
      Result<VmLease> extend(const std::string& t, const std::string& v, milliseconds l) override {
        return p.extend(t, v, l);
      }
      Result<exec::ForkOutcome> fork(const std::string& t, const std::string& v, uint32_t n,
                                     milliseconds l, const std::vector<std::string>& ids) override {
        return p.fork(t, v, n, l, ids);
      }
      Result<exec::SnapshotRecord> snapshot(const std::string& t, const std::string& v,
                                            const std::string& n, const std::string& o) override {
        return p.snapshot(t, v, n, o);
      }
      Result<std::vector<exec::SnapshotRecord>> snapshots(const std::string& o) override {
        return p.snapshots(o);
      }
      Result<exec::SnapshotRecord> delete_snapshot(const std::string& t, const std::string& n,
                                                   const std::string& o) override {
        return p.delete_snapshot(t, n, o);
      }
      Result<VmLease> pause(const std::string& t, const std::string& v) override {
        return p.pause(t, v);
      }
      Result<VmLease> resume(const std::string& t, const std::string& v, milliseconds l) override {
        return p.resume(t, v, l);
      }
      Result<std::vector<VmLease>> leases(const std::string& o) override { return p.leases(o); }
    };
    service_ = std::make_unique<SandboxService>(opt, std::make_unique<Borrowed>(pool),
                                                pool.connector(), events_, std::move(reg.value()));
    auto st = service_->recover();
    EXPECT_TRUE(st) << (st ? "" : st.error().to_string());
    auto h = [this](std::shared_ptr<Request> r) { service_->handle(r); };
    any_ = std::make_unique<WorkerThread>(bus.ctx, bus.worker_options("sandbox", 8, "any"), h);
    own_ = std::make_unique<WorkerThread>(bus.ctx, bus.worker_options("sandbox.t1", 8, "own"), h);
  }
  ~Executor() {
    any_.reset();
    own_.reset();
    service_.reset();
  }
  SandboxService& service() { return *service_; }

 private:
  EventPublisher events_;
  std::unique_ptr<SandboxService> service_;
  std::unique_ptr<WorkerThread> any_, own_;
};

class SandboxServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bus.start();
    sub_ = std::make_unique<EventSubscriber>(bus.ctx, bus.events_out(),
                                             std::vector<std::string>{"sandbox."});
    root_ = bus.dir.path() + "/vms";
    std::filesystem::create_directories(root_);
    pool_ = std::make_unique<FakePool>(root_);
    opt.executor = "t1";
    opt.now_ms = [this] { return now.load(); };
    opt.connect_timeout = 5s;
    opt.verify_every = milliseconds(1000);
    db_ = bus.dir.path() + "/executor.sqlite";
    client_ = std::make_unique<Client>(bus.ctx, bus.client_options());
  }
  void TearDown() override {
    exec_.reset();
    pool_.reset();
  }
  void start() { exec_ = std::make_unique<Executor>(bus, *pool_, opt, db_); }
  void restart() {
    exec_.reset();
    start();
  }
  SandboxClient as(const std::string& owner) {
    return SandboxClient(*client_, owner, {std::chrono::milliseconds(15000), ""});
  }
  sandbox::Spec spec(std::vector<sandbox::Label> labels = {}) {
    sandbox::Spec s;
    s.cwd = "/tmp";
    s.labels = std::move(labels);
    return s;
  }
  // The next sandbox.* event for `id` (within 5 s): topic and reason.
  std::pair<std::string, std::string> event_for(const std::string& id) {
    auto end = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < end) {
      auto e = sub_->receive(200ms);
      if (!e) continue;
      auto ev = e->event;
      if (!ev.isSandbox()) continue;
      if (std::string(ev.getSandbox().getSandboxId()) != id) continue;
      return {ev.getTopic(), ev.getSandbox().getReason()};
    }
    return {"<none>", ""};
  }

  BrokerHarness bus;
  std::atomic<int64_t> now{1'800'000'000'000};
  SandboxOptions opt;
  std::string root_, db_;
  std::unique_ptr<FakePool> pool_;
  std::unique_ptr<Executor> exec_;
  std::unique_ptr<EventSubscriber> sub_;
  std::unique_ptr<Client> client_;
};

TEST_F(SandboxServiceTest, CreateExecTwiceStreamsOnTheSameSandbox) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec({{"task", "a"}}));
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_TRUE(std::regex_match(s->sandbox_id, std::regex("sbx-t1-[0-9a-f]{16}")));
  EXPECT_EQ(s->state, schema::SandboxState::RUNNING);
  EXPECT_EQ(s->owner, "uid:1000");
  EXPECT_EQ(s->memory_mib, 512u);
  EXPECT_EQ(s->deadline_unix_ms, now.load() + 3600000);
  EXPECT_EQ(s->idle_deadline_unix_ms, now.load() + 600000);
  EXPECT_EQ(event_for(s->sandbox_id).first, "sandbox.created");
  for (int i = 1; i <= 2; ++i) {
    std::vector<std::pair<schema::Stream, std::string>> chunks;
    sandbox::ExecSpec e;
    e.code = "echo run" + std::to_string(i) + "; echo err >&2; exit 3";
    auto r = c.exec(s->sandbox_id, e, [&](schema::Stream st, std::string_view d) {
      chunks.emplace_back(st, std::string(d));
    });
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(r->exit_code, 3);
    EXPECT_EQ(r->stdout_data, "run" + std::to_string(i) + "\n");
    EXPECT_EQ(r->stderr_data, "err\n");
    EXPECT_EQ(r->vm_id, s->vm_id);
    ASSERT_FALSE(chunks.empty());
    EXPECT_EQ(chunks[0].first, schema::Stream::STATUS);
    EXPECT_EQ(chunks[0].second, "started vm=" + s->vm_id);
  }
  // A file written by one exec is read by the next (the same guest).
  sandbox::ExecSpec w;
  w.code = "echo kept > f.txt";
  w.cwd = root_ + "/" + s->vm_id;
  ASSERT_TRUE(c.exec(s->sandbox_id, w).ok());
  sandbox::ExecSpec rd;
  rd.code = "cat f.txt";
  rd.cwd = w.cwd;
  auto got = c.exec(s->sandbox_id, rd);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->stdout_data, "kept\n");
  // Listed with its labels, filtered by them.
  auto l = c.list({{"task", "a"}});
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ(l->front().sandbox_id, s->sandbox_id);
  EXPECT_EQ(c.list({{"task", "b"}})->size(), 0u);
}

TEST_F(SandboxServiceTest, AnotherOwnersIdAnswersLikeAMissingOne) {
  start();
  auto mine = as("uid:1000");
  auto theirs = as("uid:1001");
  auto s = mine.create(spec());
  ASSERT_TRUE(s.ok());
  const std::string id = s->sandbox_id;
  const std::string missing = "sbx-t1-0000000000000000";
  auto same = [&](const Error& a, const Error& b) {
    EXPECT_EQ(a.code, ErrorCode::UNKNOWN_SANDBOX);
    EXPECT_EQ(a.code, b.code);
    // The words differ only by the id asked for.
    auto strip = [](std::string m, const std::string& x) {
      auto p = m.find(x);
      if (p != std::string::npos) m.replace(p, x.size(), "<id>");
      return m;
    };
    EXPECT_EQ(strip(a.message, id), strip(b.message, missing));
  };
  sandbox::ExecSpec e;
  e.code = "true";
  same(theirs.get(id).error(), theirs.get(missing).error());
  same(theirs.exec(id, e).error(), theirs.exec(missing, e).error());
  same(theirs.destroy(id).error(), theirs.destroy(missing).error());
  same(theirs.pause(id).error(), theirs.pause(missing).error());
  same(theirs.fork(id, 1).error(), theirs.fork(missing, 1).error());
  same(theirs.keepalive(id).error(), theirs.keepalive(missing).error());
  EXPECT_EQ(theirs.list()->size(), 0u);
  // Still the owner's, untouched.
  EXPECT_EQ(mine.get(id)->state, schema::SandboxState::RUNNING);
}

TEST_F(SandboxServiceTest, BadFieldsAnswerBadRequestWithEveryProblem) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  auto bad = [](const auto& r, const std::string& words) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::BAD_REQUEST) << r.error().to_string();
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  sandbox::Spec sp = spec({{"bad key!", "v"}});
  sp.lifetime_ms = 90'000'000;
  sp.tier = static_cast<schema::SizeTier>(9);
  sp.image = "ubuntu";
  auto r = c.create(sp);
  bad(r, "labels[0] key 'bad key!'");
  bad(r, "lifetimeMs is 90000000, the limit is 86400000");
  bad(r, "tier 9");
  bad(r, "image 'ubuntu'");
  sandbox::Spec many = spec();
  for (int i = 0; i < 17; ++i) many.labels.push_back({"k" + std::to_string(i), "v"});
  bad(c.create(many), "labels count is 17, the limit is 16");
  bad(c.fork(s->sandbox_id, 0), "count 0 is not in 1..16");
  bad(c.fork(s->sandbox_id, 17), "count 17 is not in 1..16");
  bad(c.snapshot(s->sandbox_id, std::string(64, 'a')), "is not 1..63 bytes");
  bad(c.snapshot(s->sandbox_id, "a/b"), "name 'a/b'");
  bad(c.signal(s->sandbox_id, 1234, 65), "signal 65 is not in 1..64");
  bad(c.signal(s->sandbox_id, 0, 9), "pid 0");
  bad(c.read_file(s->sandbox_id, "relative/path"), "is not absolute");
  bad(c.read_file(s->sandbox_id, "/tmp/x", 0, (32u << 20) + 1), "length is 33554433");
  bad(c.write_file(s->sandbox_id, "/tmp/../etc/passwd", "x"), "'.' or '..' component");
  sandbox::ExecSpec e;
  e.code = "1";
  e.context = "nb";
  e.language = schema::Language::BASH;
  bad(c.exec(s->sandbox_id, e), "a code context runs python(1) or javascript(4)");
  e.language = static_cast<schema::Language>(7);
  bad(c.exec(s->sandbox_id, e), "language 7");
  SandboxClient nobody(*client_, "");
  bad(nobody.list(), "owner is empty");
  SandboxClient huge(*client_, std::string(129, 'o'));
  bad(huge.list(), "owner size in bytes is 129, the limit is 128");
}

TEST_F(SandboxServiceTest, PerOwnerLimitsAnswerSandboxLimit) {
  opt.max_per_owner = 2;
  opt.max_memory_mib_per_owner = 1500;  // 2 × 512 fit, 3 do not
  start();
  auto c = as("uid:1000");
  auto a = c.create(spec());
  auto b = c.create(spec());
  ASSERT_TRUE(a.ok() && b.ok());
  auto third = c.create(spec());
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.error().code, ErrorCode::SANDBOX_LIMIT);
  EXPECT_NE(third.error().message.find("limit of 2"), std::string::npos);
  // Another owner has its own count.
  EXPECT_TRUE(as("uid:1001").create(spec()).ok());
  // Destroying one makes room again.
  ASSERT_TRUE(c.destroy(a->sandbox_id).ok());
  ASSERT_TRUE(c.create(spec()).ok());
  // Memory: 3 × 512 MiB > 1500 when count allows it.
  opt.max_per_owner = 8;
  restart();
  auto d = c.create(spec());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code, ErrorCode::SANDBOX_LIMIT);
  EXPECT_NE(d.error().message.find("1500 MiB"), std::string::npos) << d.error().message;
  // A fork counts as much as a create.
  auto f = c.fork(b->sandbox_id, 1);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().code, ErrorCode::SANDBOX_LIMIT);
}

TEST_F(SandboxServiceTest, IdleAndLifetimeReapWithAnEventOnTheFakeClock) {
  start();
  auto c = as("uid:1000");
  sandbox::Spec idle = spec();
  idle.idle_timeout_ms = 60000;
  auto a = c.create(idle);
  sandbox::Spec life = spec();
  life.lifetime_ms = 200000;
  life.idle_timeout_ms = 3'600'000;
  auto b = c.create(life);
  ASSERT_TRUE(a.ok() && b.ok());
  (void)event_for(a->sandbox_id);
  (void)event_for(b->sandbox_id);
  auto& svc = exec_->service();
  now += 59000;
  EXPECT_EQ(svc.reap(now), 0u);
  // keepalive is a call: the idle deadline moves.
  auto k = c.keepalive(a->sandbox_id);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->idle_deadline_unix_ms, now.load() + 60000);
  now += 59999;
  EXPECT_EQ(svc.reap(now), 0u);
  now += 1;
  // The handler that answered keepalive may still hold the sandbox's lock for a moment (a busy
  // sandbox is looked at again next tick).
  EXPECT_TRUE(wait_for([&] { return svc.reap(now) == 1; }));
  EXPECT_EQ(event_for(a->sandbox_id),
            std::make_pair(std::string("sandbox.reaped"), std::string("idle for 60000 ms")));
  auto got = c.get(a->sandbox_id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, schema::SandboxState::DESTROYED);
  EXPECT_EQ(got->end_reason, "idle for 60000 ms");
  EXPECT_EQ(c.exec(a->sandbox_id, {}).error().code, ErrorCode::BAD_REQUEST);  // empty code
  sandbox::ExecSpec e;
  e.code = "true";
  EXPECT_EQ(c.exec(a->sandbox_id, e).error().code, ErrorCode::SANDBOX_STATE);
  now = b->created_unix_ms + 199999;
  EXPECT_EQ(svc.reap(now), 0u);
  now += 1;
  EXPECT_EQ(svc.reap(now), 1u);
  EXPECT_EQ(event_for(b->sandbox_id),
            std::make_pair(std::string("sandbox.reaped"), std::string("lifetime ended")));
  EXPECT_EQ(pool_->vms.size(), 0u);  // both VMs released
  // Destroyed sandboxes answer get for 10 minutes, then are forgotten.
  now += 600000;
  svc.reap(now);
  EXPECT_EQ(c.get(b->sandbox_id).error().code, ErrorCode::UNKNOWN_SANDBOX);
  EXPECT_EQ(c.list({}, true)->size(), 0u);
}

TEST_F(SandboxServiceTest, KeepaliveExtendsWithinTheMaximumLifetime) {
  opt.max_lifetime = milliseconds(7'200'000);
  opt.default_lifetime = milliseconds(3'600'000);
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  auto k = c.keepalive(s->sandbox_id, 5'000'000);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->deadline_unix_ms, s->created_unix_ms + 5'000'000);
  EXPECT_EQ(pool_->last_extend, milliseconds(5'000'000) + opt.lease_margin);
  now += 1'000'000;
  auto k2 = c.keepalive(s->sandbox_id, 7'000'000);  // bounded: created + 2 h
  ASSERT_TRUE(k2.ok());
  EXPECT_EQ(k2->deadline_unix_ms, s->created_unix_ms + 7'200'000);
}

TEST_F(SandboxServiceTest, OneOperationAtATimePerSandbox) {
  start();
  auto s = as("uid:1000").create(spec());
  ASSERT_TRUE(s.ok());
  // Two clients run `sleep` on the same sandbox at once; the second waits for the first, so the
  // last one ends no earlier than both sleeps together (a lower bound: load cannot break it).
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 2; ++i) {
    ts.emplace_back([&] {
      Client cl(bus.ctx, bus.client_options());
      SandboxClient sc(cl, "uid:1000", {std::chrono::milliseconds(30000), ""});
      sandbox::ExecSpec e;
      e.code = "sleep 0.6";
      if (sc.exec(s->sandbox_id, e).ok()) ++ok;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 2);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1200));
}

TEST_F(SandboxServiceTest, AVmThePoolLostIsReapedWithItsReason) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  (void)event_for(s->sandbox_id);
  {
    std::lock_guard g(pool_->mu);
    pool_->vms[s->vm_id].state = schema::LeaseState::LOST;
    pool_->vms[s->vm_id].note = "vmm exited with signal 9";
  }
  // (The handler that answered create may still hold the sandbox's lock for a moment: a busy
  // sandbox is judged at the next verification.)
  EXPECT_TRUE(wait_for([&] { return exec_->service().reap(now += 2000) == 1; }));
  EXPECT_EQ(event_for(s->sandbox_id),
            std::make_pair(std::string("sandbox.reaped"),
                           std::string("vm lost: vmm exited with signal 9")));
  // A VM that dies under a call: the reconnect fails, the call answers vmFailed, reaped.
  auto t = c.create(spec());
  ASSERT_TRUE(t.ok());
  (void)event_for(t->sandbox_id);
  {
    std::lock_guard g(pool_->mu);
    pool_->vms[t->vm_id].guest->kill();
  }
  sandbox::ExecSpec e;
  e.code = "true";
  auto r = c.exec(t->sandbox_id, e);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::VM_FAILED);
  auto ev = event_for(t->sandbox_id);
  EXPECT_EQ(ev.first, "sandbox.reaped");
  EXPECT_EQ(ev.second.rfind("vm lost: ", 0), 0u) << ev.second;
  EXPECT_EQ(c.get(t->sandbox_id)->state, schema::SandboxState::DESTROYED);
}

TEST_F(SandboxServiceTest, ARestartFindsEverySandboxAgainOrReapsItWithAnEvent) {
  start();
  auto c = as("uid:1000");
  auto running = c.create(spec({{"k", "running"}}));
  auto paused = c.create(spec());
  auto gone = c.create(spec());
  ASSERT_TRUE(running.ok() && paused.ok() && gone.ok());
  ASSERT_TRUE(c.pause(paused->sandbox_id).ok());
  for (auto* s : {&running, &paused, &gone}) (void)event_for((*s)->sandbox_id);
  (void)event_for(paused->sandbox_id);
  // The executor goes away (its VMs stay with the pool); one VM dies meanwhile.
  exec_.reset();
  {
    std::lock_guard g(pool_->mu);
    pool_->vms.erase(gone->vm_id);
  }
  start();
  auto r = c.get(running->sandbox_id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, schema::SandboxState::RUNNING);
  EXPECT_EQ(r->labels, running->labels);
  sandbox::ExecSpec e;
  e.code = "echo back";
  auto x = c.exec(running->sandbox_id, e);
  ASSERT_TRUE(x.ok()) << x.error().to_string();
  EXPECT_EQ(x->stdout_data, "back\n");
  EXPECT_EQ(c.get(paused->sandbox_id)->state, schema::SandboxState::PAUSED);
  auto p = c.resume(paused->sandbox_id);
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  EXPECT_TRUE(c.exec(paused->sandbox_id, e).ok());
  auto g = c.get(gone->sandbox_id);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->state, schema::SandboxState::DESTROYED);
  EXPECT_EQ(g->end_reason,
            "vm lost: the pool no longer holds VM " + gone->vm_id + " after a restart");
  EXPECT_EQ(event_for(gone->sandbox_id).first, "sandbox.reaped");
}

TEST_F(SandboxServiceTest, ForkSnapshotPauseAndResumeGoThroughThePool) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  auto f = c.fork(s->sandbox_id, 2, {{"branch", "x"}});
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  ASSERT_EQ(f->size(), 2u);
  for (const auto& k : *f) {
    EXPECT_EQ(k.parent_id, s->sandbox_id);
    EXPECT_EQ(k.labels, (std::vector<sandbox::Label>{{"branch", "x"}}));
    EXPECT_NE(k.vm_id, s->vm_id);
  }
  EXPECT_EQ(c.list({{"branch", "x"}})->size(), 2u);
  auto snap = c.snapshot(s->sandbox_id, "base.1");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->source_sandbox_id, s->sandbox_id);
  ASSERT_EQ(c.snapshots()->size(), 1u);
  EXPECT_EQ(as("uid:1001").snapshots()->size(), 0u);
  EXPECT_EQ(as("uid:1001").delete_snapshot("base.1").error().code, ErrorCode::UNKNOWN_SNAPSHOT);
  sandbox::Spec from = spec();
  from.from_snapshot = "base.1";
  auto restored = c.create(from);
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(restored->from_snapshot, "base.1");
  from.from_snapshot = "nope";
  EXPECT_EQ(c.create(from).error().code, ErrorCode::UNKNOWN_SNAPSHOT);
  EXPECT_TRUE(c.delete_snapshot("base.1"));
  auto p = c.pause(s->sandbox_id);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state, schema::SandboxState::PAUSED);
  EXPECT_EQ(p->vm_id, "");
  sandbox::ExecSpec e;
  e.code = "true";
  EXPECT_EQ(c.exec(s->sandbox_id, e).error().code, ErrorCode::SANDBOX_STATE);
  EXPECT_EQ(c.pause(s->sandbox_id).error().code, ErrorCode::SANDBOX_STATE);
  auto r = c.resume(s->sandbox_id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, schema::SandboxState::RUNNING);
  EXPECT_TRUE(c.exec(s->sandbox_id, e).ok());
  EXPECT_EQ(c.resume(s->sandbox_id).error().code, ErrorCode::SANDBOX_STATE);
  auto d = c.destroy(s->sandbox_id);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->end_reason, "destroyed by owner");
  EXPECT_EQ(c.destroy(s->sandbox_id).error().code, ErrorCode::SANDBOX_STATE);
}

}  // namespace
}  // namespace nv::test

namespace nv::test {
namespace {

// Files, processes and code contexts reach the real agent Session through the service.
TEST_F(SandboxServiceTest, FilesProcessesAndContextsReachTheAgent) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  const std::string home = root_ + "/" + s->vm_id;
  auto d = c.make_dir(s->sandbox_id, home + "/a/b", true);
  ASSERT_TRUE(d.ok()) << d.error().to_string();
  EXPECT_EQ(d->type, schema::FileType::DIRECTORY);
  std::string bin("\0\x01\xff binary\n", 10);
  auto w = c.write_file(s->sandbox_id, home + "/a/b/f.bin", bin, 0600);
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  EXPECT_EQ(w->size, bin.size());
  EXPECT_EQ(w->mode, 0600u);
  ASSERT_TRUE(c.write_file(s->sandbox_id, home + "/a/b/f.bin", "tail", 0, true).ok());
  auto r = c.read_file(s->sandbox_id, home + "/a/b/f.bin");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->data, bin + "tail");
  EXPECT_TRUE(r->eof);
  auto part = c.read_file(s->sandbox_id, home + "/a/b/f.bin", 2, 3);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(part->data, bin.substr(2, 3));
  EXPECT_EQ(part->size, bin.size() + 4);
  EXPECT_FALSE(part->eof);
  auto l = c.list_files(s->sandbox_id, home + "/a", true);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->size(), 2u);  // b and b/f.bin
  auto missing = c.stat_file(s->sandbox_id, home + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::NOT_FOUND);
  // Outside the agent's writable roots: the agent refuses, the service answers badRequest.
  auto outside = c.write_file(s->sandbox_id, "/etc/nv-sbx-test", "x");
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.error().code, ErrorCode::BAD_REQUEST) << outside.error().to_string();
  ASSERT_TRUE(c.remove_file(s->sandbox_id, home + "/a", true));
  EXPECT_EQ(c.stat_file(s->sandbox_id, home + "/a").error().code, ErrorCode::NOT_FOUND);

  // A background program is listed and killed by signal.
  sandbox::ExecSpec bg;
  bg.code = "exec sleep 321";
  bg.background = true;
  auto b = c.exec(s->sandbox_id, bg);
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_EQ(b->exit_code, -1);
  int32_t pid = 0;
  ASSERT_TRUE(wait_for([&] {
    auto ps = c.processes(s->sandbox_id);
    for (const auto& p : ps.ok() ? *ps : std::vector<sandbox::Process>{}) {
      if (p.command.find("sleep 321") != std::string::npos) pid = p.pid;
    }
    return pid > 0;
  }));
  ASSERT_TRUE(c.signal(s->sandbox_id, pid, 9));
  // Gone, or a zombie until the agent reaps it (the test process is the agent's parent here).
  EXPECT_TRUE(wait_for([&] {
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(st, line)) return true;
    auto close = line.rfind(')');
    return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
  }));

  // A python context keeps its variables between execs, until restarted.
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no python3 on this host";
  sandbox::ExecSpec py;
  py.language = schema::Language::PYTHON;
  py.context = "nb";
  py.code = "x = 41";
  auto p1 = c.exec(s->sandbox_id, py);
  ASSERT_TRUE(p1.ok()) << p1.error().to_string();
  py.code = "print(x + 1)";
  auto p2 = c.exec(s->sandbox_id, py);
  ASSERT_TRUE(p2.ok()) << p2.error().to_string();
  EXPECT_EQ(p2->stdout_data, "42\n") << p2->stderr_data;
  ASSERT_TRUE(c.restart_context(s->sandbox_id, "nb", schema::Language::PYTHON));
  auto p3 = c.exec(s->sandbox_id, py);
  ASSERT_TRUE(p3.ok());
  EXPECT_NE(p3->exit_code, 0);
  EXPECT_NE(p3->stderr_data.find("NameError"), std::string::npos) << p3->stderr_data;
}

}  // namespace
}  // namespace nv::test

namespace nv::test {
namespace {

// A program past its timeout is killed; the sandbox lives on and serves the next call.
TEST_F(SandboxServiceTest, ATimedOutProgramLeavesTheSandboxUsable) {
  start();
  auto c = as("uid:1000");
  auto s = c.create(spec());
  ASSERT_TRUE(s.ok());
  sandbox::ExecSpec slow;
  slow.code = "echo before; sleep 30";
  slow.timeout_ms = 500;
  auto r = c.exec(s->sandbox_id, slow);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->stdout_data, "before\n");
  sandbox::ExecSpec next;
  next.code = "echo after";
  auto n = c.exec(s->sandbox_id, next);
  ASSERT_TRUE(n.ok()) << n.error().to_string();
  EXPECT_EQ(n->stdout_data, "after\n");
  EXPECT_EQ(c.get(s->sandbox_id)->state, schema::SandboxState::RUNNING);
}

}  // namespace
}  // namespace nv::test
