#include <gtest/gtest.h>

#include <openssl/x509v3.h>

#include <algorithm>
#include <set>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/testkit/testkit.hpp"
#include "test_clock.hpp"

namespace keyline::ca {
namespace {

class AuthorityTest : public ::testing::Test {
 protected:
  void SetUp() override { make_ca(hsm::Algorithm::ec_p256); }

  void make_ca(hsm::Algorithm algorithm) {
    auto store = hsm::open("file:" + (dir_ / ("keys-" + std::string(hsm::to_string(algorithm)))).string());
    ASSERT_TRUE(store);
    store_ = std::move(*store);
    auto root_key = store_->generate_signing_key("root", algorithm);
    auto inter_key = store_->generate_signing_key("inter", algorithm);
    ASSERT_TRUE(root_key && inter_key);
    auto root = make_root(**root_key, *parse_dn("CN=Test Root").value(), 3650, clock_, rng_);
    ASSERT_TRUE(root) << root.error().message();
    auto inter = make_intermediate(**root_key, **root, (*inter_key)->public_key(),
                                   *parse_dn("CN=Test Intermediate").value(), 365, clock_, rng_);
    ASSERT_TRUE(inter) << inter.error().message();
    root_pem_ = to_pem(root->get());
    inter_key_ = *inter_key;
    std::vector<X509Ptr> chain;
    chain.push_back(std::move(*root));
    auto authority = Authority::create(std::move(*inter), std::move(chain), *inter_key, clock_, rng_);
    ASSERT_TRUE(authority) << authority.error().message();
    authority_.emplace(std::move(*authority));
  }

  IssuedCertificate issue(const Profile& profile, const std::string& id = "dev-1",
                          std::optional<std::string> serial = std::nullopt) {
    auto key = testkit::ec_key();
    IssueRequest req{*RegistrationId::for_certificate(id), *hsm::public_key_der(key.get()), serial};
    auto cert = authority_->issue(req, profile);
    EXPECT_TRUE(cert) << (cert ? "" : cert.error().message());
    return cert ? *cert : IssuedCertificate{};
  }

  testkit::TempDir dir_;
  FixedClock clock_{test::t0()};
  test::CountingRng rng_;
  std::unique_ptr<hsm::KeyStore> store_;
  std::optional<Authority> authority_;
  std::shared_ptr<const hsm::Signer> inter_key_;
  std::string root_pem_;
};

X509Ptr parse(const IssuedCertificate& c) { return *x509_from_der(c.der); }

TEST_F(AuthorityTest, LeafHasTheDeviceProfileAndVerifiesUnderStrictRules) {
  Profile p;
  IssuedCertificate c = issue(p);
  X509Ptr x = parse(c);
  EXPECT_EQ(c.registration_id, "dev-1");
  EXPECT_EQ(c.serial_hex.size(), 32u);
  EXPECT_LT(std::stoi(c.serial_hex.substr(0, 1), nullptr, 16), 8);  // positive
  EXPECT_EQ(c.not_before, test::t0() - std::chrono::minutes(5));
  EXPECT_EQ(c.not_after, test::t0() + std::chrono::days(365));
  EXPECT_EQ(X509_get_signature_nid(x.get()), NID_ecdsa_with_SHA256);
  ASSERT_TRUE(verify_chain(*x, authority_->issuer(), *authority_->chain().back(), clock_));

  int crit = -1;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(x.get(), NID_basic_constraints, &crit, nullptr));
  ASSERT_TRUE(bc);
  EXPECT_FALSE(bc->ca);
  EXPECT_EQ(crit, 1);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(x.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(x.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(x.get());
  ASSERT_TRUE(aki);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(const_cast<X509*>(&authority_->issuer()))), 0);
  EXPECT_TRUE(X509_get0_subject_key_id(x.get()));
}

TEST_F(AuthorityTest, SerialsAreSixteenBytesTimeOrderedAndMostlyRandom) {
  Profile p;
  auto a = issue(p, "a");
  auto b = issue(p, "b");
  EXPECT_NE(a.serial_hex, b.serial_hex);
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 49) clock_.advance(std::chrono::seconds(1));
    Bytes s = authority_->new_serial(clock_.now());
    ASSERT_EQ(s.size(), 16u);
    EXPECT_EQ(s[0] & 0xC0, 0x40);  // positive, and its DER is always 16 bytes
    std::string hex = to_hex(s);
    EXPECT_GT(hex, previous) << "serial " << i << " sorts before the one made before it";
    previous = hex;
    seen.insert(hex);
    // Bits 61..28 are the clock's second.
    std::uint64_t head = 0;
    for (int k = 0; k < 8; ++k) head = head << 8 | s[static_cast<std::size_t>(k)];
    EXPECT_EQ(static_cast<std::int64_t>(head >> 28 & ((std::uint64_t{1} << 34) - 1)),
              clock_.now().time_since_epoch().count());
  }
  EXPECT_EQ(seen.size(), 200u);
}

