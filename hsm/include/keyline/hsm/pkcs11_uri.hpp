#pragma once
// Pkcs11Uri: a PKCS#11 URI (RFC 7512) naming a token and how to reach it,
// validated and normalised once, at construction (STYLE.md §6).
//
//   pkcs11:token=LINE1;object=keyline-intermediate
//          ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyline/pin
//
// Path attributes (RFC 7512 §2.3, ';'-separated, percent-decoded):
//   token, manufacturer, model, serial   match CK_TOKEN_INFO (blank-padded fields)
//   slot-id                              matches the slot number (decimal)
//   object                               a default key label only: KeyStore methods
//                                        always take the label explicitly
//   id                                   CKA_ID bytes (percent-encoded)
//   type, slot-description, slot-manufacturer, library-manufacturer,
//   library-description, library-version accepted and not used for matching
// Query attributes (RFC 7512 §2.3, '&'-separated, percent-decoded):
//   module-path   the Cryptoki library to dlopen. When absent, the default is
//                 kDefaultPkcs11Module (/usr/lib/softhsm/libsofthsm2.so).
//   pin-source    where the user PIN comes from: "file:PATH" (or an absolute
//                 path). Without it the PIN comes from $KEYLINE_PKCS11_PIN or
//                 a prompt on the terminal (credentials.hpp).
//   pin-value     REFUSED: a PIN in a URI ends up in argv, shell history and
//                 logs. Use pin-source or the environment.
// Unknown attributes are refused (a typo must not silently widen a match),
// except vendor attributes starting with "x-", which are ignored.
//
// Errors: Domain::usage naming the attribute and what to write instead.

#include <optional>
#include <string>
#include <string_view>

#include "keyline/core/error.hpp"

namespace keyline::hsm {

inline constexpr std::string_view kDefaultPkcs11Module = "/usr/lib/softhsm/libsofthsm2.so";

class Pkcs11Uri {
 public:
  static Result<Pkcs11Uri> parse(std::string_view text);

  const std::string& token() const noexcept { return token_; }
  const std::string& manufacturer() const noexcept { return manufacturer_; }
  const std::string& model() const noexcept { return model_; }
  const std::string& serial() const noexcept { return serial_; }
  std::optional<unsigned long> slot_id() const noexcept { return slot_id_; }
  const std::string& object() const noexcept { return object_; }
  const std::string& id() const noexcept { return id_; }  // raw bytes
  const std::string& module_path() const noexcept { return module_path_; }
  const std::string& pin_source() const noexcept { return pin_source_; }
  // Whether signing may use a session copy of the private key (C_CopyObject
  // with CKA_TOKEN=false: still on the token, sensitive and non-extractable,
  // gone when Keyline's session closes). Some modules re-read a token
  // object from storage on every signature (SoftHSM2's file store does);
  // the copy does not. `x-session-copy=no` keeps to the token object, for
  // an HSM whose policy forbids copies. Default: yes.
  bool session_copy() const noexcept { return session_copy_; }

  // The canonical URI: the attributes above, percent-encoded where needed,
  // module-path always present. Never contains a PIN; safe to log.
  std::string to_string() const;

 private:
  std::string token_, manufacturer_, model_, serial_, object_, id_;
  std::optional<unsigned long> slot_id_;
  std::string module_path_{kDefaultPkcs11Module};
  std::string pin_source_;
  bool session_copy_ = true;
};

// RFC 3986 §2.1 percent-decoding ("%41" -> "A"); a usage error on a '%' that
// is not followed by two hex digits. `what` names the value in the message.
Result<std::string> percent_decode(std::string_view text, std::string_view what);

// Percent-encodes every byte outside A-Z a-z 0-9 and `keep`.
std::string percent_encode(std::string_view text, std::string_view keep);

}  // namespace keyline::hsm
