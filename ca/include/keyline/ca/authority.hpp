#pragma once
// ca::Authority -- an issuing CA: its certificate, the chain above it, and the
// hsm::Signer holding its private key. Issues leaf certificates, CRLs and DPS
// proof-of-possession certificates. Pure: no files, no database, no network;
// time and randomness are injected.
//
// Leaf certificates (RFC 5280 profile, DPS rules in dps-api §5):
//   subject  C/O/OU from the profile, CN = registration ID, serialNumber =
//            device serial when the profile asks (IEEE 802.1AR IDevID)
//   serial   16 bytes, positive: bits 01 (top bit clear, next bit set so
//            the DER length is always 16), the issuing second (34 bits), a
//            sequence number (20 bits), 72 random bits (the CA/Browser Forum
//            BRs ask for 64 or more). An authority's later serials sort after
//            its earlier ones (up to 2^20 a second), so the ledger's serial
//            index grows at its end instead of at random places in a B-tree
//            as large as the ledger. The sequence starts at 0 for each
//            Authority object; uniqueness rests on the random bits.
//   validity notBefore = now - profile skew; notAfter = now + days, clamped
//            to the issuer's notAfter, or 99991231235959Z for "forever"
//   basicConstraints critical CA:FALSE; keyUsage critical digitalSignature
//   (+keyAgreement for EC keys when the profile says so); extendedKeyUsage
//   clientAuth; SKI; AKI (keyid of the issuer); optional URI SAN and
//   hardwareModuleName otherName SAN (RFC 4108 §5).
// Thread-safe: issue() may be called from several threads at once.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keyline/ca/profile.hpp"
#include "keyline/ca/registration_id.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::ca {

struct IssueRequest {
  RegistrationId registration_id;
  Bytes public_key;  // DER SubjectPublicKeyInfo, already checked by policy
  std::optional<std::string> device_serial;
};

struct IssuedCertificate {
  Bytes der;
  std::string pem;
  std::string serial_hex;  // upper-case, 32 hex digits
  std::string registration_id;
  std::string subject;
  std::string cert_sha256;    // hex of SHA-256 over the DER certificate
  std::string pubkey_sha256;  // hex of SHA-256 over the DER SubjectPublicKeyInfo
  TimePoint not_before;
  TimePoint not_after;
};

enum class RevocationReason {
  unspecified = 0,
  key_compromise = 1,
  ca_compromise = 2,
  affiliation_changed = 3,
  superseded = 4,
  cessation_of_operation = 5,
  certificate_hold = 6,
  privilege_withdrawn = 9,
};
std::string_view to_string(RevocationReason r) noexcept;  // RFC 5280 names, e.g. "keyCompromise"
Result<RevocationReason> parse_revocation_reason(std::string_view text);

struct RevokedEntry {
  Bytes serial;
  TimePoint revoked_at;
  RevocationReason reason;
};

// A device serial number as it may appear in a certificate: 1..64 printable
// ASCII characters.
Status validate_device_serial(std::string_view serial);

class Authority {
 public:
  // `chain` lists the certificates above the issuer, nearest first, ending
  // with the root. Fails when the signer's public key is not the issuer's.
  static Result<Authority> create(X509Ptr issuer, std::vector<X509Ptr> chain,
                                  std::shared_ptr<const hsm::Signer> signer, const Clock& clock,
                                  Rng& rng);

  // Issues a leaf. The TBSCertificate is assembled from DER pieces computed
  // once per issuer (name, key identifier, fixed extensions) with the
  // per-device fields spliced in; no OpenSSL certificate object is built.
  Result<IssuedCertificate> issue(const IssueRequest& request, const Profile& profile) const;

  // The same certificate built with OpenSSL's X509 object API. Slower; kept
  // as the reference the fast path is tested against, field for field.
  Result<IssuedCertificate> issue_reference(const IssueRequest& request, const Profile& profile) const;

  // A v2 CRL (RFC 5280 §5) with CRL number and AKI, signed by the issuer key.
  Result<X509CrlPtr> crl(std::uint64_t number, std::span<const RevokedEntry> revoked,
                         std::chrono::days validity) const;

  // DPS proof of possession (dps-api §5): subject CN = code, issued by this CA
  // for its own public key, valid for 30 days.
  Result<X509Ptr> verification_certificate(std::string_view code) const;

  // Station faults, not a request's: the issuer certificate is unexpired at
  // `now` and has a subjectKeyIdentifier; the profile's own subject and
  // hardware module OID encode. Domain::state. issue() checks the issuer
  // itself; a batch checks both once before it starts.
  Status check_issuer(TimePoint now) const;
  Status check_profile(const Profile& profile) const;

  const X509& issuer() const noexcept { return *issuer_; }
  const std::vector<X509Ptr>& chain() const noexcept { return chain_; }
  const hsm::Signer& signer() const noexcept { return *signer_; }
  // Issuer certificate then the chain, as PEM.
  std::string chain_pem() const;

  // A new positive 16-byte serial: time-ordered prefix, random rest (see above).
  // `issued_at`: the time the certificate's validity is based on.
  Bytes new_serial(TimePoint issued_at) const;

 private:
  Authority(X509Ptr issuer, std::vector<X509Ptr> chain, std::shared_ptr<const hsm::Signer> signer,
            const Clock& clock, Rng& rng)
      : issuer_(std::move(issuer)), chain_(std::move(chain)), signer_(std::move(signer)),
        clock_(&clock), rng_(&rng) {}
  TimePoint leaf_not_after(const Profile& profile, TimePoint now) const;

  X509Ptr issuer_;
  Bytes issuer_name_der_;  // the issuer's subject, as encoded in its certificate
  Bytes issuer_key_id_;    // its subjectKeyIdentifier (for the leaves' AKI)
  TimePoint issuer_not_after_;
  std::vector<X509Ptr> chain_;
  std::shared_ptr<const hsm::Signer> signer_;
  const Clock* clock_;
  Rng* rng_;
  // The serials' sequence number (heap-held so that an Authority can move).
  std::unique_ptr<std::atomic<std::uint32_t>> serial_sequence_ = std::make_unique<std::atomic<std::uint32_t>>(0);
};

// Fills an IssuedCertificate's summary fields from a signed certificate.
Result<IssuedCertificate> describe(const X509& cert);

}  // namespace keyline::ca
