#include <sqlite3.h>
#include <sys/stat.h>

#include <thread>

#include <gtest/gtest.h>

#include "keyline/station/ledger.hpp"
#include "keyline/testkit/testkit.hpp"
#include "ledger_records.hpp"

namespace keyline::station {
namespace {

using test::certificate_record;

Status insert(Ledger& l, const CertificateRecord& r, bool supersede = false) {
  KL_TRY(auto tx, l.begin());
  KL_CHECK(l.insert_certificate(r, supersede));
  return tx.commit();
}

TEST(Ledger, CreatesOwnerOnlyFileAtCurrentSchema) {
  testkit::TempDir dir;
  auto l = Ledger::create(dir / "ledger.db");
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->schema_version(), Ledger::kSchemaVersion);
  struct stat st{};
  ASSERT_EQ(::stat((dir / "ledger.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(Ledger::create(dir / "ledger.db"));  // never over an existing file
}

TEST(Ledger, OneActiveCertificatePerRegistrationIdAndProfile) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  ASSERT_TRUE(insert(l, certificate_record("01", "dev-1")));
  auto dup = insert(l, certificate_record("02", "dev-1"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().domain(), Domain::policy);
  EXPECT_NE(dup.error().message().find("--reissue"), std::string::npos);
  ASSERT_TRUE(insert(l, certificate_record("03", "dev-1", "idevid")));  // another profile is fine
  ASSERT_TRUE(insert(l, certificate_record("04", "dev-1"), /*supersede=*/true));
  auto old = *l.certificate("01");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->status, "superseded");
  EXPECT_EQ(old->superseded_by, "04");
  EXPECT_EQ((*l.active_certificate("dev-1", "device"))->serial, "04");
  auto counts = *l.counts_by_status();
  EXPECT_EQ(counts["active"], 2);
  EXPECT_EQ(counts["superseded"], 1);
}

TEST(Ledger, SchemaEnforcesInvariantsEvenAgainstRawSql) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  ASSERT_TRUE(insert(l, certificate_record("01", "dev-1")));
  // A second active row for the same id, bypassing the code path: refused by the index.
  EXPECT_FALSE(l.exec("INSERT INTO certificates (serial, registration_id, profile, subject, cert_sha256, "
                      "pubkey_sha256, not_before, not_after, status, issued_at, der) VALUES "
                      "('99','dev-1','device','s','c99','p',1,2,'active',1,x'00')"));
  // A duplicate serial: refused.
  EXPECT_FALSE(insert(l, certificate_record("01", "dev-2")));
  // An unknown status: refused by CHECK.
  EXPECT_FALSE(l.exec("UPDATE certificates SET status='lost' WHERE serial='01'"));
}

TEST(Ledger, FailedTransactionLeavesNothing) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  {
    auto tx = *l.begin();
    ASSERT_TRUE(l.insert_certificate(certificate_record("01", "a"), false));
    ASSERT_FALSE(l.insert_certificate(certificate_record("01", "b"), false));
    // tx goes out of scope without commit
  }
  EXPECT_FALSE(*l.certificate("01"));
}

// A deferred transaction commits without an fsync (synchronous=NORMAL); the
// connection is back at FULL as soon as it ends. Both are visible to other connections.
TEST(Ledger, DeferredAndDurableTransactionsSetTheSyncLevel) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  auto level = [&] {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(l.handle(), "PRAGMA synchronous", -1, &st, nullptr);
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
  };
  EXPECT_EQ(level(), 2);  // FULL
  {
    auto tx = *l.begin(Ledger::Durability::deferred);
    EXPECT_EQ(level(), 1);  // NORMAL
    ASSERT_TRUE(l.insert_certificate(certificate_record("0D", "deferred"), false));
    ASSERT_TRUE(tx.commit());
  }
  EXPECT_EQ(level(), 2);  // back to FULL for whatever comes next
  {
    auto tx = *l.begin();
    EXPECT_EQ(level(), 2);
    ASSERT_TRUE(l.insert_certificate(certificate_record("0E", "durable"), false));
    ASSERT_TRUE(tx.commit());
  }
  auto other = *Ledger::open(dir / "l.db");
  EXPECT_TRUE(*other.certificate("0D"));
  EXPECT_TRUE(*other.certificate("0E"));
}

