#include <gtest/gtest.h>

#include "keyline/ca/csr_policy.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::ca {
namespace {

using testkit::csr_pem;

Result<AcceptedCsr> check(const std::string& pem, const Profile& profile = {},
                          std::optional<std::string> expected = std::nullopt) {
  KL_TRY(X509ReqPtr req, parse_csr(pem, "test.csr"));
  std::optional<RegistrationId> id;
  if (expected) id = *RegistrationId::parse(*expected);
  return check_csr(*req, profile, id, "test.csr");
}

TEST(CsrPolicy, AcceptsAllowedKeysAndReturnsTheKeyAndId) {
  auto p256 = testkit::ec_key("P-256");
  auto ok = check(csr_pem(p256.get(), "Dev-1"));
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->registration_id.str(), "dev-1");
  EXPECT_EQ(ok->key_algorithm, hsm::Algorithm::ec_p256);
  EXPECT_EQ(ok->public_key, *hsm::public_key_der(p256.get()));
  auto p384 = check(csr_pem(testkit::ec_key("P-384").get(), "d"));
  ASSERT_TRUE(p384);
  EXPECT_EQ(p384->key_algorithm, hsm::Algorithm::ec_p384);
  EXPECT_TRUE(check(csr_pem(testkit::rsa_key(2048).get(), "d")));
}

TEST(CsrPolicy, RefusesWeakOrUnsupportedKeys) {
  auto rsa1024 = check(csr_pem(testkit::rsa_key(1024).get(), "d"));
  ASSERT_FALSE(rsa1024);
  EXPECT_EQ(rsa1024.error().domain(), Domain::policy);
  EXPECT_NE(rsa1024.error().message().find("1024 bits"), std::string::npos);
  auto k1 = check(csr_pem(testkit::ec_key("secp256k1").get(), "d"));
  ASSERT_FALSE(k1);
  EXPECT_NE(k1.error().message().find("secp256k1"), std::string::npos);
  Profile ec_only;
  ec_only.allow_rsa = false;
  auto rsa = check(csr_pem(testkit::rsa_key(2048).get(), "d"), ec_only);
  ASSERT_FALSE(rsa);
  EXPECT_NE(rsa.error().message().find("does not allow RSA"), std::string::npos);
  Profile big_rsa;
  big_rsa.min_rsa_bits = 3072;
  EXPECT_FALSE(check(csr_pem(testkit::rsa_key(2048).get(), "d"), big_rsa));
}

TEST(CsrPolicy, BrokenSignatureIsNoProofOfPossession) {
  auto key = testkit::ec_key();
  Bytes der = testkit::csr_der(key.get(), "dev-1");
  der[der.size() - 5] ^= 0x01;  // inside the signature value
  std::string bytes(der.begin(), der.end());
  auto req = parse_csr(bytes, "x.der");
  ASSERT_TRUE(req);
  auto r = check_csr(**req, {}, std::nullopt, "x.der");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::input);
  EXPECT_NE(r.error().message().find("signature does not verify"), std::string::npos);
}

TEST(CsrPolicy, CommonNameMustMatchTheRegistrationId) {
  auto key = testkit::ec_key();
  auto r = check(csr_pem(key.get(), "dev-1"), {}, "dev-2");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::policy);
  EXPECT_NE(r.error().message().find("does not match"), std::string::npos);
  EXPECT_TRUE(check(csr_pem(key.get(), "DEV-1"), {}, "dev-1"));  // case-insensitive
  auto slash = check(csr_pem(key.get(), "dev/1"));
  ASSERT_FALSE(slash);
  EXPECT_NE(slash.error().message().find("position 4"), std::string::npos);
}

TEST(CsrPolicy, RequestedExtensionsOnlyWhenTheProfileAllows) {
  auto key = testkit::ec_key();
  std::string pem = csr_pem(key.get(), "d", {"basicConstraints=CA:TRUE"});
  auto r = check(pem);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::policy);
  EXPECT_NE(r.error().message().find("basicConstraints"), std::string::npos);
  Profile san_ok;
  san_ok.allowed_request_extensions = {"subjectAltName"};
  EXPECT_TRUE(check(csr_pem(key.get(), "d", {"subjectAltName=DNS:d.example"}), san_ok));
  EXPECT_FALSE(check(csr_pem(key.get(), "d", {"subjectAltName=DNS:d.example"})));
}

