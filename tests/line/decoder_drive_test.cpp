// A deterministic fuzz driver for the frame decoder (runs under g++ and the
// sanitizers in every test run; the libFuzzer target fuzz_frame_decoder
// explores further). Random bytes, mutated valid frames and valid frames
// interleaved with garbage, for a fixed number of rounds from a fixed seed: the
// same inputs on every machine, however fast.
#include <gtest/gtest.h>

#include <random>

#include "keyline/protocol/frame.hpp"
#include "keyline/protocol/messages.hpp"

using namespace keyline;
using namespace keyline::station::protocol;

namespace {

std::vector<std::uint8_t> random_frame(std::mt19937_64& rng, std::uint16_t seq) {
  Frame f;
  f.type = static_cast<std::uint8_t>(rng());
  f.seq = seq;
  f.payload.resize(rng() % 600);
  for (auto& b : f.payload) b = (rng() % 5 == 0) ? 0 : static_cast<std::uint8_t>(rng());
  std::vector<std::uint8_t> out;
  encode_frame(f, out);
  return out;
}

// Exercise the message decoders too: they must reject, never crash.
void decode_payloads(const Frame& f) {
  (void)decode_info(f.payload);
  (void)decode_status(f.payload);
  (void)decode_error(f.payload);
  (void)decode_digest(f.payload);
  (void)decode_dps_settings(f.payload);
  (void)decode_keygen_request(f.payload);
  (void)decode_write_request(f.payload);
  (void)decode_slot_request(f.payload);
  (void)decode_challenge_request(f.payload);
}

}  // namespace

TEST(FrameDecoderDrive, RandomAndMutatedInput) {
  constexpr std::uint64_t kRounds = 20000;
  std::mt19937_64 rng(20261126);
  std::uint64_t rounds = 0, recovered = 0, planted = 0;
  FrameDecoder d;
  std::vector<Decoded> out;
  while (rounds < kRounds) {
    ++rounds;
    std::vector<std::uint8_t> stream;
    // Garbage (no zeros, so it cannot fake a delimiter mid-way), a mutated
    // frame, then a clean frame whose seq we look for.
    std::size_t junk = rng() % 300;
    for (std::size_t i = 0; i < junk; ++i) stream.push_back(static_cast<std::uint8_t>(rng() % 255 + 1));
    auto mutated = random_frame(rng, 0xFFFF);
    for (int k = 0, n = static_cast<int>(rng() % 4) + 1; k < n; ++k) {
      std::size_t at = rng() % mutated.size();
      switch (rng() % 3) {
        case 0:
          mutated[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          mutated.erase(mutated.begin() + static_cast<std::ptrdiff_t>(at));
          break;
        default:
          mutated.insert(mutated.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng()));
          break;
      }
      if (mutated.empty()) break;
    }
    stream.insert(stream.end(), mutated.begin(), mutated.end());
    const auto seq = static_cast<std::uint16_t>(rounds % 60000);
    auto clean = random_frame(rng, seq);
    stream.insert(stream.end(), clean.begin(), clean.end());
    ++planted;
    // Feed in random pieces.
    out.clear();
    for (std::size_t off = 0; off < stream.size();) {
      std::size_t n = std::min<std::size_t>(stream.size() - off, rng() % 64 + 1);
      d.feed(std::span(stream).subspan(off, n), out);
      off += n;
    }
    bool found = false;
    for (auto& x : out) {
      if (x.error != FrameError::none) continue;
      decode_payloads(x.frame);
      if (x.frame.seq == seq) found = true;
    }
    if (found) ++recovered;
    // Pure random bytes (with zeros) now and then.
    if (rounds % 8 == 0) {
      std::vector<std::uint8_t> noise(rng() % 2000);
      for (auto& b : noise) b = static_cast<std::uint8_t>(rng());
      out.clear();
      d.feed(noise, out);
      for (auto& x : out)
        if (x.error == FrameError::none) decode_payloads(x.frame);
    }
    ASSERT_LE(d.buffered(), kMaxEncoded);
  }
  // Every clean frame after garbage and a damaged frame is recovered: its
  // leading delimiter ends whatever came before it.
  EXPECT_EQ(recovered, planted) << "rounds " << rounds;
}
