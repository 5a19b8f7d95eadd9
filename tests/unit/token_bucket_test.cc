// token_bucket_test.cc — the token bucket with an injected clock: bursts up to capacity, rejects
// the excess, refills at the rate, never beyond capacity.
#include <gtest/gtest.h>

#include <chrono>

#include "common/token_bucket.h"

namespace nv {
namespace {

using namespace std::chrono_literals;

struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::steady_clock::time_point{} + 1000s};
  TokenBucket::Clock fn() {
    return [this] { return now; };
  }
};

TEST(TokenBucket, RejectsTheExcessOfABurst) {
  FakeClock clock;
  TokenBucket b(3, 1.0, clock.fn());
  EXPECT_TRUE(b.try_take());
  EXPECT_TRUE(b.try_take());
  EXPECT_TRUE(b.try_take());
  EXPECT_FALSE(b.try_take());
  EXPECT_FALSE(b.try_take());
  EXPECT_DOUBLE_EQ(b.available(), 0.0);
}

TEST(TokenBucket, AdmitsTheRefill) {
  FakeClock clock;
  TokenBucket b(3, 2.0, clock.fn());  // 2 tokens per second
  ASSERT_TRUE(b.try_take(3));
  EXPECT_FALSE(b.try_take());
  clock.now += 499ms;
  EXPECT_FALSE(b.try_take());  // 0.998 tokens
  clock.now += 1ms;
  EXPECT_TRUE(b.try_take());  // exactly one
  EXPECT_FALSE(b.try_take());
  clock.now += 1s;
  EXPECT_TRUE(b.try_take(2));
  EXPECT_FALSE(b.try_take());
}

TEST(TokenBucket, RefillIsCappedAtCapacity) {
  FakeClock clock;
  TokenBucket b(5, 100.0, clock.fn());
  ASSERT_TRUE(b.try_take(5));
  clock.now += 1h;
  EXPECT_DOUBLE_EQ(b.available(), 5.0);
  EXPECT_TRUE(b.try_take(5));
  EXPECT_FALSE(b.try_take(0.5));
}

TEST(TokenBucket, FailedTakeTakesNothing) {
  FakeClock clock;
  TokenBucket b(4, 1.0, clock.fn());
  ASSERT_TRUE(b.try_take(3));
  EXPECT_FALSE(b.try_take(2));
  EXPECT_TRUE(b.try_take(1));
}

TEST(TokenBucket, SecondsUntilTokensArrive) {
  FakeClock clock;
  TokenBucket b(10, 4.0, clock.fn());
  EXPECT_DOUBLE_EQ(b.seconds_until(1), 0.0);
  ASSERT_TRUE(b.try_take(10));
  EXPECT_DOUBLE_EQ(b.seconds_until(2), 0.5);
  EXPECT_GE(b.seconds_until(11), 1e6);  // more than capacity: never
  TokenBucket stopped(1, 0.0, clock.fn());
  ASSERT_TRUE(stopped.try_take());
  EXPECT_GE(stopped.seconds_until(1), 1e6);
}

TEST(TokenBucket, ClockGoingBackwardsAddsNothing) {
  FakeClock clock;
  TokenBucket b(2, 1.0, clock.fn());
  ASSERT_TRUE(b.try_take(2));
  clock.now -= 10s;
  EXPECT_FALSE(b.try_take());
}

}  // namespace
}  // namespace nv
