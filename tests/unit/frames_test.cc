// frames_test.cc — bus framing: what parse() accepts, what it rejects and with which Error code.
//
// Frames are built by hand here (not through a socket) so each malformation is exact; one test
// goes through a real inproc DEALER -> ROUTER pair: send() and recv_frames() agree with parse().
#include <gtest/gtest.h>
#include <nv/schema/events.capnp.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/frames.h"

namespace nv::bus {
namespace {

zmq::message_t text_frame(const std::string& s) { return zmq::message_t(s.data(), s.size()); }

Header request_header(uint64_t id = 42) {
  Header h;
  h.kind = Kind::REQUEST;
  h.service = "exec";
  h.request_id = id;
  h.trace_id = "0193b3c4-5e6f-7abc-8def-0123456789ab";
  h.deadline_ms = 1500;
  h.capacity = 3;
  h.pid = 1234;
  h.instance = "host/exec/1234";
  return h;
}

zmq::message_t event_body(const std::string& topic) {
  capnp::MallocMessageBuilder mb;
  auto e = init_body<schema::Event>(mb);
  e.setTopic(topic);
  return encode_body(mb);
}

// A header encoded with raw field values, to forge versions and kinds encode_header() never makes.
zmq::message_t raw_header(uint16_t version, uint16_t kind, uint64_t request_id) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::Header>();
  b.setVersion(version);
  b.setKind(static_cast<Kind>(kind));
  b.setRequestId(request_id);
  b.setService("exec");
  return encode_body(mb);
}

std::vector<zmq::message_t> routed(zmq::message_t header, zmq::message_t body = {},
                                   bool with_body = true) {
  std::vector<zmq::message_t> f;
  f.push_back(text_frame("client-1"));
  f.emplace_back();  // delimiter
  f.push_back(std::move(header));
  if (with_body) f.push_back(std::move(body));
  return f;
}

TEST(Frames, RoundTripThroughParse) {
  auto frames = routed(encode_header(request_header()), event_body("vm.booted"));
  Message msg;
  ParseError failure;
  ASSERT_TRUE(parse(frames, true, Limits{}, &msg, &failure)) << failure.error.to_string();
  ASSERT_EQ(msg.routing, std::vector<std::string>{"client-1"});
  EXPECT_EQ(msg.header.kind, Kind::REQUEST);
  EXPECT_EQ(msg.header.service, "exec");
  EXPECT_EQ(msg.header.request_id, 42u);
  EXPECT_EQ(msg.header.trace_id, "0193b3c4-5e6f-7abc-8def-0123456789ab");
  EXPECT_EQ(msg.header.deadline_ms, 1500u);
  EXPECT_EQ(msg.header.capacity, 3u);
  EXPECT_EQ(msg.header.pid, 1234u);
  EXPECT_EQ(msg.header.instance, "host/exec/1234");
  auto ev = msg.body.root<schema::Event>();
  ASSERT_TRUE(ev) << ev.error().to_string();
  EXPECT_EQ(std::string(ev->getTopic()), "vm.booted");
}

// READY's list of requests still running (a reconnecting worker) and a heartbeat's interval
// survive the round trip; a list longer than kMaxRunning is malformed, answerable by routing.
TEST(Frames, RunningListAndIntervalRoundTripAndAreCapped) {
  Header h;
  h.kind = Kind::READY;
  h.service = "exec";
  h.interval_ms = 250;
  h.running = {7, 8, 1ull << 40};
  auto frames = routed(encode_header(h), {}, /*with_body=*/false);
  Message msg;
  ParseError failure;
  ASSERT_TRUE(parse(frames, true, Limits{}, &msg, &failure)) << failure.error.to_string();
  EXPECT_EQ(msg.header.interval_ms, 250u);
  EXPECT_EQ(msg.header.running, (std::vector<uint64_t>{7, 8, 1ull << 40}));
  h.running.assign(kMaxRunning + 1, 5);
  auto big = routed(encode_header(h), {}, /*with_body=*/false);
  ASSERT_FALSE(parse(big, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});
}

TEST(Frames, UnparsedBodyIsForwardedRaw) {
  auto body = event_body("exec.finished");
  size_t size = body.size();
  auto frames = routed(encode_header(request_header()), std::move(body));
  Message msg;
  ParseError failure;
  ASSERT_TRUE(parse(frames, true, Limits{}, &msg, &failure, /*parse_body=*/false));
  EXPECT_TRUE(msg.body.empty());
  EXPECT_EQ(msg.raw_body.size(), size);
}

TEST(Frames, HeaderOnlyMessageHasEmptyBody) {
  auto frames = routed(encode_header(request_header()), {}, /*with_body=*/false);
  Message msg;
  ParseError failure;
  ASSERT_TRUE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_TRUE(msg.body.empty());
  auto r = msg.body.root<schema::Event>();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::MALFORMED_MESSAGE);
}

