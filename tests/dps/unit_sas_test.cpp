// SAS tokens, derived device keys (dps-api.md §2, §4), connection strings,
// Retry-After and backoff, the rate limiter.

#include <gtest/gtest.h>

#include <cstdlib>

#include "keyline/core/hex.hpp"
#include "keyline/station/dps/retry.hpp"
#include "keyline/station/dps/sas.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
using namespace keyline::station::dps;

namespace {
Bytes b64(const char* s) { return *base64_decode(s); }
Bytes raw(std::string_view s) { return Bytes(s.begin(), s.end()); }
}  // namespace

TEST(DerivedKey, PublishedVectors) {
  EXPECT_EQ(*derive_device_key(std::string_view("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="),
                               "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"),
            "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
  const char* g2 = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";
  EXPECT_EQ(*derive_device_key(std::string_view(g2), "breakroom499-contoso-tstrsd-007"),
            "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs=");
  EXPECT_EQ(*derive_device_key(std::string_view(g2), "mainbuilding167-contoso-hpsd-088"),
            "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg=");
  // The stale 2018 documentation value must NOT come out.
  EXPECT_NE(*derive_device_key(std::string_view("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="),
                               "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"),
            "9GWVnYuoOLXlHc346XjhLRb9pKgIOrKSwxDRSOgnvXo=");
}

TEST(DerivedKey, RejectsNonBase64GroupKey) {
  auto r = derive_device_key(std::string_view("not base64!"), "dev-1");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not base64"), std::string::npos);
}

TEST(Sas, PublishedAndSelfComputedVectors) {
  EXPECT_EQ(*sas_signature(b64("+XLy+MVZ+aTeOnVzN2kLeB16O+kSxmz6g3rS6fAf6rw="), "iot-hub-for-test.azure-devices.net", 1471940363),
            "770sPjjYxRYpNz8/hEN7XR5XU5KDGYGTinSP8YyeTXw=");
  EXPECT_EQ(*sas_signature(raw("password"), "uri", 12345), "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk=");
  EXPECT_EQ(*sas_signature(b64("key="), "host%2Fdevices%2Fdevice", 12345), "wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT+kKHc=");
  EXPECT_EQ(*sas_signature(b64("WjLv43ZKrOPLYDOdprhqxA8nH2sHFtszX+5XKBPCPRM="), "my-dps.azure-devices-provisioning.net", 1700000000),
            "6amqHXCwghd6LD5ifJCUOlGOcpLOHPrO37qSy+1guNI=");
  Bytes derived = b64("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
  const std::string id = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
  EXPECT_EQ(*sas_signature(derived, "0ne00000A0A%2Fregistrations%2F" + id, 1700000000), "t6/8JHWQuQgM9mXdYf/uIqa3dKECOEk9Rr4WrFV19q0=");
  EXPECT_EQ(*sas_signature(derived, "0ne00000A0A%2fregistrations%2f" + id, 1700000000), "d0v1ROtrJfDl1lL+6Gm6mCyZUBsvFsT3HgNEOWfYmE0=");
  EXPECT_EQ(*sas_signature(derived, "0ne00000a0a%2Fregistrations%2F" + id, 1700000000), "5b9cLZ/4YUh35mOvBDUgHf6pZpSWHtMxWjmjfMrvgeE=");
  EXPECT_EQ(*sas_signature(derived, "0ne00000A0A/registrations/" + id, 1700000000), "hUOH8hSLSay+bfE5WjQhRmpIvWZdSog5Tlv8EyKqBg4=");
}

TEST(Sas, TokenRoundTripsAndRenewsBeforeExpiry) {
  auto cs = parse_connection_string("HostName=my-dps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;"
                                    "SharedAccessKey=WjLv43ZKrOPLYDOdprhqxA8nH2sHFtszX+5XKBPCPRM=");
  ASSERT_TRUE(cs) << cs.error().message();
  FixedClock clock(TimePoint(std::chrono::seconds(1700000000 - 3600)));
  SasToken token(std::move(*cs), clock);
  std::string first = *token.get();
  EXPECT_EQ(first, "SharedAccessSignature sr=my-dps.azure-devices-provisioning.net&sig=6amqHXCwghd6LD5ifJCUOlGOcpLOHPrO37qSy%2B1guNI%3D"
                   "&se=1700000000&skn=provisioningserviceowner");
  auto parsed = parse_sas_token(first);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->sig, "6amqHXCwghd6LD5ifJCUOlGOcpLOHPrO37qSy+1guNI=");
  EXPECT_EQ(parsed->se, 1700000000);
  clock.advance(std::chrono::minutes(30));
  EXPECT_EQ(*token.get(), first);  // still fresh
  clock.advance(std::chrono::minutes(20));
  EXPECT_NE(*token.get(), first);  // less than a quarter left: renewed
  EXPECT_EQ(token.expiry(), 1700000000 - 3600 + 50 * 60 + 3600);
}

TEST(ConnectionString, ErrorsNameTheProblemButNotTheKey) {
  struct Case { const char* text; const char* expect; };
  for (auto c : {Case{"", "empty"}, Case{"HostName=h;SharedAccessKeyName=p", "no SharedAccessKey"},
                 Case{"SharedAccessKeyName=p;SharedAccessKey=AAAA", "no HostName"},
                 Case{"HostName=h;SharedAccessKey=AAAA", "no SharedAccessKeyName"},
                 Case{"HostName=h;HostName=i;SharedAccessKeyName=p;SharedAccessKey=AAAA", "twice"},
                 Case{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=@@secret@@", "not base64"},
                 Case{"HostName=h;SharedAccessKeyName=p;SharedAccessKey=AAAA;Foo=1", "unknown member 'Foo'"},
                 Case{"HostName=h;garbage", "not NAME=VALUE"}}) {
    auto r = parse_connection_string(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_NE(r.error().message().find(c.expect), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().message().find("@@secret@@"), std::string::npos);
  }
}

TEST(ConnectionString, FromFileOrEnvironmentNeverLiteral) {
  testkit::TempDir dir;
  testkit::write_file(dir / "cs", "HostName=a.example;SharedAccessKeyName=p;SharedAccessKey=AAAAAAAA\n");
  auto f = load_connection_string("file:" + (dir / "cs").string());
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->host_name, "a.example");
  setenv("KEYLINE_TEST_DPS_CS", "HostName=b.example;SharedAccessKeyName=p;SharedAccessKey=AAAAAAAA", 1);
  auto e = load_connection_string("env:KEYLINE_TEST_DPS_CS");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host_name, "b.example");
  auto missing = load_connection_string("env:KEYLINE_TEST_DPS_UNSET_VAR");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("not set"), std::string::npos);
  auto literal = load_connection_string("HostName=a;SharedAccessKeyName=p;SharedAccessKey=AAAA");
  ASSERT_FALSE(literal);
  EXPECT_EQ(literal.error().domain(), Domain::usage);
}

