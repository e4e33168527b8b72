#include "device_keys.hpp"

#include <cstring>
#include <map>

#include <openssl/core_names.h>
#include <openssl/pem.h>

#include "keyline/core/hex.hpp"

namespace keyline::station::batch {

namespace {

constexpr unsigned char kOidEcPublicKey[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
constexpr unsigned char kOidP256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr unsigned char kOidP384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

void tlv(Bytes& out, unsigned char tag, ByteView value) {
  out.push_back(tag);
  std::size_t len = value.size();
  if (len < 0x80) {
    out.push_back(static_cast<unsigned char>(len));
  } else if (len < 0x100) {
    out.push_back(0x81);
    out.push_back(static_cast<unsigned char>(len));
  } else {
    out.push_back(0x82);
    out.push_back(static_cast<unsigned char>(len >> 8));
    out.push_back(static_cast<unsigned char>(len & 0xff));
  }
  out.insert(out.end(), value.begin(), value.end());
}

struct EcParts {
  ByteView curve_oid;
  std::size_t scalar_size;
  unsigned char point[97];
  std::size_t point_size;
};

// Curve, public point; false for anything but a named P-256/P-384 key.
bool ec_parts(const EVP_PKEY* key, EcParts& parts) {
  if (!EVP_PKEY_is_a(key, "EC")) return false;
  char group[32];
  std::size_t glen = 0;
  if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen)) return false;
  std::string_view g(group, glen);
  if (g == "prime256v1" || g == "P-256") {
    parts.curve_oid = kOidP256;
    parts.scalar_size = 32;
  } else if (g == "secp384r1" || g == "P-384") {
    parts.curve_oid = kOidP384;
    parts.scalar_size = 48;
  } else {
    return false;
  }
  return EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, parts.point, sizeof parts.point,
                                         &parts.point_size) == 1 &&
         parts.point_size == 2 * parts.scalar_size + 1 && parts.point[0] == 0x04;
}

Bytes ec_algorithm(const EcParts& p) {
  Bytes body(std::begin(kOidEcPublicKey), std::end(kOidEcPublicKey));
  body.insert(body.end(), p.curve_oid.begin(), p.curve_oid.end());
  Bytes out;
  tlv(out, 0x30, body);
  return out;
}

Bytes bit_string(const EcParts& p) {
  Bytes bits(p.point_size + 1);
  bits[0] = 0x00;  // no unused bits
  std::memcpy(bits.data() + 1, p.point, p.point_size);
  return bits;
}

}  // namespace

Result<Bytes> encode_spki(const EVP_PKEY* key) {
  EcParts p{};
  if (!ec_parts(key, p)) return hsm::public_key_der(key);
  Bytes body = ec_algorithm(p);
  tlv(body, 0x03, bit_string(p));
  Bytes out;
  tlv(out, 0x30, body);
  return out;
}

Result<SecretString> encode_pkcs8_pem(const EVP_PKEY* key) {
  EcParts p{};
  if (!ec_parts(key, p)) {
    BioPtr mem(BIO_new(BIO_s_mem()));
    if (!PEM_write_bio_PrivateKey(mem.get(), const_cast<EVP_PKEY*>(key), nullptr, nullptr, 0, nullptr, nullptr))
      return std::unexpected(openssl_error(Domain::openssl, "encoding a generated key"));
    char* data = nullptr;
    long n = BIO_get_mem_data(mem.get(), &data);
    SecretString out(std::string(data, static_cast<std::size_t>(n)));
    OPENSSL_cleanse(data, static_cast<std::size_t>(n));
    return out;
  }
  BIGNUM* d = nullptr;
  if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d))
    return std::unexpected(openssl_error(Domain::openssl, "reading a generated key"));
  BignumPtr scalar_bn(d);
  Bytes scalar(p.scalar_size);
  BN_bn2binpad(scalar_bn.get(), scalar.data(), static_cast<int>(scalar.size()));
  // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, [1] publicKey BIT STRING }
  static constexpr unsigned char kVersion1[] = {0x02, 0x01, 0x01};
  Bytes ec_body(std::begin(kVersion1), std::end(kVersion1));
  tlv(ec_body, 0x04, scalar);
  Bytes pub;
  tlv(pub, 0x03, bit_string(p));
  tlv(ec_body, 0xa1, pub);
  Bytes ec_key;
  tlv(ec_key, 0x30, ec_body);
  // PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }
  static constexpr unsigned char kVersion0[] = {0x02, 0x01, 0x00};
  Bytes body(std::begin(kVersion0), std::end(kVersion0));
  Bytes alg = ec_algorithm(p);
  body.insert(body.end(), alg.begin(), alg.end());
  tlv(body, 0x04, ec_key);
  Bytes der;
  tlv(der, 0x30, body);
  SecretString out(pem_encode("PRIVATE KEY", der));
  for (Bytes* b : {&scalar, &ec_body, &ec_key, &body, &der}) OPENSSL_cleanse(b->data(), b->size());
  return out;
}

Result<DeviceKey> generate_device_key(hsm::Algorithm algorithm) {
  thread_local std::map<hsm::Algorithm, EvpPkeyCtxPtr> contexts;
  EvpPkeyCtxPtr& ctx = contexts[algorithm];
  if (!ctx) {
    bool rsa = algorithm == hsm::Algorithm::rsa_2048 || algorithm == hsm::Algorithm::rsa_3072;
    ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, rsa ? "RSA" : "EC", nullptr));
    bool ok = ctx && EVP_PKEY_keygen_init(ctx.get()) > 0;
    if (ok && rsa) ok = EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), algorithm == hsm::Algorithm::rsa_2048 ? 2048 : 3072) > 0;
    if (ok && !rsa) ok = EVP_PKEY_CTX_set_group_name(ctx.get(), algorithm == hsm::Algorithm::ec_p256 ? "P-256" : "P-384") > 0;
    if (!ok) {
      ctx.reset();
      return std::unexpected(openssl_error(Domain::openssl, "preparing device key generation"));
    }
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &raw) <= 0)
    return std::unexpected(openssl_error(Domain::openssl, "generating a device key"));
  DeviceKey out{EvpPkeyPtr(raw), {}, {}};
  KL_TRY(out.spki, encode_spki(out.key.get()));
  KL_TRY(out.pkcs8_pem, encode_pkcs8_pem(out.key.get()));
  return out;
}

}  // namespace keyline::station::batch
