// Device protocol v1: CRC-32C, COBS, frames and typed messages.
#include <gtest/gtest.h>

#include <random>

#include "keyline/protocol/cobs.hpp"
#include "keyline/protocol/crc32c.hpp"
#include "keyline/protocol/frame.hpp"
#include "keyline/protocol/messages.hpp"

using namespace keyline;
using namespace keyline::station::protocol;

namespace {

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<std::uint8_t> wire_of(std::uint8_t type, std::uint16_t seq, std::vector<std::uint8_t> payload) {
  Frame f;
  f.type = type;
  f.seq = seq;
  f.payload = std::move(payload);
  std::vector<std::uint8_t> out;
  EXPECT_TRUE(encode_frame(f, out));
  return out;
}

std::vector<Decoded> decode_all(const std::vector<std::uint8_t>& stream) {
  FrameDecoder d;
  std::vector<Decoded> out;
  d.feed(stream, out);
  return out;
}

}  // namespace

TEST(Crc32c, StandardCheckValue) {
  EXPECT_EQ(crc32c(bytes_of("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c({}), 0u);
  // Incremental use gives the same result as one pass.
  auto all = bytes_of("123456789");
  EXPECT_EQ(crc32c(std::span(all).subspan(4), crc32c(std::span(all).first(4))), 0xE3069283u);
  // RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA.
  std::vector<std::uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
}

TEST(Cobs, EdgeCases) {
  struct Case {
    std::vector<std::uint8_t> in, enc;
  };
  std::vector<Case> cases = {
      {{}, {0x01}},
      {{0x00}, {0x01, 0x01}},
      {{0x00, 0x00}, {0x01, 0x01, 0x01}},
      {{0x11, 0x22, 0x00, 0x33}, {0x03, 0x11, 0x22, 0x02, 0x33}},
      {{0x11, 0x00}, {0x02, 0x11, 0x01}},
  };
  for (auto& c : cases) {
    std::vector<std::uint8_t> enc, dec;
    cobs_encode(c.in, enc);
    EXPECT_EQ(enc, c.enc);
    ASSERT_TRUE(cobs_decode(enc, dec));
    EXPECT_EQ(dec, c.in);
  }
  // 254 and 255 non-zero bytes: block boundaries.
  for (std::size_t n : {253u, 254u, 255u, 508u, 509u, 1000u}) {
    std::vector<std::uint8_t> in(n), enc, dec;
    for (std::size_t i = 0; i < n; ++i) in[i] = static_cast<std::uint8_t>(i % 255 + 1);
    cobs_encode(in, enc);
    EXPECT_LE(enc.size(), cobs_max_encoded(n));
    EXPECT_EQ(std::count(enc.begin(), enc.end(), 0), 0);
    ASSERT_TRUE(cobs_decode(enc, dec)) << n;
    EXPECT_EQ(dec, in) << n;
  }
  std::vector<std::uint8_t> enc254;
  cobs_encode(std::vector<std::uint8_t>(254, 0x42), enc254);
  EXPECT_EQ(enc254.front(), 0xFF);
  EXPECT_EQ(enc254.size(), 256u);
}

TEST(Cobs, RejectsMalformedBlocks) {
  std::vector<std::uint8_t> out;
  EXPECT_FALSE(cobs_decode(std::vector<std::uint8_t>{0x05, 0x11}, out));        // code past end
  EXPECT_FALSE(cobs_decode(std::vector<std::uint8_t>{0x03, 0x00, 0x11}, out));  // embedded zero
  EXPECT_FALSE(cobs_decode(std::vector<std::uint8_t>{0x00}, out));
}

TEST(Cobs, RandomRoundTrips) {
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    std::vector<std::uint8_t> in(rng() % 1200), enc, dec;
    for (auto& b : in) b = (rng() % 4 == 0) ? 0 : static_cast<std::uint8_t>(rng());
    cobs_encode(in, enc);
    ASSERT_TRUE(cobs_decode(enc, dec));
    ASSERT_EQ(dec, in);
  }
}

TEST(Frame, RoundTripAndLayout) {
  auto wire = wire_of(0x04, 0xBEEF, {1, 2, 0, 3});
  EXPECT_EQ(wire.front(), 0);
  EXPECT_EQ(wire.back(), 0);
  auto got = decode_all(wire);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].error, FrameError::none);
  EXPECT_EQ(got[0].frame.version, kProtocolVersion);
  EXPECT_EQ(got[0].frame.type, 0x04);
  EXPECT_EQ(got[0].frame.seq, 0xBEEF);
  EXPECT_EQ(got[0].frame.payload, (std::vector<std::uint8_t>{1, 2, 0, 3}));
  // Body layout: version, type, seq (BE), length (BE), payload, CRC (BE).
  std::vector<std::uint8_t> body;
  ASSERT_TRUE(cobs_decode(std::span(wire).subspan(1, wire.size() - 2), body));
  ASSERT_EQ(body.size(), 14u);
  EXPECT_EQ(body[0], 1);
  EXPECT_EQ(body[2], 0xBE);
  EXPECT_EQ(body[3], 0xEF);
  EXPECT_EQ(body[4], 0);
  EXPECT_EQ(body[5], 4);
  std::uint32_t crc = crc32c(std::span(body).first(10));
  EXPECT_EQ(body[10], crc >> 24);
  EXPECT_EQ(body[13], crc & 0xFF);
}