TEST(Ledger, RevokeRules) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  ASSERT_TRUE(insert(l, certificate_record("0A", "dev-1")));
  auto unknown = l.revoke("FF", "keyCompromise", 5);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().domain(), Domain::input);
  ASSERT_TRUE(l.revoke("0A", "keyCompromise", 5));
  auto twice = l.revoke("0A", "keyCompromise", 6);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().domain(), Domain::policy);
  auto revoked = *l.revoked();
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].revoked_at, 5);
  EXPECT_FALSE(*l.active_certificate("dev-1", "device"));  // a new one may be issued
  EXPECT_EQ(*l.next_crl_number(), 1u);
  ASSERT_TRUE(l.insert_crl({1, 1, 2, {0x30}}));
  EXPECT_EQ(*l.next_crl_number(), 2u);
}

TEST(Ledger, ListsARegistrationIdsCertificatesInEveryStatus) {
  // Active certificates and the others are found through different partial
  // indexes (schema 8); a listing by registration ID needs both.
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  ASSERT_TRUE(insert(l, certificate_record("0A", "dev-1")));
  ASSERT_TRUE(l.insert_certificate(certificate_record("0B", "dev-1"), true));  // 0A superseded
  ASSERT_TRUE(l.insert_certificate(certificate_record("0C", "dev-1"), true));  // 0B superseded
  ASSERT_TRUE(l.revoke("0B", "keyCompromise", 5));
  ASSERT_TRUE(insert(l, certificate_record("0D", "dev-2")));
  auto list = [&](std::optional<std::string> id, std::optional<std::string> status) {
    std::vector<std::string> serials;
    EXPECT_TRUE(l.for_each_certificate({std::move(id), std::move(status)},
                                       [&](const CertificateRecord& r) { serials.push_back(r.serial); }));
    return serials;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(list("dev-1", std::nullopt), (V{"0A", "0B", "0C"}));
  EXPECT_EQ(list("dev-1", "active"), V{"0C"});
  EXPECT_EQ(list("dev-1", "superseded"), V{"0A"});
  EXPECT_EQ(list("dev-1", "revoked"), V{"0B"});
  EXPECT_EQ(list("dev-2", std::nullopt), V{"0D"});
  EXPECT_EQ(list("dev-3", std::nullopt), V{});
  EXPECT_EQ(list(std::nullopt, "active"), (V{"0C", "0D"}));
  EXPECT_EQ(list(std::nullopt, "revoked"), V{"0B"});
  EXPECT_EQ(list(std::nullopt, std::nullopt), (V{"0A", "0B", "0C", "0D"}));
}

TEST(Ledger, MigratesFromEveryEarlierVersionKeepingData) {
  for (int from = 0; from < Ledger::kSchemaVersion; ++from) {
    testkit::TempDir dir;
    {
      auto old = Ledger::create_at_version(dir / "l.db", from);
      ASSERT_TRUE(old) << old.error().message();
      EXPECT_EQ(old->schema_version(), from);
      if (from >= 1) {
        // Written with the v1 columns, as an old keyline would have.
        ASSERT_TRUE(old->exec("INSERT INTO certificates (serial, registration_id, profile, subject, cert_sha256, "
                              "pubkey_sha256, not_before, not_after, status, issued_at, der) VALUES "
                              "('01','kept','device','CN=kept','c1','p1',1,2,'active',1,x'3000')"));
      }
    }
    auto l = Ledger::open(dir / "l.db");
    ASSERT_TRUE(l) << "from v" << from << ": " << l.error().message();
    EXPECT_EQ(l->schema_version(), Ledger::kSchemaVersion);
    if (from >= 1) {
      auto kept = *l->certificate("01");
      ASSERT_TRUE(kept);
      EXPECT_EQ(kept->registration_id, "kept");
      EXPECT_TRUE(kept->batch_id.empty());
    }
    EXPECT_TRUE(l->batch_certificate_count("none"));  // v3 column exists
    EXPECT_TRUE(l->next_crl_number());  // v2 table exists
    if (from >= 1) {
      // v7 rebuilt the table: its constraints and lookups still hold.
      EXPECT_FALSE(l->exec("INSERT INTO certificates (serial, registration_id, profile, subject, cert_sha256, "
                           "pubkey_sha256, not_before, not_after, status, issued_at, der) VALUES "
                           "('02','kept','device','CN=kept','c2','p1',1,2,'active',1,x'3000')"));
      EXPECT_FALSE(l->exec("INSERT INTO certificates (serial, registration_id, profile, subject, cert_sha256, "
                           "pubkey_sha256, not_before, not_after, status, issued_at, der) VALUES "
                           "('01','other','device','CN=other','c3','p1',1,2,'active',1,x'3000')"));
      ASSERT_TRUE(l->exec("UPDATE certificates SET status='revoked' WHERE serial='01'"));
      std::vector<std::string> revoked, active;
      ASSERT_TRUE(l->for_each_certificate({std::nullopt, "revoked"},
                                          [&](const CertificateRecord& r) { revoked.push_back(r.serial); }));
      ASSERT_TRUE(l->for_each_certificate({std::nullopt, "active"},
                                          [&](const CertificateRecord& r) { active.push_back(r.serial); }));
      EXPECT_EQ(revoked, std::vector<std::string>{"01"});
      EXPECT_TRUE(active.empty());
      std::vector<std::string> kept;
      ASSERT_TRUE(l->for_each_certificate({"kept", std::nullopt},
                                          [&](const CertificateRecord& r) { kept.push_back(r.serial); }));
      EXPECT_EQ(kept, std::vector<std::string>{"01"});
      auto counts = l->counts_by_status();
      ASSERT_TRUE(counts);
      EXPECT_EQ(*counts, (std::map<std::string, std::int64_t>{{"active", 0}, {"revoked", 1}, {"superseded", 0}}));
      ASSERT_TRUE(l->exec("INSERT INTO certificates (serial, registration_id, profile, subject, cert_sha256, "
                          "pubkey_sha256, not_before, not_after, status, issued_at, der) VALUES "
                          "('03','new','device','CN=new','c4','p1',1,2,'active',1,x'3000')"));
      EXPECT_EQ(l->counts_by_status()->at("active"), 1);
    }
  }
}

// Two processes that open an old ledger at once (a command and dps sync
// after an upgrade): each migration runs once, and both open it.
TEST(Ledger, ConcurrentOpensOfAnOldLedgerMigrateItOnce) {
  testkit::TempDir dir;
  ASSERT_TRUE(Ledger::create_at_version(dir / "l.db", 3));
  std::vector<Result<Ledger>> opened;
  opened.reserve(4);
  for (int i = 0; i < 4; ++i) opened.push_back(std::unexpected(Error(Domain::internal, "not run")));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { opened[i] = Ledger::open(dir / "l.db"); });
  for (auto& t : threads) t.join();
  for (auto& l : opened) {
    ASSERT_TRUE(l) << l.error().message();
    EXPECT_EQ(l->schema_version(), Ledger::kSchemaVersion);
  }
}

