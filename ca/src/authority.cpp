#include "keyline/ca/authority.hpp"

#include <ctime>

#include <openssl/sha.h>

#include "der.hpp"
#include "keyline/core/hex.hpp"
#include "signing.hpp"

namespace keyline::ca {

namespace {

// notAfter of certificates that never expire (RFC 5280 §4.1.2.5).
constexpr TimePoint kForever{std::chrono::seconds(253402300799)};  // 9999-12-31T23:59:59Z

Result<X509ExtPtr> make_ext(X509V3_CTX* ctx, int nid, const char* value) {
  X509ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (!ext)
    return std::unexpected(openssl_error(Domain::openssl, std::string("building extension ") +
                                                              OBJ_nid2sn(nid) + "=" + value));
  return ext;
}


// A time that does not parse reads as the epoch: for the issuer's notAfter,
// that refuses issuance (expired) instead of issuing under a guess.
TimePoint from_asn1(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return TimePoint{};
  return TimePoint(std::chrono::seconds(timegm(&tm)));
}

Status set_time(ASN1_TIME* field, TimePoint t) {
  if (!ASN1_TIME_set(field, static_cast<std::time_t>(t.time_since_epoch().count())))
    return std::unexpected(openssl_error(Domain::openssl, "setting a certificate time"));
  return {};
}

Status add_name_entry(X509_NAME* name, const char* field, std::string_view value) {
  if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(value.data()),
                                  static_cast<int>(value.size()), -1, 0))
    return std::unexpected(openssl_error(Domain::input, std::string("subject ") + field + " '" +
                                                            std::string(value) + "' is invalid"));
  return {};
}

// hardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }
// (RFC 4108 §5), carried in an otherName with type-id id-on-hardwareModuleName.
Result<GENERAL_NAME*> hardware_module_name(const std::string& oid, std::string_view serial) {
  ASN1_OBJECT* hw_type = OBJ_txt2obj(oid.c_str(), 1);
  if (!hw_type) return std::unexpected(openssl_error(Domain::input, "hardware_module_oid '" + oid + "' is not an OID"));
  unsigned char* oid_der = nullptr;
  int oid_len = i2d_ASN1_OBJECT(hw_type, &oid_der);
  ASN1_OBJECT_free(hw_type);
  if (oid_len <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding hwType"));
  Bytes body(oid_der, oid_der + oid_len);
  OPENSSL_free(oid_der);
  detail::der_append_tlv(body, 0x04, ByteView(reinterpret_cast<const unsigned char*>(serial.data()), serial.size()));
  Bytes seq;
  detail::der_append_tlv(seq, 0x30, body);

  ASN1_STRING* str = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
  ASN1_STRING_set(str, seq.data(), static_cast<int>(seq.size()));
  ASN1_TYPE* value = ASN1_TYPE_new();
  ASN1_TYPE_set(value, V_ASN1_SEQUENCE, str);
  GENERAL_NAME* gen = GENERAL_NAME_new();
  // id-on-hardwareModuleName (RFC 4108 §5); OpenSSL 3.0 has no NID for it.
  ASN1_OBJECT* type_id = OBJ_txt2obj("1.3.6.1.5.5.7.8.4", 1);
  if (!GENERAL_NAME_set0_othername(gen, type_id, value)) {
    ASN1_OBJECT_free(type_id);
    ASN1_TYPE_free(value);
    GENERAL_NAME_free(gen);
    return std::unexpected(openssl_error(Domain::openssl, "building hardwareModuleName"));
  }
  return gen;
}

}  // namespace

Status detail::add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  KL_TRY(X509ExtPtr ext, make_ext(ctx, nid, value));
  if (!X509_add_ext(cert, ext.get(), -1))
    return std::unexpected(openssl_error(Domain::openssl, "adding an extension"));
  return {};
}

