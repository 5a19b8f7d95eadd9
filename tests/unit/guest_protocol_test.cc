// guest_protocol_test.cc — the guest protocol's framing and the host channel against fake peers.
//
// The fake peer is the other end of a socketpair driven by the test itself, so every hostile
// behaviour (zero length, huge length, truncation, garbage, silence, floods) is exact.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/message.h>
#include <nv/schema/guest.capnp.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "guest/host/guest_channel.h"
#include "guest/protocol/frame.h"

namespace nv::guest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using St = FrameDecoder::Status;

std::string le32(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

std::string hello_frame(const std::string& boot_id = "boot-1") {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto h = m.initHello();
  h.setAgentVersion("fake 1");
  auto l = h.initLanguages(1);
  l.set(0, schema::Language::SH);
  h.setBootId(boot_id);
  h.setUptimeMs(42);
  return encode_frame(mb);
}

std::string result_frame(uint32_t id, int32_t exit_code) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto r = m.initResult();
  r.setExecId(id);
  r.setExitCode(exit_code);
  return encode_frame(mb);
}

std::string reseeded_frame(const std::string& vm_id) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto r = m.initReseeded();
  r.setVmId(vm_id);
  r.setBootId("boot-1");
  return encode_frame(mb);
}

std::string pong_frame(uint64_t nonce) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  m.setPong(nonce);
  return encode_frame(mb);
}

std::string chunk_frame(uint32_t id, const std::string& data) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(schema::SCHEMA_VERSION);
  auto c = m.initChunk();
  c.setExecId(id);
  c.setStream(schema::Stream::STDOUT);
  c.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  return encode_frame(mb);
}

// ---- FrameDecoder ------------------------------------------------------------------------------

TEST(FrameDecoder, WholeFrameRoundTrips) {
  std::string f = hello_frame();
  FrameDecoder d(1 << 20);
  d.feed(f.data(), f.size());
  kj::Array<capnp::word> words;
  ASSERT_EQ(d.next(words), St::frame);
  std::string e;
  auto pm = ParsedMessage::parse(kj::mv(words), e);
  ASSERT_TRUE(pm) << e;
  EXPECT_EQ(std::string(pm->root<schema::GuestMessage>().getHello().getBootId()), "boot-1");
  EXPECT_EQ(d.next(words), St::need_more);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoder, ByteByByteAndSeveralFramesInOneFeed) {
  std::string two = hello_frame() + pong_frame(7);
  FrameDecoder d(1 << 20);
  kj::Array<capnp::word> words;
  int frames = 0;
  for (char c : two) {
    d.feed(&c, 1);
    while (d.next(words) == St::frame) ++frames;
  }
  EXPECT_EQ(frames, 2);
  FrameDecoder d2(1 << 20);
  d2.feed(two.data(), two.size());
  EXPECT_EQ(d2.next(words), St::frame);
  EXPECT_EQ(d2.next(words), St::frame);
  EXPECT_EQ(d2.next(words), St::need_more);
}

TEST(FrameDecoder, ZeroLengthIsAnErrorAndSticks) {
  FrameDecoder d(1 << 20);
  std::string z = le32(0) + pong_frame(1);
  d.feed(z.data(), z.size());
  kj::Array<capnp::word> words;
  EXPECT_EQ(d.next(words), St::zero_length);
  EXPECT_EQ(d.next(words), St::zero_length);  // no resynchronising on a broken stream
  d.reset();
  std::string p = pong_frame(1);
  d.feed(p.data(), p.size());
  EXPECT_EQ(d.next(words), St::frame);
}

TEST(FrameDecoder, OverCapIsRefusedFromTheHeaderAlone) {
  FrameDecoder d(1024);
  std::string h = le32(1032);
  d.feed(h.data(), h.size());
  kj::Array<capnp::word> words;
  EXPECT_EQ(d.next(words), St::oversized);
  EXPECT_EQ(d.announced(), 1032u);
  FrameDecoder exact(1024);
  std::string ok = le32(1024) + std::string(1024, '\0');
  exact.feed(ok.data(), ok.size());
  EXPECT_EQ(exact.next(words), St::frame);  // the cap itself is allowed
  FrameDecoder huge(1 << 20);
  std::string hh = le32(0xffffffffu);
  huge.feed(hh.data(), hh.size());
  EXPECT_EQ(huge.next(words), St::oversized);
}

TEST(FrameDecoder, TruncatedFrameWaitsAndMisalignedLengthIsAnError) {
  std::string f = pong_frame(3);
  FrameDecoder d(1 << 20);
  d.feed(f.data(), f.size() - 1);
  kj::Array<capnp::word> words;
  EXPECT_EQ(d.next(words), St::need_more);
  d.feed(f.data() + f.size() - 1, 1);
  EXPECT_EQ(d.next(words), St::frame);
  FrameDecoder m(1 << 20);
  std::string bad = le32(12) + std::string(12, 'x');
  m.feed(bad.data(), bad.size());
  EXPECT_EQ(m.next(words), St::misaligned);
  FrameDecoder h(1 << 20);
  h.feed("\x08\x00", 2);  // half a header
  EXPECT_EQ(h.next(words), St::need_more);
}

