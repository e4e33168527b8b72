#pragma once
// Device protocol v1 typed messages (docs/device-protocol.md §4). Every
// request type T is answered by type T|0x80 with the same sequence number,
// or by an ERROR reply (0x7F). Integers are big-endian. Decoders check every
// length against the bytes present and return an input error naming the
// message and the field; they never read past the payload.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/protocol/frame.hpp"

namespace keyline::station::protocol {

enum class MsgType : std::uint8_t {
  info = 0x01,
  keygen = 0x02,
  get_ek = 0x03,
  write = 0x04,
  read_hash = 0x05,
  challenge = 0x06,
  lock = 0x07,
  status = 0x08,
  error = 0x7F,  // device -> station only
};
inline constexpr std::uint8_t kResponseBit = 0x80;
constexpr std::uint8_t response_type(MsgType t) { return static_cast<std::uint8_t>(t) | kResponseBit; }
std::string_view to_string(MsgType t) noexcept;
// True for the request types above (not error).
bool is_request_type(std::uint8_t type) noexcept;

enum class Slot : std::uint8_t {
  cert_chain = 1,     // PEM certificates, leaf first
  private_key = 2,    // PKCS#8 DER, for station-generated keys
  symmetric_key = 3,  // raw bytes (16..64)
  dps_settings = 4,   // encode_dps_settings()
};
std::string_view to_string(Slot s) noexcept;
std::optional<Slot> slot_from_byte(std::uint8_t b) noexcept;
std::optional<Slot> slot_from_name(std::string_view name) noexcept;

// Error codes in ERROR replies (u16 on the wire).
enum class DeviceError : std::uint16_t {
  malformed = 1,            // payload does not parse
  unknown_message = 2,      // type not implemented
  unsupported_version = 3,  // frame version is not 1
  locked = 4,               // LOCK was done; KEYGEN/WRITE refused
  slot_empty = 5,           // READ_HASH of an empty slot
  bad_slot = 6,             // slot id unknown or not supported by this device
  no_key = 7,               // CHALLENGE before a device key exists
  no_tpm = 8,               // GET_EK on a device without a TPM
  too_large = 9,            // slot data larger than the device stores
  refused = 10,             // the device declines (e.g. LOCK not allowed now)
  internal = 11,            // device-side failure (flash, RNG, crypto)
};
std::string_view to_string(DeviceError e) noexcept;

// INFO capability bits.
namespace capability {
inline constexpr std::uint8_t keygen = 0x01;          // KEYGEN: on-device P-256 key
inline constexpr std::uint8_t tpm = 0x02;             // GET_EK: a TPM 2.0 is present
inline constexpr std::uint8_t symmetric_slot = 0x04;  // WRITE symmetric_key supported
}  // namespace capability

struct Info {
  std::uint8_t protocol_version = kProtocolVersion;
  std::uint8_t capabilities = 0;
  std::string serial_number;     // 1..64 printable ASCII
  std::string model;             // 1..64 printable ASCII
  std::string firmware_version;  // 0..64 printable ASCII
  Bytes hardware_id;             // 0..64 bytes, e.g. a chip unique id
};

struct DeviceStatus {
  bool locked = false;
  bool has_device_key = false;
  std::uint8_t slots_present = 0;  // bit (1 << slot) set when the slot holds data
  bool has(Slot s) const { return (slots_present >> static_cast<unsigned>(s)) & 1u; }
};

struct DpsSettings {
  std::string id_scope;
  std::string global_endpoint;
  std::string registration_id;
};

struct ErrorReply {
  DeviceError code = DeviceError::internal;
  std::string text;  // 0..255 bytes, for humans
};

using Digest = std::array<unsigned char, 32>;

// Limits checked by encoders and decoders.
inline constexpr std::size_t kMaxText = 64;
inline constexpr std::size_t kMinNonce = 16;
inline constexpr std::size_t kMaxNonce = 64;
inline constexpr std::size_t kMaxCn = 64;

// ---- payload encoders (requests) ----
Bytes encode_keygen_request(std::string_view common_name);
Bytes encode_write_request(Slot slot, ByteView data);
Bytes encode_slot_request(Slot slot);  // READ_HASH
Bytes encode_challenge_request(ByteView nonce);
// ---- payload decoders (device side) ----
Result<std::string> decode_keygen_request(ByteView p);
struct WriteRequest {
  std::uint8_t slot = 0;  // raw: the device answers bad_slot for unknown ids
  Bytes data;
};
Result<WriteRequest> decode_write_request(ByteView p);
Result<std::uint8_t> decode_slot_request(ByteView p);
Result<Bytes> decode_challenge_request(ByteView p);

// ---- responses ----
Bytes encode_info(const Info& info);
Result<Info> decode_info(ByteView p);
Bytes encode_status(const DeviceStatus& s);
Result<DeviceStatus> decode_status(ByteView p);
Bytes encode_digest(const Digest& d);  // WRITE and READ_HASH replies
Result<Digest> decode_digest(ByteView p);
Bytes encode_error(const ErrorReply& e);
Result<ErrorReply> decode_error(ByteView p);
// KEYGEN (CSR DER), GET_EK (TPM2B_PUBLIC) and CHALLENGE (DER ECDSA signature)
// replies carry their bytes as the whole payload; LOCK's reply is empty.

// DPS settings slot content: three u16-length-prefixed UTF-8 strings.
Bytes encode_dps_settings(const DpsSettings& s);
Result<DpsSettings> decode_dps_settings(ByteView p);

// What the device signs for CHALLENGE: "KEYLINE-CHALLENGE-V1" || nonce,
// with ECDSA P-256 / SHA-256 (the prefix keeps the signature from being
// usable as anything else).
Bytes challenge_message(ByteView nonce);

}  // namespace keyline::station::protocol
