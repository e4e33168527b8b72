#include "keyline/protocol/messages.hpp"

#include <algorithm>

#include "wire.hpp"

namespace keyline::station::protocol {

using wire::Reader;

std::string_view to_string(MsgType t) noexcept {
  switch (t) {
    case MsgType::info:
      return "INFO";
    case MsgType::keygen:
      return "KEYGEN";
    case MsgType::get_ek:
      return "GET_EK";
    case MsgType::write:
      return "WRITE";
    case MsgType::read_hash:
      return "READ_HASH";
    case MsgType::challenge:
      return "CHALLENGE";
    case MsgType::lock:
      return "LOCK";
    case MsgType::status:
      return "STATUS";
    case MsgType::error:
      return "ERROR";
  }
  return "UNKNOWN";
}

bool is_request_type(std::uint8_t type) noexcept {
  return type >= static_cast<std::uint8_t>(MsgType::info) &&
         type <= static_cast<std::uint8_t>(MsgType::status);
}

std::string_view to_string(Slot s) noexcept {
  switch (s) {
    case Slot::cert_chain:
      return "cert-chain";
    case Slot::private_key:
      return "private-key";
    case Slot::symmetric_key:
      return "symmetric-key";
    case Slot::dps_settings:
      return "dps-settings";
  }
  return "unknown-slot";
}

std::optional<Slot> slot_from_byte(std::uint8_t b) noexcept {
  if (b >= 1 && b <= 4) return static_cast<Slot>(b);
  return std::nullopt;
}

std::optional<Slot> slot_from_name(std::string_view name) noexcept {
  for (std::uint8_t b = 1; b <= 4; ++b)
    if (to_string(static_cast<Slot>(b)) == name) return static_cast<Slot>(b);
  return std::nullopt;
}

std::string_view to_string(DeviceError e) noexcept {
  switch (e) {
    case DeviceError::malformed:
      return "malformed request";
    case DeviceError::unknown_message:
      return "unknown message type";
    case DeviceError::unsupported_version:
      return "unsupported protocol version";
    case DeviceError::locked:
      return "device is locked";
    case DeviceError::slot_empty:
      return "slot is empty";
    case DeviceError::bad_slot:
      return "unknown or unsupported slot";
    case DeviceError::no_key:
      return "no device key";
    case DeviceError::no_tpm:
      return "no TPM";
    case DeviceError::too_large:
      return "data too large for the slot";
    case DeviceError::refused:
      return "refused by the device";
    case DeviceError::internal:
      return "device internal error";
  }
  return "unknown device error";
}

namespace {

bool printable(ByteView b) {
  return std::all_of(b.begin(), b.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7F; });
}

Result<std::string> text_field(Reader& r, std::string_view field, std::size_t min, std::string_view what) {
  KL_TRY(ByteView v, r.lp8(field, kMaxText));
  if (v.size() < min || !printable(v))
    return fail(Domain::input, std::string(what) + ": field '" + std::string(field) + "' must be " +
                                   std::to_string(min) + ".." + std::to_string(kMaxText) +
                                   " printable ASCII characters");
  return wire::str(v);
}

}  // namespace

Bytes encode_keygen_request(std::string_view common_name) {
  Bytes out;
  wire::put_lp8(out, wire::view(common_name.substr(0, kMaxCn)));
  return out;
}

Result<std::string> decode_keygen_request(ByteView p) {
  Reader r(p, "KEYGEN request");
  KL_TRY(std::string cn, text_field(r, "common_name", 1, "KEYGEN request"));
  KL_CHECK(r.end());
  return cn;
}

