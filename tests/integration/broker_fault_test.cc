// broker_fault_test.cc — issue 11's bus findings against the in-process broker (bus_harness.h):
// unknown names and lasting state (7), bounded history (7), pipelined answers (8), fail-fast
// when the only worker dies and requests that die with their client (2), a reconnecting worker
// that keeps its requests (5), and admission control (6).
#include <map>
#include <set>

#include "bus_harness.h"
#include "common/events.h"

namespace nv::test {
namespace {

using Clock = std::chrono::steady_clock;

// Sends `n` requests without reading, then reads until every one is answered (or `timeout`).
// Returns the answers by kind and error code.
struct Tally {
  size_t replies = 0;
  std::map<ErrorCode, size_t> errors;
  std::set<uint64_t> ids;
};
Tally pipeline(Client& client, size_t n, const std::function<uint64_t(size_t)>& send,
               std::chrono::milliseconds timeout) {
  Tally t;
  std::set<uint64_t> sent;
  for (size_t i = 0; i < n; ++i) sent.insert(send(i));
  auto end = Clock::now() + timeout;
  while (t.ids.size() < n && Clock::now() < end) {
    auto in = client.receive(200ms);
    if (!in || !in->final()) continue;
    if (!sent.count(in->header.request_id)) continue;
    t.ids.insert(in->header.request_id);
    if (in->header.kind == bus::Kind::REPLY)
      ++t.replies;
    else
      ++t.errors[in->error().code];
  }
  return t;
}

// Finding 7: 10,000 distinct unknown names get unknownService at once, and leave no per-name
// state behind (no broker.status stream for them, nv.status shows no queue).
TEST(BrokerFault, UnknownNamesAreRefusedAtOnceAndLeaveNoState) {
  BrokerHarness h;
  h.options.startup_grace = 50ms;
  h.options.status_interval = 100ms;
  h.start();
  WorkerThread echo(h.ctx, h.worker_options("echo", 2, "echo-1"), echo_handler("echo-1"));
  Client client(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] { return status(client).find("echo-1") != nullptr; }));
  EventSubscriber sub(h.ctx, h.events_out(), {"broker.status"});
  auto t0 = Clock::now();
  auto t = pipeline(
      client, 10000,
      [&](size_t i) {
        capnp::MallocMessageBuilder mb;
        fill_event(mb, "x");
        return client.send("no-such-service-" + std::to_string(i), &mb, 60s);
      },
      20s);
  auto took = Clock::now() - t0;
  EXPECT_EQ(t.ids.size(), 10000u);
  EXPECT_EQ(t.errors[ErrorCode::UNKNOWN_SERVICE], 10000u);
  EXPECT_LT(took, 10s);  // at once, not at the 60 s deadline
  EXPECT_EQ(status(client).queued, 0u);
  // Three status rounds: only the registered service has a stream.
  std::set<std::string> named;
  auto end = Clock::now() + 400ms;
  while (Clock::now() < end) {
    if (auto ev = sub.receive(100ms); ev && ev->event.isBrokerStatus()) {
      named.insert(ev->event.getBrokerStatus().getService());
    }
  }
  EXPECT_EQ(named, (std::set<std::string>{"echo"}));
  // A second input of the kind: a name that differs from a registered one only by case.
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "y");
  auto r = client.call("Echo", &mb, 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::UNKNOWN_SERVICE) << r.error().to_string();
}