TEST_F(AuthorityTest, SerialsTakeTheirLastSeventyTwoBitsFromTheRng) {
  // Two authorities with the same clock and sequence position but
  // different generators differ in the random part only; the sequence
  // number (bits 27..8) counts each authority's serials.
  struct ZeroRng final : Rng {
    void fill(std::span<unsigned char> out) override { std::fill(out.begin(), out.end(), 0); }
  } zeros;
  struct OnesRng final : Rng {
    void fill(std::span<unsigned char> out) override { std::fill(out.begin(), out.end(), 0xFF); }
  } ones;
  auto a = Authority::create(X509Ptr(X509_dup(&authority_->issuer())), {}, inter_key_, clock_, zeros);
  auto b = Authority::create(X509Ptr(X509_dup(&authority_->issuer())), {}, inter_key_, clock_, ones);
  ASSERT_TRUE(a && b);
  Bytes sa, sb;
  for (int i = 0; i < 3; ++i) sa = a->new_serial(clock_.now()), sb = b->new_serial(clock_.now());
  auto head = [](const Bytes& s) {
    std::uint64_t h = 0;
    for (std::size_t k = 0; k < 8; ++k) h = h << 8 | s[k];
    return h;
  };
  EXPECT_EQ(head(sa) >> 8 & 0xFFFFF, 2u);  // the third serial of each
  EXPECT_EQ(head(sa) >> 8, head(sb) >> 8);  // bytes 0..6: bits 01, second, sequence
  EXPECT_EQ(sa[7], 0x00);
  EXPECT_EQ(sb[7], 0xFF);
  for (std::size_t i = 8; i < 16; ++i) {
    EXPECT_EQ(sa[i], 0x00);
    EXPECT_EQ(sb[i], 0xFF);
  }
}

TEST_F(AuthorityTest, ValidityIsClampedToTheIssuer) {
  Profile p;
  p.validity_days = 5000;  // beyond the intermediate's 365 days
  auto c = issue(p);
  EXPECT_EQ(c.not_after, test::t0() + std::chrono::days(365));
}

TEST_F(AuthorityTest, AnExpiredIssuerIssuesNothing) {
  Profile p;
  p.validity_days = 30;
  clock_.advance(std::chrono::days(365) - std::chrono::seconds(1));  // its last second
  EXPECT_EQ(issue(p).not_after, test::t0() + std::chrono::days(365));
  clock_.advance(std::chrono::seconds(1));
  auto key = testkit::ec_key();
  IssueRequest req{*RegistrationId::for_certificate("dev-late"), *hsm::public_key_der(key.get()), std::nullopt};
  for (auto issued : {authority_->issue(req, p), authority_->issue_reference(req, p)}) {
    ASSERT_FALSE(issued);
    EXPECT_EQ(issued.error().domain(), Domain::state);  // a station fault, not the request's
    EXPECT_NE(issued.error().message().find("expired at 2027-05-28"), std::string::npos) << issued.error().message();
  }
  EXPECT_FALSE(authority_->check_issuer(clock_.now()));
  EXPECT_TRUE(authority_->check_issuer(clock_.now() - std::chrono::seconds(1)));
}

TEST_F(AuthorityTest, ProfilesThatCannotEncodeAreAStationFault) {
  Profile ok;
  EXPECT_TRUE(authority_->check_profile(ok));
  Profile long_country;
  long_country.name = "bad-c";
  long_country.subject_c = "DEU";  // C is two letters
  auto c = authority_->check_profile(long_country);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().domain(), Domain::state);
  EXPECT_NE(c.error().message().find("profile 'bad-c'"), std::string::npos) << c.error().message();
  Profile bad_oid;
  bad_oid.hardware_module_oid = "not an oid";
  EXPECT_FALSE(authority_->check_profile(bad_oid));
}

