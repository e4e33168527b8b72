#pragma once
// ca::CsrPolicy -- decides whether a certificate signing request (PKCS#10,
// RFC 2986) may become a leaf certificate under a profile.
//
// Checks, in order: size (<= 16 KiB), encoding, the CSR's own signature
// (proof of possession of the private key), the key algorithm and size
// allowed by the profile, the subject CN (== the expected registration ID
// when one is given, else taken from the CSR and validated by the DPS rules),
// and requested extensions (only those the profile allows).

#include <optional>
#include <string_view>

#include "keyline/ca/profile.hpp"
#include "keyline/ca/registration_id.hpp"
#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::ca {

inline constexpr std::size_t kMaxCsrBytes = 16 * 1024;

enum class CsrEncoding { pem, der, any };

// Parses a CSR. `source` names the input in messages (a file name).
Result<X509ReqPtr> parse_csr(std::string_view bytes, std::string_view source,
                             CsrEncoding encoding = CsrEncoding::any);

struct AcceptedCsr {
  RegistrationId registration_id;
  Bytes public_key;  // DER SubjectPublicKeyInfo
  hsm::Algorithm key_algorithm;
};

Result<AcceptedCsr> check_csr(const X509_REQ& csr, const Profile& profile,
                              const std::optional<RegistrationId>& expected_id,
                              std::string_view source);

// Checks a public key against the profile's algorithms (used for
// station-generated keys too).
Result<hsm::Algorithm> check_key(const EVP_PKEY* key, const Profile& profile,
                                 std::string_view source);

}  // namespace keyline::ca

namespace keyline::ca {

// The fast path for the common case of batch issuance: a DER or PEM CSR
// with an EC P-256/P-384 key (uncompressed point), an ECDSA signature, one
// CN and no attributes. When it returns a value, the decision is the one
// parse_csr + check_csr would make (tests hold the two paths to that).
// nullopt means "not the simple case, or refused": use the full path, which
// also writes the error message.
std::optional<AcceptedCsr> accept_simple_csr(std::string_view bytes, const Profile& profile);

}  // namespace keyline::ca
