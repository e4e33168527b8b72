// The emulator's TPM challenge (MakeCredential + duplication done in
// software) against a real TPM (swtpm): the device side loads the identity
// key with ActivateCredential + Import + Load and its HMAC matches the key
// the emulator keeps. Also KDFa against OpenSSL's SP 800-108 KBKDF, and the
// refusals of unsuitable public areas.

#include <gtest/gtest.h>

#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include <cstring>
#include <random>

#include "keyline/testkit/swtpm.hpp"
#include "tpm.hpp"
#include "tpm_challenge.hpp"

namespace {

namespace tk = keyline::testkit;
namespace emu = keyline::emulator::tpm;
using keyline::Bytes;
using keyline::ByteView;
using keyline::devsim::Tpm;

ByteView view(const std::string& s) {
  return ByteView(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

Bytes hmac_sha256(ByteView key, ByteView data) {
  unsigned char out[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out, &n);
  return Bytes(out, out + n);
}

// OpenSSL's KBKDF in counter mode: counter || label || 0x00 || context || L, the same construction as KDFa.
Bytes kbkdf(ByteView key, const std::string& label, ByteView context, std::size_t bytes) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "KBKDF", nullptr);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  Bytes out(bytes);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, const_cast<char*>("HMAC"), 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(key.data()),
                                        key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(label.data()), label.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<unsigned char*>(context.data()),
                                        context.size()),
      OSSL_PARAM_construct_end()};
  int ok = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  EXPECT_EQ(ok, 1);
  return out;
}

TEST(TpmChallenge, KdfaIsSp800108CounterModeWithHmac) {
  Bytes key(32, 0x5a), ctx_u{1, 2, 3, 4}, ctx_v{9, 8, 7};
  Bytes context = ctx_u;
  context.insert(context.end(), ctx_v.begin(), ctx_v.end());
  EXPECT_EQ(emu::kdfa(EVP_sha256(), key, "STORAGE", ctx_u, ctx_v, 128), kbkdf(key, "STORAGE", context, 16));
  // Longer than one block: the counter runs.
  EXPECT_EQ(emu::kdfa(EVP_sha256(), key, "INTEGRITY", {}, {}, 512), kbkdf(key, "INTEGRITY", {}, 64));
}

TEST(TpmChallenge, TheDevicesTpmLoadsTheIdentityKeyAndItsHmacMatches) {
  tk::Swtpm swtpm;
  auto tpm = Tpm::open(swtpm.tcti());
  ASSERT_TRUE(tpm) << tpm.error().message();
  auto ek = tpm->endorsement_key();
  ASSERT_TRUE(ek) << ek.error().message();
  auto srk = tpm->storage_root_key();
  ASSERT_TRUE(srk) << srk.error().message();

  auto challenge = emu::make_challenge(*ek, *srk);
  ASSERT_TRUE(challenge) << challenge.error().message();
  ASSERT_EQ(challenge->identity_key.reveal().size(), 32u);
  auto loaded = tpm->load_identity_key(challenge->blob);
  ASSERT_TRUE(loaded) << loaded.error().message();

  std::string msg = "0ne00000A0A%2Fregistrations%2Fmeter-sn-t\n1700000000";
  auto mac = tpm->identity_hmac(view(msg));
  ASSERT_TRUE(mac) << mac.error().message();
  EXPECT_EQ(*mac, hmac_sha256(challenge->identity_key.reveal(), view(msg)));

  // Every challenge carries a fresh key; the newest one is what the TPM then holds.
  auto second = emu::make_challenge(*ek, *srk);
  ASSERT_TRUE(second);
  EXPECT_NE(second->identity_key.reveal(), challenge->identity_key.reveal());
  ASSERT_TRUE(tpm->load_identity_key(second->blob));
  auto mac2 = tpm->identity_hmac(view(msg));
  ASSERT_TRUE(mac2);
  EXPECT_EQ(*mac2, hmac_sha256(second->identity_key.reveal(), view(msg)));
}

