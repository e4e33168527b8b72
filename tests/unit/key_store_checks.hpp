// What every key store (file, PKCS#11, TPM) must do, as checks each store's
// tests call on its own fixture, and the signing helpers they share.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include <openssl/evp.h>

#include "keyline/core/openssl.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::hsm::test {

inline Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

// A PIN / auth file as an operator should make it: owner-only.
inline void write_secret_file(const testkit::fs::path& path, const std::string& text) {
  testkit::write_file(path, text);
  testkit::fs::permissions(path, testkit::fs::perms::owner_read | testkit::fs::perms::owner_write);
}

inline Bytes digest_of(ByteView message, Algorithm a) {
  Bytes digest(digest_size(digest_for(a)));
  unsigned int len = 0;
  EVP_Digest(message.data(), message.size(), digest.data(), &len, evp_md(digest_for(a)), nullptr);
  return digest;
}

// Checked with OpenSSL against the signer's public key, not with the store.
inline bool verifies(const Signer& signer, ByteView message, ByteView signature) {
  auto pub = public_key_from_der(signer.public_key());
  EXPECT_TRUE(pub);
  if (!pub) return false;
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_DigestVerifyInit(ctx.get(), nullptr, evp_md(digest_for(signer.algorithm())), nullptr, pub->get());
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size()) == 1;
}

// Signs `text` and checks the signature with OpenSSL.
inline ::testing::AssertionResult signs_verifiably(const Signer& signer, std::string_view text) {
  Bytes message = bytes_of(text);
  auto sig = signer.sign(digest_of(message, signer.algorithm()));
  if (!sig) return ::testing::AssertionFailure() << sig.error().message();
  if (!verifies(signer, message, *sig)) return ::testing::AssertionFailure() << "signature does not verify";
  return ::testing::AssertionSuccess();
}

// A label is never overwritten (the first key stays the one found), a
// missing label is named in the error, and a label with a space is refused.
inline void expect_never_overwrites_and_names_missing_keys(KeyStore& store) {
  auto first = store.generate_signing_key("ca", Algorithm::ec_p256);
  ASSERT_TRUE(first) << first.error().message();
  auto dup = store.generate_signing_key("ca", Algorithm::ec_p256);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().domain(), Domain::keystore);
  EXPECT_NE(dup.error().message().find("already exists"), std::string::npos) << dup.error().message();
  auto kept = store.signer("ca");
  ASSERT_TRUE(kept) << kept.error().message();
  EXPECT_EQ((*kept)->public_key(), (*first)->public_key());
  auto missing = store.signer("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().domain(), Domain::keystore);
  EXPECT_NE(missing.error().message().find("'nope'"), std::string::npos) << missing.error().message();
  EXPECT_FALSE(store.generate_signing_key("bad label", Algorithm::ec_p256));
}

// A key that has signed (so the store may hold it cached) is destroyed: it
// is not found any more, a second destroy says "not found", and the label
// is free again for a new key, which is the one found by label afterwards.
inline void expect_destroy_frees_the_label(KeyStore& store, const std::string& label) {
  auto first = store.generate_signing_key(label, Algorithm::ec_p256);
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_TRUE(signs_verifiably(**first, "before"));
  auto destroyed = store.destroy_signing_key(label);
  ASSERT_TRUE(destroyed) << destroyed.error().message();
  EXPECT_FALSE(store.signer(label));
  auto twice = store.destroy_signing_key(label);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().domain(), Domain::keystore);
  EXPECT_NE(twice.error().message().find("not found"), std::string::npos) << twice.error().message();
  auto second = store.generate_signing_key(label, Algorithm::ec_p256);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_NE((*second)->public_key(), (*first)->public_key());
  EXPECT_TRUE(signs_verifiably(**second, "after"));
  auto found = store.signer(label);
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_EQ((*found)->public_key(), (*second)->public_key());
}

}  // namespace keyline::hsm::test
