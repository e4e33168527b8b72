#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>

#include <atomic>
#include <gtest/gtest.h>

#include "keyline/core/error.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/openssl.hpp"
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

TEST(Sha2, IntoFormsMatchKnownAnswers) {
  const std::string abc = "abc";
  ByteView data(reinterpret_cast<const unsigned char*>(abc.data()), abc.size());
  unsigned char d1[20], d256[32], d384[48];
  sha1_into(data, d1);
  EXPECT_EQ(to_hex(ByteView(d1, 20)), "A9993E364706816ABA3E25717850C26C9CD0D89D");
  sha256_into(data, d256);
  sha384_into(data, d384);
  EXPECT_EQ(to_hex(ByteView(d256, 32)), "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");
  EXPECT_EQ(to_hex(ByteView(d384, 48)),
            "CB00753F45A35E8BB5A03D699AC65007272C32AB0EDED1631A8B605A43FF5BED8086072BA1E7CC2358BAECA134C825A7");
  EXPECT_EQ(sha256_hex(data), to_hex(ByteView(d256, 32)));  // the same context, used again
}

TEST(SystemRng, SmallDrawsNeverRepeatAcrossThreadsOrAFork) {
  SystemRng rng;
  std::set<std::string> seen;
  auto draw = [&] {
    unsigned char b[16];
    rng.fill(b);
    return to_hex(ByteView(b, 16));
  };
  for (int i = 0; i < 500; ++i) EXPECT_TRUE(seen.insert(draw()).second);  // crosses several refills
  std::string other;
  std::thread([&] { other = draw(); }).join();
  EXPECT_TRUE(seen.insert(other).second);
  // A forked child must not hand out the bytes its parent is about to.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string child = draw();
    (void)!::write(fds[1], child.data(), child.size());
    ::_exit(0);
  }
  char buf[32];
  ASSERT_EQ(::read(fds[0], buf, sizeof buf), 32);
  ::waitpid(pid, nullptr, 0);
  ::close(fds[0]);
  ::close(fds[1]);
  std::string child(buf, 32);
  EXPECT_NE(child, draw());
  EXPECT_EQ(seen.count(child), 0u);
}

TEST(Clock, FormatUtcIsRightWhateverTheOrderOfTimes) {
  // format_utc keeps the last two results per thread: interleave three.
  const TimePoint a(std::chrono::seconds(0)), b(std::chrono::seconds(1'830'000'123)),
      c(std::chrono::seconds(4'102'444'799));
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(format_utc(a), "1970-01-01T00:00:00Z");
    EXPECT_EQ(format_utc(b), "2027-12-28T13:22:03Z");
    EXPECT_EQ(format_utc(c), "2099-12-31T23:59:59Z");
    EXPECT_EQ(format_utc(b), "2027-12-28T13:22:03Z");
  }
  for (TimePoint t : {a, b, c}) EXPECT_EQ(parse_utc(format_utc(t)), t);
  // On a fresh thread (empty cache): an empty slot is not a time, and -1 s is one.
  std::thread([] { EXPECT_EQ(format_utc(TimePoint(std::chrono::seconds(-1))), "1969-12-31T23:59:59Z"); }).join();
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

// Many writers racing for one name: exactly one wins, whole, and no
// temp file is left (a key store must never replace a key).
TEST(Files, WriteNewNeverReplacesEvenUnderARace) {
  testkit::TempDir dir;
  auto path = dir / "key.pem";
  std::atomic<int> won{0}, refused{0};
  std::vector<std::thread> writers;
  for (int i = 0; i < 8; ++i)
    writers.emplace_back([&, i] {
      auto r = files::write_new(path, "writer-" + std::to_string(i), 0600);
      if (r) ++won;
      else if (r.error().native_code() == EEXIST) ++refused;
    });
  for (auto& t : writers) t.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), 7);
  EXPECT_TRUE(testkit::read_file(path).starts_with("writer-"));
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++n;
  EXPECT_EQ(n, 1);
  auto again = files::write_new(path, "late", 0600);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("already exists"), std::string::npos);
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
