// Opening the ledger: creating it, the writer's open (which migrates), and
// the readers' opens, which must work on an auditor's read-only copy
// without writing a byte.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <string_view>

#include "keyline/core/files.hpp"
#include "keyline/station/ledger.hpp"
#include "keyline/station/sqlite_util.hpp"

namespace keyline::station {

namespace {

using sql::Stmt;

constexpr int kApplicationId = 0x4B4C4E45;  // "KLNE"

}  // namespace

Result<Ledger> Ledger::create(const std::filesystem::path& path) {
  return open_impl(path, Access::create, kSchemaVersion);
}
Result<Ledger> Ledger::open(const std::filesystem::path& path) {
  return open_impl(path, Access::write, kSchemaVersion);
}
Result<Ledger> Ledger::open_readonly(const std::filesystem::path& path) {
  return open_impl(path, Access::read, kSchemaVersion);
}
Result<Ledger> Ledger::open_beside_writer(const std::filesystem::path& path) {
  return open_impl(path, Access::beside, kSchemaVersion);
}
Result<Ledger> Ledger::create_at_version(const std::filesystem::path& path, int version) {
  return open_impl(path, Access::create, version);
}

Result<std::optional<std::string>> Ledger::read_meta(const std::filesystem::path& path,
                                                     const std::string& key) {
  KL_TRY(Ledger ledger, open_impl(path, Access::peek, 0));
  int version = ledger.schema_version();
  if (version < 0) return std::unexpected(ledger.sqlite_error("reading the schema version"));
  if (version < 1) return std::optional<std::string>();  // the meta table came with version 1
  return ledger.meta(key);
}

namespace {

// How a connection that only reads opens the ledger file.
//
// A live station (this user may write the ledger and its directory): an
// ordinary read-write connection under PRAGMA query_only. It reads beside a
// writer as any reader does, and when it closes last it removes ledger.db-wal
// and -shm as a writer's connection does. (An SQLITE_OPEN_READONLY connection
// would create both in a writable directory and could never remove them.)
//
// A read-only copy (the ledger or its directory has no write permission for
// anyone -- `chmod -R a-w`, which root's writes would ignore -- or this user
// may not write it): an SQLITE_OPEN_READONLY connection cannot read a WAL
// database unless ledger.db-shm exists or it may create it (the first read
// fails, SQLITE_CANTOPEN or SQLITE_READONLY_CANTINIT), and where it may
// (root) it creates -wal and -shm. So the copy is opened as
// `file:...?immutable=1`: no locks, no -wal or -shm, nothing written.
// WARNING: immutable tells SQLite that nobody changes the file while it
// reads. That is true of a copy nobody may write; for a ledger this user may
// not write but its owner may (a live station read from another account) it
// is an assumption -- such an account should read a copy. Immutable also
// makes SQLite ignore the WAL, so it is used only when ledger.db-wal holds
// nothing. Otherwise a user who cannot write reads the log through an
// SQLITE_OPEN_READONLY connection (SQLite can write nothing then), and a
// user who could is refused (`refuse`): reading the log would write -shm.
enum class ReadOpen { shared, immutable, readonly, refuse };

bool write_permission_bits(const struct stat& st) { return (st.st_mode & 0222) != 0; }

ReadOpen read_open_for(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  struct stat file_st {
  }, dir_st{};
  bool marked_read_only = ::stat(path.c_str(), &file_st) != 0 || ::stat(dir.c_str(), &dir_st) != 0 ||
                          !write_permission_bits(file_st) || !write_permission_bits(dir_st);
  bool may_write = ::access(path.c_str(), W_OK) == 0 && ::access(dir.c_str(), W_OK) == 0;
  if (!marked_read_only && may_write) return ReadOpen::shared;
  // Someone may write it (its owner: a live station read from another
  // account): never immutable, which would read pages a writer is changing
  // without its locks. A read-only connection takes the locks and writes
  // nothing; where SQLite cannot read that way the error says to use a copy.
  if (!marked_read_only) return ReadOpen::readonly;
  struct stat wal_st {};
  std::string wal = path.string() + "-wal";
  bool wal_has_frames = ::stat(wal.c_str(), &wal_st) == 0 && wal_st.st_size > 0;
  if (!wal_has_frames) return ReadOpen::immutable;
  return may_write ? ReadOpen::refuse : ReadOpen::readonly;
}

// A file: URI for `path` (RFC 3986 percent-encoding of everything but
// unreserved characters and '/') with `query`.
std::string file_uri(const std::filesystem::path& path, std::string_view query) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "file:";
  for (unsigned char c : path.string()) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out + "?" + std::string(query);
}

Error unreadable_log(const std::filesystem::path& path, const std::string& detail) {
  return Error(Domain::state,
               "ledger " + path.string() + ": " + path.string() +
                   "-wal may hold changes not yet in the ledger file (a copy taken while a keyline command was "
                   "running or after one stopped abruptly, or a live station this account may not write), and "
                   "it cannot be read without writing" +
                   (detail.empty() ? std::string() : " (" + detail + ")") +
                   "; copy the state dir again while no keyline command runs, or make this copy writable "
                   "(chmod -R u+w " +
                   path.parent_path().string() + ") and run the command again");
}

}  // namespace