TEST(Frames, SendAndReceiveOverInproc) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  router.bind("inproc://frames-test");
  dealer.set(zmq::sockopt::routing_id, "dealer-7");
  dealer.connect("inproc://frames-test");
  ASSERT_TRUE(send(dealer, {}, request_header(9), event_body("llm.call")));
  zmq::pollitem_t item{static_cast<void*>(router), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(5000)), 1);
  std::vector<zmq::message_t> frames;
  ASSERT_TRUE(recv_frames(router, frames));
  ASSERT_EQ(frames.size(), 4u);  // [identity][empty][header][body]
  Message msg;
  ParseError failure;
  ASSERT_TRUE(parse(frames, true, Limits{}, &msg, &failure)) << failure.error.to_string();
  EXPECT_EQ(msg.routing, std::vector<std::string>{"dealer-7"});
  EXPECT_EQ(msg.header.request_id, 9u);
  // And back: an Error reply the dealer can read.
  ASSERT_TRUE(send_error(router, msg.routing, 9, "exec",
                         make_error(ErrorCode::TIMED_OUT, "too slow", true)));
  zmq::pollitem_t back{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&back, 1, std::chrono::milliseconds(5000)), 1);
  ASSERT_TRUE(recv_frames(dealer, frames));
  Message reply;
  ASSERT_TRUE(parse(frames, false, Limits{}, &reply, &failure)) << failure.error.to_string();
  EXPECT_EQ(reply.header.kind, Kind::ERROR);
  EXPECT_EQ(reply.header.request_id, 9u);
  auto e = reply.body.root_unchecked<schema::Error>();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->getCode(), ErrorCode::TIMED_OUT);
  EXPECT_TRUE(e->getRetryable());
  EXPECT_EQ(std::string(e->getMessage()), "too slow");
}

TEST(Frames, MalformedHeaderIsRejectedWithRouting) {
  std::string junk(24, '\xff');  // a multiple of 8, but no valid segment table
  auto frames = routed(text_frame(junk), {}, false);
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});  // so it can be answered
  EXPECT_FALSE(failure.header_read);
}

TEST(Frames, HeaderLengthNotWordMultipleIsMalformed) {
  auto frames = routed(text_frame("hello"), {}, false);
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_NE(failure.error.message.find("multiple of 8"), std::string::npos)
      << failure.error.message;
}

TEST(Frames, MalformedBodyIsRejectedWhenParsed) {
  auto frames = routed(encode_header(request_header(5)), text_frame(std::string(16, '\x7f')));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_TRUE(failure.header_read);
  EXPECT_EQ(failure.request_id, 5u);
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});
}

TEST(Frames, OversizedBodyIsRejectedWithTheRequestId) {
  Limits limits;
  limits.max_frame_bytes = 1024;
  auto frames = routed(encode_header(request_header(77)), zmq::message_t(2048));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, limits, &msg, &failure, false));
  EXPECT_EQ(failure.error.code, ErrorCode::OVERSIZED_FRAME);
  EXPECT_TRUE(failure.header_read);
  EXPECT_EQ(failure.request_id, 77u);
  EXPECT_NE(failure.error.message.find("2048"), std::string::npos) << failure.error.message;
}

TEST(Frames, OversizedHeaderIsRejected) {
  Limits limits;
  limits.max_frame_bytes = 64;
  Header h = request_header();
  h.instance = std::string(200, 'x');
  auto frames = routed(encode_header(h), {}, false);
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, limits, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::OVERSIZED_FRAME);
}

TEST(Frames, BodyReaderRejectsOversizedFrame) {
  Limits limits;
  limits.max_frame_bytes = 64;
  zmq::message_t big(128);
  auto r = BodyReader::open(big, limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::OVERSIZED_FRAME);
}

