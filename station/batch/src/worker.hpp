#pragma once
// What a batch worker makes of one input (internal to station/batch): the
// outcome types, the wrapping of generated keys, and the worker that reads,
// checks and signs.
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/profile.hpp"
#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/station/batch.hpp"
#include "keyline/station/ledger.hpp"
#include "source.hpp"

namespace keyline::station::batch::detail {

struct Issued {
  std::string input;
  ca::IssuedCertificate cert;
  std::string key_bytes;  // encrypted (DER CMS) or plain PEM; empty for CSR batches
};
struct Rejected {
  std::string input;
  std::string reason;
};
struct AlreadyDone {};
// The key store (or the machine) failed: no input is at fault, and no
// further input can succeed. The batch stops; what was signed is committed.
struct Fatal {
  Error error;
};
using Outcome = std::variant<Issued, Rejected, AlreadyDone, Fatal>;

// Whether an issuance error belongs to the input (reject it, go on) or to
// the station (stop the batch).
Outcome issue_failure(const std::string& input, const Error& e);

class KeyWrapper {
 public:
  // None for CSR batches; reads --encrypt-keys-to for --generate.
  static Result<KeyWrapper> create(const Options& o);

  bool encrypted() const { return recipient_ != nullptr; }
  const char* file_suffix() const { return encrypted() ? ".key.p7m" : ".key.pem"; }

  // The PKCS#8 PEM, enveloped to the recipient when there is one.
  Result<std::string> wrap(const SecretString& pem) const;

 private:
  std::shared_ptr<X509> recipient_;
};

struct Worker {
  const Options& o;
  const ca::Authority& authority;
  const ca::Profile& profile;
  const KeyWrapper& keys;
  const std::string& batch_id;
  Ledger* reader;  // read-only connection of this worker
  // False for a batch with nothing committed yet: no input can be done
  // already, and a registration ID active elsewhere is refused by the
  // ledger's unique index when the writer commits, so the per-item lookup
  // is skipped.
  bool resuming;
  int input_dir_fd;  // the CSR folder (csr_dir)

  // Done in this batch already? Active elsewhere? nullopt = go ahead.
  // `key` (CSR batches): a certificate in this batch counts as this input's
  // only if it is for the same public key.
  std::optional<Outcome> prior(const std::string& input, const std::string& id, const Bytes* key = nullptr);

  // Reads, checks and signs one input.
  Outcome process(const Item& item);
  // Generates the device's key pair, signs, and wraps the key.
  Outcome generate(const Item& item);
};

}  // namespace keyline::station::batch::detail