std::string_view to_string(RevocationReason r) noexcept {
  switch (r) {
    case RevocationReason::unspecified: return "unspecified";
    case RevocationReason::key_compromise: return "keyCompromise";
    case RevocationReason::ca_compromise: return "cACompromise";
    case RevocationReason::affiliation_changed: return "affiliationChanged";
    case RevocationReason::superseded: return "superseded";
    case RevocationReason::cessation_of_operation: return "cessationOfOperation";
    case RevocationReason::certificate_hold: return "certificateHold";
    case RevocationReason::privilege_withdrawn: return "privilegeWithdrawn";
  }
  return "unspecified";
}

Result<RevocationReason> parse_revocation_reason(std::string_view text) {
  for (auto r : {RevocationReason::unspecified, RevocationReason::key_compromise,
                 RevocationReason::ca_compromise, RevocationReason::affiliation_changed,
                 RevocationReason::superseded, RevocationReason::cessation_of_operation,
                 RevocationReason::certificate_hold, RevocationReason::privilege_withdrawn})
    if (to_string(r) == text) return r;
  return fail(Domain::usage, "unknown revocation reason '" + std::string(text) +
                                 "' (use unspecified, keyCompromise, cACompromise, affiliationChanged, "
                                 "superseded, cessationOfOperation, certificateHold or privilegeWithdrawn)");
}