Result<Ledger> Ledger::open_impl(const std::filesystem::path& path, Access access, int target) {
  const bool reader = access == Access::read || access == Access::peek || access == Access::beside;
  if (access == Access::create) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      int err = errno;
      return fail(Domain::state, "cannot create the ledger " + files::errno_text(path, err), err);
    }
    ::close(fd);
  } else {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0)
      return fail(Domain::state, "no ledger at " + path.string() +
                                     "; is this the right state dir? Create one with 'keyline ca init'");
  }
  ReadOpen how = reader && access != Access::beside ? read_open_for(path) : ReadOpen::shared;
  if (how == ReadOpen::refuse) return std::unexpected(unreadable_log(path, ""));
  std::string name = path.string();
  int flags = SQLITE_OPEN_NOMUTEX;
  if (how == ReadOpen::shared) {
    flags |= SQLITE_OPEN_READWRITE;
  } else if (how == ReadOpen::immutable) {
    name = file_uri(path, "immutable=1");
    flags |= SQLITE_OPEN_READONLY | SQLITE_OPEN_URI;
  } else {
    flags |= SQLITE_OPEN_READONLY;
  }
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(name.c_str(), &raw, flags, nullptr);
  Ledger ledger(raw, path);
  if (rc != SQLITE_OK) return std::unexpected(ledger.sqlite_error("opening"));
  sqlite3_busy_timeout(raw, 10000);
  sqlite3_extended_result_codes(raw, 1);
  // A reader changes nothing through its connection. A writer's first
  // statement reads the header: a corrupt file fails here; a reader's first
  // read is the application id below.
  if (reader) {
    KL_CHECK(ledger.exec("PRAGMA query_only=ON"));
  } else {
    KL_CHECK(ledger.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  }
  auto header_error = [&]() -> Error {
    int primary = sqlite3_extended_errcode(raw) & 0xff;
    if (how == ReadOpen::readonly && (primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY))
      return unreadable_log(path, sqlite3_errmsg(raw));
    return ledger.sqlite_error("reading the header");
  };
  Stmt st;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(raw, "PRAGMA application_id", -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(header_error());
  st.reset(s);
  if (sqlite3_step(s) != SQLITE_ROW) return std::unexpected(header_error());
  int app = sqlite3_column_int(s, 0);
  st.reset();
  int version = ledger.schema_version();
  if (access == Access::create) {
    KL_CHECK(ledger.exec(("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str()));
  } else if (app != kApplicationId) {
    return fail(Domain::state, path.string() + " is an SQLite database but not a Keyline ledger");
  }
  if (access == Access::peek) return ledger;
  if (version > kSchemaVersion)
    return fail(Domain::state, "ledger " + path.string() + " has schema version " +
                                   std::to_string(version) + ", newer than this keyline (" +
                                   std::to_string(kSchemaVersion) + "); use a newer keyline");
  if (access == Access::beside) {
    if (version != kSchemaVersion)
      return fail(Domain::internal, "ledger " + path.string() + " has schema version " + std::to_string(version) +
                                        " beside a writer that should have made it " +
                                        std::to_string(kSchemaVersion));
    return ledger;
  }
  if (access == Access::read) {
    // A live station this user may write is migrated as by any command (an
    // upgrade must not leave its reading commands refusing); a copy is not.
    if (version < kSchemaVersion && how == ReadOpen::shared) {
      KL_CHECK(ledger.exec("PRAGMA query_only=OFF; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                           "PRAGMA foreign_keys=ON;"));
      KL_CHECK(ledger.migrate(kSchemaVersion));
      KL_CHECK(ledger.exec("PRAGMA query_only=ON"));
      return ledger;
    }
    if (version < kSchemaVersion)
      return fail(
          Domain::state,
          "ledger " + path.string() + " has schema version " + std::to_string(version) +
              ", older than this keyline's (" + std::to_string(kSchemaVersion) +
              "), and a command that only reads does not migrate a ledger it may not write: make a "
              "writable copy of the state dir (cp -r) and run this command on the copy, which migrates "
              "it; or read it with the keyline that wrote it");
    return ledger;
  }
  KL_CHECK(ledger.migrate(target));
  return ledger;
}

}  // namespace keyline::station
