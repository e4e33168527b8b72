#include "keyline/hsm/signer.hpp"

#include <openssl/core_names.h>
#include <openssl/x509.h>

namespace keyline::hsm {

std::string_view to_string(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::ec_p256: return "ec-p256";
    case Algorithm::ec_p384: return "ec-p384";
    case Algorithm::rsa_2048: return "rsa-2048";
    case Algorithm::rsa_3072: return "rsa-3072";
  }
  return "unknown";
}

Result<Algorithm> parse_algorithm(std::string_view text) {
  for (Algorithm a : {Algorithm::ec_p256, Algorithm::ec_p384, Algorithm::rsa_2048,
                      Algorithm::rsa_3072})
    if (to_string(a) == text) return a;
  return fail(Domain::usage, "unknown key algorithm '" + std::string(text) +
                                 "' (use ec-p256, ec-p384, rsa-2048 or rsa-3072)");
}

std::size_t digest_size(Digest d) noexcept { return d == Digest::sha384 ? 48 : 32; }
const EVP_MD* evp_md(Digest d) noexcept { return d == Digest::sha384 ? EVP_sha384() : EVP_sha256(); }
Digest digest_for(Algorithm a) noexcept {
  return a == Algorithm::ec_p384 ? Digest::sha384 : Digest::sha256;
}

Result<EvpPkeyPtr> public_key_from_der(ByteView spki) {
  const unsigned char* p = spki.data();
  EvpPkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  if (!key) return std::unexpected(openssl_error(Domain::input, "not a DER SubjectPublicKeyInfo"));
  return key;
}

Result<Bytes> public_key_der(const EVP_PKEY* key) {
  unsigned char* out = nullptr;
  int n = i2d_PUBKEY(const_cast<EVP_PKEY*>(key), &out);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a public key"));
  Bytes der(out, out + n);
  OPENSSL_free(out);
  return der;
}

Result<Algorithm> algorithm_of(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    std::size_t len = 0;
    if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len))
      return fail(Domain::policy, "EC key without a named curve (explicit curve parameters are not accepted)");
    std::string_view g(group, len);
    if (g == "prime256v1" || g == "P-256") return Algorithm::ec_p256;
    if (g == "secp384r1" || g == "P-384") return Algorithm::ec_p384;
    return fail(Domain::policy, "EC curve '" + std::string(g) + "' is not supported (use P-256 or P-384)");
  }
  if (EVP_PKEY_is_a(key, "RSA")) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048)
      return fail(Domain::policy, "RSA key of " + std::to_string(bits) + " bits is too small (at least 2048 bits)");
    return bits >= 3072 ? Algorithm::rsa_3072 : Algorithm::rsa_2048;
  }
  return fail(Domain::policy, std::string("key type '") + EVP_PKEY_get0_type_name(key) +
                                  "' is not supported (use EC P-256, EC P-384 or RSA >= 2048)");
}

}  // namespace keyline::hsm
