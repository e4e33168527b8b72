// Ledger::open_readonly and Ledger::read_meta: reading a live ledger beside
// its writer without leaving files behind, reading an auditor's read-only
// copy without writing a byte, and the schema versions a reader refuses.
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include <gtest/gtest.h>

#include "keyline/station/ledger.hpp"
#include "keyline/testkit/testkit.hpp"
#include "ledger_records.hpp"

namespace keyline::station::ledger_readonly_tests {
namespace {

namespace fs = std::filesystem;

using test::certificate_record;

Status insert(Ledger& l, const CertificateRecord& r) {
  KL_TRY(auto tx, l.begin());
  KL_CHECK(l.insert_certificate(r, false));
  return tx.commit();
}

// A ledger at the current schema with one certificate and a station id; closed.
void make_ledger(const fs::path& path) {
  auto l = Ledger::create(path);
  ASSERT_TRUE(l) << l.error().message();
  ASSERT_TRUE(insert(*l, certificate_record("01", "dev-1")));
  ASSERT_TRUE(l->set_meta("station_id", "station-ro"));
}

// chmod a-w on the directory and everything in it, as an auditor's copy.
void mark_read_only(const fs::path& dir) {
  for (auto& e : fs::directory_iterator(dir)) fs::permissions(e.path(), fs::perms(0444));
  fs::permissions(dir, fs::perms(0555));
}

// What a write to `dir` would change: each entry's name, size, content and
// modification time, and the directory's own modification time.
std::string stamp(const fs::path& dir) {
  auto mtime = [](const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("stat " + p.string());
    return std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  };
  std::string out = ". " + mtime(dir) + "\n";
  auto hashes = testkit::snapshot(dir);
  std::map<std::string, std::string> lines;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    lines[name] = name + " " + mtime(e.path()) + " " + hashes[name];
  }
  for (auto& [name, line] : lines) out += line + "\n";
  return out;
}

std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A station at work in `dir`: ledger.db with certificate "01", its writer
// open (so -wal and -shm exist) and certificate "02" committed through it.
Result<Ledger> station_at_work(const fs::path& dir) {
  fs::create_directory(dir);
  make_ledger(dir / "ledger.db");
  auto writer = Ledger::open(dir / "ledger.db");
  if (!writer) return writer;
  KL_CHECK(insert(*writer, certificate_record("02", "dev-2")));
  return writer;
}

bool opened_immutable(const Ledger& l) {
  return sqlite3_uri_boolean(sqlite3_db_filename(l.handle(), "main"), "immutable", 0) != 0;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(LedgerReadOnly, ReadsACopyNobodyMayWriteAndWritesNothing) {
  testkit::TempDir tmp;
  fs::path dir = tmp / "copy";
  fs::create_directory(dir);
  make_ledger(dir / "ledger.db");
  ASSERT_EQ(names(dir), std::vector<std::string>{"ledger.db"});
  mark_read_only(dir);
  const std::string before = stamp(dir);
  {
    auto l = Ledger::open_readonly(dir / "ledger.db");
    ASSERT_TRUE(l) << l.error().message();
    // Also under root, which could write the copy in spite of its modes.
    EXPECT_TRUE(opened_immutable(*l));
    EXPECT_EQ(l->schema_version(), Ledger::kSchemaVersion);
    auto cert = l->certificate("01");
    ASSERT_TRUE(cert && *cert);
    EXPECT_EQ((*cert)->registration_id, "dev-1");
    EXPECT_EQ(*l->meta("station_id"), "station-ro");
    EXPECT_FALSE(l->exec("INSERT INTO meta (key, value) VALUES ('x', 'y')"));
    auto peeked = Ledger::read_meta(dir / "ledger.db", "station_id");
    ASSERT_TRUE(peeked) << peeked.error().message();
    EXPECT_EQ(*peeked, "station-ro");
    EXPECT_EQ(stamp(dir), before) << "written while open";
  }
  EXPECT_EQ(stamp(dir), before) << "written when closed";
}

// Another account reading a live station's ledger (its owner may write it)
// never opens it immutable: that would read pages a writer is changing
// without its locks. With the writer running it reads through the locks;
// idle, it cannot (no -shm to share) and says to read a copy.
TEST(LedgerReadOnly, AnotherAccountNeverReadsALiveLedgerUnlocked) {
  testkit::TempDir tmp;
  fs::path dir = tmp / "live";
  fs::path path = dir / "ledger.db";
  auto writer = station_at_work(dir);  // -wal and -shm exist
  ASSERT_TRUE(writer) << writer.error().message();
  ::chmod(tmp.path().c_str(), 0755);
  ::chmod(dir.c_str(), 0755);
  // The writer made -wal and -shm with the ledger's bits of then: all three readable by others.
  for (const char* suffix : {"", "-wal", "-shm"}) ::chmod((path.string() + suffix).c_str(), 0644);
  {
    auto own = Ledger::open_readonly(path);  // the owner reads through the locks too
    ASSERT_TRUE(own) << own.error().message();
    EXPECT_FALSE(opened_immutable(*own));
  }
  if (::geteuid() != 0) return;  // only root can read as another account
  // 0: read through the locks, not immutable; 1: refused; 2: read unlocked; 3: other failure.
  auto read_as_nobody = [&]() -> int {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(3);
      auto l = Ledger::open_readonly(path);
      if (!l) ::_exit(contains(l.error().message(), "cannot be read without writing") ? 1 : 3);
      if (opened_immutable(*l)) ::_exit(2);
      auto c = l->certificate("02");
      ::_exit(c && *c ? 0 : 3);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
  };
  EXPECT_EQ(read_as_nobody(), 0);
  writer = std::unexpected(Error(Domain::state, "closed"));  // the station stops: -wal and -shm go
  EXPECT_EQ(names(dir), std::vector<std::string>{"ledger.db"});
  EXPECT_EQ(read_as_nobody(), 1);  // before, it was opened immutable
}

// A batch worker reads beside its own writer whatever the permission bits
// say: open_readonly would take a write-protected ledger for a copy (and
// read it immutable, blind to the writer's commits, or refuse it).
TEST(LedgerReadOnly, AReaderBesideItsWriterAlwaysSeesItsCommits) {
  testkit::TempDir tmp;
  fs::path dir = tmp / "station";
  fs::path path = dir / "ledger.db";
  auto writer = station_at_work(dir);
  ASSERT_TRUE(writer) << writer.error().message();
  const bool root = ::geteuid() == 0;
  if (root) {  // root writes whatever the bits say; the bits still read "copy"
    ::chmod(path.c_str(), 0444);
    ::chmod(dir.c_str(), 0555);
    EXPECT_FALSE(Ledger::open_readonly(path)) << "a write-protected ledger with a log reads as a copy";
  }
  auto reader = Ledger::open_beside_writer(path);
  ASSERT_TRUE(reader) << reader.error().message();
  EXPECT_FALSE(opened_immutable(*reader));
  ASSERT_TRUE(insert(*writer, certificate_record("03", "dev-3")));
  auto seen = reader->certificate("03");
  ASSERT_TRUE(seen) << seen.error().message();
  EXPECT_TRUE(*seen) << "the reader sees what its writer committed";
  EXPECT_FALSE(reader->exec("INSERT INTO meta (key, value) VALUES ('x', 'y')"));
  if (root) {
    ::chmod(dir.c_str(), 0700);
    ::chmod(path.c_str(), 0600);
  }
}

TEST(LedgerReadOnly, ReadsALiveLedgerBesideItsWriterAndLeavesNoFiles) {
  testkit::TempDir tmp;
  fs::path path = tmp / "ledger.db";
  make_ledger(path);
  {
    // Alone on a station at rest: SQLite's -wal and -shm go when it closes.
    auto reader = Ledger::open_readonly(path);
    ASSERT_TRUE(reader) << reader.error().message();
    EXPECT_FALSE(opened_immutable(*reader));
    ASSERT_TRUE(*reader->certificate("01"));
  }
  EXPECT_EQ(names(tmp.path()), std::vector<std::string>{"ledger.db"});

  auto writer = Ledger::open(path);
  ASSERT_TRUE(writer) << writer.error().message();
  auto reader = Ledger::open_readonly(path);
  ASSERT_TRUE(reader) << reader.error().message();
  EXPECT_FALSE(opened_immutable(*reader));
  ASSERT_TRUE(insert(*writer, certificate_record("02", "dev-2")));
  auto seen = reader->certificate("02");
  ASSERT_TRUE(seen);
  EXPECT_TRUE(*seen) << "the reader sees what the writer committed";
  auto refused = reader->exec("INSERT INTO meta (key, value) VALUES ('x', 'y')");
  ASSERT_FALSE(refused);
  EXPECT_TRUE(contains(refused.error().message(), "readonly")) << refused.error().message();
  EXPECT_FALSE(*writer->meta("x"));
}

TEST(LedgerReadOnly, RefusesAnOlderSchemaOnACopySayingWhatToDo) {
  testkit::TempDir tmp;
  fs::path dir = tmp / "old";
  fs::create_directory(dir);
  const int old_version = Ledger::kSchemaVersion - 1;
  {
    auto l = Ledger::create_at_version(dir / "ledger.db", old_version);
    ASSERT_TRUE(l) << l.error().message();
    ASSERT_TRUE(l->set_meta("station_id", "old-station"));
  }
  mark_read_only(dir);
  const std::string before = stamp(dir);
  auto l = Ledger::open_readonly(dir / "ledger.db");
  ASSERT_FALSE(l);
  const std::string& m = l.error().message();
  EXPECT_EQ(l.error().domain(), Domain::state);
  for (const std::string& part : {(dir / "ledger.db").string(), "schema version " + std::to_string(old_version),
                                  std::string("older"), std::string("migrates"), std::string("writable copy")})
    EXPECT_TRUE(contains(m, part)) << "expected '" << part << "' in: " << m;
  // The station id can still be read (a command checks it before it migrates).
  auto peeked = Ledger::read_meta(dir / "ledger.db", "station_id");
  ASSERT_TRUE(peeked) << peeked.error().message();
  EXPECT_EQ(*peeked, "old-station");
  EXPECT_EQ(*Ledger::read_meta(dir / "ledger.db", "absent"), std::nullopt);
  EXPECT_EQ(stamp(dir), before);
  EXPECT_EQ(names(dir), std::vector<std::string>{"ledger.db"});
}

// A live station after an upgrade: its reading commands migrate the ledger
// as any command does, instead of refusing until something writes.
TEST(LedgerReadOnly, MigratesAnOlderSchemaOnALiveStation) {
  testkit::TempDir tmp;
  const int old_version = Ledger::kSchemaVersion - 1;
  {
    auto l = Ledger::create_at_version(tmp / "ledger.db", old_version);
    ASSERT_TRUE(l) << l.error().message();
    ASSERT_TRUE(l->set_meta("station_id", "old-station"));
  }
  auto l = Ledger::open_readonly(tmp / "ledger.db");
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->schema_version(), Ledger::kSchemaVersion);
  EXPECT_EQ(*l->meta("station_id"), "old-station");
  // Still a reader: it changes nothing.
  EXPECT_FALSE(l->set_meta("station_id", "other"));
}

TEST(LedgerReadOnly, RefusesANewerSchemaAsTheWriterDoes) {
  testkit::TempDir tmp;
  {
    auto l = Ledger::create(tmp / "ledger.db");
    ASSERT_TRUE(l);
    ASSERT_TRUE(l->exec("PRAGMA user_version=99"));
  }
  auto l = Ledger::open_readonly(tmp / "ledger.db");
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().domain(), Domain::state);
  EXPECT_TRUE(contains(l.error().message(), "newer")) << l.error().message();
  EXPECT_TRUE(contains(l.error().message(), "use a newer keyline")) << l.error().message();