TEST_F(AuthorityTest, IDevIdProfileNeverExpiresAndCarriesTheSerial) {
  Profile p;
  p.name = "idevid";
  p.validity_days.reset();
  p.serial_number_attribute = true;
  p.hardware_module_oid = "1.3.6.1.4.1.99999.1";
  p.subject_o = "Example";
  p.key_agreement = true;
  p.uri_san_template = "urn:example:{registration_id}";
  auto missing = authority_->issue({*RegistrationId::parse("d"), *hsm::public_key_der(testkit::ec_key().get()), std::nullopt}, p);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().domain(), Domain::policy);

  auto c = issue(p, "board-1", "SN-42");
  X509Ptr x = parse(c);
  const ASN1_TIME* na = X509_get0_notAfter(x.get());
  EXPECT_EQ(ASN1_STRING_type(na), V_ASN1_GENERALIZEDTIME);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(na)), ASN1_STRING_length(na)), "99991231235959Z");
  EXPECT_NE(c.subject.find("serialNumber=SN-42"), std::string::npos) << c.subject;
  EXPECT_NE(c.subject.find("O=Example"), std::string::npos);
  EXPECT_EQ(X509_get_key_usage(x.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT));

  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr));
  ASSERT_TRUE(names);
  ASSERT_EQ(sk_GENERAL_NAME_num(names), 2);
  GENERAL_NAME* uri = sk_GENERAL_NAME_value(names, 0);
  ASSERT_EQ(uri->type, GEN_URI);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri->d.uniformResourceIdentifier))),
            "urn:example:board-1");
  GENERAL_NAME* other = sk_GENERAL_NAME_value(names, 1);
  ASSERT_EQ(other->type, GEN_OTHERNAME);
  char oid[64];
  OBJ_obj2txt(oid, sizeof oid, other->d.otherName->type_id, 1);
  EXPECT_STREQ(oid, "1.3.6.1.5.5.7.8.4");
  GENERAL_NAMES_free(names);
  ASSERT_TRUE(verify_chain(*x, authority_->issuer(), *authority_->chain().back(), clock_));
}

TEST_F(AuthorityTest, P384IssuerSignsWithSha384) {
  make_ca(hsm::Algorithm::ec_p384);
  auto c = issue(Profile{});
  EXPECT_EQ(X509_get_signature_nid(parse(c).get()), NID_ecdsa_with_SHA384);
}

TEST_F(AuthorityTest, RsaIssuerSignsWithSha256Rsa) {
  make_ca(hsm::Algorithm::rsa_2048);
  auto c = issue(Profile{});
  X509Ptr x = parse(c);
  EXPECT_EQ(X509_get_signature_nid(x.get()), NID_sha256WithRSAEncryption);
  ASSERT_TRUE(verify_chain(*x, authority_->issuer(), *authority_->chain().back(), clock_));
}

TEST_F(AuthorityTest, CreateRefusesAKeyThatIsNotTheIssuers) {
  auto other = store_->generate_signing_key("other", hsm::Algorithm::ec_p256);
  ASSERT_TRUE(other);
  X509Ptr issuer(X509_dup(const_cast<X509*>(&authority_->issuer())));
  auto r = Authority::create(std::move(issuer), {}, *other, clock_, rng_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::keystore);
}

TEST_F(AuthorityTest, CrlIsSignedNumberedAndListsReasons) {
  Bytes serial{0x41, 0x02, 0x03};
  RevokedEntry entry{serial, test::t0(), RevocationReason::key_compromise};
  auto crl = authority_->crl(7, std::span(&entry, 1), std::chrono::days(7));
  ASSERT_TRUE(crl) << crl.error().message();
  EvpPkeyPtr pub(X509_get_pubkey(const_cast<X509*>(&authority_->issuer())));
  EXPECT_EQ(X509_CRL_verify(crl->get(), pub.get()), 1);
  EXPECT_EQ(X509_CRL_get_version(crl->get()), X509_CRL_VERSION_2);
  auto* number = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr));
  ASSERT_TRUE(number);
  EXPECT_EQ(ASN1_INTEGER_get(number), 7);
  ASN1_INTEGER_free(number);
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl->get())), 1);
  X509_REVOKED* r = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl->get()), 0);
  auto* reason = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, nullptr, nullptr));
  ASSERT_TRUE(reason);
  EXPECT_EQ(ASN1_ENUMERATED_get(reason), 1);
  ASN1_ENUMERATED_free(reason);
}

