// token_bucket.h — a token bucket rate limiter with an injected clock.
//
// Used wherever NeuroVisor bounds a rate: bytes/messages from a guest, requests to the LLM,
// requests per client. Not thread-safe; guard it with the owner's lock when shared.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>

namespace nv {

class TokenBucket {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // capacity: the most tokens that can be spent in one burst; rate_per_s: refill speed.
  TokenBucket(
      double capacity, double rate_per_s,
      Clock clock = [] { return std::chrono::steady_clock::now(); })
      : capacity_(capacity),
        rate_(rate_per_s),
        tokens_(capacity),
        clock_(std::move(clock)),
        last_(clock_()) {}

  // Takes `n` tokens if they are there now; returns false (and takes nothing) otherwise.
  bool try_take(double n = 1.0) {
    refill();
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }

  // Seconds until `n` tokens will be there (0 when they are there now; inf-like when n > capacity).
  double seconds_until(double n = 1.0) {
    refill();
    if (tokens_ >= n) return 0.0;
    if (rate_ <= 0.0 || n > capacity_) return 1e9;
    return (n - tokens_) / rate_;
  }

  // Returns `n` tokens taken for something that turned out not to count (e.g. bytes the host
  // asked for itself); the bucket never holds more than its capacity.
  void give_back(double n) { tokens_ = std::min(capacity_, tokens_ + std::max(0.0, n)); }

  double available() {
    refill();
    return tokens_;
  }
  double capacity() const { return capacity_; }
  double rate() const { return rate_; }

 private:
  void refill() {
    auto now = clock_();
    double dt = std::chrono::duration<double>(now - last_).count();
    if (dt > 0) {
      tokens_ = std::min(capacity_, tokens_ + dt * rate_);
      last_ = now;
    }
  }

  double capacity_;
  double rate_;
  double tokens_;
  Clock clock_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace nv
