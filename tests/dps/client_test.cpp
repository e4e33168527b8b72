// DpsClient against the emulator: CRUD with ETags, bulk, paging, SAS
// rejection, and every retry path through fault injection.

#include <gtest/gtest.h>

#include "keyline/station/dps/client.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using namespace keyline::station::dps;
using nlohmann::json;

namespace {

ClientOptions options(const testkit::DpsEmulator& emu, int attempts = 6, int max_backoff_ms = 200) {
  ClientOptions o;
  o.http.ca_file = emu.ca_cert();
  o.http.timeout = std::chrono::milliseconds(5000);
  o.backoff = BackoffPolicy{std::chrono::milliseconds(20), std::chrono::milliseconds(max_backoff_ms), attempts};
  return o;
}

DpsClient client_for(const testkit::DpsEmulator& emu, const Clock& clock, int attempts = 6) {
  auto cs = parse_connection_string(emu.connection_string());
  EXPECT_TRUE(cs);
  return DpsClient(std::move(*cs), clock, options(emu, attempts));
}

Enrollment sym(const std::string& id) {
  return std::move(Enrollment::individual(id).symmetric_key("AAAAAAAAAAAAAAAAAAAAAA==", "BBBBBBBBBBBBBBBBBBBBBB=="));
}

}  // namespace

TEST(DpsClient, CrudWithEtagsAnd412) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu");
  SystemClock clock;
  auto c = client_for(emu, clock);
  auto created = c.put(sym("Dev-One").device_id("device-1"));
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_FALSE(created->etag().empty());
  EXPECT_EQ(created->json()["attestation"]["symmetricKey"], json::object());  // keys not echoed
  auto got = c.get(EnrollmentKind::individual, "dev-one");  // IDs are case-insensitive
  ASSERT_TRUE(got);
  EXPECT_EQ(got->json()["deviceId"], "device-1");
  auto mech = c.attestation_mechanism(EnrollmentKind::individual, "dev-one");
  ASSERT_TRUE(mech);
  EXPECT_EQ((*mech)["symmetricKey"]["primaryKey"], "AAAAAAAAAAAAAAAAAAAAAA==");
  auto stale = c.put(sym("Dev-One").device_id("device-2"), "\"not-the-etag\"");
  ASSERT_FALSE(stale);
  EXPECT_EQ(dps_error_code(stale.error()), 412002);
  EXPECT_NE(stale.error().message().find("trackingId"), std::string::npos);
  EXPECT_NE(stale.error().message().find("RFC7232"), std::string::npos);
  auto updated = c.put(sym("Dev-One").device_id("device-2"), created->etag());
  ASSERT_TRUE(updated) << updated.error().message();
  EXPECT_NE(updated->etag(), created->etag());
  auto del_stale = c.remove(EnrollmentKind::individual, "dev-one", created->etag());
  ASSERT_FALSE(del_stale);
  EXPECT_EQ(dps_error_code(del_stale.error()), 412002);
  ASSERT_TRUE(c.remove(EnrollmentKind::individual, "dev-one", updated->etag()));
  auto gone = c.find(EnrollmentKind::individual, "dev-one");
  ASSERT_TRUE(gone);
  EXPECT_FALSE(*gone);
  auto missing = c.remove(EnrollmentKind::individual, "dev-one");
  ASSERT_FALSE(missing);
  EXPECT_EQ(dps_error_code(missing.error()), 404201);
  // Groups; bad input surfaces DPS's own code and message.
  auto g = c.put(Enrollment::group("grp-1").x509_ca_references("root").allocation_policy("custom"));
  ASSERT_FALSE(g);
  EXPECT_EQ(dps_error_code(g.error()), 400004);
  EXPECT_NE(g.error().message().find("CustomAllocationDefinition"), std::string::npos);
  ASSERT_TRUE(c.put(Enrollment::group("grp-1").x509_ca_references("root")));
  ASSERT_TRUE(c.get(EnrollmentKind::group, "GRP-1"));
}

TEST(DpsClient, BulkWithPerItemErrorsAndPaging) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu");
  SystemClock clock;
  auto c = client_for(emu, clock);
  std::vector<json> items;
  for (int i = 0; i < 10; ++i) items.push_back(sym("bulk-" + std::to_string(i)).json());
  auto r = c.bulk(EnrollmentKind::individual, BulkMode::create, items);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->successful);
  EXPECT_TRUE(c.bulk(EnrollmentKind::individual, BulkMode::create, std::vector<json>(11, items[0])).has_value() == false);
  // Again: every item exists now -> 409 per item, still HTTP 200.
  std::vector<json> again(items.begin(), items.begin() + 3);
  again.push_back(sym("bulk-new").json());
  auto r2 = c.bulk(EnrollmentKind::individual, BulkMode::create, again);
  ASSERT_TRUE(r2);
  EXPECT_FALSE(r2->successful);
  ASSERT_EQ(r2->errors.size(), 3u);
  EXPECT_EQ(r2->errors[0].error_code / 1000, 409);
  EXPECT_EQ(r2->errors[0].id, "bulk-0");
  // updateIfMatchETag with a wrong etag -> 412 for that item.
  json stale = items[1];
  stale["etag"] = "\"nope\"";
  auto r3 = c.bulk(EnrollmentKind::individual, BulkMode::update_if_match_etag, {stale});
  ASSERT_TRUE(r3);
  ASSERT_EQ(r3->errors.size(), 1u);
  EXPECT_EQ(r3->errors[0].error_code / 1000, 412);
  // Paging: 11 enrollments in pages of 4 -> 4, 4, 3, last without continuation.
  auto p1 = c.query(EnrollmentKind::individual, 4);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->items.size(), 4u);
  EXPECT_EQ(p1->item_type, "Enrollment");
  EXPECT_FALSE(p1->continuation.empty());
  auto p2 = c.query(EnrollmentKind::individual, 4, p1->continuation);
  auto p3 = c.query(EnrollmentKind::individual, 4, p2->continuation);
  ASSERT_TRUE(p3);
  EXPECT_EQ(p3->items.size(), 3u);
  EXPECT_TRUE(p3->continuation.empty());
  auto all = c.query_all(EnrollmentKind::individual, 3);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 11u);
  auto del = c.bulk(EnrollmentKind::individual, BulkMode::remove, {items[0], sym("never-was").json()});
  ASSERT_TRUE(del);
  ASSERT_EQ(del->errors.size(), 1u);
  EXPECT_EQ(del->errors[0].error_code, 404201);
}