TEST_F(AuthorityTest, VerificationCertificateCarriesTheCode) {
  auto cert = authority_->verification_certificate("0A1B2C3D");
  ASSERT_TRUE(cert) << cert.error().message();
  EXPECT_EQ(name_to_string(X509_get_subject_name(cert->get())), "CN=0A1B2C3D");
  EvpPkeyPtr pub(X509_get_pubkey(const_cast<X509*>(&authority_->issuer())));
  EXPECT_EQ(X509_verify(cert->get(), pub.get()), 1);
  EXPECT_FALSE(authority_->verification_certificate("has space"));
  EXPECT_FALSE(authority_->verification_certificate(""));
}

TEST(Ceremony, ImportChecksKeyAndChain) {
  testkit::TempDir dir;
  FixedClock clock(test::t0());
  test::CountingRng rng;
  auto store = *hsm::open("file:" + (dir / "k").string());
  auto root_key = *store->generate_signing_key("root", hsm::Algorithm::ec_p256);
  auto inter_key = *store->generate_signing_key("inter", hsm::Algorithm::ec_p256);
  auto other_key = *store->generate_signing_key("other", hsm::Algorithm::ec_p256);
  auto csr = make_request(*inter_key, *parse_dn("CN=Line CA").value());
  ASSERT_TRUE(csr) << csr.error().message();
  EvpPkeyPtr csr_pub(X509_REQ_get_pubkey(csr->get()));
  EXPECT_EQ(X509_REQ_verify(csr->get(), csr_pub.get()), 1);
  auto root = *make_root(*root_key, *parse_dn("CN=Offline Root").value(), 3650, clock, rng);
  auto inter = *make_intermediate(*root_key, *root, inter_key->public_key(), *parse_dn("CN=Line CA").value(), 365, clock, rng);
  EXPECT_TRUE(check_import(*inter, *root, *inter_key, clock));
  auto wrong_key = check_import(*inter, *root, *other_key, clock);
  ASSERT_FALSE(wrong_key);
  EXPECT_EQ(wrong_key.error().domain(), Domain::keystore);
  auto other_root = *make_root(*other_key, *parse_dn("CN=Other Root").value(), 3650, clock, rng);
  auto wrong_root = check_import(*inter, *other_root, *inter_key, clock);
  ASSERT_FALSE(wrong_root);
  EXPECT_EQ(wrong_root.error().domain(), Domain::input);
}

}  // namespace
}  // namespace keyline::ca

namespace keyline::ca {
namespace {

// The fast path (DER template) and the reference path (OpenSSL X509 objects)
// must produce the same TBSCertificate byte for byte, given the same serial
// and time; signatures differ only by ECDSA's randomness.
Bytes tbs_of(const Bytes& der) {
  X509Ptr x = *x509_from_der(der);
  unsigned char* p = nullptr;
  int n = i2d_re_X509_tbs(x.get(), &p);
  Bytes out(p, p + n);
  OPENSSL_free(p);
  return out;
}

struct ParityCase {
  const char* name;
  hsm::Algorithm ca_algorithm;
  const char* subject_key;  // "P-256", "P-384", "rsa"
  bool idevid;
};

// A root and intermediate, and two authorities over the same intermediate
// key whose random sources give the same serials: the fast path and the
// OpenSSL reference path must then write the same certificate.
struct TwinAuthorities {
  testkit::TempDir dir;
  FixedClock clock{test::t0()};
  test::CountingRng setup_rng, rng_fast, rng_ref;
  X509Ptr root, inter;
  std::optional<Authority> fast, ref;

  TwinAuthorities(hsm::Algorithm algorithm, const char* root_dn, const char* inter_dn) {
    auto store = *hsm::open("file:" + (dir / "k").string());
    auto root_key = *store->generate_signing_key("root", algorithm);
    auto inter_key = *store->generate_signing_key("inter", algorithm);
    root = *make_root(*root_key, *parse_dn(root_dn).value(), 3650, clock, setup_rng);
    inter = *make_intermediate(*root_key, *root, inter_key->public_key(), *parse_dn(inter_dn).value(), 3650, clock,
                               setup_rng);
    auto make = [&](Rng& rng) {
      std::vector<X509Ptr> chain;
      chain.emplace_back(X509_dup(root.get()));
      return *Authority::create(X509Ptr(X509_dup(inter.get())), std::move(chain), inter_key, clock, rng);
    };
    fast.emplace(make(rng_fast));
    ref.emplace(make(rng_ref));
  }
};

class FastPathParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(FastPathParity, TbsIsByteIdenticalToTheReferencePath) {
  const ParityCase& pc = GetParam();
  TwinAuthorities twins(pc.ca_algorithm, "CN=Root,O=Example", "CN=Line CA,O=Example,C=DE");
  const Authority& fast = *twins.fast;
  const Authority& ref = *twins.ref;
  const FixedClock& clock = twins.clock;
  const X509Ptr& root = twins.root;
  const X509Ptr& inter = twins.inter;

