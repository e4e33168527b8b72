#include "keyline/protocol/frame.hpp"

#include "keyline/protocol/crc32c.hpp"

namespace keyline::station::protocol {

bool encode_frame(const Frame& f, std::vector<std::uint8_t>& out) {
  if (f.payload.size() > kMaxPayload) return false;
  std::vector<std::uint8_t> body;
  body.reserve(kHeaderSize + f.payload.size() + kCrcSize);
  const auto len = static_cast<std::uint16_t>(f.payload.size());
  body.push_back(f.version);
  body.push_back(f.type);
  body.push_back(static_cast<std::uint8_t>(f.seq >> 8));
  body.push_back(static_cast<std::uint8_t>(f.seq));
  body.push_back(static_cast<std::uint8_t>(len >> 8));
  body.push_back(static_cast<std::uint8_t>(len));
  body.insert(body.end(), f.payload.begin(), f.payload.end());
  const std::uint32_t crc = crc32c(body);
  for (int shift = 24; shift >= 0; shift -= 8) body.push_back(static_cast<std::uint8_t>(crc >> shift));
  out.push_back(0);
  cobs_encode(body, out);
  out.push_back(0);
  return true;
}

std::string_view to_string(FrameError e) noexcept {
  switch (e) {
    case FrameError::none:
      return "no error";
    case FrameError::oversize:
      return "frame longer than the protocol maximum";
    case FrameError::bad_cobs:
      return "malformed COBS encoding";
    case FrameError::too_short:
      return "frame shorter than header and CRC";
    case FrameError::length_mismatch:
      return "payload length field disagrees with the frame size";
    case FrameError::bad_crc:
      return "CRC-32C mismatch";
  }
  return "unknown frame error";
}

FrameError parse_body(std::span<const std::uint8_t> body, Frame& out) {
  if (body.size() < kHeaderSize + kCrcSize) return FrameError::too_short;
  const std::size_t len = (std::size_t{body[4]} << 8) | body[5];
  if (len != body.size() - kHeaderSize - kCrcSize) return FrameError::length_mismatch;
  const std::size_t crc_at = body.size() - kCrcSize;
  const std::uint32_t want = (std::uint32_t{body[crc_at]} << 24) | (std::uint32_t{body[crc_at + 1]} << 16) |
                             (std::uint32_t{body[crc_at + 2]} << 8) | std::uint32_t{body[crc_at + 3]};
  if (crc32c(body.first(crc_at)) != want) return FrameError::bad_crc;
  out.version = body[0];
  out.type = body[1];
  out.seq = static_cast<std::uint16_t>((body[2] << 8) | body[3]);
  out.payload.assign(body.begin() + kHeaderSize, body.begin() + static_cast<std::ptrdiff_t>(crc_at));
  return FrameError::none;
}

void FrameDecoder::reset() noexcept {
  block_.clear();
  overflow_ = false;
}

void FrameDecoder::finish_block(std::vector<Decoded>& out) {
  if (overflow_) {
    out.push_back({FrameError::oversize, {}});
    reset();
    return;
  }
  if (block_.empty()) return;  // idle delimiter (or the leading 0x00 of a frame)
  Decoded d;
  if (!cobs_decode(block_, body_))
    d.error = FrameError::bad_cobs;
  else
    d.error = parse_body(body_, d.frame);
  out.push_back(std::move(d));
  block_.clear();
}

void FrameDecoder::feed(std::span<const std::uint8_t> bytes, std::vector<Decoded>& out) {
  for (std::uint8_t b : bytes) {
    if (b == 0) {
      finish_block(out);
      continue;
    }
    if (overflow_) continue;
    if (block_.size() >= kMaxEncoded) {
      overflow_ = true;
      block_.clear();
      continue;
    }
    block_.push_back(b);
  }
}

}  // namespace keyline::station::protocol
