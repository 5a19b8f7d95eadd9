// broker_test.cc — the orchestrator's broker in-process with real workers and clients over
// ipc:// in a temp dir: routing by free capacity, heartbeat expiry, retries, deadlines, bad
// frames answered with typed Errors, event fan-out, nv.status, nv.events and worker drain.
#include <map>
#include <set>

#include "bus_harness.h"
#include "common/events.h"

namespace nv::test {
namespace {

zmq::message_t event_bytes(const std::string& topic) {
  capnp::MallocMessageBuilder mb;
  fill_event(mb, topic);
  return bus::encode_body(mb);
}

// Checks the broker still routes a normal request after something went wrong.
void expect_serves(Client& client, const std::string& topic) {
  capnp::MallocMessageBuilder mb;
  fill_event(mb, topic);
  auto r = client.call("echo", &mb, 5s);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->header.kind, bus::Kind::REPLY);
  EXPECT_EQ(topic_of(r->body), topic);
}

// Capacity 2 and 1: three slow requests all run at once, spread by free capacity; a fourth waits
// in the queue and runs when a slot frees.
TEST(Broker, RoutesByFreeCapacityAcrossTwoWorkers) {
  BrokerHarness h;
  h.start();
  Gate gate;
  std::mutex mu;
  std::map<std::string, int> running, peak, handled;
  auto slow = [&](const std::string& name) {
    return [&, name](std::shared_ptr<Request> r) {
      {
        std::lock_guard lock(mu);
        peak[name] = std::max(peak[name], ++running[name]);
        ++handled[name];
      }
      gate.wait();
      {
        std::lock_guard lock(mu);
        --running[name];
      }
      auto in = r->read<schema::Event>();
      capnp::MallocMessageBuilder mb;
      fill_event(mb, in ? std::string(in->getTopic()) : "?", name);
      r->reply(mb);
    };
  };
  WorkerThread a(h.ctx, h.worker_options("slow", 2, "worker-a"), slow("worker-a"));
  WorkerThread b(h.ctx, h.worker_options("slow", 1, "worker-b"), slow("worker-b"));
  Client client(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] {
    auto s = status(client);
    return s.find("worker-a") && s.find("worker-b");
  }));

  std::set<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "req." + std::to_string(i));
    ids.insert(client.send("slow", &mb, 10s));
  }
  auto count = [&](const std::string& n) {
    std::lock_guard lock(mu);
    return running[n];
  };
  ASSERT_TRUE(wait_for([&] { return count("worker-a") == 2 && count("worker-b") == 1; }))
      << "a=" << count("worker-a") << " b=" << count("worker-b");
  // The broker reads one client's messages in order, so this status answer comes after it has
  // seen the fourth request: it must be queued, with both workers full.
  auto s = status(client);
  EXPECT_EQ(s.queued, 1u);
  ASSERT_TRUE(s.find("worker-a") && s.find("worker-b"));
  EXPECT_EQ(s.find("worker-a")->in_flight, 2u);
  EXPECT_EQ(s.find("worker-b")->in_flight, 1u);
  EXPECT_EQ(count("worker-a") + count("worker-b"), 3);

  gate.open();
  std::set<uint64_t> answered;
  std::set<std::string> topics;
  while (answered.size() < 4) {
    auto in = client.receive(5s);
    ASSERT_TRUE(in) << "only " << answered.size() << " of 4 answered";
    ASSERT_EQ(in->header.kind, bus::Kind::REPLY) << in->error().to_string();
    answered.insert(in->header.request_id);
    topics.insert(topic_of(in->body));
  }
  EXPECT_EQ(answered, ids);
  EXPECT_EQ(topics, (std::set<std::string>{"req.0", "req.1", "req.2", "req.3"}));
  std::lock_guard lock(mu);
  EXPECT_EQ(peak["worker-a"], 2);  // never more than its capacity
  EXPECT_EQ(peak["worker-b"], 1);
  EXPECT_EQ(handled["worker-a"] + handled["worker-b"], 4);
  EXPECT_GE(handled["worker-a"], 2);
  EXPECT_GE(handled["worker-b"], 1);
}