  Profile p;
  p.subject_o = "Example Corp";
  p.subject_ou = "Line 1";
  p.subject_c = "DE";
  if (pc.idevid) {
    p.validity_days.reset();
    p.serial_number_attribute = true;
    p.hardware_module_oid = "1.3.6.1.4.1.99999.1";
    p.uri_san_template = "urn:example:{registration_id}";
    p.key_agreement = true;
  }
  for (int i = 0; i < 5; ++i) {
    EvpPkeyPtr key = std::string(pc.subject_key) == "rsa" ? testkit::rsa_key(2048) : testkit::ec_key(pc.subject_key);
    IssueRequest req{*RegistrationId::for_certificate("dev-" + std::to_string(i)), *hsm::public_key_der(key.get()),
                     pc.idevid ? std::optional<std::string>("SN-" + std::to_string(i)) : std::nullopt};
    auto a = fast.issue(req, p);
    auto b = ref.issue_reference(req, p);
    ASSERT_TRUE(a) << a.error().message();
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(tbs_of(a->der), tbs_of(b->der));
    EXPECT_EQ(a->serial_hex, b->serial_hex);
    EXPECT_EQ(a->subject, b->subject);
    EXPECT_EQ(a->pubkey_sha256, b->pubkey_sha256);
    EXPECT_EQ(a->not_before, b->not_before);
    EXPECT_EQ(a->not_after, b->not_after);
    EXPECT_EQ(a->registration_id, b->registration_id);
    // The fast path's own summary agrees with what OpenSSL reads back.
    auto described = describe(**x509_from_der(a->der));
    ASSERT_TRUE(described);
    EXPECT_EQ(described->pem, a->pem);
    EXPECT_EQ(described->serial_hex, a->serial_hex);
    EXPECT_EQ(described->cert_sha256, a->cert_sha256);
    ASSERT_TRUE(verify_chain(**x509_from_der(a->der), *inter, *root, clock));
  }
}

// The fast path keeps the profile's encoded C/O/OU per thread: switching
// profiles (and names OpenSSL must escape or encode) changes it.
TEST(FastPathSubject, FollowsTheProfileAndMatchesOpenSsl) {
  TwinAuthorities twins(hsm::Algorithm::ec_p256, "CN=Root", "CN=Line CA");
  const Authority& fast = *twins.fast;
  const Authority& ref = *twins.ref;
  Profile plain, named, escaped;
  named.subject_o = "Example Corp";
  named.subject_c = "DE";
  escaped.subject_o = "Acme, Inc. \"Nord\" +1";
  escaped.subject_ou = "Zoë's line #2";
  EvpPkeyPtr key = testkit::ec_key("P-256");
  int i = 0;
  for (const Profile* p : {&plain, &named, &escaped, &plain, &escaped, &named}) {
    IssueRequest req{*RegistrationId::for_certificate("dev-" + std::to_string(i++) + ".a_b:c"),
                     *hsm::public_key_der(key.get()), std::nullopt};
    auto a = fast.issue(req, *p);
    auto b = ref.issue_reference(req, *p);
    ASSERT_TRUE(a) << a.error().message();
    ASSERT_TRUE(b) << b.error().message();
    EXPECT_EQ(tbs_of(a->der), tbs_of(b->der));
    EXPECT_EQ(a->subject, b->subject);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, FastPathParity,
                         ::testing::Values(ParityCase{"p256_device", hsm::Algorithm::ec_p256, "P-256", false},
                                           ParityCase{"p256_idevid", hsm::Algorithm::ec_p256, "P-256", true},
                                           ParityCase{"p384_ca_p384_key", hsm::Algorithm::ec_p384, "P-384", false},
                                           ParityCase{"rsa_ca_rsa_key", hsm::Algorithm::rsa_2048, "rsa", true},
                                           ParityCase{"p256_ca_rsa_key", hsm::Algorithm::ec_p256, "rsa", false}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace keyline::ca