Status validate_device_serial(std::string_view serial) {
  if (serial.empty() || serial.size() > 64)
    return fail(Domain::input, "device serial number must be 1 to 64 characters");
  // X.520 serialNumber is a PrintableString: letters, digits, space and '()+,-./:=?
  static constexpr std::string_view kPrintable = " '()+,-./:=?";
  for (std::size_t i = 0; i < serial.size(); ++i) {
    char c = serial[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              kPrintable.find(c) != std::string_view::npos;
    if (!ok)
      return fail(Domain::input, "device serial number '" + std::string(serial) + "' has a character not allowed in a "
                                     "certificate serialNumber at position " + std::to_string(i + 1) +
                                     " (allowed: letters, digits, space and '()+,-./:=?)");
  }
  return {};
}

Result<Authority> Authority::create(X509Ptr issuer, std::vector<X509Ptr> chain,
                                    std::shared_ptr<const hsm::Signer> signer, const Clock& clock,
                                    Rng& rng) {
  KL_TRY(Bytes cert_spki, hsm::public_key_der(X509_get0_pubkey(issuer.get())));
  if (cert_spki != signer->public_key())
    return fail(Domain::keystore, "the key " + signer->describe() +
                                      " does not belong to the issuer certificate " +
                                      name_to_string(X509_get_subject_name(issuer.get())));
  Authority a(std::move(issuer), std::move(chain), std::move(signer), clock, rng);
  unsigned char* name = nullptr;
  int n = i2d_X509_NAME(X509_get_subject_name(a.issuer_.get()), &name);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding the issuer name"));
  a.issuer_name_der_.assign(name, name + n);
  OPENSSL_free(name);
  if (const ASN1_OCTET_STRING* skid = X509_get0_subject_key_id(a.issuer_.get()))
    a.issuer_key_id_.assign(ASN1_STRING_get0_data(skid), ASN1_STRING_get0_data(skid) + ASN1_STRING_length(skid));
  a.issuer_not_after_ = from_asn1(X509_get0_notAfter(a.issuer_.get()));
  return a;
}

Bytes Authority::new_serial(TimePoint issued_at) const {
  // The first 64 bits: 01, the issuing second (34 bits, enough until the
  // year 2514), this authority's sequence number (20 bits, wraps), then 8
  // random bits; the last 64 bits are random too.
  Bytes serial(16);
  rng_->fill(serial);
  auto seconds = static_cast<std::uint64_t>(issued_at.time_since_epoch().count());
  std::uint64_t head = std::uint64_t{1} << 62 | (seconds & ((std::uint64_t{1} << 34) - 1)) << 28 |
                       std::uint64_t{serial_sequence_->fetch_add(1, std::memory_order_relaxed) & 0xFFFFFu} << 8 |
                       serial[7];
  for (std::size_t i = 8; i-- > 0; head >>= 8) serial[i] = static_cast<unsigned char>(head & 0xFF);
  return serial;
}

std::string Authority::chain_pem() const {
  std::string out = to_pem(issuer_.get());
  for (auto& c : chain_) out += to_pem(c.get());
  return out;
}

namespace {

Status check_request(const IssueRequest& request, const Profile& profile) {
  bool needs_serial = profile.serial_number_attribute || !profile.hardware_module_oid.empty();
  if (needs_serial && !request.device_serial)
    return fail(Domain::policy, "profile '" + profile.name +
                                    "' puts the device serial number in the certificate; give it (--device-serial)");
  if (request.device_serial) KL_CHECK(validate_device_serial(*request.device_serial));
  return {};
}

// The profile's part of a leaf subject: C, O, OU (each when set).
Result<X509NamePtr> profile_subject(const Profile& profile) {
  X509NamePtr subject(X509_NAME_new());
  if (!profile.subject_c.empty()) KL_CHECK(add_name_entry(subject.get(), "C", profile.subject_c));
  if (!profile.subject_o.empty()) KL_CHECK(add_name_entry(subject.get(), "O", profile.subject_o));
  if (!profile.subject_ou.empty()) KL_CHECK(add_name_entry(subject.get(), "OU", profile.subject_ou));
  return subject;
}

Result<X509NamePtr> leaf_subject(const IssueRequest& request, const Profile& profile) {
  KL_TRY(X509NamePtr subject, profile_subject(profile));
  KL_CHECK(add_name_entry(subject.get(), "CN", request.registration_id.str()));
  if (profile.serial_number_attribute)
    KL_CHECK(add_name_entry(subject.get(), "serialNumber", *request.device_serial));
  return subject;
}

// The leaf subject as DER and as text. The profile's C/O/OU part is encoded
// by OpenSSL once per thread and profile; the CN (a registration ID: only
// [a-z0-9-._:], nothing to escape) is appended to it by hand, as the UTF8String
// OpenSSL would write. Profiles with a serialNumber attribute take the
// general path.
struct LeafSubject {
  Bytes der;
  std::string text;
};

Result<LeafSubject> encode_leaf_subject(const IssueRequest& request, const Profile& profile) {
  if (profile.serial_number_attribute) {
    KL_TRY(X509NamePtr name, leaf_subject(request, profile));
    LeafSubject out;
    unsigned char* p = nullptr;
    int n = i2d_X509_NAME(name.get(), &p);
    if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding the subject"));
    out.der.assign(p, p + n);
    OPENSSL_free(p);
    out.text = name_to_string(name.get());
    return out;
  }
  struct Prefix {
    std::string c, o, ou;
    Bytes rdns;          // the SET OF RDNs before the CN, DER
    std::string text;    // ",OU=..,O=..,C=.." (RFC 2253 order: CN first)
    bool valid = false;
  };
  thread_local Prefix prefix;
  if (!prefix.valid || prefix.c != profile.subject_c || prefix.o != profile.subject_o ||
      prefix.ou != profile.subject_ou) {
    KL_TRY(X509NamePtr name, profile_subject(profile));
    unsigned char* p = nullptr;
    int n = i2d_X509_NAME(name.get(), &p);
    if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding the subject"));
    std::span<const unsigned char> whole(p, static_cast<std::size_t>(n));
    auto seq = der::expect(whole, 0x30);
    if (!seq) {
      OPENSSL_free(p);
      return fail(Domain::internal, "OpenSSL encoded a subject that is not a SEQUENCE");
    }
    prefix.rdns.assign(seq->value.begin(), seq->value.end());
    OPENSSL_free(p);
    prefix.text = X509_NAME_entry_count(name.get()) ? "," + name_to_string(name.get()) : "";
    prefix.c = profile.subject_c;
    prefix.o = profile.subject_o;
    prefix.ou = profile.subject_ou;
    prefix.valid = true;
  }
  static constexpr unsigned char kOidCn[] = {0x06, 0x03, 0x55, 0x04, 0x03};
  const std::string& id = request.registration_id.str();
  Bytes atv(std::begin(kOidCn), std::end(kOidCn));
  detail::der_append_tlv(atv, 0x0c, ByteView(reinterpret_cast<const unsigned char*>(id.data()), id.size()));
  Bytes rdn;
  detail::der_append_tlv(rdn, 0x30, atv);
  Bytes rdns = prefix.rdns;
  detail::der_append_tlv(rdns, 0x31, rdn);
  LeafSubject out;
  out.der.reserve(rdns.size() + 4);
  detail::der_append_tlv(out.der, 0x30, rdns);
  out.text.reserve(3 + id.size() + prefix.text.size());
  out.text.append("CN=").append(id).append(prefix.text);
  return out;
}

// subjectAltName for the profile, or null when the profile has none.
Result<GeneralNamesPtr> leaf_alt_names(const IssueRequest& request, const Profile& profile) {
  if (profile.uri_san_template.empty() && profile.hardware_module_oid.empty()) return GeneralNamesPtr();
  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!profile.uri_san_template.empty()) {
    std::string uri = profile.uri_san_template;
    const std::string key = "{registration_id}";
    for (auto pos = uri.find(key); pos != std::string::npos; pos = uri.find(key))
      uri.replace(pos, key.size(), request.registration_id.str());
    GENERAL_NAME* gen = GENERAL_NAME_new();
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    ASN1_STRING_set(ia5, uri.data(), static_cast<int>(uri.size()));
    GENERAL_NAME_set0_value(gen, GEN_URI, ia5);
    sk_GENERAL_NAME_push(names.get(), gen);
  }
  if (!profile.hardware_module_oid.empty()) {
    KL_TRY(GENERAL_NAME * gen, hardware_module_name(profile.hardware_module_oid, *request.device_serial));
    sk_GENERAL_NAME_push(names.get(), gen);
  }
  return names;
}

// Fixed leaf extensions, DER (RFC 5280 §4.2.1.9, §4.2.1.3, §4.2.1.12).
constexpr unsigned char kExtBasicConstraintsLeaf[] = {0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01,
                                                      0x01, 0xff, 0x04, 0x02, 0x30, 0x00};
constexpr unsigned char kExtKeyUsageSign[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01,
                                              0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80};
constexpr unsigned char kExtKeyUsageSignAgree[] = {0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01,
                                                   0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x03, 0x88};
constexpr unsigned char kExtEkuClientAuth[] = {0x30, 0x13, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x0c, 0x30, 0x0a,
                                               0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
constexpr unsigned char kOidSki[] = {0x06, 0x03, 0x55, 0x1d, 0x0e};
constexpr unsigned char kOidAki[] = {0x06, 0x03, 0x55, 0x1d, 0x23};
constexpr unsigned char kOidEcPublicKey[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};

void append(Bytes& out, ByteView b) { out.insert(out.end(), b.begin(), b.end()); }

// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
void append_time(Bytes& out, TimePoint t) {
  std::time_t tt = static_cast<std::time_t>(t.time_since_epoch().count());
  std::tm tm{};
  gmtime_r(&tt, &tm);
  int year = tm.tm_year + 1900;
  char buf[24];
  int n;
  if (year >= 1950 && year < 2050)
    n = std::snprintf(buf, sizeof buf, "%02d%02d%02d%02d%02d%02dZ", year % 100, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec);
  else
    n = std::snprintf(buf, sizeof buf, "%04d%02d%02d%02d%02d%02dZ", year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                      tm.tm_min, tm.tm_sec);
  detail::der_append_tlv(out, year >= 1950 && year < 2050 ? 0x17 : 0x18,
                         ByteView(reinterpret_cast<const unsigned char*>(buf), static_cast<std::size_t>(n)));
}

}  // namespace

TimePoint Authority::leaf_not_after(const Profile& profile, TimePoint now) const {
  TimePoint until = now + std::chrono::days(*profile.validity_days);
  return until > issuer_not_after_ ? issuer_not_after_ : until;  // a leaf never outlives its issuer
}

Status Authority::check_issuer(TimePoint now) const {
  if (issuer_key_id_.empty())
    return fail(Domain::state, "the issuing CA certificate has no subjectKeyIdentifier, so leaves could not name it "
                               "(authorityKeyIdentifier); install an intermediate certificate that has one");
  if (now >= issuer_not_after_)
    return fail(Domain::state, "the issuing CA certificate expired at " + format_utc(issuer_not_after_) +
                                   "; nothing can be issued under it -- install a renewed intermediate certificate");
  return {};
}

Status Authority::check_profile(const Profile& profile) const {
  auto subject = profile_subject(profile);
  if (!subject)
    return fail(Domain::state, "profile '" + profile.name + "': its subject (C, O, OU) cannot be encoded: " +
                                   subject.error().message() + "; fix the profile in keyline.toml");
  std::unique_ptr<ASN1_OBJECT, Free<ASN1_OBJECT_free>> oid(
      profile.hardware_module_oid.empty() ? nullptr : OBJ_txt2obj(profile.hardware_module_oid.c_str(), 1));
  if (!profile.hardware_module_oid.empty() && !oid)
    return fail(Domain::state, "profile '" + profile.name + "': hardware_module_oid '" + profile.hardware_module_oid +
                                   "' is not a dotted OID; fix the profile in keyline.toml");
  return {};
}

Result<IssuedCertificate> Authority::issue(const IssueRequest& request, const Profile& profile) const {
  KL_CHECK(check_request(request, profile));
  TimePoint now = clock_->now();
  KL_CHECK(check_issuer(now));
  // SubjectPublicKeyInfo: the key type and the BIT STRING hashed for the SKI.
  std::span<const unsigned char> spki_in(request.public_key);
  auto spki = der::expect(spki_in, 0x30);
  std::span<const unsigned char> spki_body = spki ? spki->value : std::span<const unsigned char>();
  auto key_alg = der::expect(spki_body, 0x30);
  auto key_bits = der::expect(spki_body, 0x03);
  if (!spki || !spki_in.empty() || !key_alg || !key_bits || key_bits->value.empty())
    return fail(Domain::input, "the public key is not a DER SubjectPublicKeyInfo");
  std::span<const unsigned char> alg_body = key_alg->value;
  auto alg_oid = der::expect(alg_body, 0x06);
  bool ec = alg_oid && der::equals(alg_oid->value, kOidEcPublicKey);

  Bytes serial = new_serial(now);
  TimePoint not_before = now - profile.backdate;
  TimePoint not_after = profile.validity_days ? leaf_not_after(profile, now) : kForever;
  KL_TRY(LeafSubject subject, encode_leaf_subject(request, profile));

  Bytes exts;
  exts.reserve(256);
  append(exts, kExtBasicConstraintsLeaf);
  if (ec && profile.key_agreement) append(exts, kExtKeyUsageSignAgree);
  else append(exts, kExtKeyUsageSign);
  append(exts, kExtEkuClientAuth);
  {
    unsigned char sha1[SHA_DIGEST_LENGTH];
    auto bits = key_bits->value.subspan(1);  // after the unused-bits octet
    sha1_into(bits, sha1);
    Bytes key_id, octets, ext;
    detail::der_append_tlv(key_id, 0x04, ByteView(sha1, sizeof sha1));
    append(ext, kOidSki);
    detail::der_append_tlv(ext, 0x04, key_id);
    detail::der_append_tlv(exts, 0x30, ext);
  }
  {
    Bytes aki_seq, aki_octets, ext;
    detail::der_append_tlv(aki_seq, 0x80, issuer_key_id_);
    detail::der_append_tlv(aki_octets, 0x30, aki_seq);
    append(ext, kOidAki);
    detail::der_append_tlv(ext, 0x04, aki_octets);
    detail::der_append_tlv(exts, 0x30, ext);
  }
  KL_TRY(GeneralNamesPtr names, leaf_alt_names(request, profile));
  if (names) {
    X509ExtPtr san(X509V3_EXT_i2d(NID_subject_alt_name, 0, names.get()));
    unsigned char* p = nullptr;
    int n = san ? i2d_X509_EXTENSION(san.get(), &p) : -1;
    if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding subjectAltName"));
    exts.insert(exts.end(), p, p + n);
    OPENSSL_free(p);
  }

  Bytes body;
  body.reserve(512 + exts.size() + subject.der.size() + request.public_key.size());
  static constexpr unsigned char kVersion3[] = {0xa0, 0x03, 0x02, 0x01, 0x02};
  append(body, kVersion3);
  detail::der_append_tlv(body, 0x02, serial);
  Bytes sig_alg = detail::signature_algorithm_der(signer_->algorithm());
  append(body, sig_alg);
  append(body, issuer_name_der_);
  Bytes validity;
  append_time(validity, not_before);
  append_time(validity, not_after);
  detail::der_append_tlv(body, 0x30, validity);
  append(body, subject.der);
  append(body, request.public_key);
  Bytes ext_seq;
  detail::der_append_tlv(ext_seq, 0x30, exts);
  detail::der_append_tlv(body, 0xa3, ext_seq);
  Bytes tbs;
  detail::der_append_tlv(tbs, 0x30, body);

  Bytes digest(hsm::digest_size(hsm::digest_for(signer_->algorithm())));
  if (hsm::digest_for(signer_->algorithm()) == hsm::Digest::sha384) sha384_into(tbs, digest.data());
  else sha256_into(tbs, digest.data());
  KL_TRY(Bytes signature, signer_->sign(digest));

  IssuedCertificate out;
  out.der = detail::assemble_signed(tbs, sig_alg, signature);
  out.pem = pem_encode("CERTIFICATE", out.der);
  out.serial_hex = to_hex(serial);
  out.registration_id = request.registration_id.str();
  out.subject = std::move(subject.text);
  out.cert_sha256 = sha256_hex(out.der);
  out.pubkey_sha256 = sha256_hex(request.public_key);
  out.not_before = not_before;
  out.not_after = not_after;
  return out;
}

Result<IssuedCertificate> Authority::issue_reference(const IssueRequest& request,
                                                     const Profile& profile) const {
  KL_CHECK(check_request(request, profile));
  KL_TRY(EvpPkeyPtr subject_key, hsm::public_key_from_der(request.public_key));

  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  TimePoint now = clock_->now();
  KL_CHECK(check_issuer(now));
  Bytes serial = new_serial(now);
  BignumPtr bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));

  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_.get()));
  KL_TRY(X509NamePtr subject, leaf_subject(request, profile));
  X509_set_subject_name(cert.get(), subject.get());

  KL_CHECK(set_time(X509_getm_notBefore(cert.get()), now - profile.backdate));
  if (profile.validity_days) {
    KL_CHECK(set_time(X509_getm_notAfter(cert.get()), leaf_not_after(profile, now)));
  } else if (!ASN1_TIME_set_string_X509(X509_getm_notAfter(cert.get()), "99991231235959Z")) {
    return std::unexpected(openssl_error(Domain::openssl, "setting notAfter to 99991231235959Z"));
  }
  X509_set_pubkey(cert.get(), subject_key.get());

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_.get(), cert.get(), nullptr, nullptr, 0);
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  bool ec = EVP_PKEY_is_a(subject_key.get(), "EC");
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_key_usage,
                   ec && profile.key_agreement ? "critical,digitalSignature,keyAgreement"
                                               : "critical,digitalSignature"));
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_ext_key_usage, "clientAuth"));
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  KL_TRY(GeneralNamesPtr names, leaf_alt_names(request, profile));
  if (names && !X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT))
    return std::unexpected(openssl_error(Domain::openssl, "adding subjectAltName"));

  KL_TRY(X509Ptr signed_cert, detail::sign_certificate(cert.get(), *signer_));
  return describe(*signed_cert);
}

