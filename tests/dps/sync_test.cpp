// EnrollmentSync: outbox -> emulator, in process, through faults; read-back
// reconciliation; dead letters.

#include <gtest/gtest.h>

#include <set>

#include "keyline/station/dps/sync.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using namespace keyline::station;
using namespace keyline::station::dps;
using nlohmann::json;

namespace {
const char* kKey = "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=";

std::unique_ptr<DpsClient> sync_client_for(const testkit::DpsEmulator& emu, const Clock& clock) {
  ClientOptions o;
  o.http.ca_file = emu.ca_cert();
  o.backoff = BackoffPolicy{std::chrono::milliseconds(10), std::chrono::milliseconds(1500), 12};
  return std::make_unique<DpsClient>(*parse_connection_string(emu.connection_string()), clock, o);
}
}  // namespace

TEST(EnrollmentSync, DrainsThroughFaultsExactlyOnce) {
  testkit::TempDir dir;
  // Random faults, and a quota of two service calls a second: the sync's
  // first five bulk calls go out together (up to four in flight), so at
  // least one is throttled whatever the random draws give (the sync makes
  // only a handful of calls, ten enrollments each).
  testkit::DpsEmulator emu(dir / "emu", {"--fail-rate-429", "0.1", "--fail-rate-500", "0.1", "--reset-rate", "0.1",
                                         "--retry-after", "1", "--seed", "11", "--quota", "120"});
  SystemClock clock;
  auto ledger = Ledger::create(dir / "ledger.db");
  ASSERT_TRUE(ledger);
  Outbox outbox(*ledger);
  testkit::write_file(dir / "key", std::string(kKey) + "\n");
  for (int i = 0; i < 35; ++i) {
    std::string id = "sync-" + std::to_string(i);
    json payload = Enrollment::individual(id).json();
    if (i % 2) payload = with_key_source(payload, "file:" + (dir / "key").string());
    ASSERT_TRUE(outbox.enqueue("individual", "create", id, payload.dump(), 1));
    EXPECT_EQ(payload.dump().find(kKey), std::string::npos);  // never a key in the ledger
  }
  ASSERT_TRUE(outbox.enqueue("group", "create", "sync-group", with_key_source(Enrollment::group("sync-group").json(),
                                                                              "file:" + (dir / "key").string()).dump(), 1));
  auto client = sync_client_for(emu, clock);
  EnrollmentSync sync(*ledger, *client, clock, nullptr);
  std::uint64_t synced = 0;
  for (int pass = 0; pass < 5; ++pass) {
    auto r = sync.run_once();
    if (r) synced += r->synced;
    auto counts = outbox.counts();
    if ((*counts)["pending"] == 0) break;
  }
  auto counts = outbox.counts();
  EXPECT_EQ((*counts)["synced"], 36);
  EXPECT_EQ((*counts)["dead"], 0);
  auto all = client->query_all(EnrollmentKind::individual);
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_EQ(all->size(), 35u);
  auto mech = client->attestation_mechanism(EnrollmentKind::individual, "sync-1");
  ASSERT_TRUE(mech);
  EXPECT_EQ((*mech)["symmetricKey"]["primaryKey"], kKey);
  EXPECT_GT(client->stats().throttled + client->stats().server_errors + client->stats().connection_errors, 0u);
}

TEST(EnrollmentSync, ReadBackReconcilesEqualAndDeadLettersDifferent) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu");
  SystemClock clock;
  auto client = sync_client_for(emu, clock);
  // Already in DPS: one equal to what the outbox asks, one different.
  ASSERT_TRUE(client->put(std::move(Enrollment::individual("same-1").device_id("d1"))));
  ASSERT_TRUE(client->put(std::move(Enrollment::individual("diff-1").device_id("other"))));
  auto ledger = Ledger::create(dir / "ledger.db");
  Outbox outbox(*ledger);
  ASSERT_TRUE(outbox.enqueue("individual", "create", "same-1", Enrollment::individual("same-1").device_id("d1").json().dump(), 1));
  ASSERT_TRUE(outbox.enqueue("individual", "create", "diff-1", Enrollment::individual("diff-1").device_id("d2").json().dump(), 1));
  ASSERT_TRUE(outbox.enqueue("individual", "create", "bad-key", with_key_source(Enrollment::individual("bad-key").json(),
                                                                                "file:/nonexistent/key").dump(), 1));
  ASSERT_TRUE(outbox.enqueue("individual", "delete", "never-there", json{{"registrationId", "never-there"}}.dump(), 1));
  EnrollmentSync sync(*ledger, *client, clock, nullptr);
  auto r = sync.run_once();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->reconciled, 1u);
  EXPECT_EQ(r->dead, 2u);
  auto dead = outbox.rows_in_state("dead");
  ASSERT_EQ(dead->size(), 2u);
  EXPECT_NE((*dead)[0].last_error.find("different"), std::string::npos);
  EXPECT_NE((*dead)[1].last_error.find("/nonexistent/key"), std::string::npos);
  EXPECT_EQ((*outbox.counts())["synced"], 2);  // same-1 and the delete of a missing one
}

// With several bulk calls in flight, changes to one registration ID still
// reach DPS in queue order: a delete queued after a create never overtakes it,
// and a row left pending holds back the later rows of its ID.
TEST(EnrollmentSync, ChangesToOneIdReachDpsInQueueOrder) {
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--slow-ms", "20"});
  SystemClock clock;
  auto ledger = Ledger::create(dir / "ledger.db");
  ASSERT_TRUE(ledger);
  Outbox outbox(*ledger);
  for (int i = 0; i < 25; ++i) {
    std::string id = "ord-" + std::to_string(i);
    ASSERT_TRUE(outbox.enqueue("individual", "create", id, Enrollment::individual(id).json().dump(), 1));
  }
  for (const char* id : {"ord-3", "ORD-20"})  // IDs compare case-insensitively, as in DPS
    ASSERT_TRUE(outbox.enqueue("individual", "delete", id, "{}", 1));
  auto client = sync_client_for(emu, clock);
  EnrollmentSync sync(*ledger, *client, clock, nullptr);
  sync.set_in_flight(4);
  auto r = sync.run_once();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*outbox.counts())["synced"], 27);
  auto all = client->query_all(EnrollmentKind::individual);
  ASSERT_TRUE(all) << all.error().message();
  std::set<std::string> ids;
  for (auto& e : *all) ids.insert(e["registrationId"].get<std::string>());
  EXPECT_EQ(ids.size(), 23u);
  EXPECT_FALSE(ids.contains("ord-3"));
  EXPECT_FALSE(ids.contains("ord-20"));
  EXPECT_TRUE(ids.contains("ord-24"));
}
