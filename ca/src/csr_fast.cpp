// Lean CSR acceptance for batch issuance. OpenSSL 3.0's generic decoders
// spend ~180 us per public key (d2i_PUBKEY through OSSL_DECODER); walking
// the DER ourselves and verifying with the EC primitives costs a fraction.
// The EC_KEY/ECDSA primitives are deprecated in OpenSSL 3 in favour of the
// provider API, whose key import is what we avoid here; they remain
// supported through OpenSSL 3.x.
#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/sha.h>

#include "der.hpp"
#include "keyline/ca/csr_policy.hpp"

namespace keyline::ca {

namespace {

constexpr unsigned char kOidEcPublicKey[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
constexpr unsigned char kOidP256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr unsigned char kOidP384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
constexpr unsigned char kOidEcdsaSha256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
constexpr unsigned char kOidEcdsaSha384[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03};
constexpr unsigned char kOidCommonName[] = {0x55, 0x04, 0x03};

// A key object per curve and thread, reused for every CSR: only its public
// point changes (EC_KEY_new and EC_KEY_set_group copy the group each time).
struct VerifyKeys {
  EC_KEY* p256 = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EC_KEY* p384 = EC_KEY_new_by_curve_name(NID_secp384r1);
  EC_POINT* p256_point = p256 ? EC_POINT_new(EC_KEY_get0_group(p256)) : nullptr;
  EC_POINT* p384_point = p384 ? EC_POINT_new(EC_KEY_get0_group(p384)) : nullptr;
  ~VerifyKeys() {
    EC_POINT_free(p256_point);
    EC_POINT_free(p384_point);
    EC_KEY_free(p256);
    EC_KEY_free(p384);
  }
};

std::optional<Bytes> pem_body(std::string_view text) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE REQUEST-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE REQUEST-----";
  auto b = text.find(kBegin);
  if (b == std::string_view::npos) return std::nullopt;
  auto e = text.find(kEnd, b);
  if (e == std::string_view::npos) return std::nullopt;
  std::string clean;
  clean.reserve(e - b);
  for (char c : text.substr(b + kBegin.size(), e - b - kBegin.size())) {
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    if (c == ':') return std::nullopt;  // PEM headers (encrypted etc.): not the simple case
    clean.push_back(c);
  }
  if (clean.empty() || clean.size() % 4) return std::nullopt;
  // Padding only at the very end ("x=" or "=="): EVP_DecodeBlock would read
  // a '=' anywhere else as zero bits, where the full parser refuses it.
  auto first_pad = clean.find('=');
  if (first_pad != std::string::npos &&
      (first_pad < clean.size() - 2 || clean.find_first_not_of('=', first_pad) != std::string::npos))
    return std::nullopt;
  Bytes out(clean.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(clean.data()),
                          static_cast<int>(clean.size()));
  if (n < 0) return std::nullopt;
  std::size_t pad = (clean.back() == '=') + (clean[clean.size() - 2] == '=');
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

}  // namespace

std::optional<AcceptedCsr> accept_simple_csr(std::string_view bytes, const Profile& profile) {
  if (bytes.empty() || bytes.size() > kMaxCsrBytes) return std::nullopt;
  Bytes storage;
  std::span<const unsigned char> in;
  if (static_cast<unsigned char>(bytes[0]) == 0x30) {
    in = std::span(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  } else {
    auto body = pem_body(bytes);
    if (!body) return std::nullopt;
    storage = std::move(*body);
    in = storage;
  }

  auto outer = der::expect(in, 0x30);
  if (!outer || !in.empty()) return std::nullopt;
  auto req = outer->value;
  auto cri = der::expect(req, 0x30);
  auto sig_alg = der::expect(req, 0x30);
  auto sig_bits = der::expect(req, 0x03);
  if (!cri || !sig_alg || !sig_bits || !req.empty()) return std::nullopt;

  // CertificationRequestInfo: version 0, subject, SPKI, empty attributes.
  auto body = cri->value;
  auto version = der::expect(body, 0x02);
  auto subject = der::expect(body, 0x30);
  auto spki = der::expect(body, 0x30);
  auto attributes = der::expect(body, 0xa0);
  if (!version || version->value.size() != 1 || version->value[0] != 0 || !subject || !spki ||
      !attributes || !attributes->value.empty() || !body.empty())
    return std::nullopt;

  // SubjectPublicKeyInfo: id-ecPublicKey, named P-256/P-384, uncompressed point.
  auto spki_body = spki->value;
  auto key_alg = der::expect(spki_body, 0x30);
  auto key_bits = der::expect(spki_body, 0x03);
  if (!key_alg || !key_bits || !spki_body.empty()) return std::nullopt;
  auto alg_body = key_alg->value;
  auto alg_oid = der::expect(alg_body, 0x06);
  auto curve_oid = der::expect(alg_body, 0x06);
  if (!alg_oid || !curve_oid || !alg_body.empty() || !der::equals(alg_oid->value, kOidEcPublicKey))
    return std::nullopt;
  hsm::Algorithm algorithm;
  std::size_t point_size;
  if (der::equals(curve_oid->value, kOidP256)) {
    if (!profile.allow_ec_p256) return std::nullopt;
    algorithm = hsm::Algorithm::ec_p256;
    point_size = 65;
  } else if (der::equals(curve_oid->value, kOidP384)) {
    if (!profile.allow_ec_p384) return std::nullopt;
    algorithm = hsm::Algorithm::ec_p384;
    point_size = 97;
  } else {
    return std::nullopt;
  }
  auto point = key_bits->value;
  if (point.size() != point_size + 1 || point[0] != 0x00 || point[1] != 0x04) return std::nullopt;
  point = point.subspan(1);

  // Subject: exactly one CN, in a string type we read as-is.
  std::optional<std::string_view> cn;
  auto rdns = subject->value;
  while (!rdns.empty()) {
    auto rdn = der::expect(rdns, 0x31);
    if (!rdn) return std::nullopt;
    auto atvs = rdn->value;
    while (!atvs.empty()) {
      auto atv = der::expect(atvs, 0x30);
      if (!atv) return std::nullopt;
      auto atv_body = atv->value;
      auto oid = der::expect(atv_body, 0x06);
      auto value = der::read(atv_body);
      if (!oid || !value || !atv_body.empty()) return std::nullopt;
      if (!der::equals(oid->value, kOidCommonName)) continue;
      if (cn || (value->tag != 0x0c && value->tag != 0x13 && value->tag != 0x16)) return std::nullopt;
      cn = std::string_view(reinterpret_cast<const char*>(value->value.data()), value->value.size());
    }
  }
  if (!cn) return std::nullopt;
  auto id = RegistrationId::for_certificate(*cn);
  if (!id) return std::nullopt;

  // Signature: ECDSA with SHA-256/384 over the CertificationRequestInfo.
  auto sig_body = sig_alg->value;
  auto sig_oid = der::expect(sig_body, 0x06);
  if (!sig_oid || !sig_body.empty()) return std::nullopt;
  unsigned char digest[SHA384_DIGEST_LENGTH];
  std::size_t digest_len;
  if (der::equals(sig_oid->value, kOidEcdsaSha256)) {
    sha256_into(cri->whole, digest);
    digest_len = SHA256_DIGEST_LENGTH;
  } else if (der::equals(sig_oid->value, kOidEcdsaSha384)) {
    sha384_into(cri->whole, digest);
    digest_len = SHA384_DIGEST_LENGTH;
  } else {
    return std::nullopt;
  }
  auto sig = sig_bits->value;
  if (sig.size() < 2 || sig[0] != 0x00) return std::nullopt;
  sig = sig.subspan(1);

  thread_local VerifyKeys keys;
  bool p256 = algorithm == hsm::Algorithm::ec_p256;
  EC_KEY* key = p256 ? keys.p256 : keys.p384;
  EC_POINT* pub = p256 ? keys.p256_point : keys.p384_point;
  bool ok = key && pub &&
            EC_POINT_oct2point(EC_KEY_get0_group(key), pub, point.data(), point.size(), nullptr) == 1 &&  // on-curve
            EC_KEY_set_public_key(key, pub) == 1 &&
            ECDSA_verify(0, digest, static_cast<int>(digest_len), sig.data(), static_cast<int>(sig.size()), key) == 1;
  if (!ok) {
    drain_openssl_errors();
    return std::nullopt;
  }
  return AcceptedCsr{std::move(*id), Bytes(spki->whole.begin(), spki->whole.end()), algorithm};
}

}  // namespace keyline::ca
