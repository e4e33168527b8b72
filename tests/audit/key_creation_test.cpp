// A key the station creates (the audit key, a DPS group secret) exists only
// with its audit record: when the ledger refuses the record -- before the key
// is made, or at the commit after it was made -- the key store holds no new
// key afterwards, and the error says what happened to it.
#include <set>

#include <gtest/gtest.h>

#include "audit_test_db.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::key_creation_tests {
namespace {

namespace fs = std::filesystem;
namespace tk = testkit;
using audit_test::Db;

tk::RunResult kl(const fs::path& state, const std::vector<std::string>& args, const std::string& input = {}) {
  return tk::keyline(state, args, {{"KEYLINE_LOG", "error"}}, input);
}

fs::path make_ca(const tk::TempDir& tmp) {
  fs::path state = tmp / "state";
  auto r = kl(state, {"ca", "init", "--station-id", "key-station"});
  if (r.exit_code != 0) throw std::runtime_error("ca init failed: " + r.err);
  return state;
}

// A state dir from before the audit trail had a key: `audit key create` has one to make.
fs::path make_ca_without_audit_key(const tk::TempDir& tmp) {
  fs::path state = make_ca(tmp);
  fs::remove(state / "keys" / "keyline-audit.key.pem");
  fs::remove(state / "audit.pem");
  return state;
}

// The ledger refuses every audit record as it is appended.
void refuse_records(const fs::path& state) {
  Db db(state / "ledger.db");
  db.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'ledger refuses'); END");
}

// The ledger takes every audit record, then refuses the transaction at
// COMMIT: each record adds a row that breaks a deferred foreign key.
void refuse_commits(const fs::path& state) {
  Db db(state / "ledger.db");
  db.exec(
      "CREATE TABLE t_parent (id INTEGER PRIMARY KEY);"
      "CREATE TABLE t_child (p INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED);"
      "CREATE TRIGGER refuse_at_commit AFTER INSERT ON audit_events BEGIN INSERT INTO t_child VALUES (42); "
      "END;");
}

void accept_again(const fs::path& state) {
  Db db(state / "ledger.db");
  db.exec("DROP TRIGGER IF EXISTS refuse; DROP TRIGGER IF EXISTS refuse_at_commit;");
}

long long records(const fs::path& state) {
  Db db(state / "ledger.db");
  return std::stoll(db.rows("SELECT COUNT(*) FROM audit_events")[0][0]);
}

// Every path under `dir`, one a line.
std::string listing(const fs::path& dir) {
  std::set<std::string> paths;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    paths.insert(fs::relative(it->path(), dir).string());
  std::string out;
  for (auto& p : paths) out += p + "\n";
  return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Runs `args` on a station whose ledger fails (the caller set that up):
// the command fails naming `cause`, `made` (the key or secret file) does not
// exist, nothing else in the state dir changed, and the trail did not grow.
// Returns what the command printed on stderr.
std::string expect_nothing_left(const fs::path& state, const std::vector<std::string>& args, const std::string& cause,
                                const fs::path& made, const std::string& input = {}) {
  std::string before = listing(state);
  long long head = records(state);
  auto r = kl(state, args, input);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, cause)) << r.err;
  EXPECT_FALSE(fs::exists(made)) << "an unrecorded key or secret was left in the key store";
  EXPECT_EQ(listing(state), before);
  EXPECT_EQ(records(state), head);
  return r.err;
}

TEST(KeyCreation, AuditKeyIsRemovedWhenTheLedgerRefusesItsRecord) {
  tk::TempDir tmp;
  fs::path state = make_ca_without_audit_key(tmp);
  refuse_records(state);
  std::string err = expect_nothing_left(state, {"audit", "key", "create"}, "ledger refuses",
                                        state / "keys" / "keyline-audit.key.pem");
  EXPECT_TRUE(contains(err, "keyline-audit") && contains(err, "removed")) << "says what became of the key: " << err;
  EXPECT_FALSE(fs::exists(state / "audit.pem"));

  // The label is free again: once the ledger takes the record, the same command works.
  accept_again(state);
  auto again = kl(state, {"audit", "key", "create"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(fs::exists(state / "keys" / "keyline-audit.key.pem"));
  EXPECT_TRUE(fs::exists(state / "audit.pem"));
}

TEST(KeyCreation, AuditKeyIsRemovedWhenTheCommitFails) {
  tk::TempDir tmp;
  fs::path state = make_ca_without_audit_key(tmp);
  refuse_commits(state);
  std::string err = expect_nothing_left(state, {"audit", "key", "create"}, "FOREIGN KEY",
                                        state / "keys" / "keyline-audit.key.pem");
  EXPECT_TRUE(contains(err, "keyline-audit") && contains(err, "removed")) << err;
  EXPECT_FALSE(fs::exists(state / "audit.pem"));
}

TEST(KeyCreation, SecretIsNotCreatedWhenTheLedgerRefusesItsRecord) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  refuse_records(state);
  expect_nothing_left(state, {"hsm", "secret", "generate", "--label", "group-a"}, "ledger refuses",
                      state / "keys" / "group-a.secret");

  accept_again(state);
  auto again = kl(state, {"hsm", "secret", "generate", "--label", "group-a"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(fs::exists(state / "keys" / "group-a.secret"));
}

TEST(KeyCreation, ImportedSecretIsRemovedWhenTheCommitFails) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  refuse_commits(state);
  const std::string group_key = "ZmFjdG9yeS1ncm91cC1rZXktZm9yLWtleS10ZXN0cw==";
  std::string err = expect_nothing_left(state, {"hsm", "secret", "import", "--label", "group-b"}, "FOREIGN KEY",
                                        state / "keys" / "group-b.secret", group_key + "\n");
  EXPECT_TRUE(contains(err, "group-b") && contains(err, "removed")) << err;
  EXPECT_FALSE(contains(err, group_key)) << "the secret itself is never in an error";
}

}  // namespace
}  // namespace keyline::key_creation_tests