// A worker sends a partial, then goes silent: the client gets the partial, then workerLost
// (not retryable: the work had started) once the worker misses its heartbeats.
TEST(Broker, HeartbeatExpiryFailsStartedRequestWithWorkerLost) {
  BrokerHarness h;
  h.start();
  RawWorker silent(h.ctx, h.workers(), "fragile", "silent-worker");
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "job");
  uint64_t id = client.send("fragile", &mb, 10s);
  auto req = silent.next_request();
  ASSERT_EQ(req.header.kind, bus::Kind::REQUEST);
  silent.send(bus::Kind::PARTIAL, req.header.request_id, event_bytes("progress"));
  auto t0 = std::chrono::steady_clock::now();

  auto partial = client.receive(5s);
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->header.kind, bus::Kind::PARTIAL);
  EXPECT_EQ(partial->header.request_id, id);
  EXPECT_EQ(topic_of(partial->body), "progress");

  auto final = client.receive(5s);
  ASSERT_TRUE(final) << "no answer after the worker went silent";
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(final->header.kind, bus::Kind::ERROR);
  EXPECT_EQ(final->header.request_id, id);
  auto err = final->error();
  EXPECT_EQ(err.code, ErrorCode::WORKER_LOST) << err.to_string();
  EXPECT_FALSE(err.retryable);
  EXPECT_NE(err.message.find("silent-worker"), std::string::npos) << err.message;
  // Expiry is liveness (5) x heartbeat (100 ms), checked every heartbeat: well under 3 s.
  EXPECT_LT(waited, 3s);
  EXPECT_EQ(status(client).find("silent-worker"), nullptr);
}

// The first worker takes a request and dies before starting it; the broker retries it on the
// worker that registered meanwhile, and the client never sees the failure.
TEST(Broker, UnstartedRequestIsRetriedOnAnotherWorker) {
  BrokerHarness h;
  h.start();
  RawWorker doomed(h.ctx, h.workers(), "flaky", "doomed-worker");
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "retry-me");
  uint64_t id = client.send("flaky", &mb, 10s);
  auto req = doomed.next_request();
  ASSERT_EQ(req.header.kind, bus::Kind::REQUEST) << "the first worker never got the request";
  EXPECT_EQ(topic_of(req.body), "retry-me");

  std::atomic<int> seen{0};
  WorkerThread good(h.ctx, h.worker_options("flaky", 1, "good-worker"),
                    echo_handler("good-worker", &seen));
  auto in = client.receive(5s);
  ASSERT_TRUE(in) << "the retried request was never answered";
  ASSERT_EQ(in->header.kind, bus::Kind::REPLY) << in->error().to_string();
  EXPECT_EQ(in->header.request_id, id);
  EXPECT_EQ(instance_of(in->body), "good-worker");
  EXPECT_EQ(topic_of(in->body), "retry-me");
  EXPECT_EQ(seen.load(), 1);
}

TEST(Broker, NoWorkerIsReportedAtTheDeadline) {
  BrokerHarness h;
  h.start();
  Client client(h.ctx, h.client_options());
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "anyone?");
  auto t0 = std::chrono::steady_clock::now();
  auto r = client.call("nobody-home", &mb, 300ms);
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::NO_WORKER) << r.error().to_string();
  EXPECT_TRUE(r.error().retryable);
  EXPECT_EQ(r.error().service, "orchestrator");
  EXPECT_NE(r.error().message.find("nobody-home"), std::string::npos) << r.error().message;
  EXPECT_GE(waited, 290ms);
  EXPECT_LT(waited, 1300ms);  // answered by the broker, not by the client's grace timeout
}

class BrokerBadFrames : public ::testing::Test {
 protected:
  void SetUp() override {
    h.options.limits.max_frame_bytes = 64 << 10;
    h.start();
    worker = std::make_unique<WorkerThread>(h.ctx, h.worker_options("echo", 2, "echo-1"),
                                            echo_handler("echo-1"));
    client = std::make_unique<Client>(h.ctx, h.client_options());
    expect_serves(*client, "before");
  }
  void TearDown() override {
    client.reset();
    worker.reset();
  }
  Client::Incoming answer() {
    auto in = client->receive(5s);
    if (!in) {
      ADD_FAILURE() << "the broker did not answer the bad message";
      return {};
    }
    return std::move(*in);
  }
  BrokerHarness h;
  std::unique_ptr<WorkerThread> worker;
  std::unique_ptr<Client> client;
};

