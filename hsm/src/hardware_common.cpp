// Helpers shared by the hardware key stores (pkcs11 and tpm2): public keys
// from their raw parts and ECDSA signatures in DER.
#include <cstdio>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>

#include "pkcs11_store.hpp"

namespace keyline::hsm {

namespace detail {

namespace {
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Free<OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, Free<OSSL_PARAM_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Free<ECDSA_SIG_free>>;

Result<EvpPkeyPtr> from_params(const char* type, OSSL_PARAM_BLD* bld) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0)
    return std::unexpected(
        openssl_error(Domain::keystore, std::string("the token's ") + type + " public key is not valid"));
  return EvpPkeyPtr(key);
}
}  // namespace

Result<EvpPkeyPtr> ec_public_key(std::string_view group, ByteView point) {
  std::size_t field = group == "P-384" ? 48 : 32;
  Bytes raw;
  if (point.size() == 1 + 2 * field && point[0] == 0x04) {
    raw.assign(point.begin(), point.end());
  } else {
    const unsigned char* p = point.data();
    Asn1OctetPtr os(d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(point.size())));
    if (!os)
      return std::unexpected(
          openssl_error(Domain::keystore, "the token's EC point is neither raw nor a DER OCTET STRING"));
    const unsigned char* data = ASN1_STRING_get0_data(os.get());
    raw.assign(data, data + ASN1_STRING_length(os.get()));
  }
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  std::string name(group);
  if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, name.c_str(), 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, raw.data(), raw.size()))
    return std::unexpected(openssl_error(Domain::openssl, "building an EC public key"));
  return from_params("EC", bld.get());
}

Result<EvpPkeyPtr> rsa_public_key(ByteView modulus, ByteView exponent) {
  BignumPtr n(BN_bin2bn(modulus.data(), static_cast<int>(modulus.size()), nullptr));
  BignumPtr e(BN_bin2bn(exponent.data(), static_cast<int>(exponent.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()))
    return std::unexpected(openssl_error(Domain::openssl, "building an RSA public key"));
  return from_params("RSA", bld.get());
}

Result<Bytes> ecdsa_signature_der(ByteView r, ByteView s) {
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BIGNUM* br = BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr);
  BIGNUM* bs = BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr);
  if (!sig || !br || !bs || !ECDSA_SIG_set0(sig.get(), br, bs)) {
    BN_free(br);
    BN_free(bs);
    return std::unexpected(openssl_error(Domain::openssl, "encoding an ECDSA signature"));
  }
  unsigned char* out = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &out);
  if (len <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding an ECDSA signature"));
  Bytes der(out, out + len);
  OPENSSL_free(out);
  return der;
}

}  // namespace detail

}  // namespace keyline::hsm
