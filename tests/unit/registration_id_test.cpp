#include <gtest/gtest.h>

#include "keyline/ca/registration_id.hpp"

namespace keyline::ca {
namespace {

TEST(RegistrationId, AcceptsDpsCharactersAndLowerCases) {
  auto id = RegistrationId::parse("Sensor-01.Line_2:A");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->str(), "sensor-01.line_2:a");
  EXPECT_TRUE(RegistrationId::parse("dev-"));  // a trailing '-' is allowed
  EXPECT_TRUE(RegistrationId::parse("a"));
}

TEST(RegistrationId, NamesTheOffendingCharacterAndPosition) {
  auto id = RegistrationId::parse("dev/1");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().domain(), Domain::input);
  EXPECT_NE(id.error().message().find("'/' at position 4"), std::string::npos) << id.error().message();
  auto space = RegistrationId::parse("a b");
  ASSERT_FALSE(space);
  EXPECT_NE(space.error().message().find("position 2"), std::string::npos);
  auto ctl = RegistrationId::parse(std::string("a\x01", 2));
  ASSERT_FALSE(ctl);
  EXPECT_NE(ctl.error().message().find("0x01"), std::string::npos);
}

TEST(RegistrationId, LastCharacterRule) {
  for (const char* bad : {"dev.", "dev_", "dev:"}) {
    auto id = RegistrationId::parse(bad);
    ASSERT_FALSE(id) << bad;
    EXPECT_NE(id.error().message().find("ends with"), std::string::npos);
  }
}

TEST(RegistrationId, LengthLimits) {
  EXPECT_TRUE(RegistrationId::parse(std::string(128, 'a')));
  EXPECT_FALSE(RegistrationId::parse(std::string(129, 'a')));
  EXPECT_TRUE(RegistrationId::for_certificate(std::string(64, 'a')));
  auto long_cn = RegistrationId::for_certificate(std::string(65, 'a'));
  ASSERT_FALSE(long_cn);
  EXPECT_NE(long_cn.error().message().find("65 characters"), std::string::npos);
  EXPECT_FALSE(RegistrationId::parse(""));
}

TEST(RegistrationId, CaseInsensitiveEquality) {
  EXPECT_EQ(*RegistrationId::parse("ABC"), *RegistrationId::parse("abc"));
}

}  // namespace
}  // namespace keyline::ca
