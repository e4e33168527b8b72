#pragma once
// hsm::KeyStore: where the station's private keys live.
//
//   file:DIR    PEM files in DIR, mode 0600. DEVELOPMENT ONLY: the key is a
//               plain file, anyone who can read it can issue certificates.
//
// A store is opened from a URI; credentials (PIN, auth value) are resolved
// from a file, an environment variable or a prompt by the backend, never
// from argv, and are held in keyline::Secret.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::hsm {

struct KeyInfo {
  std::string label;
  std::string kind;  // "signing ec-p256", "secret", ...
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;

  // The URI, with nothing secret in it; safe to log and to record.
  virtual std::string uri() const = 0;
  // True for stores that keep keys in plain files (development only).
  virtual bool is_development() const noexcept = 0;

  // Creates a new key; refuses when `label` exists (never overwrites a key).
  virtual Result<std::shared_ptr<Signer>> generate_signing_key(const std::string& label,
                                                               Algorithm algorithm) = 0;
  // An existing key; a keystore error naming the label when absent.
  virtual Result<std::shared_ptr<Signer>> signer(const std::string& label) = 0;

  virtual Status generate_secret(const std::string& label) = 0;
  virtual Status import_secret(const std::string& label, const SecretBytes& key) = 0;
  virtual Result<std::shared_ptr<SecretKey>> secret(const std::string& label) = 0;

  virtual Result<std::vector<KeyInfo>> list() = 0;

  // Destroy a signing key / a secret. Only to undo a creation that could not
  // be recorded (the ledger refused its audit record): no command removes a
  // key that is in use. A label with nothing under it is a keystore error.
  virtual Status destroy_signing_key(const std::string& label) = 0;
  virtual Status destroy_secret(const std::string& label) = 0;
};

// Opens a key store. A relative file: path is taken relative to `base_dir`.
Result<std::unique_ptr<KeyStore>> open(std::string_view uri,
                                       const std::filesystem::path& base_dir = {});

// Labels: 1..64 characters of [A-Za-z0-9._-].
Status validate_label(std::string_view label);

}  // namespace keyline::hsm
