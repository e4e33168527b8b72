#include <sys/stat.h>

#include <gtest/gtest.h>

#include "keyline/core/error.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline {
namespace {

TEST(Hex, RoundTripAndRejectsBadDigits) {
  std::vector<unsigned char> bytes{0x00, 0x7f, 0x80, 0xff};
  EXPECT_EQ(to_hex(bytes), "007F80FF");
  EXPECT_EQ(from_hex("007f80ff"), bytes);
  EXPECT_EQ(from_hex("00:7F:80:FF"), bytes);
  EXPECT_FALSE(from_hex("0g"));
  EXPECT_FALSE(from_hex("123"));
}

TEST(Base64, RoundTripAllPaddings) {
  for (std::size_t n = 0; n < 10; ++n) {
    std::vector<unsigned char> bytes(n);
    for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(i * 37 + 1);
    auto text = base64_encode(bytes);
    auto back = base64_decode(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(*back, bytes) << text;
  }
  EXPECT_EQ(base64_encode(std::vector<unsigned char>{'J', 'e', 'f', 'e'}), "SmVmZQ==");
  EXPECT_FALSE(base64_decode("abc"));
}

TEST(Errors, MapToDocumentedExitCodes) {
  EXPECT_EQ(exit_code_for(Error(Domain::usage, "x")), ExitCode::usage);
  EXPECT_EQ(exit_code_for(Error(Domain::input, "x")), ExitCode::bad_input);
  EXPECT_EQ(exit_code_for(Error(Domain::policy, "x")), ExitCode::refused);
  EXPECT_EQ(exit_code_for(Error(Domain::state, "x")), ExitCode::state);
  EXPECT_EQ(exit_code_for(Error(Domain::sqlite, "x")), ExitCode::state);
  EXPECT_EQ(exit_code_for(Error(Domain::keystore, "x")), ExitCode::keystore);
  EXPECT_EQ(exit_code_for(Error(Domain::internal, "x")), ExitCode::internal);
  EXPECT_EQ(Error(Domain::input, "bad").with_context("file.csr").message(), "file.csr: bad");
}

TEST(Files, WriteAtomicReplacesWholeFileAndLeavesNoTemp) {
  testkit::TempDir dir;
  auto path = dir / "out.pem";
  ASSERT_TRUE(files::write_atomic(path, "first", 0600));
  ASSERT_TRUE(files::write_atomic(path, "second", 0600));
  EXPECT_EQ(testkit::read_file(path), "second");
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++n;
  EXPECT_EQ(n, 1);
}

TEST(Files, PendingFileIsInvisibleUntilPublishedAndRemovedIfAbandoned) {
  testkit::TempDir dir;
  auto path = dir / "cert.pem";
  {
    auto pending = files::PendingFile::create(path, "abandoned", 0644);
    ASSERT_TRUE(pending);
    EXPECT_FALSE(std::filesystem::exists(path));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  auto pending = files::PendingFile::create(path, "published", 0644);
  ASSERT_TRUE(pending);
  ASSERT_TRUE(pending->publish());
  EXPECT_EQ(testkit::read_file(path), "published");
}

TEST(Files, ReadRefusesOversizeAndNamesMissingFile) {
  testkit::TempDir dir;
  testkit::write_file(dir / "big", std::string(100, 'x'));
  auto r = files::read(dir / "big", 10);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::input);
  EXPECT_NE(r.error().message().find("10-byte limit"), std::string::npos);
  auto missing = files::read(dir / "nope");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
}

TEST(Log, SpecParsingAndPerModuleLevels) {
  ASSERT_TRUE(log::configure("all=warn,ca=debug,hsm.pkcs11=trace", log::Format::text));
  EXPECT_EQ(log::get("ca")->level(), spdlog::level::debug);
  EXPECT_EQ(log::get("ca.batch")->level(), spdlog::level::debug);  // inherits from "ca"
  EXPECT_EQ(log::get("hsm.pkcs11")->level(), spdlog::level::trace);
  EXPECT_EQ(log::get("ledger")->level(), spdlog::level::warn);
  auto bad = log::configure("ca=loud", log::Format::text);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("loud"), std::string::npos);
  ASSERT_TRUE(log::configure("warn", log::Format::text));
}

TEST(Secret, MoveLeavesSourceEmptyAndRevealsOnlyExplicitly) {
  SecretString a(std::string("1234"));
  SecretString b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(b.reveal(), "1234");
  EXPECT_STREQ(SecretString::redacted(), "***");
}

TEST(DistinguishedName, ParsesBothStylesAndRejectsGarbage) {
  auto a = parse_dn("/CN=Root/O=Example");
  ASSERT_TRUE(a);
  EXPECT_EQ(name_to_string(a->get()), "O=Example,CN=Root");
  auto b = parse_dn("CN=Root, O=Example\\, Inc");
  ASSERT_TRUE(b);
  EXPECT_EQ(X509_NAME_entry_count(b->get()), 2);
  EXPECT_FALSE(parse_dn("CN"));
  EXPECT_FALSE(parse_dn("XYZ=1"));
  EXPECT_FALSE(parse_dn("CN=a,,O=b"));
}

}  // namespace
}  // namespace keyline
