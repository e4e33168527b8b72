// The tpm2: key store against a software TPM started per test
// (testkit::Swtpm): the checks every key store passes (key_store_checks.hpp),
// plus what only a TPM shows -- persistence across restarts, a crashed TPM,
// one owner thread.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include <openssl/evp.h>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "keyline/testkit/testkit.hpp"
#include "key_store_checks.hpp"

namespace keyline::hsm {
namespace {

using namespace test;

class TpmStore : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen(const std::string& query = "") {
    store_.reset();
    auto s = open(swtpm_.uri() + query);
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }
  testkit::Swtpm swtpm_;  // declared first: outlives the store
  std::unique_ptr<KeyStore> store_;
};

class TpmKeyStore : public TpmStore, public ::testing::WithParamInterface<Algorithm> {};

TEST_P(TpmKeyStore, GeneratedKeysSignVerifiablyAndReopenByLabel) {
  Algorithm a = GetParam();
  std::string label = "k-" + std::string(to_string(a));
  auto signer = store_->generate_signing_key(label, a);
  ASSERT_TRUE(signer) << signer.error().message();
  EXPECT_EQ((*signer)->algorithm(), a);
  Bytes message = bytes_of("hello");
  auto sig = (*signer)->sign(digest_of(message, a));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(verifies(**signer, message, *sig));
  message[0] ^= 1;
  EXPECT_FALSE(verifies(**signer, message, *sig));

  auto again = store_->signer(label);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ((*again)->public_key(), (*signer)->public_key());
  reopen();  // a new store, a new ESYS context: the key is found by its label alone
  auto third = store_->signer(label);
  ASSERT_TRUE(third) << third.error().message();
  EXPECT_EQ((*third)->public_key(), (*signer)->public_key());
  EXPECT_TRUE(signs_verifiably(**third, "again"));
}

INSTANTIATE_TEST_SUITE_P(Algorithms, TpmKeyStore,
                         ::testing::Values(Algorithm::ec_p256, Algorithm::ec_p384, Algorithm::rsa_2048),
                         [](const auto& info) {
                           std::string n(to_string(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST_F(TpmStore, NeverOverwritesAKeyAndNamesMissingOnes) {
  ASSERT_NO_FATAL_FAILURE(expect_never_overwrites_and_names_missing_keys(*store_));
  EXPECT_FALSE(store_->is_development());
}

TEST_F(TpmStore, DestroyEvictsTheKeyAndFreesItsHandle) {
  ASSERT_NO_FATAL_FAILURE(expect_destroy_frees_the_label(*store_, "undo"));
  auto now = store_->signer("undo");
  ASSERT_TRUE(now) << now.error().message();
  Bytes public_key = (*now)->public_key();
  reopen();  // the new key is the one persisted under the freed handle
  auto found = store_->signer("undo");
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_EQ((*found)->public_key(), public_key);
  EXPECT_FALSE(store_->destroy_secret("undo"));  // secrets: not supported
}

TEST_F(TpmStore, WrongDigestLengthIsRefused) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes short_digest(20);
  EXPECT_FALSE((*signer)->sign(short_digest));
}

TEST_F(TpmStore, PersistentKeySurvivesARestart) {
  auto signer = store_->generate_signing_key("issuer", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes spki = (*signer)->public_key();
  store_.reset();
  signer->reset();
  swtpm_.stop();
  swtpm_.start();
  reopen();
  auto again = store_->signer("issuer");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ((*again)->public_key(), spki);
  EXPECT_TRUE(signs_verifiably(**again, "after restart"));
}

TEST_F(TpmStore, ACrashedTpmIsAClearErrorAndSigningResumesAfterRestart) {
  auto signer = store_->generate_signing_key("issuer", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  EXPECT_TRUE(signs_verifiably(**signer, "before"));
  swtpm_.kill();
  auto down = (*signer)->sign(Bytes(32, 7));
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().domain(), Domain::keystore);
  EXPECT_NE(down.error().message().find("TPM not reachable via TCTI 'swtpm:path="), std::string::npos)
      << down.error().message();
  swtpm_.start();
  EXPECT_TRUE(signs_verifiably(**signer, "after"));
}

TEST_F(TpmStore, UnreachableTpmIsRefusedAtOpen) {
  auto s = open("tpm2:handle=0x81000100?tcti=swtpm:path=" + (swtpm_.dir() / "no-such-socket").string());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().domain(), Domain::keystore);
  EXPECT_NE(s.error().message().find("TPM not reachable via TCTI"), std::string::npos) << s.error().message();
}

TEST_F(TpmStore, ConcurrentSigningFromFourThreads) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        if (signs_verifiably(**signer, "thread " + std::to_string(t) + " #" + std::to_string(i))) ++good;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 100);
}

TEST_F(TpmStore, SecretsAreNotSupportedYet) {
  auto st = store_->generate_secret("group");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().domain(), Domain::keystore);
  EXPECT_NE(st.error().message().find("not supported by the tpm2 key store yet"), std::string::npos);
  EXPECT_NE(st.error().message().find("PKCS#11"), std::string::npos);
  EXPECT_FALSE(store_->import_secret("group", SecretBytes(bytes_of("Jefe"))));
  EXPECT_FALSE(store_->secret("group"));
}

TEST_F(TpmStore, ListReportsPersistentHandlesUsableAsLabels) {
  auto a = store_->generate_signing_key("alpha", Algorithm::ec_p256);
  auto b = store_->generate_signing_key("beta", Algorithm::ec_p384);
  ASSERT_TRUE(a && b);
  auto listed = store_->list();
  ASSERT_TRUE(listed) << listed.error().message();
  ASSERT_EQ(listed->size(), 2u);
  int matched = 0;
  for (const KeyInfo& info : *listed) {
    EXPECT_TRUE(info.label.starts_with("0x810001")) << info.label;
    auto s = store_->signer(info.label);
    ASSERT_TRUE(s) << s.error().message();
    EXPECT_EQ(info.kind, "signing " + std::string(to_string((*s)->algorithm())));
    if ((*s)->public_key() == (*a)->public_key() || (*s)->public_key() == (*b)->public_key()) ++matched;
  }
  EXPECT_EQ(matched, 2);
  EXPECT_EQ(store_->uri(), swtpm_.uri("0x81000100"));
}

TEST_F(TpmStore, KeyAuthorizationValueComesFromAuthSource) {
  write_secret_file(swtpm_.dir() / "auth", "key-auth-1\n");
  write_secret_file(swtpm_.dir() / "wrong", "not-the-auth\n");
  std::string good = "&auth-source=file:" + (swtpm_.dir() / "auth").string();
  reopen(good);
  EXPECT_NE(store_->uri().find("auth-source=file:"), std::string::npos);
  EXPECT_EQ(store_->uri().find("key-auth-1"), std::string::npos);
  auto signer = store_->generate_signing_key("guarded", Algorithm::ec_p256);
  ASSERT_TRUE(signer) << signer.error().message();
  EXPECT_TRUE(signs_verifiably(**signer, "with auth"));

  reopen("&auth-source=file:" + (swtpm_.dir() / "wrong").string());
  auto wrong = store_->signer("guarded");
  ASSERT_TRUE(wrong);  // reading the public part needs no authorization
  auto refused = (*wrong)->sign(Bytes(32, 1));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("authorization value"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(refused.error().message().find("not-the-auth"), std::string::npos);
}

TEST_F(TpmStore, IssuedChainVerifiesWithOpenssl) {
  auto root_key = store_->generate_signing_key("root", Algorithm::ec_p384);
  auto inter_key = store_->generate_signing_key("inter", Algorithm::ec_p256);
  ASSERT_TRUE(root_key && inter_key);
  SystemClock clock;
  SystemRng rng;
  auto root = ca::make_root(**root_key, *parse_dn("CN=Keyline TPM Test Root").value(), 3650, clock, rng);
  ASSERT_TRUE(root) << root.error().message();
  auto inter = ca::make_intermediate(**root_key, **root, (*inter_key)->public_key(),
                                     *parse_dn("CN=Keyline TPM Test Line CA").value(), 365, clock, rng);
  ASSERT_TRUE(inter) << inter.error().message();
  std::string root_pem = to_pem(root->get()), inter_pem = to_pem(inter->get());
  std::vector<X509Ptr> chain;
  chain.push_back(std::move(*root));
  auto authority = ca::Authority::create(std::move(*inter), std::move(chain), *inter_key, clock, rng);
  ASSERT_TRUE(authority) << authority.error().message();
  auto device_key = testkit::ec_key();
  ca::IssueRequest req{*ca::RegistrationId::for_certificate("device-0001"), *public_key_der(device_key.get()),
                       std::nullopt};
  auto leaf = authority->issue(req, ca::Profile{});
  ASSERT_TRUE(leaf) << leaf.error().message();
  testkit::TempDir out;
  testkit::write_file(out / "root.pem", root_pem);
  testkit::write_file(out / "inter.pem", inter_pem);
  testkit::write_file(out / "leaf.pem", leaf->pem);
  auto r = testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (out / "root.pem").string(),
                         "-untrusted", (out / "inter.pem").string(), (out / "leaf.pem").string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(": OK"), std::string::npos) << r.out;
}

TEST(TpmUri, RefusesBadHandlesSecretsAndTypos) {
  for (const char* uri :
       {"tpm2:handle=0x123", "tpm2:handle=0x81000101", "tpm2:handle=0x81800000", "tpm2:handle=zz",
        "tpm2:", "tpm2:handle=0x81000100?tctl=device:/dev/tpmrm0", "tpm2:handle=0x81000100;label=x"}) {
    auto s = open(uri);
    ASSERT_FALSE(s) << uri;
    EXPECT_EQ(s.error().domain(), Domain::usage) << uri;
  }
  auto secret = open("tpm2:handle=0x81000100?auth-value=hunter2");
  ASSERT_FALSE(secret);
  EXPECT_NE(secret.error().message().find("auth-source=file:"), std::string::npos);
  EXPECT_EQ(secret.error().message().find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace keyline::hsm
