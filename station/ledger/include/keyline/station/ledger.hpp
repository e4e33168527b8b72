#pragma once
// station::Ledger -- the station's record of everything it issued, in SQLite
// (WAL, synchronous=FULL by default, file mode 0600). One writer at a time (SQLite's
// lock; BEGIN IMMEDIATE), any number of readers.
//
// Invariants enforced by the schema, not only by code:
//   * a certificate serial appears once (UNIQUE);
//   * at most one *active* certificate per (registration ID, profile)
//     (partial UNIQUE index);
//   * status is one of active / revoked / superseded (CHECK).
// Versioned migrations (PRAGMA user_version) run forward in open(), each in
// a transaction; readers never migrate; a ledger newer than this program is
// refused.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace keyline::station {

struct CertificateRecord {
  std::string serial;  // upper-case hex
  std::string registration_id;
  std::string profile;
  std::string subject;
  std::string cert_sha256;
  std::string pubkey_sha256;
  std::int64_t not_before = 0;  // seconds since the epoch, UTC
  std::int64_t not_after = 0;
  std::string status = "active";
  std::int64_t issued_at = 0;
  std::optional<std::int64_t> revoked_at;
  std::string revocation_reason;
  std::string superseded_by;
  std::string batch_id;  // set for certificates issued by `ca batch`
  std::string operator_name;  // who issued it (audit operator)
  std::string device_serial;  // the device's serial number, when known
  Bytes der;
};

// What a worker needs to know about an active certificate, without its DER.
struct ActiveRef {
  std::string serial;
  std::string batch_id;
  std::string pubkey_sha256;
};

struct BatchRecord {
  std::string id;
  std::string out_dir;
  std::string profile;
  std::string mode;
  std::int64_t created_at = 0;
};

struct CertificateFilter {
  std::optional<std::string> registration_id;
  std::optional<std::string> status;
};

struct CrlRecord {
  std::uint64_t number = 0;
  std::int64_t this_update = 0;
  std::int64_t next_update = 0;
  Bytes der;
};

class Ledger {
 public:
  static constexpr int kSchemaVersion = 9;

  // Creates a new ledger file (refuses an existing one) at the current schema.
  static Result<Ledger> create(const std::filesystem::path& path);
  // Opens an existing ledger and migrates it forward. A missing file, a file
  // that is not a Keyline ledger, or a corrupt one is a state error that says so.
  static Result<Ledger> open(const std::filesystem::path& path);
  // A connection that only reads: nothing changes through it (PRAGMA
  // query_only). Safe beside a writer (the commands that only read a
  // station), and it works on a read-only copy of a state dir -- an
  // auditor's `cp -r` + `chmod -R a-w` -- which it leaves byte for byte as
  // it was: no -wal or -shm file, whoever runs it (ledger.cpp,
  // read_open_for, says how). A live station this user may write is
  // migrated first, as open() would. Refuses, saying what to do:
  //   * an older schema on a ledger this user may not write;
  //   * a schema newer than this program's, as open() does;
  //   * a read-only copy whose ledger.db-wal holds changes the copy cannot
  //     take in (it was copied while keyline ran), and a live ledger of
  //     another account that SQLite cannot read without writing.
  static Result<Ledger> open_readonly(const std::filesystem::path& path);
  // A reader beside this process's own writer (batch workers): an ordinary
  // connection under query_only, whatever the file's permission bits say,
  // so it always sees what the writer committed. The writer has migrated.
  static Result<Ledger> open_beside_writer(const std::filesystem::path& path);
  // One value of the meta table (nullopt when absent), read as
  // open_readonly() reads, but at any schema version: for a check made
  // before a command opens the ledger (and migrates it).
  static Result<std::optional<std::string>> read_meta(const std::filesystem::path& path,
                                                      const std::string& key);
  // For migration tests: creates a ledger at an older schema version.
  static Result<Ledger> create_at_version(const std::filesystem::path& path, int version);

  Ledger(Ledger&&) noexcept;
  Ledger& operator=(Ledger&&) noexcept;
  ~Ledger();

