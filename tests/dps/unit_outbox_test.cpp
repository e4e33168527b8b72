// The enrollment outbox in a real SQLite ledger.

#include <gtest/gtest.h>

#include "keyline/station/outbox.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
using namespace keyline::station;

TEST(Outbox, StatesAndCounts) {
  testkit::TempDir dir;
  auto ledger = Ledger::create(dir / "ledger.db");
  ASSERT_TRUE(ledger) << ledger.error().message();
  Outbox box(*ledger);
  auto a = box.enqueue("individual", "create", "dev-1", R"({"registrationId":"dev-1"})", 100);
  auto b = box.enqueue("individual", "create", "dev-2", R"({"registrationId":"dev-2"})", 100);
  auto c = box.enqueue("group", "delete", "grp", R"({"enrollmentGroupId":"grp"})", 100);
  ASSERT_TRUE(a && b && c);
  auto bad = box.enqueue("nonsense", "create", "x", "{}", 1);
  EXPECT_FALSE(bad);  // CHECK constraint
  auto p = box.pending(0, 10);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].registration_id, "dev-1");
  ASSERT_TRUE(box.mark_synced(*a, "\"e1\"", 200));
  ASSERT_TRUE(box.mark_dead(*b, "DPS said 400", 200));
  ASSERT_TRUE(box.mark_retry(*c, "timeout", 200));
  auto counts = box.counts();
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)["synced"], 1);
  EXPECT_EQ((*counts)["dead"], 1);
  EXPECT_EQ((*counts)["pending"], 1);
  auto dead = box.rows_in_state("dead");
  ASSERT_TRUE(dead);
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].last_error, "DPS said 400");
  auto still = box.pending(*b, 10);
  ASSERT_TRUE(still);
  ASSERT_EQ(still->size(), 1u);
  EXPECT_EQ((*still)[0].attempts, 1);
  auto latest = box.latest("individual", "dev-1");
  ASSERT_TRUE(latest && *latest);
  EXPECT_EQ((**latest).etag, "\"e1\"");
}