TEST(Frames, WrongHeaderVersionIsRejected) {
  auto frames = routed(raw_header(kSchemaVersion + 1, static_cast<uint16_t>(Kind::REQUEST), 13));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::UNSUPPORTED_VERSION);
  EXPECT_TRUE(failure.header_read);
  EXPECT_EQ(failure.request_id, 13u);
}

TEST(Frames, WrongBodyVersionIsRejectedByRoot) {
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<schema::Event>();
  e.setVersion(kSchemaVersion + 5);
  auto bytes = encode_body(mb);
  auto body = BodyReader::open(bytes, Limits{});
  ASSERT_TRUE(body);
  auto r = body->root<schema::Event>();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::UNSUPPORTED_VERSION);
  EXPECT_TRUE(body->root_unchecked<schema::Event>());  // readable when the caller opts out
}

TEST(Frames, UnknownKindIsMalformed) {
  for (uint16_t kind : {uint16_t{0}, uint16_t{9}, uint16_t{500}}) {
    auto frames = routed(raw_header(kSchemaVersion, kind, 3));
    Message msg;
    ParseError failure;
    ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure)) << "kind " << kind;
    EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE) << "kind " << kind;
    EXPECT_EQ(failure.request_id, 3u);
  }
}

TEST(Frames, MissingDelimiterIsMalformedButAnswerable) {
  std::vector<zmq::message_t> frames;
  frames.push_back(text_frame("client-1"));
  frames.push_back(encode_header(request_header()));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_NE(failure.error.message.find("delimiter"), std::string::npos);
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});
}

TEST(Frames, UnroutedSocketRejectsFramesBeforeDelimiter) {
  auto frames = routed(encode_header(request_header()));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, false, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
}

TEST(Frames, TooManyRoutingFramesIsMalformed) {
  Limits limits;
  std::vector<zmq::message_t> frames;
  for (size_t i = 0; i <= limits.max_routing_frames; ++i) {
    frames.push_back(text_frame("hop" + std::to_string(i)));
  }
  frames.emplace_back();
  frames.push_back(encode_header(request_header()));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, limits, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_NE(failure.error.message.find("routing"), std::string::npos);
  // Exactly the limit is fine.
  frames.erase(frames.begin());
  ASSERT_TRUE(parse(frames, true, limits, &msg, &failure)) << failure.error.to_string();
  EXPECT_EQ(msg.routing.size(), limits.max_routing_frames);
}

TEST(Frames, TooManyFramesAfterDelimiterIsMalformed) {
  auto frames = routed(encode_header(request_header()), event_body("a.b"));
  frames.push_back(event_body("c.d"));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
}

// A body that is small on the wire but large when traversed hits the traversal limit.
TEST(Frames, TraversalLimitStopsLargeMessage) {
  capnp::MallocMessageBuilder mb;
  auto r = init_body<schema::StatusReply>(mb);
  auto eps = r.initEndpoints(2000);
  for (unsigned i = 0; i < eps.size(); ++i) eps.set(i, "ipc:///run/nv/some-endpoint.sock");
  auto bytes = encode_body(mb);
  Limits tight;
  tight.traversal_limit_words = 1000;  // far fewer words than the message holds
  auto body = BodyReader::open(bytes, tight);
  ASSERT_TRUE(body);
  auto bad = body->root<schema::StatusReply>();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::MALFORMED_MESSAGE);
  // The default limits (twice the frame cap) read the same bytes.
  auto fine = BodyReader::open(bytes, Limits{});
  ASSERT_TRUE(fine);
  auto ok = fine->root<schema::StatusReply>();
  ASSERT_TRUE(ok) << ok.error().to_string();
  EXPECT_EQ(ok->getEndpoints().size(), 2000u);
}

// A body nested deeper than the nesting limit is refused: HistoryReply -> events -> Event ->
// brokerStatus is four levels.
TEST(Frames, NestingLimitStopsDeepMessage) {
  capnp::MallocMessageBuilder mb;
  auto r = init_body<schema::HistoryReply>(mb);
  auto ev = r.initEvents(1)[0];
  ev.setVersion(kSchemaVersion);
  ev.setTopic("broker.status");
  ev.initBrokerStatus().setService("exec");
  auto bytes = encode_body(mb);
  Limits shallow;
  shallow.nesting_limit = 2;
  auto body = BodyReader::open(bytes, shallow);
  ASSERT_TRUE(body);
  auto bad = body->root<schema::HistoryReply>();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::MALFORMED_MESSAGE);
  auto fine = BodyReader::open(bytes, Limits{});
  ASSERT_TRUE(fine);
  EXPECT_TRUE(fine->root<schema::HistoryReply>());
}