TEST(TpmChallenge, AnRsaEndorsementKeyGetsAnOaepSeed) {
  tk::Swtpm swtpm;
  auto tpm = Tpm::open(swtpm.tcti());
  ASSERT_TRUE(tpm);
  auto ek = tpm->endorsement_key(Tpm::EkType::rsa_2048);
  ASSERT_TRUE(ek) << ek.error().message();
  auto srk = tpm->storage_root_key();
  ASSERT_TRUE(srk);
  auto challenge = emu::make_challenge(*ek, *srk);
  ASSERT_TRUE(challenge) << challenge.error().message();
  auto loaded = tpm->load_identity_key(challenge->blob);
  ASSERT_TRUE(loaded) << loaded.error().message();
  auto mac = tpm->identity_hmac(view("rsa"));
  ASSERT_TRUE(mac);
  EXPECT_EQ(*mac, hmac_sha256(challenge->identity_key.reveal(), view("rsa")));
}

TEST(TpmChallenge, AChallengeForAnotherTpmDoesNotLoad) {
  tk::Swtpm mine, other;
  auto a = Tpm::open(mine.tcti());
  auto b = Tpm::open(other.tcti());
  ASSERT_TRUE(a && b);
  auto ek = b->endorsement_key();
  auto srk = b->storage_root_key();
  ASSERT_TRUE(ek && srk);
  auto mine_ek = a->endorsement_key();
  ASSERT_TRUE(mine_ek);
  EXPECT_NE(*mine_ek, *ek);  // two TPMs, two endorsement keys
  auto challenge = emu::make_challenge(*ek, *srk);
  ASSERT_TRUE(challenge) << challenge.error().message();
  auto loaded = a->load_identity_key(challenge->blob);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("ActivateCredential"), std::string::npos)
      << loaded.error().message();
  // The right TPM does load it.
  EXPECT_TRUE(b->load_identity_key(challenge->blob));
  // A damaged blob is refused before the TPM sees it.
  Bytes cut(challenge->blob.begin(), challenge->blob.end() - 3);
  auto bad = b->load_identity_key(cut);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("layout"), std::string::npos) << bad.error().message();
}

TEST(TpmChallenge, UnsuitablePublicAreasAreRefusedByName) {
  tk::Swtpm swtpm;
  auto tpm = Tpm::open(swtpm.tcti());
  ASSERT_TRUE(tpm);
  auto ek = tpm->endorsement_key();
  ASSERT_TRUE(ek);
  Bytes junk{0x00, 0x03, 0x01, 0x02, 0x03};
  auto r = emu::make_challenge(*ek, junk);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("tpm.storageRootKey"), std::string::npos) << r.error().message();
  // The EK's point moved off the curve.
  Bytes off_curve = *ek;
  off_curve[off_curve.size() - 1] ^= 0x01;
  r = emu::make_challenge(off_curve, *ek);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("tpm.endorsementKey"), std::string::npos) << r.error().message();
}

// Public areas come from the network: damaged ones are refused, never read out of bounds
// (meaningful under ASan), and the device refuses every truncated challenge before its TPM sees it.
TEST(TpmChallenge, DamagedInputsAreRefusedSafely) {
  tk::Swtpm swtpm;
  auto tpm = Tpm::open(swtpm.tcti());
  ASSERT_TRUE(tpm);
  auto ek = tpm->endorsement_key();
  auto srk = tpm->storage_root_key();
  ASSERT_TRUE(ek && srk);
  std::mt19937 rng(7);
  int refused = 0;
  for (int i = 0; i < 2000; ++i) {
    Bytes damaged = *ek;
    for (int flips = 1 + static_cast<int>(rng() % 3); flips > 0; --flips)
      damaged[rng() % damaged.size()] ^= static_cast<unsigned char>(1u << (rng() % 8));
    if (rng() % 4 == 0) damaged.resize(rng() % damaged.size());
    auto r = emu::make_challenge(damaged, *srk);
    if (!r) {
      ++refused;
      EXPECT_EQ(r.error().domain(), keyline::Domain::input) << r.error().message();
    }
  }
  EXPECT_GT(refused, 1000);
  auto challenge = emu::make_challenge(*ek, *srk);
  ASSERT_TRUE(challenge);
  for (std::size_t n = 0; n < challenge->blob.size(); ++n) {
    Bytes cut(challenge->blob.begin(), challenge->blob.begin() + static_cast<std::ptrdiff_t>(n));
    auto r = tpm->load_identity_key(cut);
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.error().domain(), keyline::Domain::input) << n;
  }
}

}  // namespace
