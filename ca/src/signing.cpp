#include "signing.hpp"

#include <openssl/evp.h>

namespace keyline::ca::detail {

namespace {
// AlgorithmIdentifier DER (RFC 5758 §3.2: ECDSA without parameters;
// RFC 4055 §5: sha256WithRSAEncryption with NULL parameters).
constexpr unsigned char kEcdsaSha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                          0xce, 0x3d, 0x04, 0x03, 0x02};
constexpr unsigned char kEcdsaSha384[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                          0xce, 0x3d, 0x04, 0x03, 0x03};
constexpr unsigned char kRsaSha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                        0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};

Result<Bytes> digest_of(ByteView data, hsm::Digest d) {
  Bytes out(hsm::digest_size(d));
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, hsm::evp_md(d), nullptr) != 1)
    return std::unexpected(openssl_error(Domain::openssl, "hashing a to-be-signed structure"));
  return out;
}

// Sets an X509_ALGOR to the signer's algorithm (the copy inside the TBS must
// equal the outer one, RFC 5280 §4.1.2.3).
Status set_algor(X509_ALGOR* algor, hsm::Algorithm a) {
  Bytes der = signature_algorithm_der(a);
  const unsigned char* p = der.data();
  X509_ALGOR* parsed = d2i_X509_ALGOR(nullptr, &p, static_cast<long>(der.size()));
  if (!parsed) return std::unexpected(openssl_error(Domain::openssl, "building an AlgorithmIdentifier"));
  ASN1_OBJECT* obj = OBJ_dup(parsed->algorithm);
  int ptype = V_ASN1_UNDEF;
  if (parsed->parameter && parsed->parameter->type == V_ASN1_NULL) ptype = V_ASN1_NULL;
  X509_ALGOR_free(parsed);
  if (!X509_ALGOR_set0(algor, obj, ptype, nullptr))
    return std::unexpected(openssl_error(Domain::openssl, "setting an AlgorithmIdentifier"));
  return {};
}

Result<Bytes> sign_tbs(ByteView tbs, const hsm::Signer& signer) {
  KL_TRY(Bytes digest, digest_of(tbs, hsm::digest_for(signer.algorithm())));
  return signer.sign(digest);
}

Bytes take(unsigned char* p, int n) {
  Bytes out(p, p + n);
  OPENSSL_free(p);
  return out;
}

}  // namespace

Bytes signature_algorithm_der(hsm::Algorithm a) {
  switch (a) {
    case hsm::Algorithm::ec_p256: return Bytes(std::begin(kEcdsaSha256), std::end(kEcdsaSha256));
    case hsm::Algorithm::ec_p384: return Bytes(std::begin(kEcdsaSha384), std::end(kEcdsaSha384));
    case hsm::Algorithm::rsa_2048:
    case hsm::Algorithm::rsa_3072: return Bytes(std::begin(kRsaSha256), std::end(kRsaSha256));
  }
  return {};
}

void der_append_length(Bytes& out, std::size_t len) {
  if (len < 0x80) {
    out.push_back(static_cast<unsigned char>(len));
    return;
  }
  unsigned char buf[8];
  int n = 0;
  while (len > 0) {
    buf[n++] = static_cast<unsigned char>(len & 0xff);
    len >>= 8;
  }
  out.push_back(static_cast<unsigned char>(0x80 | n));
  while (n > 0) out.push_back(buf[--n]);
}

void der_append_tlv(Bytes& out, unsigned char tag, ByteView value) {
  out.push_back(tag);
  der_append_length(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

Bytes assemble_signed(ByteView tbs, ByteView algorithm, ByteView signature) {
  Bytes bits;
  bits.reserve(signature.size() + 1);
  bits.push_back(0x00);
  bits.insert(bits.end(), signature.begin(), signature.end());
  Bytes body;
  body.reserve(tbs.size() + algorithm.size() + bits.size() + 8);
  body.insert(body.end(), tbs.begin(), tbs.end());
  body.insert(body.end(), algorithm.begin(), algorithm.end());
  der_append_tlv(body, 0x03, bits);
  Bytes out;
  out.reserve(body.size() + 6);
  der_append_tlv(out, 0x30, body);
  return out;
}

Result<X509Ptr> sign_certificate(X509* cert, const hsm::Signer& signer) {
  KL_CHECK(set_algor(const_cast<X509_ALGOR*>(X509_get0_tbs_sigalg(cert)), signer.algorithm()));
  unsigned char* tbs_p = nullptr;
  int n = i2d_re_X509_tbs(cert, &tbs_p);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a TBSCertificate"));
  Bytes tbs = take(tbs_p, n);
  KL_TRY(Bytes sig, sign_tbs(tbs, signer));
  Bytes der = assemble_signed(tbs, signature_algorithm_der(signer.algorithm()), sig);
  return x509_from_der(der);
}

Result<X509CrlPtr> sign_crl(X509_CRL* crl, const hsm::Signer& signer) {
  // OpenSSL 3.0 has no setter for the TBSCertList's own signature field
  // (RFC 5280 §5.1.2.2). Signing once with a throw-away key of the same
  // algorithm family and digest sets both AlgorithmIdentifiers to exactly the
  // values the real signer uses; the throw-away signature is then replaced.
  const bool rsa = signer.algorithm() == hsm::Algorithm::rsa_2048 ||
                   signer.algorithm() == hsm::Algorithm::rsa_3072;
  EvpPkeyPtr scratch(rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  if (!scratch || X509_CRL_sign(crl, scratch.get(), hsm::evp_md(hsm::digest_for(signer.algorithm()))) <= 0)
    return std::unexpected(openssl_error(Domain::openssl, "preparing the CRL's signature algorithm"));
  unsigned char* tbs_p = nullptr;
  int n = i2d_re_X509_CRL_tbs(crl, &tbs_p);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a TBSCertList"));
  Bytes tbs = take(tbs_p, n);
  KL_TRY(Bytes sig, sign_tbs(tbs, signer));
  Bytes der = assemble_signed(tbs, signature_algorithm_der(signer.algorithm()), sig);
  const unsigned char* p = der.data();
  X509CrlPtr out(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (!out) return std::unexpected(openssl_error(Domain::openssl, "decoding the signed CRL"));
  return out;
}

Result<X509ReqPtr> sign_request(X509_REQ* req, const hsm::Signer& signer) {
  unsigned char* tbs_p = nullptr;
  int n = i2d_re_X509_REQ_tbs(req, &tbs_p);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a CertificationRequestInfo"));
  Bytes tbs = take(tbs_p, n);
  KL_TRY(Bytes sig, sign_tbs(tbs, signer));
  Bytes der = assemble_signed(tbs, signature_algorithm_der(signer.algorithm()), sig);
  const unsigned char* p = der.data();
  X509ReqPtr out(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  if (!out) return std::unexpected(openssl_error(Domain::openssl, "decoding the signed CSR"));
  return out;
}

}  // namespace keyline::ca::detail
