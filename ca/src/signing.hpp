#pragma once
// Signs X.509 structures through an hsm::Signer: the TBS part is encoded,
// hashed and signed by the key store, and the signed structure is assembled
// as SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING } (RFC 5280 §4.1, §5.1;
// RFC 2986 §4). No backend-specific code: every key store looks the same.

#include "keyline/core/openssl.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::ca::detail {

// DER AlgorithmIdentifier for signatures by a key of this algorithm.
Bytes signature_algorithm_der(hsm::Algorithm a);

Result<X509Ptr> sign_certificate(X509* cert, const hsm::Signer& signer);
// Adds the extension `nid` = `value` (OpenSSL's config syntax) to `cert`.
Status add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value);
Result<X509CrlPtr> sign_crl(X509_CRL* crl, const hsm::Signer& signer);
Result<X509ReqPtr> sign_request(X509_REQ* req, const hsm::Signer& signer);

// DER building blocks.
void der_append_length(Bytes& out, std::size_t len);
void der_append_tlv(Bytes& out, unsigned char tag, ByteView value);
// SEQUENCE { parts... } with the signature as BIT STRING (0 unused bits).
Bytes assemble_signed(ByteView tbs, ByteView algorithm, ByteView signature);

}  // namespace keyline::ca::detail
