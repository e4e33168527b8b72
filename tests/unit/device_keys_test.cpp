#include <gtest/gtest.h>

#include <openssl/pem.h>

#include "device_keys.hpp"
#include "keyline/station/batch.hpp"

namespace keyline::station::batch {
namespace {

std::string openssl_pkcs8(EVP_PKEY* key) {
  BioPtr mem(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(mem.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

class DeviceKeys : public ::testing::TestWithParam<hsm::Algorithm> {};

TEST_P(DeviceKeys, EncodingsAreThoseOpenSslWrites) {
  for (int i = 0; i < 20; ++i) {
    auto k = generate_device_key(GetParam());
    ASSERT_TRUE(k) << k.error().message();
    EXPECT_EQ(k->spki, *hsm::public_key_der(k->key.get()));
    EXPECT_EQ(k->pkcs8_pem.reveal(), openssl_pkcs8(k->key.get()));
    // And it reads back as the same key.
    BioPtr b(BIO_new_mem_buf(k->pkcs8_pem.reveal().data(), static_cast<int>(k->pkcs8_pem.reveal().size())));
    EvpPkeyPtr back(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
    ASSERT_TRUE(back);
    EXPECT_EQ(EVP_PKEY_eq(back.get(), k->key.get()), 1);
    if (GetParam() == hsm::Algorithm::rsa_2048) break;  // slow; OpenSSL's own encoder anyway
  }
}

INSTANTIATE_TEST_SUITE_P(Algorithms, DeviceKeys,
                         ::testing::Values(hsm::Algorithm::ec_p256, hsm::Algorithm::ec_p384, hsm::Algorithm::rsa_2048));

TEST(IdTemplate, ExpandsAndRejects) {
  EXPECT_EQ(*expand_template("sn-{seq:06}", 42), "sn-000042");
  EXPECT_EQ(*expand_template("{seq}-x", 7), "7-x");
  EXPECT_EQ(*expand_template("a{seq:02}", 12345), "a12345");
  EXPECT_FALSE(expand_template("sn", 1));
  EXPECT_FALSE(expand_template("sn-{seq:6}", 1));
  EXPECT_FALSE(expand_template("sn-{seq", 1));
}

}  // namespace
}  // namespace keyline::station::batch
