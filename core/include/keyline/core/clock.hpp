#pragma once
// Time and randomness are injected (STYLE.md §5): issuance logic never reads
// the wall clock or the global RNG directly.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace keyline {

using TimePoint = std::chrono::sys_seconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  }
};

// A clock that says what it is told; for tests and reproducible demos.
class FixedClock final : public Clock {
 public:
  explicit FixedClock(TimePoint t) : t_(t) {}
  TimePoint now() const override { return t_; }
  void advance(std::chrono::seconds d) { t_ += d; }

 private:
  TimePoint t_;
};

class Rng {
 public:
  virtual ~Rng() = default;
  // Fills `out` with cryptographically strong random bytes. Thread-safe.
  virtual void fill(std::span<unsigned char> out) = 0;
};

// OpenSSL's DRBG (RAND_bytes); aborts on failure, which only happens when the
// OS cannot seed the generator -- issuing with bad randomness is worse.
class SystemRng final : public Rng {
 public:
  void fill(std::span<unsigned char> out) override;
};

// "2026-11-26T05:00:00Z"
std::string format_utc(TimePoint t);
// Parses "YYYY-MM-DDTHH:MM:SSZ"; nullopt when malformed.
std::optional<TimePoint> parse_utc(std::string_view text);

}  // namespace keyline
