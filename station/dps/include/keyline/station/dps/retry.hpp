#pragma once
// Retries and the client-side quota (dps-api.md §1.6).

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>

namespace keyline::station::dps {

// Retry-After in whole seconds (RFC 9110 delay-seconds). HTTP-dates and
// garbage give nullopt; the value is clamped to [0, 300] as the C SDK does.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value);

struct BackoffPolicy {
  std::chrono::milliseconds initial{200};
  std::chrono::milliseconds max{30000};
  int max_attempts = 8;  // total tries, the first included
};

// Full-jitter exponential backoff: attempt n (0-based) waits a uniform
// random time in [base/2, base] with base = min(max, initial·2^n); a
// Retry-After from the service is a floor (bounded by policy.max).
class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy, std::uint64_t seed = std::random_device{}())
      : policy_(policy), rng_(seed) {}
  std::chrono::milliseconds delay(int attempt, std::optional<std::chrono::seconds> retry_after);
  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
};

// Token bucket: `per_minute` operations per minute, bursts up to `burst`
// (default: one second's worth, at least 1). 0 = unlimited. Thread-safe.
class RateLimiter {
 public:
  explicit RateLimiter(double per_minute, double burst = 0);
  // Blocks until a token is available, then takes it.
  void acquire();
  // Empties the bucket (after the service said 429).
  void drain();
  double per_minute() const { return per_minute_; }

 private:
  double per_minute_;
  double burst_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
  std::mutex mu_;
};

}  // namespace keyline::station::dps
