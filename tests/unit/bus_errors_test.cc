// bus_errors_test.cc — typed Errors: code names match common.capnp, out-of-range codes are
// handled, and Errors survive the Cap'n Proto round trip.
#include <capnp/message.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>

#include "common/error.h"

namespace nv {
namespace {

TEST(ErrorCodes, NamesMatchTheSchema) {
  EXPECT_EQ(code_name(ErrorCode::UNSET), "unset");
  EXPECT_EQ(code_name(ErrorCode::MALFORMED_MESSAGE), "malformedMessage");
  EXPECT_EQ(code_name(ErrorCode::OVERSIZED_FRAME), "oversizedFrame");
  EXPECT_EQ(code_name(ErrorCode::UNSUPPORTED_VERSION), "unsupportedVersion");
  EXPECT_EQ(code_name(ErrorCode::NO_WORKER), "noWorker");
  EXPECT_EQ(code_name(ErrorCode::WORKER_LOST), "workerLost");
  EXPECT_EQ(code_name(ErrorCode::TIMED_OUT), "timedOut");
  EXPECT_EQ(code_name(ErrorCode::SHUTTING_DOWN), "shuttingDown");
  EXPECT_EQ(code_name(ErrorCode::BROKER_LOST), "brokerLost");
  EXPECT_EQ(code_name(ErrorCode::TIER_UNAVAILABLE), "tierUnavailable");
  EXPECT_EQ(code_name(ErrorCode::EGRESS_UNENFORCED), "egressUnenforced");
}

TEST(ErrorCodes, OutOfRangeCodes) {
  // The last code the schema defines is valid, the one after it is not (codes are added over
  // time, so the bound comes from the schema, not from a name here).
  auto count = static_cast<uint16_t>(capnp::Schema::from<ErrorCode>().getEnumerants().size());
  EXPECT_TRUE(valid_code(static_cast<uint16_t>(ErrorCode::SHUTTING_DOWN)));
  EXPECT_TRUE(valid_code(static_cast<uint16_t>(ErrorCode::BROKER_LOST)));
  EXPECT_TRUE(valid_code(static_cast<uint16_t>(ErrorCode::EGRESS_UNENFORCED)));
  EXPECT_TRUE(valid_code(count - 1));
  EXPECT_FALSE(valid_code(count));
  EXPECT_EQ(code_name(static_cast<ErrorCode>(999)), "code999");
}

TEST(ErrorCodes, ToStringNamesServiceAndCode) {
  auto e = make_error(ErrorCode::TIMED_OUT, "no worker answered in 5000 ms", true);
  EXPECT_EQ(e.to_string(), "timedOut: no worker answered in 5000 ms");
  e.service = "exec";
  EXPECT_EQ(e.to_string(), "exec: timedOut: no worker answered in 5000 ms");
}

TEST(ErrorCodes, CapnpRoundTrip) {
  Error e{ErrorCode::WORKER_LOST, "worker went away", true, "orchestrator"};
  capnp::MallocMessageBuilder mb;
  e.to_capnp(mb.initRoot<schema::Error>());
  auto back = Error::from_capnp(mb.getRoot<schema::Error>().asReader());
  EXPECT_EQ(back.code, ErrorCode::WORKER_LOST);
  EXPECT_EQ(back.message, "worker went away");
  EXPECT_TRUE(back.retryable);
  EXPECT_EQ(back.service, "orchestrator");
  // overloaded carries the queue length and the estimated wait.
  Error o = make_error(ErrorCode::OVERLOADED, "busy", true);
  o.queue_length = 196;
  o.estimated_wait_ms = 73500;
  capnp::MallocMessageBuilder mb2;
  o.to_capnp(mb2.initRoot<schema::Error>());
  auto ob = Error::from_capnp(mb2.getRoot<schema::Error>().asReader());
  EXPECT_EQ(ob.queue_length, 196u);
  EXPECT_EQ(ob.estimated_wait_ms, 73500u);
}

TEST(ErrorCodes, UnknownWireCodeBecomesInternal) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::Error>();
  b.setCode(static_cast<ErrorCode>(4242));
  b.setMessage("from the future");
  auto back = Error::from_capnp(b.asReader());
  EXPECT_EQ(back.code, ErrorCode::INTERNAL);
  EXPECT_EQ(back.message, "from the future");
}

TEST(ErrorCodes, ResultAndStatusCarryErrors) {
  Result<int> ok = 5;
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 5);
  Result<int> bad = make_error(ErrorCode::BAD_REQUEST, "no");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::BAD_REQUEST);
  Status fine;
  EXPECT_TRUE(fine);
  Status failed = make_error(ErrorCode::INTERNAL, "bug");
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message, "bug");
}

}  // namespace
}  // namespace nv