// Finding 7: names asked for during the start-up grace (workers re-registering after a broker
// restart) wait; at the grace's end the unknown ones are refused, the registered one served.
TEST(BrokerFault, StartupGraceHoldsNamesThenRefusesTheUnknown) {
  BrokerHarness h;
  h.options.startup_grace = 600ms;
  h.start();
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder a, b;
  fill_event(a, "early");
  fill_event(b, "typo");
  auto t0 = Clock::now();
  uint64_t early = client.send("late-echo", &a, 10s);
  uint64_t typo = client.send("late-ehco", &b, 10s);
  WorkerThread echo(h.ctx, h.worker_options("late-echo", 1, "late-1"), echo_handler("late-1"));
  std::map<uint64_t, bus::Kind> kinds;
  std::map<uint64_t, ErrorCode> codes;
  while (kinds.size() < 2 && Clock::now() - t0 < 5s) {
    auto in = client.receive(200ms);
    if (!in || !in->final()) continue;
    kinds[in->header.request_id] = in->header.kind;
    if (in->header.kind == bus::Kind::ERROR) codes[in->header.request_id] = in->error().code;
  }
  EXPECT_EQ(kinds[early], bus::Kind::REPLY);
  EXPECT_EQ(kinds[typo], bus::Kind::ERROR);
  EXPECT_EQ(codes[typo], ErrorCode::UNKNOWN_SERVICE);
  EXPECT_LT(Clock::now() - t0, 3s);
}

// Finding 7: the history ring is bounded by bytes, and an event over the size cap is dropped.
TEST(BrokerFault, HistoryIsBoundedByBytesAndEventSizeIsCapped) {
  BrokerHarness h;
  h.options.history_bytes = 1u << 20;
  h.options.max_event_bytes = 400u << 10;
  h.start();
  EventPublisher pub(h.ctx, h.events_in(), "bus-test", "bus-test/1");
  std::string big(300u << 10, 'x');
  for (int i = 0; i < 12; ++i) {
    pub.publish("big." + std::to_string(i),
                [&](schema::Event::Builder e) { e.initSecurityAlert().setDetail(big); });
  }
  std::string huge(500u << 10, 'y');
  pub.publish("huge", [&](schema::Event::Builder e) { e.initSecurityAlert().setDetail(huge); });
  pub.publish("last", {});
  Client client(h.ctx, h.client_options());
  auto history = [&] {
    std::pair<std::vector<std::string>, size_t> out{};
    capnp::MallocMessageBuilder mb;
    bus::init_body<schema::HistoryRequest>(mb);
    auto r = client.call("nv.events", &mb, 3s);
    if (!r) return out;
    auto reply = r->body.root<schema::HistoryReply>();
    if (!reply) return out;
    for (auto e : reply->getEvents()) {
      out.first.emplace_back(e.getTopic());
      out.second += e.totalSize().wordCount * 8;
    }
    return out;
  };
  ASSERT_TRUE(wait_for([&] {
    auto topics = history().first;
    return !topics.empty() && topics.back() == "last";
  }));
  auto [topics, bytes] = history();
  EXPECT_LE(bytes, (1u << 20) + (16u << 10));
  EXPECT_GE(topics.size(), 3u);  // the newest three big ones fit in 1 MiB
  EXPECT_LE(topics.size(), 5u);
  EXPECT_EQ(std::count(topics.begin(), topics.end(), "huge"), 0);
  EXPECT_EQ(topics.back(), "last");
}

// Finding 8: 30,000 pipelined nv.status requests on one connection, sent before any answer is
// read: every one is answered. A second input: 5,000 pipelined requests to a worker service.
TEST(BrokerFault, PipelinedRequestsAreAllAnswered) {
  BrokerHarness h;
  h.start();
  WorkerThread echo(h.ctx, h.worker_options("echo", 64, "echo-1"), echo_handler("echo-1"));
  Client client(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] { return status(client).find("echo-1") != nullptr; }));
  auto t = pipeline(
      client, 30000, [&](size_t) { return client.send("nv.status", nullptr, 60s); }, 60s);
  EXPECT_EQ(t.ids.size(), 30000u);
  EXPECT_EQ(t.replies, 30000u);
  auto e = pipeline(
      client, 5000,
      [&](size_t i) {
        capnp::MallocMessageBuilder mb;
        fill_event(mb, "p" + std::to_string(i));
        return client.send("echo", &mb, 60s);
      },
      60s);
  EXPECT_EQ(e.ids.size(), 5000u);
  EXPECT_EQ(e.replies + e.errors[ErrorCode::OVERLOADED], 5000u);
}

