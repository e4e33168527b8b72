#pragma once
// RAII for OpenSSL handles (STYLE.md §4) and the translation of OpenSSL's
// thread-local error queue into keyline::Error (drained, never left behind).

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyline/core/error.hpp"

namespace keyline {

template <auto Fn>
struct Free {
  template <typename T>
  void operator()(T* p) const noexcept { Fn(p); }
};

using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Free<EVP_PKEY_CTX_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, Free<EVP_MD_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, Free<X509_REQ_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, Free<X509_CRL_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, Free<X509_NAME_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, Free<X509_EXTENSION_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, Free<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Free<X509_STORE_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, Free<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, Free<BN_free>>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, Free<ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, Free<ASN1_TIME_free>>;
using Asn1OctetPtr = std::unique_ptr<ASN1_OCTET_STRING, Free<ASN1_OCTET_STRING_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Free<GENERAL_NAMES_free>>;
inline void free_ext_stack(STACK_OF(X509_EXTENSION)* s) noexcept {
  sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
}
inline void free_x509_stack(STACK_OF(X509)* s) noexcept { sk_X509_pop_free(s, X509_free); }
using X509ExtStackPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), Free<free_ext_stack>>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), Free<free_x509_stack>>;

using Bytes = std::vector<unsigned char>;
using ByteView = std::span<const unsigned char>;

// Drains OpenSSL's error queue into one line ("" when empty).
std::string drain_openssl_errors();

// An Error whose message is `what` followed by the drained OpenSSL reason.
Error openssl_error(Domain d, std::string_view what);

// DER helpers.
Result<Bytes> to_der(const X509* x);
Result<Bytes> to_der_req(const X509_REQ* r);
Result<X509Ptr> x509_from_der(ByteView der);
std::string to_pem(const X509* x);
std::string to_pem_req(const X509_REQ* r);
std::string to_pem_crl(const X509_CRL* c);
Result<X509Ptr> x509_from_pem(std::string_view pem, std::string_view source);
// PEM armour (RFC 7468): "-----BEGIN LABEL-----", base64 in 64-column lines,
// "-----END LABEL-----". The intermediate base64 text is wiped (keys use it).
std::string pem_encode(std::string_view label, ByteView der);

// SHA-256 / SHA-384 of bytes. The _into forms write 20 / 32 / 48 bytes to
// `out` and cost no allocation (hot paths: one call or more per
// certificate). SHA-1 only for key identifiers (RFC 5280 §4.2.1.2).
void sha1_into(ByteView data, unsigned char* out);
void sha256_into(ByteView data, unsigned char* out);
void sha384_into(ByteView data, unsigned char* out);
Bytes sha256(ByteView data);
std::string sha256_hex(ByteView data);

// Name helpers.
std::string name_to_string(const X509_NAME* n);  // RFC 2253-ish, one line
// Parses "/CN=x/O=y" or "CN=x,O=y" into an X509_NAME.
Result<X509NamePtr> parse_dn(std::string_view dn);

}  // namespace keyline