TEST(DpsClient, WrongKeyAndExpiredTokenAreRefused) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu");
  SystemClock clock;
  std::string cs = emu.connection_string();
  std::string bad = cs.substr(0, cs.find("SharedAccessKey=") + 16) + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  DpsClient wrong(*parse_connection_string(bad), clock, options(emu));
  auto r = wrong.get(EnrollmentKind::individual, "x");
  ASSERT_FALSE(r);
  EXPECT_EQ(dps_error_code(r.error()), 401002);
  EXPECT_NE(r.error().message().find("wrong key"), std::string::npos);
  FixedClock past(TimePoint(std::chrono::seconds(1000000)));
  DpsClient expired(*parse_connection_string(cs), past, options(emu));
  auto e = expired.get(EnrollmentKind::individual, "x");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("expired"), std::string::npos);
}

TEST(DpsClient, RetriesThrottlingWithRetryAfter) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--fail-rate-429", "0.5", "--retry-after", "1", "--seed", "7"});
  SystemClock clock;
  DpsClient c(*parse_connection_string(emu.connection_string()), clock, options(emu, 12, 2000));
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(c.put(sym("t-" + std::to_string(i)))) << i;
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(c.stats().throttled, 0u);
  EXPECT_GE(s, static_cast<double>(c.stats().throttled) * 0.99);  // each 429 waited Retry-After (1 s)
}

TEST(DpsClient, QuotaIsEnforcedByTheEmulatorAndRespectedByTheClient) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--quota", "120"});  // 2/s
  SystemClock clock;
  auto unlimited = client_for(emu, clock, 10);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(unlimited.get(EnrollmentKind::individual, "x").error().native_code() == 404201);
  EXPECT_GT(unlimited.stats().throttled, 0u);  // the emulator said 429
  ClientOptions o = options(emu, 10);
  o.quota_per_minute = 100;  // a little under the service quota
  DpsClient polite(*parse_connection_string(emu.connection_string()), clock, o);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int i = 0; i < 4; ++i) (void)polite.find(EnrollmentKind::individual, "x");
  EXPECT_EQ(polite.stats().throttled, 0u);
}

TEST(DpsClient, Retries500AndConnectionResets) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--fail-rate-500", "0.3", "--reset-rate", "0.3", "--seed", "3"});
  SystemClock clock;
  auto c = client_for(emu, clock, 15);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(c.put(sym("r-" + std::to_string(i)))) << i;
  EXPECT_GT(c.stats().server_errors, 0u);
  EXPECT_GT(c.stats().connection_errors, 0u);
  auto all = c.query_all(EnrollmentKind::individual);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 8u);
}

TEST(DpsClient, SlowServiceTimesOutThenGivesUpWithTheReason) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--slow-ms", "700"});
  SystemClock clock;
  ClientOptions o = options(emu, 2);
  o.http.timeout = std::chrono::milliseconds(300);
  DpsClient c(*parse_connection_string(emu.connection_string()), clock, o);
  auto r = c.get(EnrollmentKind::individual, "x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().domain(), Domain::io);
  EXPECT_NE(r.error().message().find("gave up after 2 attempts"), std::string::npos);
  EXPECT_EQ(c.stats().connection_errors, 2u);
  ClientOptions patient = options(emu, 2);
  DpsClient ok(*parse_connection_string(emu.connection_string()), clock, patient);
  auto found = ok.find(EnrollmentKind::individual, "x");  // slow but within the timeout
  ASSERT_TRUE(found);
  EXPECT_FALSE(*found);
}

TEST(DpsClient, RegistrationStatesAndStateSurvivesRestart) {
  testkit::TempDir dir;
  std::string cs, ca;
  {
    testkit::DpsEmulator emu(dir / "emu");
    SystemClock clock;
    auto c = client_for(emu, clock);
    ASSERT_TRUE(c.put(sym("keep-me")));
    auto st = c.registration_state("keep-me");
    ASSERT_FALSE(st);
    EXPECT_EQ(dps_error_code(st.error()) / 1000, 404);
    auto q = c.query_registration_states("no-group");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->item_type, "DeviceRegistration");
    cs = emu.connection_string();
    ca = testkit::read_file(emu.ca_cert());
    EXPECT_EQ(emu.stop(), 0);  // SIGTERM is a clean exit
  }
  testkit::DpsEmulator again(dir / "emu");
  EXPECT_EQ(testkit::read_file(again.ca_cert()), ca);
  std::string key = cs.substr(cs.find("SharedAccessKey="));
  EXPECT_NE(again.connection_string().find(key), std::string::npos);
  SystemClock clock;
  auto c = client_for(again, clock);
  EXPECT_TRUE(c.get(EnrollmentKind::individual, "keep-me"));
}
