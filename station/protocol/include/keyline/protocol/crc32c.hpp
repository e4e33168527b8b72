#pragma once
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and
// final XOR 0xFFFFFFFF), as used by iSCSI (RFC 3720 §B.4) and SCTP.
// Check value: crc32c("123456789") == 0xE3069283.
// This header is free of <expected> so the fuzz target can build it with clang 14.

#include <cstddef>
#include <cstdint>
#include <span>

namespace keyline::station::protocol {

// CRC of `data`. To continue a running CRC, pass the previous result as `crc`.
std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t crc = 0) noexcept;

}  // namespace keyline::station::protocol