TEST_F(BrokerBadFrames, MalformedHeaderIsAnsweredAndBrokerStillServes) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back("garbage!", 8);
  client->send_raw(std::move(frames));
  auto in = answer();
  ASSERT_EQ(in.header.kind, bus::Kind::ERROR);
  EXPECT_EQ(in.error().code, ErrorCode::MALFORMED_MESSAGE) << in.error().to_string();
  expect_serves(*client, "after-malformed");
}

TEST_F(BrokerBadFrames, OversizedFrameIsAnsweredAndBrokerStillServes) {
  bus::Header hd;
  hd.kind = bus::Kind::REQUEST;
  hd.service = "echo";
  hd.request_id = 4242;
  std::vector<zmq::message_t> frames;
  frames.push_back(bus::encode_header(hd));
  frames.emplace_back(size_t{128} << 10);  // twice the broker's 64 KiB cap
  client->send_raw(std::move(frames));
  auto in = answer();
  ASSERT_EQ(in.header.kind, bus::Kind::ERROR);
  EXPECT_EQ(in.header.request_id, 4242u);  // the request id is read from the header
  EXPECT_EQ(in.error().code, ErrorCode::OVERSIZED_FRAME) << in.error().to_string();
  expect_serves(*client, "after-oversized");
}

TEST_F(BrokerBadFrames, WrongVersionIsAnsweredAndBrokerStillServes) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::Header>();
  b.setVersion(bus::kSchemaVersion + 1);
  b.setKind(bus::Kind::REQUEST);
  b.setService("echo");
  b.setRequestId(77);
  std::vector<zmq::message_t> frames;
  frames.push_back(bus::encode_body(mb));
  frames.push_back(event_bytes("from-the-future"));
  client->send_raw(std::move(frames));
  auto in = answer();
  ASSERT_EQ(in.header.kind, bus::Kind::ERROR);
  EXPECT_EQ(in.header.request_id, 77u);
  EXPECT_EQ(in.error().code, ErrorCode::UNSUPPORTED_VERSION) << in.error().to_string();
  expect_serves(*client, "after-wrong-version");
}

TEST_F(BrokerBadFrames, ClientSendingAReplyIsABadRequest) {
  bus::Header hd;
  hd.kind = bus::Kind::REPLY;
  hd.service = "echo";
  hd.request_id = 5;
  std::vector<zmq::message_t> frames;
  frames.push_back(bus::encode_header(hd));
  client->send_raw(std::move(frames));
  auto in = answer();
  ASSERT_EQ(in.header.kind, bus::Kind::ERROR);
  EXPECT_EQ(in.error().code, ErrorCode::BAD_REQUEST) << in.error().to_string();
  expect_serves(*client, "after-bad-kind");
}

// Two subscribers both receive every published event, in order.
TEST(Broker, EventsFanOutToTwoSubscribers) {
  BrokerHarness h;
  h.start();
  EventPublisher pub(h.ctx, h.events_in(), "bus-test", "bus-test/1");
  EventSubscriber s1(h.ctx, h.events_out(), {"fan."});
  EventSubscriber s2(h.ctx, h.events_out(), {"fan."});
  // Subscriptions travel asynchronously: publish probes until both subscribers get one.
  bool got1 = false, got2 = false;
  ASSERT_TRUE(wait_for([&] {
    pub.publish("fan.probe", {});
    got1 = got1 || s1.receive(10ms).has_value();
    got2 = got2 || s2.receive(10ms).has_value();
    return got1 && got2;
  }));
  constexpr int kEvents = 50;
  for (int i = 0; i < kEvents; ++i) {
    pub.publish("fan.data", {}, std::to_string(i));
  }
  pub.publish("other.topic", {});  // filtered out by the subscription
  for (auto* sub : {&s1, &s2}) {
    std::vector<std::string> traces;
    while (traces.size() < kEvents) {
      auto r = sub->receive(5s);
      ASSERT_TRUE(r) << "subscriber got " << traces.size() << " of " << kEvents;
      ASSERT_EQ(r->topic.rfind("fan.", 0), 0u) << r->topic;
      if (r->topic != "fan.data") continue;  // a late probe
      EXPECT_EQ(std::string(r->event.getService()), "bus-test");
      traces.emplace_back(r->event.getTraceId());
    }
    for (int i = 0; i < kEvents; ++i) EXPECT_EQ(traces[i], std::to_string(i));
    EXPECT_EQ(sub->malformed(), 0u);
  }
  EXPECT_EQ(pub.dropped(), 0u);
}

