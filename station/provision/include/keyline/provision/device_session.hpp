#pragma once
// provision::DeviceSession -- typed request/response with one device over a
// Link, speaking device protocol v1 (docs/device-protocol.md).
//
// Each call sends one request frame and waits for the reply with the same
// sequence number. When no valid reply arrives within the timeout, or a
// damaged frame (bad CRC/COBS) arrives instead, the *same* frame (same
// sequence number) is sent again, up to SessionOptions::max_attempts times;
// the device answers a repeated frame from its reply cache, so a retried
// KEYGEN does not make a second key and a retried WRITE stores nothing twice.
// Frames with another sequence number (late replies to earlier attempts)
// are dropped.
//
// Errors (all Domain::device):
//   * link::LinkErrc::disconnected -- the device went away (propagated as is;
//     test with link::is_disconnected());
//   * SessionErrc::timeout         -- no valid reply after every attempt;
//   * SessionErrc::bad_reply       -- a reply that does not parse;
//   * SessionErrc::hash_mismatch   -- WRITE stored something else;
//   * native code 1..255           -- the device's ERROR reply
//     (device_error() returns the DeviceError).
// Not thread-safe: one session per device, used by one worker.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/link/link.hpp"
#include "keyline/protocol/frame.hpp"
#include "keyline/protocol/messages.hpp"

namespace keyline::station::provision {

namespace proto = keyline::station::protocol;

enum class SessionErrc : std::int64_t {
  timeout = 1101,
  bad_reply = 1102,
  hash_mismatch = 1103,
};
bool has_code(const Error& e, SessionErrc code) noexcept;
// The device's error code when `e` came from an ERROR reply.
std::optional<proto::DeviceError> device_error(const Error& e) noexcept;

struct SessionOptions {
  std::chrono::milliseconds timeout{2000};          // per attempt, every request but KEYGEN
  std::chrono::milliseconds keygen_timeout{15000};  // per attempt, KEYGEN
  int max_attempts = 4;                             // first try included
  // When non-zero, each attempt's timeout is extended by the wire time of the
  // request plus the largest reply (10 bits per byte), so big WRITEs over a
  // slow UART do not time out spuriously.
  unsigned baud = 0;
  // First sequence number; default: random (so a new session's frames are not
  // mistaken for an old session's cached ones).
  std::optional<std::uint16_t> first_seq;
};

struct SessionStats {
  std::uint64_t requests = 0;
  std::uint64_t retries = 0;       // frames sent again
  std::uint64_t bad_frames = 0;    // damaged frames received
  std::uint64_t stale_frames = 0;  // replies to earlier attempts/requests
};

class DeviceSession {
 public:
  // `link` must outlive the session.
  explicit DeviceSession(link::Link& link, SessionOptions options = {});

  Result<proto::Info> info();
  // The device makes a new P-256 key and returns a PKCS#10 CSR (DER) whose
  // subject CN should be `common_name`. The caller checks the CSR (CN,
  // signature, key) -- the device is not trusted to have obeyed.
  Result<Bytes> keygen(std::string_view common_name);
  // The TPM endorsement key's public area (TPM2B_PUBLIC, marshalled).
  Result<Bytes> get_ek();
  // Stores `data` in `slot`; succeeds only when the device reports the
  // SHA-256 of exactly `data`.
  Result<proto::Digest> write(proto::Slot slot, ByteView data);
  Result<proto::Digest> read_hash(proto::Slot slot);
  // The device's DER ECDSA signature over protocol::challenge_message(nonce).
  // Check it with verify_challenge() against the certificate's key.
  Result<Bytes> challenge(ByteView nonce);
  keyline::Status lock();
  Result<proto::DeviceStatus> status();

  const SessionStats& stats() const noexcept { return stats_; }
  link::Link& link() noexcept { return link_; }

 private:
  Result<proto::Frame> transact(proto::MsgType type, const Bytes& payload, std::chrono::milliseconds timeout);
  link::Link& link_;
  SessionOptions options_;
  std::uint16_t next_seq_;
  proto::FrameDecoder decoder_;
  SessionStats stats_;
};

// Checks a CHALLENGE signature: ECDSA/SHA-256 over challenge_message(nonce)
// with `public_key`. Error (Domain::policy) when it does not verify -- the
// device does not hold the key of the certificate.
keyline::Status verify_challenge(EVP_PKEY* public_key, ByteView nonce, ByteView signature);

}  // namespace keyline::station::provision
