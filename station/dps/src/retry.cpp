#include "keyline/station/dps/retry.hpp"

#include <algorithm>
#include <thread>

namespace keyline::station::dps {

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty() || value.size() > 9) return std::nullopt;
  long long n = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return std::chrono::seconds(std::min<long long>(n, 300));
}

std::chrono::milliseconds Backoff::delay(int attempt, std::optional<std::chrono::seconds> retry_after) {
  long long base = policy_.initial.count();
  for (int i = 0; i < attempt && base < policy_.max.count(); ++i) base *= 2;
  base = std::min<long long>(base, policy_.max.count());
  std::uniform_int_distribution<long long> dist(base / 2, std::max(base / 2, base));
  long long ms = dist(rng_);
  if (retry_after) {
    long long floor = std::min<long long>(std::chrono::milliseconds(*retry_after).count(), policy_.max.count());
    ms = std::max(ms, floor);
  }
  return std::chrono::milliseconds(ms);
}

RateLimiter::RateLimiter(double per_minute, double burst)
    : per_minute_(per_minute),
      burst_(burst > 0 ? burst : std::max(1.0, per_minute / 60.0)),
      tokens_(burst_),
      last_(std::chrono::steady_clock::now()) {}

void RateLimiter::acquire() {
  if (per_minute_ <= 0) return;
  std::unique_lock lock(mu_);
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(burst_, tokens_ + elapsed * per_minute_ / 60.0);
    if (tokens_ >= 1.0) {
      tokens_ -= 1.0;
      return;
    }
    double wait_s = (1.0 - tokens_) * 60.0 / per_minute_;
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    lock.lock();
  }
}

void RateLimiter::drain() {
  std::lock_guard lock(mu_);
  tokens_ = 0;
  last_ = std::chrono::steady_clock::now();
}

}  // namespace keyline::station::dps