TEST(Frame, ByteAtATimeAndEmptyPayload) {
  auto wire = wire_of(0x01, 1, {});
  FrameDecoder d;
  std::vector<Decoded> out;
  for (auto b : wire) d.feed(std::span(&b, 1), out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].error, FrameError::none);
  EXPECT_TRUE(out[0].frame.payload.empty());
}

TEST(Frame, ResynchronisesAfterGarbage) {
  std::vector<std::uint8_t> stream = {0x13, 0x37, 0xFF, 0x42};  // noise without delimiter
  auto a = wire_of(0x01, 5, {9});
  stream.insert(stream.end(), a.begin(), a.end());
  auto got = decode_all(stream);
  // The noise is flushed by the frame's leading delimiter and reported.
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(got[0].error, FrameError::none);
  EXPECT_EQ(got[1].error, FrameError::none);
  EXPECT_EQ(got[1].frame.seq, 5);
}

TEST(Frame, LostByteCostsOnlyThatFrame) {
  auto a = wire_of(0x02, 1, std::vector<std::uint8_t>(40, 0x55));
  auto b = wire_of(0x03, 2, {1, 2, 3});
  for (std::size_t lost = 1; lost + 1 < a.size(); ++lost) {
    std::vector<std::uint8_t> stream(a);
    stream.erase(stream.begin() + static_cast<std::ptrdiff_t>(lost));
    stream.insert(stream.end(), b.begin(), b.end());
    auto got = decode_all(stream);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.back().error, FrameError::none) << lost;
    EXPECT_EQ(got.back().frame.seq, 2) << lost;
    for (std::size_t i = 0; i + 1 < got.size(); ++i) EXPECT_NE(got[i].error, FrameError::none);
  }
  // Even the trailing delimiter of `a` lost: `b`'s leading one saves `b`.
  std::vector<std::uint8_t> stream(a.begin(), a.end() - 1);
  stream.insert(stream.end(), b.begin(), b.end());
  auto got = decode_all(stream);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].error, FrameError::none);
  EXPECT_EQ(got[1].frame.seq, 2);
}

TEST(Frame, FlippedBitIsACrcError) {
  auto a = wire_of(0x05, 3, {1, 2, 3, 4, 5, 6, 7, 8});
  a[8] ^= 0x10;
  auto got = decode_all(a);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].error == FrameError::bad_crc || got[0].error == FrameError::bad_cobs ||
              got[0].error == FrameError::length_mismatch);
}

TEST(Frame, OversizeIsRefusedAndBounded) {
  Frame f;
  f.payload.assign(kMaxPayload + 1, 1);
  std::vector<std::uint8_t> out;
  EXPECT_FALSE(encode_frame(f, out));
  EXPECT_TRUE(out.empty());
  f.payload.resize(kMaxPayload);
  EXPECT_TRUE(encode_frame(f, out));
  EXPECT_LE(out.size(), kMaxWireFrame);
  EXPECT_EQ(decode_all(out).at(0).error, FrameError::none);
  // A stream of non-zero bytes longer than any frame: dropped, memory bounded,
  // and the next frame still decodes.
  FrameDecoder d;
  std::vector<Decoded> got;
  std::vector<std::uint8_t> junk(kMaxEncoded * 3, 0x7A);
  d.feed(junk, got);
  EXPECT_LE(d.buffered(), kMaxEncoded);
  auto b = wire_of(0x08, 9, {});
  d.feed(b, got);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].error, FrameError::oversize);
  EXPECT_EQ(got[1].frame.seq, 9);
}

TEST(Frame, ShortAndLengthMismatch) {
  Frame f;
  std::vector<std::uint8_t> body = {1, 1, 0, 0, 0, 5, 1, 2, 0, 0, 0, 0};
  EXPECT_EQ(parse_body(std::span(body).first(9), f), FrameError::too_short);
  EXPECT_EQ(parse_body(body, f), FrameError::length_mismatch);
}