// Finding 2: the only worker of a service dies before starting a request: the client gets
// workerLost as soon as the worker expires, not a re-queue that waits for the deadline.
TEST(BrokerFault, OnlyWorkerLostFailsFastInsteadOfRequeueing) {
  BrokerHarness h;
  h.options.startup_grace = 50ms;
  h.start();
  RawWorker doomed(h.ctx, h.workers(), "lonely", "doomed-worker");
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "job");
  auto t0 = Clock::now();
  uint64_t id = client.send("lonely", &mb, 20s);
  auto req = doomed.next_request();
  ASSERT_EQ(req.header.kind, bus::Kind::REQUEST);
  auto in = client.receive(10s);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->header.request_id, id);
  ASSERT_EQ(in->header.kind, bus::Kind::ERROR);
  auto err = in->error();
  EXPECT_EQ(err.code, ErrorCode::WORKER_LOST) << err.to_string();
  EXPECT_TRUE(err.retryable);
  EXPECT_LT(Clock::now() - t0, 3s);
  // The next request for the service, with no worker left, is refused at once.
  capnp::MallocMessageBuilder again;
  fill_event(again, "again");
  auto t1 = Clock::now();
  auto r = client.call("lonely", &again, 20s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::NO_WORKER) << r.error().to_string();
  EXPECT_LT(Clock::now() - t1, 1s);
}

// Finding 2: a request never outlives its client. The client's connection closes while its
// request runs: the worker's handler sees cancelled(). A second input: a queued request of the
// same client is dropped, and its worker slot goes to another client.
TEST(BrokerFault, ClientGoneCancelsItsRequests) {
  BrokerHarness h;
  h.start();
  std::atomic<int> cancelled{0}, started{0};
  WorkerThread slow(h.ctx, h.worker_options("slow", 1, "slow-1"), [&](std::shared_ptr<Request> r) {
    ++started;
    auto end = Clock::now() + 15s;
    while (!r->cancelled() && Clock::now() < end) {
      std::this_thread::sleep_for(5ms);
    }
    if (r->cancelled()) ++cancelled;
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "done");
    r->reply(mb);
  });
  Client observer(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] { return status(observer).find("slow-1") != nullptr; }));
  {
    Client doomed(h.ctx, h.client_options());
    for (int i = 0; i < 2; ++i) {
      capnp::MallocMessageBuilder mb;
      fill_event(mb, "running-" + std::to_string(i));
      doomed.send("slow", &mb, 30s);
    }
    ASSERT_TRUE(wait_for([&] { return started.load() == 1; }));
    (void)doomed.receive(50ms);  // sends its first heartbeat
  }                              // the socket closes: the client is gone
  auto t0 = Clock::now();
  ASSERT_TRUE(wait_for([&] { return cancelled.load() == 1; }, 5s));
  EXPECT_LT(Clock::now() - t0, 3s);
  // The queued one never ran; the slot serves the next client at once.
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "next");
  uint64_t id = observer.send("slow", &mb, 10s);
  ASSERT_TRUE(wait_for([&] { return started.load() == 2; }, 3s)) << "started " << started.load();
  observer.cancel(id, "slow");
}

