#pragma once
// Device protocol v1 framing (docs/device-protocol.md §2).
//
//   wire   = 0x00 COBS(body) 0x00
//   body   = version:u8 type:u8 seq:u16 length:u16 payload[length] crc:u32
//   crc    = CRC-32C over version..payload; all integers big-endian
//
// The same byte stream is used on serial links and inside USB bulk
// transfers. The leading 0x00 ends whatever garbage preceded the frame, so a
// receiver resynchronises at the next frame after noise or a lost byte.
// This header is free of <expected> so the fuzz target can build it with clang 14.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "keyline/protocol/cobs.hpp"

namespace keyline::station::protocol {

inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kHeaderSize = 6;
inline constexpr std::size_t kCrcSize = 4;
inline constexpr std::size_t kMaxPayload = 16384;
inline constexpr std::size_t kMaxBody = kHeaderSize + kMaxPayload + kCrcSize;
// Largest COBS block between delimiters; anything longer is discarded.
inline constexpr std::size_t kMaxEncoded = cobs_max_encoded(kMaxBody);
// Largest number of bytes encode_frame() produces (both delimiters included).
inline constexpr std::size_t kMaxWireFrame = kMaxEncoded + 2;

struct Frame {
  std::uint8_t version = kProtocolVersion;
  std::uint8_t type = 0;
  std::uint16_t seq = 0;
  std::vector<std::uint8_t> payload;
};

// Appends the wire form of `f` to `out`. Returns false (and appends nothing)
// when the payload is longer than kMaxPayload.
bool encode_frame(const Frame& f, std::vector<std::uint8_t>& out);

enum class FrameError : std::uint8_t {
  none,
  oversize,         // more than kMaxEncoded bytes without a delimiter
  bad_cobs,         // the block is not valid COBS
  too_short,        // shorter than header + CRC
  length_mismatch,  // header length disagrees with the block size
  bad_crc,          // CRC-32C mismatch
};
std::string_view to_string(FrameError e) noexcept;

// A frame, or the reason a block between delimiters was dropped. Frames
// with a protocol version other than 1 are still delivered (the caller
// answers them with unsupported_version).
struct Decoded {
  FrameError error = FrameError::none;
  Frame frame;  // valid when error == none
};

// Streaming decoder: feed it whatever the link delivered, in any pieces.
// Memory is bounded by kMaxEncoded whatever the input.
class FrameDecoder {
 public:
  // Appends every frame (or error) completed by `bytes` to `out`.
  void feed(std::span<const std::uint8_t> bytes, std::vector<Decoded>& out);
  // Forgets a partial frame (e.g. before a retry on a fresh link).
  void reset() noexcept;
  std::size_t buffered() const noexcept { return block_.size(); }

 private:
  void finish_block(std::vector<Decoded>& out);
  std::vector<std::uint8_t> block_;
  std::vector<std::uint8_t> body_;
  bool overflow_ = false;
};

// Parses one decoded body (COBS already removed). Exposed for tests.
FrameError parse_body(std::span<const std::uint8_t> body, Frame& out);

}  // namespace keyline::station::protocol
