#include <gtest/gtest.h>

#include "keyline/ca/profile.hpp"
#include "keyline/station/state_dir.hpp"

namespace keyline::ca {
namespace {

TEST(Profile, DefaultsWhenNoneConfigured) {
  auto p = parse_profiles("", "keyline.toml");
  ASSERT_TRUE(p);
  ASSERT_EQ(p->count("device"), 1u);
  const Profile& d = p->at("device");
  EXPECT_EQ(d.validity_days, 365);
  EXPECT_TRUE(d.allow_ec_p256 && d.allow_ec_p384 && d.allow_rsa);
  EXPECT_EQ(d.backdate, std::chrono::minutes(5));
}

TEST(Profile, ParsesEveryKey) {
  auto p = parse_profiles(R"(
[profiles.idev]
validity = "forever"
key_algorithms = ["ec-p256"]
subject = { O = "Example", OU = "Line 1", C = "DE" }
uri_san = "urn:x:{registration_id}"
key_agreement = true
backdate_minutes = 10
allowed_request_extensions = ["subjectAltName"]
serial_number_attribute = true
hardware_module_oid = "1.3.6.1.4.1.99999.1"
)", "t.toml");
  ASSERT_TRUE(p) << p.error().message();
  const Profile& i = p->at("idev");
  EXPECT_FALSE(i.validity_days.has_value());
  EXPECT_TRUE(i.allow_ec_p256);
  EXPECT_FALSE(i.allow_ec_p384);
  EXPECT_FALSE(i.allow_rsa);
  EXPECT_EQ(i.subject_o, "Example");
  EXPECT_EQ(i.subject_c, "DE");
  EXPECT_TRUE(i.key_agreement);
  EXPECT_EQ(i.backdate, std::chrono::minutes(10));
  EXPECT_EQ(i.allowed_request_extensions, std::vector<std::string>{"subjectAltName"});
  EXPECT_EQ(i.hardware_module_oid, "1.3.6.1.4.1.99999.1");
}

struct BadCase {
  const char* toml;
  const char* expect;
};

class BadProfile : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadProfile, IsRefusedWithAMessageNamingTheKey) {
  auto p = parse_profiles(GetParam().toml, "keyline.toml");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().domain(), Domain::input);
  EXPECT_NE(p.error().message().find(GetParam().expect), std::string::npos) << p.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadProfile,
    ::testing::Values(BadCase{"[profiles.d]\nvalidty_days = 3\n", "unknown key 'validty_days'"},
                      BadCase{"[profiles.d]\nvalidity_days = 0\n", "validity_days"},
                      BadCase{"[profiles.d]\nvalidity = \"long\"\n", "validity"},
                      BadCase{"[profiles.d]\nkey_algorithms = [\"dsa\"]\n", "key_algorithms"},
                      BadCase{"[profiles.d]\nsubject = { C = \"DEU\" }\n", "two-letter"},
                      BadCase{"[profiles.d]\nuri_san = \"urn:x\"\n", "{registration_id}"},
                      BadCase{"[profiles.d]\nmin_rsa_bits = 1024\n", "min_rsa_bits"},
                      BadCase{"[profiles.d]\nhardware_module_oid = \"abc\"\n", "OID"},
                      BadCase{"[profiles.d\n", "keyline.toml:1"}));

TEST(Config, ParsesCaSectionAndRejectsUnknownTables) {
  auto c = station::parse_config("[station]\nid = \"s7\"\n[ca]\nkey_store = \"file:/k\"\n", "k.toml");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->station_id, "s7");
  EXPECT_EQ(c->ca.key_store, "file:/k");
  EXPECT_EQ(c->ca.intermediate_key, "keyline-intermediate");
  auto bad = station::parse_config("[cas]\n", "k.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("[cas]"), std::string::npos);
  // The file `ca init` writes must parse back.
  auto round = station::parse_config(station::default_config_toml({}, "x"), "default");
  ASSERT_TRUE(round) << round.error().message();
  EXPECT_EQ(round->profiles.count("idevid"), 1u);
  EXPECT_FALSE(round->profiles.at("idevid").validity_days);
}

}  // namespace
}  // namespace keyline::ca
