#pragma once
// Device key generation for `ca batch --generate`, on the hot path.
//
// OpenSSL 3.0's generic encoders spend ~60 us on i2d_PUBKEY and ~70 us on
// PEM_write_bio_PrivateKey per key. For EC keys both encodings are fixed
// structures, written here directly from the key's parameters:
//   SubjectPublicKeyInfo (RFC 5480 §2) and PKCS#8 PrivateKeyInfo (RFC 5208)
//   wrapping ECPrivateKey (RFC 5915 §3) with the public key and without
//   parameters, exactly as OpenSSL writes them (unit-tested byte for byte).
// RSA keys use OpenSSL's encoders.

#include <string>

#include "keyline/core/openssl.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::station::batch {

struct DeviceKey {
  EvpPkeyPtr key;
  Bytes spki;              // DER SubjectPublicKeyInfo
  SecretString pkcs8_pem;  // PKCS#8, PEM-armoured
};

// Generates a key (a keygen context is kept per thread and algorithm).
Result<DeviceKey> generate_device_key(hsm::Algorithm algorithm);

// The encodings, exposed for tests.
Result<Bytes> encode_spki(const EVP_PKEY* key);
Result<SecretString> encode_pkcs8_pem(const EVP_PKEY* key);

}  // namespace keyline::station::batch