Result<IssuedCertificate> describe(const X509& cert_ref) {
  X509* cert = const_cast<X509*>(&cert_ref);
  IssuedCertificate out;
  KL_TRY(out.der, to_der(cert));
  out.pem = to_pem(cert);
  BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  char* hex = BN_bn2hex(bn.get());
  out.serial_hex = hex;
  OPENSSL_free(hex);
  const X509_NAME* subject = X509_get_subject_name(cert);
  out.subject = name_to_string(subject);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
    if (len >= 0) {
      out.registration_id.assign(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
      OPENSSL_free(utf8);
    }
  }
  out.cert_sha256 = sha256_hex(out.der);
  KL_TRY(Bytes spki, hsm::public_key_der(X509_get0_pubkey(cert)));
  out.pubkey_sha256 = sha256_hex(spki);
  out.not_before = from_asn1(X509_get0_notBefore(cert));
  out.not_after = from_asn1(X509_get0_notAfter(cert));
  return out;
}

Result<X509CrlPtr> Authority::crl(std::uint64_t number, std::span<const RevokedEntry> revoked,
                                  std::chrono::days validity) const {
  X509CrlPtr crl(X509_CRL_new());
  X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2);
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer_.get()));
  TimePoint now = clock_->now();
  Asn1TimePtr this_update(ASN1_TIME_new()), next_update(ASN1_TIME_new());
  KL_CHECK(set_time(this_update.get(), now));
  KL_CHECK(set_time(next_update.get(), now + validity));
  X509_CRL_set1_lastUpdate(crl.get(), this_update.get());
  X509_CRL_set1_nextUpdate(crl.get(), next_update.get());

  for (const auto& entry : revoked) {
    X509_REVOKED* r = X509_REVOKED_new();
    BignumPtr bn(BN_bin2bn(entry.serial.data(), static_cast<int>(entry.serial.size()), nullptr));
    Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    X509_REVOKED_set_serialNumber(r, serial.get());
    Asn1TimePtr when(ASN1_TIME_new());
    ASN1_TIME_set(when.get(), static_cast<std::time_t>(entry.revoked_at.time_since_epoch().count()));
    X509_REVOKED_set_revocationDate(r, when.get());
    if (entry.reason != RevocationReason::unspecified) {
      ASN1_ENUMERATED* code = ASN1_ENUMERATED_new();
      ASN1_ENUMERATED_set(code, static_cast<long>(entry.reason));
      X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, code, 0, 0);
      ASN1_ENUMERATED_free(code);
    }
    X509_CRL_add0_revoked(crl.get(), r);
  }
  X509_CRL_sort(crl.get());

  Asn1IntegerPtr crl_number(ASN1_INTEGER_new());
  ASN1_INTEGER_set_uint64(crl_number.get(), number);
  X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, crl_number.get(), 0, 0);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_.get(), nullptr, nullptr, crl.get(), 0);
  KL_TRY(X509ExtPtr aki, make_ext(&ctx, NID_authority_key_identifier, "keyid:always"));
  X509_CRL_add_ext(crl.get(), aki.get(), -1);
  return detail::sign_crl(crl.get(), *signer_);
}

Result<X509Ptr> Authority::verification_certificate(std::string_view code) const {
  if (code.empty() || code.size() > 64)
    return fail(Domain::input, "verification code must be 1 to 64 characters (copy it from the DPS portal or 'az iot dps certificate generate-verification-code')");
  for (char c : code)
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e)
      return fail(Domain::input, "verification code has a space or non-printable character");
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  TimePoint now = clock_->now();
  KL_CHECK(check_issuer(now));
  Bytes serial = new_serial(now);
  BignumPtr bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_.get()));
  X509NamePtr subject(X509_NAME_new());
  KL_CHECK(add_name_entry(subject.get(), "CN", code));
  X509_set_subject_name(cert.get(), subject.get());
  KL_CHECK(set_time(X509_getm_notBefore(cert.get()), now - std::chrono::minutes(5)));
  KL_CHECK(set_time(X509_getm_notAfter(cert.get()), now + std::chrono::days(30)));
  X509_set_pubkey(cert.get(), X509_get0_pubkey(issuer_.get()));
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_.get(), cert.get(), nullptr, nullptr, 0);
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  return detail::sign_certificate(cert.get(), *signer_);
}

}  // namespace keyline::ca