TEST(Ledger, AuditCheckpointsAreAppendOnly) {
  testkit::TempDir dir;
  auto l = *Ledger::create(dir / "l.db");
  ASSERT_TRUE(l.exec("INSERT INTO audit_checkpoints (seq, hash, time, key, signature) VALUES "
                     "(1, 'h', '2026-01-01T00:00:00Z', 'k', x'00')"));
  auto del = l.exec("DELETE FROM audit_checkpoints");
  ASSERT_FALSE(del);
  EXPECT_NE(del.error().message().find("append-only"), std::string::npos) << del.error().message();
  EXPECT_FALSE(l.exec("UPDATE audit_checkpoints SET seq = 2"));
}

TEST(Ledger, RefusesNewerCorruptAndForeignFiles) {
  testkit::TempDir dir;
  {
    auto l = *Ledger::create(dir / "new.db");
    ASSERT_TRUE(l.exec("PRAGMA user_version=99"));
  }
  auto newer = Ledger::open(dir / "new.db");
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("newer"), std::string::npos);

  testkit::write_file(dir / "corrupt.db", std::string(4096, '\x5a'));
  auto corrupt = Ledger::open(dir / "corrupt.db");
  ASSERT_FALSE(corrupt);
  EXPECT_EQ(corrupt.error().domain(), Domain::state);
  EXPECT_NE(corrupt.error().message().find("corrupt"), std::string::npos);

  sqlite3* db = nullptr;
  sqlite3_open((dir / "other.db").c_str(), &db);
  sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto foreign = Ledger::open(dir / "other.db");
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find("not a Keyline ledger"), std::string::npos);

  auto missing = Ledger::open(dir / "missing.db");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("keyline ca init"), std::string::npos);
}

}  // namespace
}  // namespace keyline::station

namespace keyline::station {
namespace {

TEST(Ledger, MoveAssignmentClosesTheOldConnectionAndKeepsTheNew) {
  testkit::TempDir dir;
  auto a = *Ledger::create(dir / "a.db");
  ASSERT_TRUE(a.active_ref("x", "device"));  // a cached statement to finalise
  auto b = *Ledger::create(dir / "b.db");
  ASSERT_TRUE(insert(b, certificate_record("0B", "in-b")));
  a = std::move(b);
  EXPECT_EQ(a.path(), dir / "b.db");
  ASSERT_TRUE(*a.certificate("0B"));
  ASSERT_TRUE(insert(a, certificate_record("0C", "also-b")));
}

}  // namespace
}  // namespace keyline::station