TEST(CsrPolicy, ParsingRules) {
  auto key = testkit::ec_key();
  Bytes der = testkit::csr_der(key.get(), "d");
  std::string der_text(der.begin(), der.end());
  EXPECT_TRUE(parse_csr(der_text, "d.der", CsrEncoding::any));
  auto pem_only = parse_csr(der_text, "d.der", CsrEncoding::pem);
  ASSERT_FALSE(pem_only);
  EXPECT_NE(pem_only.error().message().find("openssl req -inform DER"), std::string::npos);
  std::string big = csr_pem(key.get(), "d") + std::string(kMaxCsrBytes, '#');
  auto too_big = parse_csr(big, "big.csr");
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message().find("16384"), std::string::npos);
  EXPECT_FALSE(parse_csr("hello", "h.csr"));
  EXPECT_FALSE(parse_csr("", "e.csr"));
  auto truncated = parse_csr(csr_pem(key.get(), "d").substr(0, 100) + "\n-----END CERTIFICATE REQUEST-----\n", "t.csr");
  EXPECT_FALSE(truncated);
}

}  // namespace
}  // namespace keyline::ca

namespace keyline::ca {
namespace {

// accept_simple_csr must agree with parse_csr + check_csr whenever it answers.
TEST(SimpleCsr, AgreesWithTheFullPath) {
  Profile p;
  struct Input {
    std::string bytes;
    bool expect_fast;
  };
  auto p256 = testkit::ec_key("P-256");
  auto p384 = testkit::ec_key("P-384");
  Bytes der = testkit::csr_der(p256.get(), "Der-Dev");
  std::vector<Input> inputs = {
      {csr_pem(p256.get(), "Dev-1"), true},
      {csr_pem(p384.get(), "dev-2"), true},
      {std::string(der.begin(), der.end()), true},
      {csr_pem(testkit::rsa_key(2048).get(), "rsa-1"), false},                      // RSA: full path
      {csr_pem(p256.get(), "d", {"subjectAltName=DNS:x"}), false},                  // attributes
      {csr_pem(p256.get(), "dev/1"), false},                                        // bad CN
      {csr_pem(testkit::ec_key("secp256k1").get(), "k1"), false},                   // curve
  };
  Bytes broken = der;
  broken[broken.size() - 3] ^= 0x40;
  inputs.push_back({std::string(broken.begin(), broken.end()), false});
  for (auto& in : inputs) {
    auto fast = accept_simple_csr(in.bytes, p);
    EXPECT_EQ(fast.has_value(), in.expect_fast);
    auto req = parse_csr(in.bytes, "x");
    Result<AcceptedCsr> full = req ? check_csr(**req, p, std::nullopt, "x") : std::unexpected(req.error());
    if (fast) {
      ASSERT_TRUE(full) << full.error().message();
      EXPECT_EQ(fast->registration_id, full->registration_id);
      EXPECT_EQ(fast->public_key, full->public_key);
      EXPECT_EQ(fast->key_algorithm, full->key_algorithm);
    }
  }
  // A '=' inside the base64 where an 'A' was decodes to the same bytes
  // (zero bits) with a lenient decoder; PEM refuses it, and so does the
  // fast path.
  {
    std::string pem = csr_pem(p256.get(), "pad-1");
    auto body = pem.find('\n') + 1;
    auto a = pem.find('A', body + 8);
    ASSERT_NE(a, std::string::npos);
    ASSERT_LT(a, pem.find("-----END") - 8);
    pem[a] = '=';
    EXPECT_FALSE(accept_simple_csr(pem, p));
    EXPECT_FALSE(parse_csr(pem, "x"));
  }
  Profile no_p384;
  no_p384.allow_ec_p384 = false;
  EXPECT_FALSE(accept_simple_csr(csr_pem(p384.get(), "d"), no_p384));
}

}  // namespace
}  // namespace keyline::ca
