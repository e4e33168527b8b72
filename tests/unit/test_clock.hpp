#pragma once
// Deterministic time and randomness for unit tests.
#include <cstdint>

#include "keyline/core/clock.hpp"

namespace keyline::test {

// A counter-based byte stream: reproducible, and distinct per call.
class CountingRng final : public Rng {
 public:
  void fill(std::span<unsigned char> out) override {
    for (auto& b : out) b = static_cast<unsigned char>((next_++ * 0x9E3779B1u) >> 13);
  }

 private:
  std::uint32_t next_ = 1;
};

inline TimePoint t0() { return TimePoint(std::chrono::seconds(1'780'000'000)); }  // 2026-05-28

}  // namespace keyline::test