TEST(ParsedMessage, RejectsGarbageAndTrailingBytes) {
  std::string e;
  // A segment table claiming 1000 words in a 2-word frame.
  auto w = kj::heapArray<capnp::word>(2);
  std::memset(w.begin(), 0, 16);
  uint32_t table[2] = {0, 1000};
  std::memcpy(w.begin(), table, 8);
  EXPECT_FALSE(ParsedMessage::parse(kj::mv(w), e));
  EXPECT_NE(e.find("malformed"), std::string::npos) << e;
  // A valid message followed by an extra word.
  std::string f = pong_frame(5);
  auto w2 = kj::heapArray<capnp::word>((f.size() - 4) / 8 + 1);
  std::memset(w2.begin(), 0, w2.size() * 8);
  std::memcpy(w2.begin(), f.data() + 4, f.size() - 4);
  e.clear();
  EXPECT_FALSE(ParsedMessage::parse(kj::mv(w2), e));
  EXPECT_NE(e.find("trailing"), std::string::npos) << e;
  // Too many segments for the frame.
  auto w3 = kj::heapArray<capnp::word>(1);
  uint32_t t3[2] = {511, 0};
  std::memcpy(w3.begin(), t3, 8);
  e.clear();
  EXPECT_FALSE(ParsedMessage::parse(kj::mv(w3), e));
}

// ---- GuestChannel against a fake peer ----------------------------------------------------------

class FakePeer : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_ = sv[0];
    peer_ = sv[1];
  }
  void TearDown() override {
    if (peer_ >= 0) ::close(peer_);
    if (thread_.joinable()) thread_.join();
  }
  void peer_send(const std::string& s) {
    ASSERT_EQ(::send(peer_, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Adopts host_ (which the channel then owns).
  Result<std::unique_ptr<GuestChannel>> adopt(std::chrono::milliseconds budget,
                                              const ChannelLimits& l = {}) {
    int fd = host_;
    host_ = -1;
    return GuestChannel::adopt(fd, Clock::now() + budget, l);
  }
  int host_ = -1;
  int peer_ = -1;
  std::thread thread_;
};

TEST_F(FakePeer, HelloThenGreetingPongConnects) {
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  EXPECT_EQ(ch.value()->hello().agent_version, "fake 1");
  EXPECT_EQ(ch.value()->hello().boot_id, "boot-1");
  ASSERT_EQ(ch.value()->hello().languages.size(), 1u);
  EXPECT_EQ(ch.value()->hello().languages[0], schema::Language::SH);
}

TEST_F(FakePeer, SilentPeerTimesOutAtTheDeadline) {
  auto t0 = Clock::now();
  auto ch = adopt(300ms);
  auto took = Clock::now() - t0;
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::timeout) << ch.error().message;
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 1500ms);
}

TEST_F(FakePeer, ZeroLengthFrameIsAProtocolError) {
  peer_send(le32(0));
  auto ch = adopt(2s);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::protocol);
  EXPECT_NE(ch.error().message.find("zero-length"), std::string::npos) << ch.error().message;
}

TEST_F(FakePeer, OversizedHeaderFailsWithoutWaitingForTheBody) {
  peer_send(le32(64u << 20));  // the body never comes; the header alone must be enough
  auto t0 = Clock::now();
  auto ch = adopt(5s);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::protocol);
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_NE(ch.error().message.find("cap"), std::string::npos) << ch.error().message;
}

TEST_F(FakePeer, TruncatedFrameThenCloseIsClosed) {
  std::string h = hello_frame();
  peer_send(h.substr(0, h.size() / 2));
  ::close(peer_);
  peer_ = -1;
  auto ch = adopt(2s);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::closed) << ch.error().message;
}

TEST_F(FakePeer, MalformedCapnpIsAProtocolError) {
  std::string body(64, '\xff');  // segment count 0xffffffff+1: nonsense
  peer_send(le32(64) + body);
  auto ch = adopt(2s);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::protocol);
  EXPECT_NE(ch.error().message.find("malformed"), std::string::npos) << ch.error().message;
}

TEST_F(FakePeer, WrongSchemaVersionIsRefused) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::GuestMessage>();
  m.setVersion(99);
  m.initHello();
  peer_send(encode_frame(mb));
  auto ch = adopt(2s);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().code, ChannelErrc::protocol);
  EXPECT_NE(ch.error().message.find("version 99"), std::string::npos) << ch.error().message;
}

TEST_F(FakePeer, ByteFloodIsRateLimited) {
  ChannelLimits l;
  l.burst_bytes = 4096;
  l.bytes_per_s = 1024;
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s, l);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  // 16 KiB of output in chunks, far over a 4 KiB burst.
  std::string flood;
  for (int i = 0; i < 16; ++i) flood += chunk_frame(1, std::string(1024, 'a'));
  peer_send(flood);
  ExecSpec spec;
  spec.language = schema::Language::SH;
  spec.code = "true";
  auto r = ch.value()->exec(spec, nullptr, Clock::now() + 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::rate_limited) << r.error().message;
  EXPECT_FALSE(ch.value()->is_open());  // a rate-limited guest is cut off
}

