#include "keyline/provision/device_session.hpp"

#include <openssl/rand.h>

#include <array>

#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"

namespace keyline::station::provision {

using proto::MsgType;

bool has_code(const Error& e, SessionErrc code) noexcept {
  return e.domain() == Domain::device && e.native_code() == static_cast<std::int64_t>(code);
}

std::optional<proto::DeviceError> device_error(const Error& e) noexcept {
  if (e.domain() != Domain::device || e.native_code() < 1 || e.native_code() > 255) return std::nullopt;
  return static_cast<proto::DeviceError>(e.native_code());
}

namespace {

Error session_error(SessionErrc code, std::string message) {
  return Error(Domain::device, std::move(message), static_cast<std::int64_t>(code));
}

std::uint16_t random_seq() {
  std::uint16_t v = 1;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1) v = 1;
  return v;
}

}  // namespace

DeviceSession::DeviceSession(link::Link& link, SessionOptions options)
    : link_(link), options_(options), next_seq_(options.first_seq ? *options.first_seq : random_seq()) {}

Result<proto::Frame> DeviceSession::transact(MsgType type, const Bytes& payload,
                                             std::chrono::milliseconds timeout) {
  proto::Frame request;
  request.type = static_cast<std::uint8_t>(type);
  request.seq = next_seq_++;
  request.payload = payload;
  Bytes wire;
  if (!proto::encode_frame(request, wire))
    return fail(Domain::input,
                std::string(proto::to_string(type)) + ": payload of " + std::to_string(payload.size()) +
                    " bytes exceeds the protocol maximum of " + std::to_string(proto::kMaxPayload));
  if (options_.baud > 0) {
    const auto wire_ms = (wire.size() + proto::kMaxWireFrame) * 10'000 / options_.baud;
    timeout += std::chrono::milliseconds(wire_ms);
  }
  ++stats_.requests;
  auto log = log::get("link");
  std::array<unsigned char, 4096> buf;
  std::vector<proto::Decoded> decoded;
  const int attempts = std::max(1, options_.max_attempts);
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      ++stats_.retries;
      log->debug("{}: retrying {} seq {} (attempt {}/{})", link_.description(), proto::to_string(type),
                 request.seq, attempt, attempts);
    }
    KL_CHECK(link_.send(wire));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool resend = false;
    while (!resend) {
      KL_TRY(std::size_t n, link_.receive(buf, deadline));
      if (n == 0) break;  // timed out: next attempt
      decoded.clear();
      decoder_.feed(std::span<const unsigned char>(buf.data(), n), decoded);
      for (auto& d : decoded) {
        if (d.error != proto::FrameError::none) {
          ++stats_.bad_frames;
          log->debug("{}: dropped a damaged frame ({})", link_.description(), proto::to_string(d.error));
          resend = true;  // it may have been our reply: ask again now
          continue;
        }
        if (d.frame.seq != request.seq) {
          ++stats_.stale_frames;
          continue;
        }
        if (d.frame.type == proto::response_type(type)) return std::move(d.frame);
        if (d.frame.type == static_cast<std::uint8_t>(MsgType::error)) {
          auto e = proto::decode_error(d.frame.payload);
          if (!e)
            return std::unexpected(session_error(
                SessionErrc::bad_reply,
                std::string(proto::to_string(type)) + ": malformed ERROR reply: " + e.error().message()));
          return std::unexpected(Error(Domain::device,
                                       "device refused " + std::string(proto::to_string(type)) + ": " +
                                           std::string(proto::to_string(e->code)) + " (code " +
                                           std::to_string(static_cast<int>(e->code)) + ")" +
                                           (e->text.empty() ? std::string() : ": " + e->text) + " [" +
                                           link_.description() + "]",
                                       static_cast<std::int64_t>(e->code)));
        }
        return std::unexpected(session_error(
            SessionErrc::bad_reply,
            std::string(proto::to_string(type)) + ": the device answered with type 0x" +
                fmt::format("{:02X}", d.frame.type) + " instead of 0x" +
                fmt::format("{:02X}", proto::response_type(type)) + "; is it running protocol v1 firmware?"));
      }
    }
  }
  return std::unexpected(session_error(
      SessionErrc::timeout, "device did not answer " + std::string(proto::to_string(type)) + " within " +
                                std::to_string(timeout.count()) + " ms (" + std::to_string(attempts) +
                                " attempt(s)) on " + link_.description() +
                                "; check the cable, the baud rate and that the firmware speaks protocol v1"));
}