// Finding 5: a worker that reconnects (new socket, READY naming its running request) keeps it:
// its answer on the new connection reaches the client. A request id the broker does not hold
// is cancelled back to the worker.
TEST(BrokerFault, ReconnectingWorkerKeepsItsRunningRequests) {
  BrokerHarness h;
  h.start();
  auto first = std::make_unique<RawWorker>(h.ctx, h.workers(), "steady", "steady-1");
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "keep-me");
  uint64_t id = client.send("steady", &mb, 10s);
  auto req = first->next_request();
  ASSERT_EQ(req.header.kind, bus::Kind::REQUEST);
  uint64_t broker_id = req.header.request_id;
  first.reset();  // the old connection is gone
  RawWorker second(h.ctx, h.workers(), "steady", "steady-1", 1, {broker_id, 987654321});
  auto cancel = second.next_kind(bus::Kind::CANCEL);
  EXPECT_EQ(cancel.header.request_id, 987654321u);
  capnp::MallocMessageBuilder out;
  fill_event(out, "kept", "steady-1");
  second.send(bus::Kind::REPLY, broker_id, bus::encode_body(out));
  auto in = client.receive(5s);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->header.request_id, id);
  ASSERT_EQ(in->header.kind, bus::Kind::REPLY) << in->error().to_string();
  EXPECT_EQ(topic_of(in->body), "kept");
}

// Finding 6: a service of capacity 1 that takes ~150 ms per request, sent 20 requests with a
// 1 s deadline at once: those that cannot be served in time get `overloaded` at once (with the
// queue length and an estimate), every admitted one completes. A second input: a service that
// has finished nothing yet admits `cold_rounds` (1 here) rounds of its capacity only.
TEST(BrokerFault, AdmissionControlRefusesWhatCannotMeetItsDeadline) {
  BrokerHarness h;
  h.options.cold_rounds = 1;
  h.start();
  auto handler = [](std::shared_ptr<Request> r) {
    std::this_thread::sleep_for(150ms);
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "served");
    r->reply(mb);
  };
  WorkerThread w(h.ctx, h.worker_options("busy", 1, "busy-1"), handler);
  WorkerThread cold(h.ctx, h.worker_options("cold", 2, "cold-1"), handler);
  Client client(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] {
    auto s = status(client);
    return s.find("busy-1") && s.find("cold-1");
  }));
  // Cold: 10 at once, 2 slots, nothing finished yet: 2 run + 2 wait, 6 refused.
  auto c = pipeline(
      client, 10,
      [&](size_t) {
        capnp::MallocMessageBuilder mb;
        fill_event(mb, "c");
        return client.send("cold", &mb, 10s);
      },
      10s);
  EXPECT_EQ(c.replies, 4u);
  EXPECT_EQ(c.errors[ErrorCode::OVERLOADED], 6u);
  // Warm-up: two served requests give the broker a service time.
  for (int i = 0; i < 2; ++i) {
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "warm");
    ASSERT_TRUE(client.call("busy", &mb, 5s));
  }
  std::map<uint64_t, Clock::time_point> sent_at;
  std::vector<Error> refused;
  size_t served = 0, late = 0;
  auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) {
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "r");
    sent_at[client.send("busy", &mb, 1000ms)] = Clock::now();
  }
  for (size_t answered = 0; answered < 20 && Clock::now() - t0 < 10s;) {
    auto in = client.receive(200ms);
    if (!in || !in->final()) continue;
    ++answered;
    auto waited = Clock::now() - sent_at[in->header.request_id];
    if (in->header.kind == bus::Kind::REPLY) {
      ++served;
      continue;
    }
    auto e = in->error();
    // "At once": well before the 1 s deadline (a late failure comes at or after it).
    if (e.code == ErrorCode::OVERLOADED && waited < 500ms)
      refused.push_back(e);
    else
      ++late;
  }
  EXPECT_EQ(late, 0u);
  EXPECT_EQ(served + refused.size(), 20u);
  EXPECT_GE(served, 1u);
  EXPECT_LE(served, 7u);  // 1000 / 150 ms on one slot: no more can be served in time
  ASSERT_FALSE(refused.empty());
  EXPECT_GT(refused.back().queue_length, 0u);
  EXPECT_GT(refused.back().estimated_wait_ms, 0u);
  EXPECT_TRUE(refused.back().retryable);
  EXPECT_NE(refused.back().message.find("deadline"), std::string::npos) << refused.back().message;
}

}  // namespace
}  // namespace nv::test
