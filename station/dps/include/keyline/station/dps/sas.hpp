#pragma once
// DPS shared-access signatures (dps-api.md §2, §3.3) and group-key
// derivation (§4). Keys are held in keyline::Secret; nothing here logs.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::station::dps {

// "HostName=…;SharedAccessKeyName=…;SharedAccessKey=…" (order free, each once).
struct ConnectionString {
  std::string host_name;  // may carry ":PORT" (the emulator)
  std::string key_name;
  SecretBytes key;        // base64-decoded SharedAccessKey
};

// Parses the text of a connection string. Errors name the missing or bad
// member, never the key itself.
Result<ConnectionString> parse_connection_string(std::string_view text);
// Reads it from "file:PATH" (first line) or "env:VAR". Any other form is a
// usage error: a connection string is never taken from argv.
Result<ConnectionString> load_connection_string(std::string_view source);

// Percent-encodes everything but unreserved characters (RFC 3986), upper-case hex.
std::string url_encode(std::string_view text);
// Decodes %XX (either case); '+' stays '+' (base64 signatures carry it).
// A bad escape is an input error.
Result<std::string> url_decode(std::string_view text);

// base64(HMAC-SHA256(key, sr_as_sent + "\n" + se)).
Result<std::string> sas_signature(ByteView key, std::string_view sr_as_sent, std::int64_t se);

// "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]"; `sr` is URL-encoded here.
Result<std::string> make_sas_token(std::string_view resource, ByteView key, std::int64_t expiry,
                                   std::string_view key_name);

// A service SAS token for one connection string, re-signed when less than a
// quarter of its lifetime remains. Not thread-safe.
class SasToken {
 public:
  SasToken(ConnectionString cs, const Clock& clock, std::chrono::seconds ttl = std::chrono::hours(1))
      : cs_(std::move(cs)), clock_(clock), ttl_(ttl) {}
  // The Authorization header value.
  Result<std::string> get();
  std::int64_t expiry() const { return expiry_; }
  const std::string& host_name() const { return cs_.host_name; }

 private:
  ConnectionString cs_;
  const Clock& clock_;
  std::chrono::seconds ttl_;
  SecretString token_;
  std::int64_t expiry_ = 0;
};

// Parsed "SharedAccessSignature a=b&c=d" (any member order).
struct ParsedSas {
  std::string sr;   // as sent (still URL-encoded when the client encoded it)
  std::string sig;  // URL-decoded base64
  std::string skn;
  std::int64_t se = 0;
};
Result<ParsedSas> parse_sas_token(std::string_view header);

// The spellings of one resource URI that clients sign (dps-api.md §3.3):
// as is, percent-encoded with upper- and with lower-case hex.
std::vector<std::string> sas_resource_spellings(std::string_view decoded_resource);

// Group-key derivation (dps-api.md §4):
// base64(HMAC-SHA256(base64decode(group key), registration id)).
Result<std::string> derive_device_key(std::string_view group_key_base64, std::string_view registration_id);
Result<std::string> derive_device_key(ByteView group_key, std::string_view registration_id);
// The same with the group key held in a key store (it never leaves it).
Result<std::string> derive_device_key(const hsm::SecretKey& group_key, std::string_view registration_id);

}  // namespace keyline::station::dps