TEST(Broker, StatusListsRegisteredWorkersWithPidAndCapacity) {
  BrokerHarness h;
  h.start();
  WorkerThread a(h.ctx, h.worker_options("exec", 3, "host/exec/a"), echo_handler("a"));
  WorkerThread b(h.ctx, h.worker_options("llm", 1, "host/llm/b"), echo_handler("b"));
  Client client(h.ctx, h.client_options());
  StatusInfo s;
  ASSERT_TRUE(wait_for([&] {
    s = status(client);
    return s.workers.size() == 2;
  }));
  EXPECT_EQ(s.orchestrator_pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(s.queued, 0u);
  auto* wa = s.find("host/exec/a");
  auto* wb = s.find("host/llm/b");
  ASSERT_TRUE(wa && wb);
  EXPECT_EQ(wa->service, "exec");
  EXPECT_EQ(wa->pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(wa->capacity, 3u);
  EXPECT_EQ(wb->service, "llm");
  EXPECT_EQ(wb->capacity, 1u);
  EXPECT_NE(std::find(s.endpoints.begin(), s.endpoints.end(), h.workers()), s.endpoints.end());
  EXPECT_NE(std::find(s.endpoints.begin(), s.endpoints.end(), h.clients()), s.endpoints.end());
}

TEST(Broker, EventsHistoryIsFilteredByPrefix) {
  BrokerHarness h;
  h.start();
  EventPublisher pub(h.ctx, h.events_in(), "bus-test", "bus-test/1");
  for (const char* t : {"alpha.one", "beta.two", "alpha.three"}) pub.publish(t, {});
  Client client(h.ctx, h.client_options());
  auto history = [&](const std::string& prefix, uint32_t limit) {
    std::vector<std::string> topics;
    capnp::MallocMessageBuilder mb;
    auto req = bus::init_body<schema::HistoryRequest>(mb);
    req.setTopicPrefix(prefix);
    req.setLimit(limit);
    auto r = client.call("nv.events", &mb, 3s);
    if (!r) {
      ADD_FAILURE() << r.error().to_string();
      return topics;
    }
    auto reply = r->body.root<schema::HistoryReply>();
    if (!reply) {
      ADD_FAILURE() << reply.error().to_string();
      return topics;
    }
    for (auto e : reply->getEvents()) {
      EXPECT_EQ(std::string(e.getService()), "bus-test");
      topics.emplace_back(e.getTopic());
    }
    return topics;
  };
  // PUSH delivers in order: once alpha.three is kept, the others are too.
  ASSERT_TRUE(wait_for([&] { return history("alpha.three", 0).size() == 1; }));
  EXPECT_EQ(history("alpha.", 0), (std::vector<std::string>{"alpha.one", "alpha.three"}));
  EXPECT_EQ(history("alpha.", 1), (std::vector<std::string>{"alpha.three"}));
  EXPECT_EQ(history("beta.", 0), (std::vector<std::string>{"beta.two"}));
  EXPECT_TRUE(history("gamma.", 0).empty());
  auto all = history("", 0);
  EXPECT_EQ(all, (std::vector<std::string>{"alpha.one", "beta.two", "alpha.three"}));
}

// Stopping a worker while it handles a request: the request is still answered, then the worker
// leaves the registry and later requests for its service get noWorker.
TEST(Broker, WorkerDrainsOnStop) {
  BrokerHarness h;
  h.start();
  Gate gate;
  std::atomic<int> started{0};
  WorkerThread w(h.ctx, h.worker_options("drainy", 1, "drain-worker"),
                 [&](std::shared_ptr<Request> r) {
                   ++started;
                   gate.wait();
                   capnp::MallocMessageBuilder mb;
                   fill_event(mb, "done", "drain-worker");
                   r->reply(mb);
                 });
  Client client(h.ctx, h.client_options());
  ASSERT_TRUE(wait_for([&] { return status(client).find("drain-worker") != nullptr; }));
  capnp::MallocMessageBuilder mb;
  fill_event(mb, "long-job");
  uint64_t id = client.send("drainy", &mb, 10s);
  ASSERT_TRUE(wait_for([&] { return started.load() == 1; }));

  w.request_stop();
  // The worker advertises capacity 0 as it starts draining (and tells the broker).
  ASSERT_TRUE(wait_for([&] { return w.worker().capacity() == 0; }));
  gate.open();
  auto in = client.receive(5s);
  ASSERT_TRUE(in) << "the in-flight request was dropped by the drain";
  ASSERT_EQ(in->header.kind, bus::Kind::REPLY) << in->error().to_string();
  EXPECT_EQ(in->header.request_id, id);
  EXPECT_EQ(topic_of(in->body), "done");
  w.join();
  EXPECT_TRUE(wait_for([&] { return status(client).find("drain-worker") == nullptr; }));
  capnp::MallocMessageBuilder again;
  fill_event(again, "too-late");
  auto r = client.call("drainy", &again, 300ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::NO_WORKER) << r.error().to_string();
  EXPECT_EQ(started.load(), 1);
}

// The adaptive busy-poll rule: grows (10 us, then doubling, capped) while the next message came
// within the longest window, shrinks (halving, then 0) while the loop slept longer.
TEST(Broker, BusyPollWindowGrowsOnShortGapsAndShrinksOnLongOnes) {
  using us = std::chrono::microseconds;
  const us longest(200);
  EXPECT_EQ(next_busy_poll_window(us(0), us(60), longest), us(10));
  EXPECT_EQ(next_busy_poll_window(us(10), us(60), longest), us(20));
  EXPECT_EQ(next_busy_poll_window(us(160), us(190), longest), us(200));
  EXPECT_EQ(next_busy_poll_window(us(200), us(200), longest), us(200));
  EXPECT_EQ(next_busy_poll_window(us(200), us(201), longest), us(100));
  EXPECT_EQ(next_busy_poll_window(us(10), std::chrono::seconds(1), longest), us(5));
  EXPECT_EQ(next_busy_poll_window(us(5), std::chrono::seconds(1), longest), us(0));
  EXPECT_EQ(next_busy_poll_window(us(0), std::chrono::seconds(1), longest), us(0));
  EXPECT_EQ(next_busy_poll_window(us(40), us(10), us(0)), us(0));  // disabled
}

// Busy-polling is for a conversation in flight: after a burst of round trips (which grows the
// window) an idle broker sleeps. A loop that kept spinning would use most of the idle second.
TEST(Broker, BusyPollSleepsOnceTrafficStops) {
  BrokerHarness h;
  h.options.busy_poll = std::chrono::microseconds(200);
  h.start();
  WorkerThread w(h.ctx, h.worker_options("echo", 4, "echo-1"), echo_handler("echo-1"));
  Client client(h.ctx, h.client_options());
  for (int i = 0; i < 2000; ++i) {
    capnp::MallocMessageBuilder mb;
    fill_event(mb, "ping");
    auto r = client.call("echo", &mb, 5s);
    ASSERT_TRUE(r) << r.error().to_string();
  }
  auto before = h.loop_cpu();
  std::this_thread::sleep_for(1s);  // heartbeats (every 100 ms here) still flow
  auto used = h.loop_cpu() - before;
  ASSERT_GE(before.count(), 0);
  EXPECT_LT(used, 100ms) << "the broker loop used "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(used).count()
                         << " ms of CPU in an idle second";
  expect_serves(client, "still-serving");
}

}  // namespace
}  // namespace nv::test