namespace {

template <typename T>
Result<T> parse_reply(Result<T> r, MsgType type) {
  if (!r)
    return std::unexpected(Error(Domain::device,
                                 std::string(proto::to_string(type)) + " reply: " + r.error().message(),
                                 static_cast<std::int64_t>(SessionErrc::bad_reply)));
  return r;
}

}  // namespace

Result<proto::Info> DeviceSession::info() {
  KL_TRY(auto f, transact(MsgType::info, {}, options_.timeout));
  return parse_reply(proto::decode_info(f.payload), MsgType::info);
}

Result<Bytes> DeviceSession::keygen(std::string_view common_name) {
  if (common_name.empty() || common_name.size() > proto::kMaxCn)
    return fail(Domain::input,
                "KEYGEN: the common name must be 1.." + std::to_string(proto::kMaxCn) + " characters");
  KL_TRY(auto f,
         transact(MsgType::keygen, proto::encode_keygen_request(common_name), options_.keygen_timeout));
  if (f.payload.empty())
    return std::unexpected(session_error(SessionErrc::bad_reply, "KEYGEN reply: empty CSR"));
  return std::move(f.payload);
}

Result<Bytes> DeviceSession::get_ek() {
  KL_TRY(auto f, transact(MsgType::get_ek, {}, options_.timeout));
  if (f.payload.empty())
    return std::unexpected(session_error(SessionErrc::bad_reply, "GET_EK reply: empty public area"));
  return std::move(f.payload);
}

Result<proto::Digest> DeviceSession::write(proto::Slot slot, ByteView data) {
  KL_TRY(auto f, transact(MsgType::write, proto::encode_write_request(slot, data), options_.timeout));
  KL_TRY(auto digest, parse_reply(proto::decode_digest(f.payload), MsgType::write));
  const Bytes want = sha256(data);
  if (!std::equal(want.begin(), want.end(), digest.begin()))
    return std::unexpected(session_error(
        SessionErrc::hash_mismatch,
        "WRITE " + std::string(proto::to_string(slot)) + ": the device reports SHA-256 " + to_hex(digest) +
            " but " + to_hex(want) + " was sent; the slot content is wrong, write it again"));
  return digest;
}

Result<proto::Digest> DeviceSession::read_hash(proto::Slot slot) {
  KL_TRY(auto f, transact(MsgType::read_hash, proto::encode_slot_request(slot), options_.timeout));
  return parse_reply(proto::decode_digest(f.payload), MsgType::read_hash);
}

Result<Bytes> DeviceSession::challenge(ByteView nonce) {
  if (nonce.size() < proto::kMinNonce || nonce.size() > proto::kMaxNonce)
    return fail(Domain::input, "CHALLENGE: the nonce must be " + std::to_string(proto::kMinNonce) + ".." +
                                   std::to_string(proto::kMaxNonce) + " bytes");
  KL_TRY(auto f, transact(MsgType::challenge, proto::encode_challenge_request(nonce), options_.timeout));
  if (f.payload.empty())
    return std::unexpected(session_error(SessionErrc::bad_reply, "CHALLENGE reply: empty signature"));
  return std::move(f.payload);
}

keyline::Status DeviceSession::lock() {
  KL_TRY(auto f, transact(MsgType::lock, {}, options_.timeout));
  if (!f.payload.empty())
    return std::unexpected(session_error(SessionErrc::bad_reply, "LOCK reply: unexpected payload"));
  return {};
}

Result<proto::DeviceStatus> DeviceSession::status() {
  KL_TRY(auto f, transact(MsgType::status, {}, options_.timeout));
  return parse_reply(proto::decode_status(f.payload), MsgType::status);
}

keyline::Status verify_challenge(EVP_PKEY* public_key, ByteView nonce, ByteView signature) {
  const Bytes msg = proto::challenge_message(nonce);
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, public_key) != 1)
    return std::unexpected(openssl_error(Domain::openssl, "CHALLENGE: cannot set up signature verification"));
  const int ok = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), msg.data(), msg.size());
  drain_openssl_errors();
  if (ok != 1)
    return fail(
        Domain::policy,
        "CHALLENGE: the device's signature does not verify with the certificate's public key; the device "
        "does not hold the key the certificate was issued for");
  return {};
}

}  // namespace keyline::station::provision
