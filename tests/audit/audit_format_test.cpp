// The audit record's canonical form, hash chain and export line formats.
#include <openssl/sha.h>

#include <gtest/gtest.h>

#include "format.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/station/ledger.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::station::audit {
namespace {

Record sample() {
  Record r;
  r.seq = 42;
  r.time = "2026-11-26T08:00:00Z";
  r.station = "line-1";
  r.operator_name = "Zoë \"night\", shift";
  r.type = "certificate.issued";
  r.body = canonical_body({{"serial", "0A"}, {"b", 1}, {"a", {{"z", true}, {"y", nullptr}}}});
  return r;
}

TEST(AuditFormat, CanonicalRecordHasFixedMemberOrderSortedBodyAndAsciiOnly) {
  EXPECT_EQ(canonical_record(sample()),
            "{\"seq\":42,\"time\":\"2026-11-26T08:00:00Z\",\"station\":\"line-1\","
            "\"operator\":\"Zo\\u00eb \\\"night\\\", shift\",\"type\":\"certificate.issued\","
            "\"body\":{\"a\":{\"y\":null,\"z\":true},\"b\":1,\"serial\":\"0A\"}}");
}

TEST(AuditFormat, ChainHashIsSha256OfPreviousHashAndRecord) {
  std::string canonical = canonical_record(sample());
  std::string prev = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  auto raw = from_hex(prev);
  std::string input(raw->begin(), raw->end());
  input += canonical;
  unsigned char md[32];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), md);
  std::string expected = to_hex(std::span<const unsigned char>(md, 32));
  for (char& c : expected) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(chain_hash(prev, canonical), expected);
  EXPECT_NE(chain_hash(kGenesisHash, canonical), expected) << "the previous hash is part of the input";
}

TEST(AuditFormat, JsonlLineSplitsBackIntoCanonicalRecordAndHash) {
  Record r = sample();
  r.hash = chain_hash(kGenesisHash, canonical_record(r));
  std::string line = jsonl_line(r);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["hash"], r.hash);
  EXPECT_EQ(j["operator"], "Zoë \"night\", shift");
  auto p = parse_jsonl_line(line);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->seq, 42);
  EXPECT_EQ(p->hash, r.hash);
  EXPECT_EQ(std::string(p->head) + "}", canonical_record(r));
  for (std::string bad : std::vector<std::string>{"", "{}", "{\"seq\":x,\"hash\":\"" + r.hash + "\"}", line.substr(0, line.size() - 3)})
    EXPECT_FALSE(parse_jsonl_line(bad)) << bad;
}

TEST(AuditFormat, CsvLineRoundTripsQuotesAndCommas) {
  Record r = sample();
  r.hash = chain_hash(kGenesisHash, canonical_record(r));
  std::string line = csv_line(r);
  line.pop_back();
  auto back = parse_csv_line(line);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(canonical_record(*back), canonical_record(r));
  EXPECT_EQ(back->hash, r.hash);
  EXPECT_FALSE(parse_csv_line("1,2,3"));
  EXPECT_FALSE(parse_csv_line("1,\"unterminated,a,b,c,d,e"));
}

TEST(AuditFormat, CheckpointMessageIsTheDocumentedText) {
  EXPECT_EQ(checkpoint_message("line-1", 7, "ab", "2026-11-26T08:00:00Z"),
            "keyline-audit-checkpoint-v1\nline-1\n7\nab\n2026-11-26T08:00:00Z\n");
}

// The trail keeps the head it appended for the rest of that transaction; a
// rolled-back transaction must not leave it behind.
TEST(AuditFormat, TrailHeadFollowsCommitsAndRollbacks) {
  testkit::TempDir dir;
  auto ledger = Ledger::create(dir / "ledger.db");
  ASSERT_TRUE(ledger) << ledger.error().message();
  FixedClock clock(TimePoint(std::chrono::seconds(1'800'000'000)));
  Trail trail(*ledger, Actor{"line-1", "ops"}, clock);
  auto append = [&](int i) {
    auto r = trail.append("test.event", {{"i", i}});
    EXPECT_TRUE(r) << r.error().message();
    return r ? r->seq : -1;
  };
  {
    auto tx = ledger->begin();
    ASSERT_TRUE(tx);
    EXPECT_EQ(append(1), 1);
    EXPECT_EQ(append(2), 2);
    ASSERT_TRUE(tx->commit());
  }
  {
    auto tx = ledger->begin();
    ASSERT_TRUE(tx);
    EXPECT_EQ(append(3), 3);
    EXPECT_EQ(append(4), 4);
  }  // rolled back
  {
    auto tx = ledger->begin();
    ASSERT_TRUE(tx);
    EXPECT_EQ(append(3), 3);
    EXPECT_TRUE(trail.append_canonical("test.event", canonical_body({{"i", 4}})));
    ASSERT_TRUE(tx->commit());
  }
  // The stored chain links up: each hash is over the previous one.
  std::string prev(kGenesisHash);
  std::int64_t n = 0;
  ASSERT_TRUE(for_each_record(*ledger, 0, INT64_MAX, [&](const Record& r) -> Status {
    EXPECT_EQ(r.seq, ++n);
    EXPECT_EQ(r.hash, chain_hash(prev, canonical_record(r)));
    prev = r.hash;
    return {};
  }));
  EXPECT_EQ(n, 4);
}

TEST(AuditFormat, Utf8CheckRefusesWhatTheCanonicalFormWouldTurnIntoReplacementCharacters) {
  for (std::string ok : {std::string(""), std::string("plain"), std::string("Zo\xc3\xab"), std::string("\xe5\xb7\xa5"),
                         std::string("\xef\xbf\xbd"), std::string("\xf0\x9f\x94\x91"), std::string("\xf4\x8f\xbf\xbf")})
    EXPECT_TRUE(valid_utf8(ok)) << ok;
  for (std::string bad : {std::string("caf\xe9"), std::string("\xc0\xaf"), std::string("\xe0\x80\xaf"),
                          std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("\xf8\x88\x80\x80\x80"),
                          std::string("\xe2\x82"), std::string("\x80"), std::string("\xff")})
    EXPECT_FALSE(valid_utf8(bad)) << to_hex(ByteView(reinterpret_cast<const unsigned char*>(bad.data()), bad.size()));
  // Different invalid bytes have one canonical form: why they are refused.
  Record a = sample(), b = sample();
  a.operator_name = "op\xff";
  b.operator_name = "op\xfe";
  EXPECT_EQ(canonical_record(a), canonical_record(b));
}

TEST(AuditFormat, TrailRefusesAnOperatorThatIsNotUtf8) {
  testkit::TempDir tmp;
  auto ledger = Ledger::create(tmp / "l.db");
  ASSERT_TRUE(ledger) << ledger.error().message();
  SystemClock clock;
  Trail trail(*ledger, {"line-1", "op\xff"}, clock);
  auto tx = ledger->begin();
  ASSERT_TRUE(tx);
  auto r = trail.append("certificate.issued", {{"serial", "01"}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::usage);
  EXPECT_NE(r.error().message().find("not valid UTF-8"), std::string::npos);
}

}  // namespace
}  // namespace keyline::station::audit