TEST(Retry, RetryAfterParsing) {
  EXPECT_EQ(parse_retry_after("3"), std::chrono::seconds(3));
  EXPECT_EQ(parse_retry_after(" 10 "), std::chrono::seconds(10));
  EXPECT_EQ(parse_retry_after("100000"), std::chrono::seconds(300));
  EXPECT_FALSE(parse_retry_after(""));
  EXPECT_FALSE(parse_retry_after("-1"));
  EXPECT_FALSE(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
  EXPECT_FALSE(parse_retry_after("1.5"));
}

TEST(Retry, BackoffGrowsWithJitterIsBoundedAndHonoursRetryAfter) {
  Backoff b(BackoffPolicy{std::chrono::milliseconds(100), std::chrono::milliseconds(1000), 8}, 42);
  for (int attempt = 0; attempt < 8; ++attempt) {
    long long base = std::min(1000LL, 100LL << attempt);
    auto d = b.delay(attempt, std::nullopt).count();
    EXPECT_GE(d, base / 2);
    EXPECT_LE(d, base);
  }
  EXPECT_EQ(b.delay(0, std::chrono::seconds(0)).count() >= 50, true);
  EXPECT_GE(b.delay(0, std::chrono::seconds(1)).count(), 1000);
  EXPECT_EQ(b.delay(0, std::chrono::seconds(60)).count(), 1000);  // bounded by the policy
}

TEST(Retry, RateLimiterHoldsTheQuota) {
  RateLimiter limiter(600);  // 10/s, burst 10
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) limiter.acquire();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // 10 from the burst, 10 more at 10/s: at least a second, whatever the
  // machine's speed (the limiter reads the real clock, so a slow machine only
  // makes this longer). The upper bound catches a limiter that hangs, not one
  // that is a little late on a loaded machine.
  EXPECT_GE(s, 0.9);
  EXPECT_LT(s, 30.0);
}

TEST(Sas, ResourceSpellings) {
  auto s = sas_resource_spellings("0ne00000A0A/registrations/x");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], "0ne00000A0A/registrations/x");
  EXPECT_EQ(s[1], "0ne00000A0A%2Fregistrations%2Fx");
  EXPECT_EQ(s[2], "0ne00000A0A%2fregistrations%2fx");
}

TEST(Url, EncodeDecode) {
  EXPECT_EQ(url_encode("0ne/registrations/a b+c"), "0ne%2Fregistrations%2Fa%20b%2Bc");
  EXPECT_EQ(*url_decode("0ne%2fregistrations%2Fx"), "0ne/registrations/x");
  EXPECT_FALSE(url_decode("%zz"));
  EXPECT_FALSE(url_decode("abc%2"));
}