// A header whose pointer for text field `field` (0 service, 1 traceId, 2 instance) holds
// something else: a struct, or a list of 64-bit words. totalSize() accepts both (bounds are
// fine); reading the text throws inside Cap'n Proto. Found by the bus_frames fuzz target.
zmq::message_t header_with_bad_text_pointer(unsigned field, bool as_word_list) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::Header>();
  b.setVersion(kSchemaVersion);
  b.setKind(Kind::REQUEST);
  b.setRequestId(42);
  b.setService("exec");
  auto ptr = mb.getRoot<capnp::AnyStruct>().getPointerSection()[field];
  if (as_word_list) {
    ptr.initAsAnyList(capnp::ElementSize::EIGHT_BYTES, 2);
  } else {
    ptr.initAsAnyStruct(1, 0);
  }
  return encode_body(mb);
}

TEST(Frames, HeaderTextFieldHoldingAStructIsMalformed) {
  auto frames = routed(header_with_bad_text_pointer(2, false), event_body("x"));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure, false));  // the broker's call
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(failure.error.message,
            "header: expected ref->kind() == WirePointer::LIST [0 == 1]; Message contains "
            "non-list pointer where text was expected.");
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});
  EXPECT_TRUE(failure.header_read);
  EXPECT_EQ(failure.request_id, 42u);
}

TEST(Frames, HeaderTextFieldHoldingAWordListIsMalformed) {
  auto frames = routed(header_with_bad_text_pointer(0, true));
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, true, Limits{}, &msg, &failure));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(failure.error.message.rfind("header: ", 0), 0u) << failure.error.message;
  EXPECT_NE(failure.error.message.find("text"), std::string::npos) << failure.error.message;
  EXPECT_EQ(failure.routing, std::vector<std::string>{"client-1"});
  EXPECT_EQ(failure.request_id, 42u);
}

TEST(Frames, FuzzReproducerHeaderTextIsStructIsMalformed) {
  // tests/fuzz/corpus/bus_frames/crash-header-text-is-struct, the fuzzer's own input: it
  // escaped parse() as a kj::Exception (the broker has no handler for it there).
  std::ifstream in(std::string(std::getenv("NV_SOURCE_DIR") ? std::getenv("NV_SOURCE_DIR")
                                                            : NV_TEST_SOURCE_DIR) +
                       "/tests/fuzz/corpus/bus_frames/crash-header-text-is-struct",
                   std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 3u);
  std::vector<zmq::message_t> frames;  // the bus_frames input format (tests/fuzz/bus_frames.cc)
  for (size_t i = 1; i < bytes.size();) {
    size_t n = bytes.size() - i < 2
                   ? 0
                   : (static_cast<uint8_t>(bytes[i]) | static_cast<uint8_t>(bytes[i + 1]) << 8);
    i += std::min<size_t>(2, bytes.size() - i);
    n = std::min(n, bytes.size() - i);
    frames.emplace_back(bytes.data() + i, n);
    i += n;
  }
  Limits limits;
  limits.max_frame_bytes = 4096;
  Message msg;
  ParseError failure;
  ASSERT_FALSE(parse(frames, bytes[0] & 1, limits, &msg, &failure, bytes[0] & 2));
  EXPECT_EQ(failure.error.code, ErrorCode::MALFORMED_MESSAGE);
  EXPECT_EQ(failure.error.message,
            "header: expected ref->kind() == WirePointer::LIST [0 == 1]; Message contains "
            "non-list pointer where text was expected.");
}

TEST(Frames, IpcEndpointHelpers) {
  EXPECT_EQ(ipc_endpoint("/run/nv/a.sock"), "ipc:///run/nv/a.sock");
  EXPECT_EQ(ipc_path("ipc:///run/nv/a.sock"), "/run/nv/a.sock");
  EXPECT_EQ(ipc_path("tcp://127.0.0.1:5555"), "");
}

}  // namespace
}  // namespace nv::bus