Bytes encode_write_request(Slot slot, ByteView data) {
  Bytes out;
  wire::put_u8(out, static_cast<std::uint8_t>(slot));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Result<WriteRequest> decode_write_request(ByteView p) {
  Reader r(p, "WRITE request");
  WriteRequest w;
  KL_TRY(w.slot, r.u8("slot"));
  ByteView rest = r.rest();
  w.data.assign(rest.begin(), rest.end());
  return w;
}

Bytes encode_slot_request(Slot slot) { return Bytes{static_cast<unsigned char>(slot)}; }

Result<std::uint8_t> decode_slot_request(ByteView p) {
  Reader r(p, "READ_HASH request");
  KL_TRY(std::uint8_t slot, r.u8("slot"));
  KL_CHECK(r.end());
  return slot;
}

Bytes encode_challenge_request(ByteView nonce) { return Bytes(nonce.begin(), nonce.end()); }

Result<Bytes> decode_challenge_request(ByteView p) {
  if (p.size() < kMinNonce || p.size() > kMaxNonce)
    return fail(Domain::input, "CHALLENGE request: the nonce is " + std::to_string(p.size()) +
                                   " bytes; it must be " + std::to_string(kMinNonce) + ".." +
                                   std::to_string(kMaxNonce));
  return Bytes(p.begin(), p.end());
}

Bytes encode_info(const Info& info) {
  Bytes out;
  wire::put_u8(out, info.protocol_version);
  wire::put_u8(out, info.capabilities);
  wire::put_lp8(out, wire::view(info.serial_number));
  wire::put_lp8(out, wire::view(info.model));
  wire::put_lp8(out, wire::view(info.firmware_version));
  wire::put_lp8(out, info.hardware_id);
  return out;
}

Result<Info> decode_info(ByteView p) {
  constexpr std::string_view what = "INFO reply";
  Reader r(p, what);
  Info info;
  KL_TRY(info.protocol_version, r.u8("protocol_version"));
  KL_TRY(info.capabilities, r.u8("capabilities"));
  KL_TRY(info.serial_number, text_field(r, "serial_number", 1, what));
  KL_TRY(info.model, text_field(r, "model", 1, what));
  KL_TRY(info.firmware_version, text_field(r, "firmware_version", 0, what));
  KL_TRY(ByteView hw, r.lp8("hardware_id", kMaxText));
  info.hardware_id.assign(hw.begin(), hw.end());
  KL_CHECK(r.end());
  return info;
}

Bytes encode_status(const DeviceStatus& s) {
  return Bytes{static_cast<unsigned char>(s.locked ? 1 : 0),
               static_cast<unsigned char>(s.has_device_key ? 1 : 0), s.slots_present};
}

Result<DeviceStatus> decode_status(ByteView p) {
  Reader r(p, "STATUS reply");
  DeviceStatus s;
  KL_TRY(std::uint8_t locked, r.u8("locked"));
  KL_TRY(std::uint8_t key, r.u8("has_device_key"));
  KL_TRY(s.slots_present, r.u8("slots_present"));
  KL_CHECK(r.end());
  if (locked > 1 || key > 1) return fail(Domain::input, "STATUS reply: flag bytes must be 0 or 1");
  s.locked = locked == 1;
  s.has_device_key = key == 1;
  return s;
}

Bytes encode_digest(const Digest& d) { return Bytes(d.begin(), d.end()); }

Result<Digest> decode_digest(ByteView p) {
  if (p.size() != 32)
    return fail(Domain::input, "digest reply: expected 32 bytes (SHA-256), got " + std::to_string(p.size()));
  Digest d;
  std::copy(p.begin(), p.end(), d.begin());
  return d;
}

Bytes encode_error(const ErrorReply& e) {
  Bytes out;
  wire::put_u16(out, static_cast<std::uint16_t>(e.code));
  wire::put_lp8(out, wire::view(std::string_view(e.text).substr(0, 255)));
  return out;
}

Result<ErrorReply> decode_error(ByteView p) {
  Reader r(p, "ERROR reply");
  ErrorReply e;
  KL_TRY(std::uint16_t code, r.u16("code"));
  KL_TRY(ByteView text, r.lp8("text", 255));
  KL_CHECK(r.end());
  e.code = static_cast<DeviceError>(code);
  e.text = wire::str(text);
  // Keep only printable characters: the text ends up in logs and messages.
  std::replace_if(
      e.text.begin(), e.text.end(), [](char c) { return c < 0x20 || c == 0x7F; }, '?');
  return e;
}

Bytes encode_dps_settings(const DpsSettings& s) {
  Bytes out;
  wire::put_lp16(out, wire::view(s.id_scope));
  wire::put_lp16(out, wire::view(s.global_endpoint));
  wire::put_lp16(out, wire::view(s.registration_id));
  return out;
}

Result<DpsSettings> decode_dps_settings(ByteView p) {
  Reader r(p, "DPS settings");
  DpsSettings s;
  KL_TRY(ByteView scope, r.lp16("id_scope", 256));
  KL_TRY(ByteView endpoint, r.lp16("global_endpoint", 1024));
  KL_TRY(ByteView reg, r.lp16("registration_id", 128));
  KL_CHECK(r.end());
  s.id_scope = wire::str(scope);
  s.global_endpoint = wire::str(endpoint);
  s.registration_id = wire::str(reg);
  return s;
}

Bytes challenge_message(ByteView nonce) {
  constexpr std::string_view kPrefix = "KEYLINE-CHALLENGE-V1";
  Bytes m(kPrefix.begin(), kPrefix.end());
  m.insert(m.end(), nonce.begin(), nonce.end());
  return m;
}

}  // namespace keyline::station::protocol
