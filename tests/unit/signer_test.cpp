// The file key store against the checks every key store passes
// (key_store_checks.hpp; the PKCS#11 and TPM tests run them on their own
// fixtures), plus what the file store does with secrets.
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include "keyline/core/hex.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/hsm/pkcs11_uri.hpp"
#include "keyline/testkit/testkit.hpp"
#include "key_store_checks.hpp"

namespace keyline::hsm {
namespace {

using namespace test;

struct Backend {
  std::string name;
  std::function<std::string(const testkit::TempDir&)> uri;
};

class KeyStoreSuite : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto s = open(GetParam().uri(dir_));
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }
  testkit::TempDir dir_;
  std::unique_ptr<KeyStore> store_;
};

TEST_P(KeyStoreSuite, GeneratedKeysSignVerifiably) {
  for (Algorithm a : {Algorithm::ec_p256, Algorithm::ec_p384, Algorithm::rsa_2048}) {
    std::string label = "k-" + std::string(to_string(a));
    auto signer = store_->generate_signing_key(label, a);
    ASSERT_TRUE(signer) << signer.error().message();
    EXPECT_EQ((*signer)->algorithm(), a);
    Bytes message{'h', 'e', 'l', 'l', 'o'};
    Bytes digest(digest_size(digest_for(a)));
    unsigned int len = 0;
    EVP_Digest(message.data(), message.size(), digest.data(), &len, evp_md(digest_for(a)), nullptr);
    auto sig = (*signer)->sign(digest);
    ASSERT_TRUE(sig) << sig.error().message();
    EXPECT_TRUE(verifies(**signer, message, *sig));
    message[0] ^= 1;
    EXPECT_FALSE(verifies(**signer, message, *sig));
    // Reopened by label: same public key.
    auto again = store_->signer(label);
    ASSERT_TRUE(again);
    EXPECT_EQ((*again)->public_key(), (*signer)->public_key());
  }
}

TEST_P(KeyStoreSuite, NeverOverwritesAKeyAndNamesMissingOnes) {
  ASSERT_NO_FATAL_FAILURE(expect_never_overwrites_and_names_missing_keys(*store_));
}

TEST_P(KeyStoreSuite, WrongDigestLengthIsRefused) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes short_digest(20);
  EXPECT_FALSE((*signer)->sign(short_digest));
}

TEST_P(KeyStoreSuite, SecretHmacMatchesRfc4231) {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  SecretBytes key(Bytes{'J', 'e', 'f', 'e'});
  ASSERT_TRUE(store_->import_secret("group", key));
  auto secret = store_->secret("group");
  ASSERT_TRUE(secret);
  std::string data = "what do ya want for nothing?";
  auto mac = (*secret)->hmac_sha256(ByteView(reinterpret_cast<const unsigned char*>(data.data()), data.size()));
  ASSERT_TRUE(mac);
  EXPECT_EQ(to_hex(*mac), "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843");
  EXPECT_FALSE(store_->import_secret("group", key));  // never overwritten
  ASSERT_TRUE(store_->generate_secret("random"));
  auto listed = store_->list();
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 2u);
}

TEST_P(KeyStoreSuite, DestroyRemovesOnlyTheNamedKeyOrSecret) {
  ASSERT_NO_FATAL_FAILURE(expect_destroy_frees_the_label(*store_, "gone"));
  ASSERT_TRUE(store_->generate_signing_key("kept", Algorithm::ec_p256));
  ASSERT_TRUE(store_->generate_signing_key("both", Algorithm::ec_p256));
  ASSERT_TRUE(store_->generate_secret("both"));  // a secret may share a key's label
  ASSERT_TRUE(store_->destroy_signing_key("both"));
  EXPECT_FALSE(store_->signer("both"));
  EXPECT_TRUE(store_->signer("kept"));
  EXPECT_TRUE(store_->secret("both")) << "destroying a key leaves the secret of that label";
  ASSERT_TRUE(store_->destroy_secret("both"));
  EXPECT_FALSE(store_->secret("both"));
  EXPECT_TRUE(store_->signer("gone"));
  EXPECT_FALSE(store_->destroy_secret("both"));
  auto listed = store_->list();
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), 2u);  // "gone" (the new key) and "kept"
}

INSTANTIATE_TEST_SUITE_P(
    Backends, KeyStoreSuite,
    ::testing::Values(Backend{"file", [](const testkit::TempDir& d) { return "file:" + (d / "keys").string(); }}),
    [](const auto& info) { return info.param.name; });

TEST(KeyStoreOpen, RejectsUnknownSchemes) {
  auto s = open("foo:bar");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().domain(), Domain::usage);
  EXPECT_NE(s.error().message().find("'foo'"), std::string::npos);
  EXPECT_FALSE(open("file:"));
}

TEST(FileKeyStore, KeyFilesAreOwnerOnly) {
  testkit::TempDir dir;
  auto store = open("file:" + (dir / "k").string());
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->generate_signing_key("ca", Algorithm::ec_p256));
  auto perms = std::filesystem::status(dir / "k" / "ca.key.pem").permissions();
  EXPECT_EQ(perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
            std::filesystem::perms::none);
  EXPECT_TRUE((*store)->is_development());
}

// x-session-copy is honoured in the path part too (RFC 7512 puts vendor
// attributes in either part); other x- attributes are accepted and ignored.
TEST(Pkcs11UriParse, SessionCopyInThePathIsHonoured) {
  auto in_path = Pkcs11Uri::parse("pkcs11:token=T;x-session-copy=no;x-other=1?module-path=/m.so");
  ASSERT_TRUE(in_path) << in_path.error().message();
  EXPECT_FALSE(in_path->session_copy());
  auto in_query = Pkcs11Uri::parse("pkcs11:token=T?module-path=/m.so&x-session-copy=no");
  ASSERT_TRUE(in_query) << in_query.error().message();
  EXPECT_FALSE(in_query->session_copy());
  auto by_default = Pkcs11Uri::parse("pkcs11:token=T?module-path=/m.so");
  ASSERT_TRUE(by_default);
  EXPECT_TRUE(by_default->session_copy());
  auto bad = Pkcs11Uri::parse("pkcs11:token=T;x-session-copy=maybe?module-path=/m.so");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("yes or no"), std::string::npos);
}

}  // namespace
}  // namespace keyline::hsm
