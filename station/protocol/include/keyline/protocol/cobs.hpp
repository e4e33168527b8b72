#pragma once
// Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): removes every
// 0x00 from a block so 0x00 can delimit frames on a byte stream. Overhead is
// one byte per 254 bytes of input, plus one.
// This header is free of <expected> so the fuzz target can build it with clang 14.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace keyline::station::protocol {

// Appends the COBS encoding of `in` (no delimiter) to `out`.
void cobs_encode(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);

// Decodes one COBS block (delimiter already stripped) into `out` (replaced).
// Returns false when the block is malformed: it contains 0x00, or a code byte
// points past the end of the block.
bool cobs_decode(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);

// Largest encoding of `n` input bytes (without the delimiter).
constexpr std::size_t cobs_max_encoded(std::size_t n) { return n + n / 254 + 1; }

}  // namespace keyline::station::protocol