TEST_F(FakePeer, MessageFloodIsRateLimited) {
  ChannelLimits l;
  l.burst_messages = 10;
  l.messages_per_s = 1;
  std::string s = hello_frame() + pong_frame(0);
  for (int i = 0; i < 40; ++i) s += pong_frame(1000 + i);
  peer_send(s);
  auto ch = adopt(2s, l);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  auto r = ch.value()->ping(Clock::now() + 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::rate_limited) << r.error().message;
}

TEST_F(FakePeer, HostSideOutputCapTruncatesAndThenCutsOff) {
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  // An agent ignoring the 100-byte cap: the host delivers 100 bytes, marks the output truncated,
  // and closes the channel once the excess passes cap + 1 MiB.
  std::string s;
  for (int i = 0; i < 20; ++i) s += chunk_frame(9, std::string(64 * 1024, 'x'));
  thread_ = std::thread([this, s] { (void)::send(peer_, s.data(), s.size(), MSG_NOSIGNAL); });
  ExecSpec spec;
  spec.id = 9;
  spec.language = schema::Language::SH;
  spec.output_cap_bytes = 100;
  size_t delivered = 0;
  auto r = ch.value()->exec(
      spec, [&](schema::Stream, std::string_view d) { delivered += d.size(); }, Clock::now() + 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::output_cap) << r.error().message;
  EXPECT_EQ(delivered, 100u);
}

TEST_F(FakePeer, ChunkForAnotherExecIsAProtocolError) {
  peer_send(hello_frame() + pong_frame(0) + chunk_frame(77, "hi"));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  ExecSpec spec;
  spec.id = 1;
  spec.language = schema::Language::SH;
  auto r = ch.value()->exec(spec, nullptr, Clock::now() + 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::protocol) << r.error().message;
}

// Issue 11 finding 3: the agent greets each connection it notices, and that Hello can come after
// its answer to the host's greeting ping — here in the middle of the template's warm-up exec
// ("guest sent 'hello' while the host waited for exec output" took the pool manager down).
TEST_F(FakePeer, RepeatedHelloDuringExecIsSkipped) {
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  peer_send(hello_frame() + chunk_frame(3, "out") + hello_frame() + result_frame(3, 0));
  ExecSpec spec;
  spec.id = 3;
  spec.language = schema::Language::SH;
  spec.code = "echo out";
  std::string got;
  auto r = ch.value()->exec(
      spec, [&](schema::Stream, std::string_view d) { got += d; }, Clock::now() + 2s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().exit_code, 0);
  EXPECT_EQ(got, "out");
  EXPECT_EQ(ch.value()->repeated_hellos(), 2u);
  EXPECT_TRUE(ch.value()->is_open());
}

// The same kind in the other states: a reseed (a restored clone's first wake-up), a ping, a
// pipelined reseed whose answer comes after a late Hello.
TEST_F(FakePeer, RepeatedHelloDuringReseedAndPingIsSkipped) {
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  peer_send(hello_frame() + reseeded_frame("vm-1"));
  auto id = ch.value()->reseed("entropy", "vm-1", 0, Clock::now() + 2s);
  ASSERT_TRUE(id.ok()) << id.error().message;
  EXPECT_EQ(id.value().vm_id, "vm-1");
  peer_send(hello_frame() + pong_frame(1));
  auto rtt = ch.value()->ping(Clock::now() + 2s);
  ASSERT_TRUE(rtt.ok()) << rtt.error().message;
  EXPECT_EQ(ch.value()->repeated_hellos(), 2u);
}

// A Hello of another boot is not a repeat: the guest restarted, the request cannot complete.
TEST_F(FakePeer, HelloOfAnotherBootIsAProtocolError) {
  peer_send(hello_frame() + pong_frame(0));
  auto ch = adopt(2s);
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  peer_send(hello_frame("boot-2") + result_frame(1, 0));
  ExecSpec spec;
  spec.language = schema::Language::SH;
  auto r = ch.value()->exec(spec, nullptr, Clock::now() + 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::protocol);
  EXPECT_NE(r.error().message.find("another boot"), std::string::npos) << r.error().message;
}

TEST(GuestChannelConnect, MissingSocketTimesOutAndBadPathIsRefused) {
  auto t0 = Clock::now();
  auto r = GuestChannel::connect("/tmp/nv-guest-test-no-such-dir/sock", ChannelKind::unix_stream,
                                 6000, Clock::now() + 300ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ChannelErrc::timeout) << r.error().message;
  EXPECT_LT(Clock::now() - t0, 1500ms);
  auto b = GuestChannel::connect(std::string(200, 'x'), ChannelKind::unix_stream, 6000,
                                 Clock::now() + 1s);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, ChannelErrc::bad_argument);
}

}  // namespace
}  // namespace nv::guest