  testkit::write_file(tmp / "other.db", std::string(4096, '\0'));
  EXPECT_FALSE(Ledger::open_readonly(tmp / "other.db"));
  auto missing = Ledger::read_meta(tmp / "missing.db", "station_id");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(contains(missing.error().message(), "keyline ca init")) << missing.error().message();
}

TEST(LedgerReadOnly, ACopyWhoseLogHoldsChangesIsNeverReadWithoutThem) {
  testkit::TempDir tmp;
  fs::path dir = tmp / "copy";
  fs::create_directory(dir);
  make_ledger(dir / "ledger.db");
  {
    // A copy taken while a writer ran: its last commit is only in the log.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir / "ledger.db").c_str(), &db), SQLITE_OK);
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    ASSERT_EQ(sqlite3_exec(db, "INSERT INTO meta (key, value) VALUES ('late', 'in the log')", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  ASSERT_GT(fs::file_size(dir / "ledger.db-wal"), 0u);
  mark_read_only(dir);
  const std::string before = stamp(dir);
  const bool may_write = ::access((dir / "ledger.db").c_str(), W_OK) == 0;  // root
  {
    auto l = Ledger::open_readonly(dir / "ledger.db");
    // For a user who may write, reading the log would write its -shm index.
    if (may_write) {
      EXPECT_FALSE(l) << "read without its log, or written to";
    }
    if (l) {
      // Read through the log by a user who cannot write: the late commit is there.
      EXPECT_FALSE(opened_immutable(*l));
      EXPECT_EQ(*l->meta("late"), "in the log");
    } else {
      const std::string& m = l.error().message();
      EXPECT_EQ(l.error().domain(), Domain::state);
      for (const std::string& part : {(dir / "ledger.db-wal").string(),
                                      std::string("copy the state dir again"), std::string("chmod -R u+w")})
        EXPECT_TRUE(contains(m, part)) << "expected '" << part << "' in: " << m;
    }
  }
  EXPECT_EQ(stamp(dir), before);
}

}  // namespace
}  // namespace keyline::station::ledger_readonly_tests
