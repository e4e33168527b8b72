#pragma once
// Key custody interfaces (DESIGN.md "hsm/"). A Signer signs digests with a
// private key it never reveals; a SecretKey computes HMACs with a symmetric
// key it never reveals. Implementations: file (development only), and the
// hardware backends, which plug in behind the same interfaces.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"

namespace keyline::hsm {

enum class Algorithm { ec_p256, ec_p384, rsa_2048, rsa_3072 };

std::string_view to_string(Algorithm a) noexcept;
// Accepts "ec-p256", "ec-p384", "rsa-2048", "rsa-3072".
Result<Algorithm> parse_algorithm(std::string_view text);

enum class Digest { sha256, sha384 };
std::size_t digest_size(Digest d) noexcept;
const EVP_MD* evp_md(Digest d) noexcept;

// The digest an issuer key of this algorithm signs with: SHA-384 for P-384,
// SHA-256 otherwise (RFC 5758 §3.2, RFC 4055).
Digest digest_for(Algorithm a) noexcept;

class Signer {
 public:
  virtual ~Signer() = default;
  virtual Algorithm algorithm() const noexcept = 0;
  // DER SubjectPublicKeyInfo of the key.
  virtual const Bytes& public_key() const noexcept = 0;
  // Signs a digest made with digest_for(algorithm()). Returns the DER
  // signature as it goes into an X.509 BIT STRING: ECDSA-Sig-Value for EC,
  // PKCS#1 v1.5 signature for RSA. Thread-safe.
  virtual Result<Bytes> sign(ByteView digest) const = 0;
  // For messages: "file:/var/lib/keyline/keys#keyline-intermediate".
  virtual std::string describe() const = 0;
};

class SecretKey {
 public:
  virtual ~SecretKey() = default;
  // HMAC-SHA256(key, message); the key stays in its store. Thread-safe.
  virtual Result<Bytes> hmac_sha256(ByteView message) const = 0;
};

// Parses a DER SubjectPublicKeyInfo.
Result<EvpPkeyPtr> public_key_from_der(ByteView spki);
// DER SubjectPublicKeyInfo of a key.
Result<Bytes> public_key_der(const EVP_PKEY* key);
// Which Algorithm a public key is, or a policy error naming what it is.
Result<Algorithm> algorithm_of(const EVP_PKEY* key);

}  // namespace keyline::hsm