  int schema_version() const;
  const std::filesystem::path& path() const { return path_; }

  // RAII transaction: BEGIN IMMEDIATE; rolled back unless commit() succeeds.
  class Transaction {
   public:
    Transaction(Transaction&& o) noexcept : ledger_(o.ledger_) { o.ledger_ = nullptr; }
    Transaction& operator=(Transaction&&) = delete;
    ~Transaction();
    Status commit();

   private:
    friend class Ledger;
    explicit Transaction(Ledger* l) : ledger_(l) {}
    Ledger* ledger_;
  };
  // How a transaction reaches the disk. `durable` (the default) fsyncs the
  // WAL at COMMIT. `deferred` commits without an fsync (SQLite's
  // synchronous=NORMAL): after a power loss it may be lost, but never out of
  // order -- the next durable commit syncs every frame before it too. Use it
  // only for progress that is safe to redo (a provisioning step before the
  // next durable one); anything that leaves the station must be durable first.
  enum class Durability { durable, deferred };
  Result<Transaction> begin(Durability durability = Durability::durable);

  // Inserts a certificate. With `supersede`, an active certificate for the
  // same (registration ID, profile) becomes "superseded" first; without it,
  // such a certificate makes this a policy error naming its serial.
  // Call inside a transaction.
  Status insert_certificate(const CertificateRecord& record, bool supersede);

  Result<std::optional<CertificateRecord>> certificate(const std::string& serial);
  Result<std::optional<CertificateRecord>> active_certificate(const std::string& registration_id,
                                                              const std::string& profile);
  // Streams matching certificates (without DER) in issue order.
  Status for_each_certificate(const CertificateFilter& filter,
                              const std::function<void(const CertificateRecord&)>& fn);
  Result<std::map<std::string, std::int64_t>> counts_by_status();
  Result<std::optional<ActiveRef>> active_ref(const std::string& registration_id,
                                              const std::string& profile);

  // Batches (`ca batch`): one row per output directory.
  Status insert_batch(const BatchRecord& batch);
  Result<std::optional<BatchRecord>> batch(const std::string& id);
  // Streams a batch's certificates (with DER) in commit order, skipping the first `offset`.
  Status for_each_batch_certificate(const std::string& batch_id, std::uint64_t offset,
                                    const std::function<Status(const CertificateRecord&)>& fn);
  Result<std::uint64_t> batch_certificate_count(const std::string& batch_id);

  // Marks an active or superseded certificate revoked. Unknown serial:
  // input error; already revoked: policy error. Call inside a transaction.
  Status revoke(const std::string& serial, const std::string& reason, std::int64_t when);
  Result<std::vector<CertificateRecord>> revoked();

  Result<std::uint64_t> next_crl_number();
  Status insert_crl(const CrlRecord& crl);

  Status set_meta(const std::string& key, const std::string& value);
  Result<std::optional<std::string>> meta(const std::string& key);

  // Low-level access for station parts that add their own tables.
  sqlite3* handle() const noexcept { return db_; }
  // Changes at every begin(), commit and rollback: state cached for one
  // transaction (the audit trail's head) is valid while this stays the same.
  std::uint64_t transaction_number() const noexcept { return transactions_; }
  Status exec(const char* sql);

 private:
  Ledger(sqlite3* db, std::filesystem::path path) : db_(db), path_(std::move(path)) {}
  // create: a new file at schema `target`; write: migrate to `target`;
  // read: the current schema only; peek: any schema (read_meta).
  enum class Access { create, write, read, peek, beside };
  static Result<Ledger> open_impl(const std::filesystem::path& path, Access access, int target);
  // A prepared statement kept for the connection's life, reset for reuse.
  Result<sqlite3_stmt*> cached(const char* sql);
  Status migrate(int target);
  Error sqlite_error(const std::string& what) const;

  sqlite3* db_ = nullptr;
  Durability sync_ = Durability::durable;  // the connection's synchronous level (deferred only inside a transaction)
  std::filesystem::path path_;
  std::map<const char*, sqlite3_stmt*> cache_;
  std::uint64_t transactions_ = 0;
};

}  // namespace keyline::station
