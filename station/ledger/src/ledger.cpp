#include "keyline/station/ledger.hpp"

#include <sqlite3.h>

#include <cstring>

#include "keyline/station/sqlite_util.hpp"

namespace keyline::station {

namespace {

// Each entry moves the schema from version i to i+1.
constexpr const char* kMigrations[] = {
    // 1: certificates and station metadata.
    R"sql(
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE certificates (
      id INTEGER PRIMARY KEY,
      serial TEXT NOT NULL UNIQUE,
      registration_id TEXT NOT NULL,
      profile TEXT NOT NULL,
      subject TEXT NOT NULL,
      cert_sha256 TEXT NOT NULL UNIQUE,
      pubkey_sha256 TEXT NOT NULL,
      not_before INTEGER NOT NULL,
      not_after INTEGER NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'superseded')),
      issued_at INTEGER NOT NULL,
      revoked_at INTEGER,
      revocation_reason TEXT,
      superseded_by TEXT,
      der BLOB NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX certificates_one_active
      ON certificates (registration_id, profile) WHERE status = 'active';
    CREATE INDEX certificates_by_registration_id ON certificates (registration_id);
    )sql",
    // 2: issued CRLs, numbered (RFC 5280 §5.2.3).
    R"sql(
    CREATE TABLE crls (
      number INTEGER PRIMARY KEY,
      this_update INTEGER NOT NULL,
      next_update INTEGER NOT NULL,
      der BLOB NOT NULL
    ) STRICT;
    CREATE INDEX certificates_by_status ON certificates (status);
    )sql",
    // 3: batch issuance: which batch (output directory) a certificate belongs to.
    R"sql(
    CREATE TABLE batches (
      id TEXT PRIMARY KEY,
      out_dir TEXT NOT NULL,
      profile TEXT NOT NULL,
      mode TEXT NOT NULL,
      created_at INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE certificates ADD COLUMN batch_id TEXT REFERENCES batches (id);
    CREATE INDEX certificates_by_batch ON certificates (batch_id, id) WHERE batch_id IS NOT NULL;
    )sql",
    // 4: the audit trail (station/audit): hash-chained records, append-only
    // at the SQL level too; signed checkpoints of the chain's head; who
    // issued each certificate, and for which device serial number.
    R"sql(
    CREATE TABLE audit_events (
      seq INTEGER PRIMARY KEY,
      time TEXT NOT NULL,
      station TEXT NOT NULL,
      operator TEXT NOT NULL,
      type TEXT NOT NULL,
      body TEXT NOT NULL,
      hash TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_events_by_time ON audit_events (time);
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
      BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
      BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TABLE audit_checkpoints (
      id INTEGER PRIMARY KEY,
      seq INTEGER NOT NULL,
      hash TEXT NOT NULL,
      time TEXT NOT NULL,
      key TEXT NOT NULL,
      signature BLOB NOT NULL
    ) STRICT;
    CREATE INDEX audit_checkpoints_by_seq ON audit_checkpoints (seq);
    ALTER TABLE certificates ADD COLUMN operator TEXT;
    ALTER TABLE certificates ADD COLUMN device_serial TEXT;
    )sql",
    // 5: ---- DPS enrollment outbox (station/ledger/src/outbox.cpp) -- begin ----
    // Enrollments waiting to reach DPS. `payload` is the enrollment JSON
    // without secrets: a symmetric key appears only as a key-source
    // reference (attestation.symmetricKey.keySource), resolved at sync time.
    R"sql(
    CREATE TABLE enrollment_outbox (
      id INTEGER PRIMARY KEY,
      registration_id TEXT NOT NULL,
      kind TEXT NOT NULL CHECK (kind IN ('individual', 'group')),
      operation TEXT NOT NULL CHECK (operation IN ('create', 'delete')),
      payload TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('pending', 'synced', 'dead')),
      attempts INTEGER NOT NULL DEFAULT 0,
      last_error TEXT,
      etag TEXT,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX enrollment_outbox_pending ON enrollment_outbox (id) WHERE state = 'pending';
    CREATE INDEX enrollment_outbox_by_registration_id ON enrollment_outbox (registration_id);
    )sql",
    // ---- DPS enrollment outbox -- end ----
    // 6: ---- provisioning (station/provision) -- BEGIN ----
    // One row per device (its hardware identity is unique), one row per step
    // attempt. Keys appear only as fingerprints; certificates stay in
    // `certificates` (device_serial, operator).
    R"sql(
    CREATE TABLE devices (
      id INTEGER PRIMARY KEY,
      serial_number TEXT NOT NULL,
      model TEXT NOT NULL,
      hardware_id TEXT NOT NULL,
      registration_id TEXT NOT NULL,
      profile TEXT NOT NULL,
      mode TEXT NOT NULL,
      state TEXT NOT NULL CHECK (state IN ('new', 'in_progress', 'done', 'failed')),
      pubkey_sha256 TEXT NOT NULL DEFAULT '',
      cert_serial TEXT NOT NULL DEFAULT '',
      endorsement_key TEXT NOT NULL DEFAULT '',
      locked INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
      last_error TEXT NOT NULL DEFAULT '',
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      UNIQUE (model, serial_number, hardware_id)
    ) STRICT;
    CREATE INDEX devices_by_registration_id ON devices (registration_id);
    CREATE TABLE provisioning_steps (
      id INTEGER PRIMARY KEY,
      device_id INTEGER NOT NULL REFERENCES devices (id),
      step TEXT NOT NULL,
      outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped')),
      detail TEXT NOT NULL,
      time INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX provisioning_steps_by_device ON provisioning_steps (device_id, id);
    )sql",
    // ---- provisioning -- END ----
    // 7: two fewer index writes per certificate (batch issuance writes
    // thousands a second). The UNIQUE index on cert_sha256 goes: serials are
    // unique, so certificates are, and nothing looks a certificate up by its
    // fingerprint. The status index keeps only what lookups by status need
    // (revoked and superseded certificates; active is most of the table).
    // SQLite cannot drop a column constraint: the table is rebuilt, same
    // columns in the same order.
    R"sql(
    CREATE TABLE certificates_v7 (
      id INTEGER PRIMARY KEY,
      serial TEXT NOT NULL UNIQUE,
      registration_id TEXT NOT NULL,
      profile TEXT NOT NULL,
      subject TEXT NOT NULL,
      cert_sha256 TEXT NOT NULL,
      pubkey_sha256 TEXT NOT NULL,
      not_before INTEGER NOT NULL,
      not_after INTEGER NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'superseded')),
      issued_at INTEGER NOT NULL,
      revoked_at INTEGER,
      revocation_reason TEXT,
      superseded_by TEXT,
      der BLOB NOT NULL,
      batch_id TEXT REFERENCES batches (id),
      operator TEXT,
      device_serial TEXT
    ) STRICT;
    INSERT INTO certificates_v7 SELECT id, serial, registration_id, profile, subject, cert_sha256, pubkey_sha256,
      not_before, not_after, status, issued_at, revoked_at, revocation_reason, superseded_by, der, batch_id,
      operator, device_serial FROM certificates;
    DROP TABLE certificates;
    ALTER TABLE certificates_v7 RENAME TO certificates;
    CREATE UNIQUE INDEX certificates_one_active
      ON certificates (registration_id, profile) WHERE status = 'active';
    CREATE INDEX certificates_by_registration_id ON certificates (registration_id);
    CREATE INDEX certificates_by_batch ON certificates (batch_id, id) WHERE batch_id IS NOT NULL;
    CREATE INDEX certificates_not_active ON certificates (status) WHERE status != 'active';
    )sql",
    // 8: one random-order index write fewer per certificate. Its writes land
    // at random places in a B-tree as large as the ledger: with 200,000
    // certificates, the registration-ID index and the (then random) serials'
    // index were about half the cost of an insert. A registration ID's
    // active certificate is found through certificates_one_active, its
    // revoked and superseded ones through the status index, which now holds
    // the registration ID too; the index on registration_id alone goes.
    R"sql(
    DROP INDEX certificates_by_registration_id;
    DROP INDEX certificates_not_active;
    CREATE INDEX certificates_not_active ON certificates (status, registration_id) WHERE status != 'active';
    )sql",
    // 9: signed audit checkpoints are append-only, like the records they
    // sign: a deleted checkpoint would leave the records after the one
    // before it covered by no signature.
    R"sql(
    CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
      BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
      BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    )sql",
};
static_assert(std::size(kMigrations) == Ledger::kSchemaVersion);

using sql::Stmt;

constexpr const char* kCertColumns =
    "serial, registration_id, profile, subject, cert_sha256, pubkey_sha256, not_before, "
    "not_after, status, issued_at, revoked_at, revocation_reason, superseded_by, batch_id, operator, "
    "device_serial";

CertificateRecord read_record(sqlite3_stmt* s, bool with_der) {
  CertificateRecord r;
  r.serial = sql::text(s, 0);
  r.registration_id = sql::text(s, 1);
  r.profile = sql::text(s, 2);
  r.subject = sql::text(s, 3);
  r.cert_sha256 = sql::text(s, 4);
  r.pubkey_sha256 = sql::text(s, 5);
  r.not_before = sqlite3_column_int64(s, 6);
  r.not_after = sqlite3_column_int64(s, 7);
  r.status = sql::text(s, 8);
  r.issued_at = sqlite3_column_int64(s, 9);
  if (sqlite3_column_type(s, 10) != SQLITE_NULL) r.revoked_at = sqlite3_column_int64(s, 10);
  r.revocation_reason = sql::text(s, 11);
  r.superseded_by = sql::text(s, 12);
  r.batch_id = sql::text(s, 13);
  r.operator_name = sql::text(s, 14);
  r.device_serial = sql::text(s, 15);
  if (with_der) {
    auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(s, 16));
    r.der.assign(p, p + sqlite3_column_bytes(s, 16));
  }
  return r;
}

}  // namespace

Error Ledger::sqlite_error(const std::string& what) const {
  int code = sqlite3_extended_errcode(db_);
  int primary = code & 0xff;
  std::string msg = what + " in ledger " + path_.string() + ": " + sqlite3_errmsg(db_);
  if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT)
    return Error(Domain::state, "ledger " + path_.string() +
                                    " is corrupt or not a database (" + sqlite3_errmsg(db_) +
                                    "); restore it from a backup -- do not re-initialise, the "
                                    "issued certificates are recorded there", code);
  if (primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_PERM)
    return Error(Domain::state, msg + " (check that the state dir and the ledger are writable by this user)", code);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    return Error(Domain::state, msg + " (another keyline process holds the ledger; retry when it is done)", code);
  if (primary == SQLITE_FULL || primary == SQLITE_IOERR)
    return Error(Domain::state, msg + " (disk full or I/O error)", code);
  return Error(Domain::sqlite, msg, code);
}

Status Ledger::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    sqlite3_free(err);
    return std::unexpected(sqlite_error("executing SQL"));
  }
  return {};
}

Ledger::Ledger(Ledger&& o) noexcept
    : db_(o.db_), sync_(o.sync_), path_(std::move(o.path_)), cache_(std::move(o.cache_)),
      transactions_(o.transactions_) {
  o.db_ = nullptr;
  o.cache_.clear();
}
Ledger& Ledger::operator=(Ledger&& o) noexcept {
  if (this != &o) {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    cache_.clear();
    if (db_) sqlite3_close_v2(db_);
    db_ = o.db_;
    sync_ = o.sync_;
    path_ = std::move(o.path_);
    cache_ = std::move(o.cache_);
    transactions_ = o.transactions_;
    o.db_ = nullptr;
    o.cache_.clear();
  }
  return *this;
}
Ledger::~Ledger() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  cache_.clear();
  if (db_) sqlite3_close_v2(db_);
  db_ = nullptr;
}

Result<sqlite3_stmt*> Ledger::cached(const char* sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) {
    sqlite3_reset(it->second);
    sqlite3_clear_bindings(it->second);
    return it->second;
  }
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("preparing a statement"));
  cache_.emplace(sql, s);
  return s;
}

int Ledger::schema_version() const {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &s, nullptr) != SQLITE_OK) return -1;
  Stmt st(s);
  return sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
}

// One migration per transaction. The version is read again inside it: two
// processes that open an old ledger at once both see it old, and the one
// that waited for the lock finds the migration already done.
Status Ledger::migrate(int target) {
  while (schema_version() < target) {
    KL_TRY(Transaction tx, begin());
    int v = schema_version();
    if (v < 0) return std::unexpected(sqlite_error("reading the schema version"));
    if (v >= target) return tx.commit();
    KL_CHECK(exec(kMigrations[v]));
    KL_CHECK(exec(("PRAGMA user_version=" + std::to_string(v + 1)).c_str()));
    KL_CHECK(tx.commit());
  }
  return {};
}

Result<Ledger::Transaction> Ledger::begin(Durability durability) {
  // The level can only change outside a transaction: set it before BEGIN.
  if (durability != sync_) {
    KL_CHECK(exec(durability == Durability::durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
    sync_ = durability;
  }
  ++transactions_;
  KL_CHECK(exec("BEGIN IMMEDIATE"));
  return Transaction(this);
}

namespace {
// After a deferred transaction the connection goes back to FULL, so that
// nothing else written on it (an autocommit statement) is silently deferred.
void restore_durable(sqlite3* db, Ledger::Durability& level) {
  if (level == Ledger::Durability::durable) return;
  if (sqlite3_exec(db, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) == SQLITE_OK)
    level = Ledger::Durability::durable;
}
}  // namespace

Ledger::Transaction::~Transaction() {
  if (!ledger_) return;
  ++ledger_->transactions_;
  sqlite3_exec(ledger_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
  restore_durable(ledger_->db_, ledger_->sync_);
}

Status Ledger::Transaction::commit() {
  Ledger* l = ledger_;
  ledger_ = nullptr;
  ++l->transactions_;
  if (sqlite3_exec(l->db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Error e = l->sqlite_error("committing");
    sqlite3_exec(l->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    restore_durable(l->db_, l->sync_);
    return std::unexpected(e);
  }
  restore_durable(l->db_, l->sync_);
  return {};
}

namespace {
struct Binder {
  sqlite3_stmt* s;
  int i = 1;
  Binder& text(const std::string& v) {
    sqlite3_bind_text(s, i++, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Binder& opt_text(const std::string& v) {
    if (v.empty()) sqlite3_bind_null(s, i++);
    else text(v);
    return *this;
  }
  Binder& int64(std::int64_t v) {
    sqlite3_bind_int64(s, i++, v);
    return *this;
  }
  Binder& blob(const Bytes& v) {
    sqlite3_bind_blob(s, i++, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
};
}  // namespace

Status Ledger::insert_certificate(const CertificateRecord& r, bool supersede) {
  if (supersede && r.status == "active") {
    KL_TRY(auto existing, active_ref(r.registration_id, r.profile));
    if (existing) {
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(db_, "UPDATE certificates SET status='superseded', superseded_by=? WHERE serial=?", -1, &s,
                         nullptr);
      Stmt st(s);
      Binder{s}.text(r.serial).text(existing->serial);
      if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(sqlite_error("superseding " + existing->serial));
    }
  }
  // The schema decides uniqueness (serial; one active per registration ID
  // and profile); the lookup below only words the refusal.
  static constexpr const char* kInsert =
      "INSERT INTO certificates (serial, registration_id, profile, subject, "
      "cert_sha256, pubkey_sha256, not_before, not_after, status, issued_at, "
      "revoked_at, revocation_reason, superseded_by, batch_id, operator, device_serial, der) "
      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  KL_TRY(sqlite3_stmt * s, cached(kInsert));
  Binder b{s};
  b.text(r.serial).text(r.registration_id).text(r.profile).text(r.subject).text(r.cert_sha256)
      .text(r.pubkey_sha256).int64(r.not_before).int64(r.not_after).text(r.status).int64(r.issued_at);
  if (r.revoked_at) b.int64(*r.revoked_at);
  else sqlite3_bind_null(s, b.i++);
  b.opt_text(r.revocation_reason).opt_text(r.superseded_by).opt_text(r.batch_id)
      .opt_text(r.operator_name).opt_text(r.device_serial).blob(r.der);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc == SQLITE_DONE) return {};
  if ((sqlite3_extended_errcode(db_) & 0xff) != SQLITE_CONSTRAINT)
    return std::unexpected(sqlite_error("recording certificate " + r.serial));
  std::string detail = sqlite3_errmsg(db_);
  if (r.status == "active") {
    KL_TRY(auto existing, active_ref(r.registration_id, r.profile));
    if (existing)
      return fail(Domain::policy, "registration ID '" + r.registration_id +
                                      "' already has an active certificate (serial " + existing->serial +
                                      ") for profile '" + r.profile +
                                      "'; use --reissue to supersede it, or revoke it first");
  }
  return fail(Domain::policy, "ledger refused certificate " + r.serial + " for '" + r.registration_id + "': " + detail);
}

Result<std::optional<CertificateRecord>> Ledger::certificate(const std::string& serial) {
  std::string sql = std::string("SELECT ") + kCertColumns + ", der FROM certificates WHERE serial=?";
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("looking up a certificate"));
  Stmt st(s);
  Binder{s}.text(serial);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<CertificateRecord>(read_record(s, true));
  if (rc == SQLITE_DONE) return std::optional<CertificateRecord>();
  return std::unexpected(sqlite_error("looking up a certificate"));
}

Result<std::optional<CertificateRecord>> Ledger::active_certificate(const std::string& registration_id,
                                                                    const std::string& profile) {
  std::string sql = std::string("SELECT ") + kCertColumns +
                    ", der FROM certificates WHERE registration_id=? AND profile=? AND status='active'";
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("looking up a certificate"));
  Stmt st(s);
  Binder{s}.text(registration_id).text(profile);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<CertificateRecord>(read_record(s, true));
  if (rc == SQLITE_DONE) return std::optional<CertificateRecord>();
  return std::unexpected(sqlite_error("looking up a certificate"));
}

Result<std::optional<ActiveRef>> Ledger::active_ref(const std::string& registration_id,
                                                    const std::string& profile) {
  static constexpr const char* kSql =
      "SELECT serial, batch_id, pubkey_sha256 FROM certificates WHERE registration_id=? AND profile=? AND status='active'";
  KL_TRY(sqlite3_stmt * s, cached(kSql));
  Binder{s}.text(registration_id).text(profile);
  int rc = sqlite3_step(s);
  std::optional<ActiveRef> out;
  if (rc == SQLITE_ROW) out = ActiveRef{sql::text(s, 0), sql::text(s, 1), sql::text(s, 2)};
  sqlite3_reset(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return std::unexpected(sqlite_error("looking up a certificate"));
  return out;
}

Status Ledger::insert_batch(const BatchRecord& b) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "INSERT INTO batches (id, out_dir, profile, mode, created_at) VALUES (?,?,?,?,?)",
                     -1, &s, nullptr);
  Stmt st(s);
  Binder{s}.text(b.id).text(b.out_dir).text(b.profile).text(b.mode).int64(b.created_at);
  if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(sqlite_error("recording batch " + b.id));
  return {};
}

Result<std::optional<BatchRecord>> Ledger::batch(const std::string& id) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT id, out_dir, profile, mode, created_at FROM batches WHERE id=?", -1, &s,
                         nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("reading batch " + id));
  Stmt st(s);
  Binder{s}.text(id);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW)
    return std::optional<BatchRecord>(BatchRecord{sql::text(s, 0), sql::text(s, 1), sql::text(s, 2),
                                                  sql::text(s, 3), sqlite3_column_int64(s, 4)});
  if (rc == SQLITE_DONE) return std::optional<BatchRecord>();
  return std::unexpected(sqlite_error("reading batch " + id));
}

Status Ledger::for_each_batch_certificate(const std::string& batch_id, std::uint64_t offset,
                                          const std::function<Status(const CertificateRecord&)>& fn) {
  std::string sql = std::string("SELECT ") + kCertColumns +
                    ", der FROM certificates WHERE batch_id=? ORDER BY id LIMIT -1 OFFSET ?";
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("listing batch certificates"));
  Stmt st(s);
  Binder{s}.text(batch_id).int64(static_cast<std::int64_t>(offset));
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) KL_CHECK(fn(read_record(s, true)));
  if (rc != SQLITE_DONE) return std::unexpected(sqlite_error("listing batch certificates"));
  return {};
}

Result<std::uint64_t> Ledger::batch_certificate_count(const std::string& batch_id) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM certificates WHERE batch_id=?", -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("counting batch certificates"));
  Stmt st(s);
  Binder{s}.text(batch_id);
  if (sqlite3_step(s) != SQLITE_ROW) return std::unexpected(sqlite_error("counting batch certificates"));
  return static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
}

Status Ledger::for_each_certificate(const CertificateFilter& filter,
                                    const std::function<void(const CertificateRecord&)>& fn) {
  // Each term names its partial index's condition so that SQLite uses it:
  // active certificates are in certificates_one_active (registration_id
  // first), the others in certificates_not_active (status, registration_id).
  // ?1 is the registration ID, ?2 the status.
  std::string sql = std::string("SELECT ") + kCertColumns + " FROM certificates WHERE ";
  const bool active = filter.status && *filter.status == "active";
  // The IN list is every inactive status the table's CHECK allows: a new
  // status must be added to both.
  if (filter.registration_id && !filter.status)
    sql += "((status = 'active' AND registration_id = ?1) OR "
           "(status != 'active' AND status IN ('revoked', 'superseded') AND registration_id = ?1))";
  else if (filter.registration_id && active)
    sql += "status = 'active' AND registration_id = ?1";
  else if (filter.registration_id)
    sql += "status = ?2 AND status != 'active' AND registration_id = ?1";
  else if (active)
    sql += "status = 'active'";  // most of the table: a scan
  else if (filter.status)
    sql += "status = ?2 AND status != 'active'";
  else
    sql += "1";
  sql += " ORDER BY id";
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("listing certificates"));
  Stmt st(s);
  if (filter.registration_id)
    sqlite3_bind_text(s, 1, filter.registration_id->data(), static_cast<int>(filter.registration_id->size()),
                      SQLITE_STATIC);
  if (filter.status && !active)
    sqlite3_bind_text(s, 2, filter.status->data(), static_cast<int>(filter.status->size()), SQLITE_STATIC);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) fn(read_record(s, false));
  if (rc != SQLITE_DONE) return std::unexpected(sqlite_error("listing certificates"));
  return {};
}

Result<std::map<std::string, std::int64_t>> Ledger::counts_by_status() {
  sqlite3_stmt* s = nullptr;
  // Each half is counted from its partial index (active: the one-active
  // index; the others: the inactive-status index), not from the table rows.
  if (sqlite3_prepare_v2(db_,
                         "SELECT 'active', COUNT(*) FROM certificates WHERE status = 'active' "
                         "UNION ALL SELECT status, COUNT(*) FROM certificates WHERE status != 'active' GROUP BY status",
                         -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("counting certificates"));
  Stmt st(s);
  std::map<std::string, std::int64_t> out{{"active", 0}, {"revoked", 0}, {"superseded", 0}};
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out[sql::text(s, 0)] = sqlite3_column_int64(s, 1);
  if (rc != SQLITE_DONE) return std::unexpected(sqlite_error("counting certificates"));
  return out;
}

Status Ledger::revoke(const std::string& serial, const std::string& reason, std::int64_t when) {
  KL_TRY(auto existing, certificate(serial));
  if (!existing)
    return fail(Domain::input, "no certificate with serial " + serial +
                                   " in this ledger (list them with 'keyline ledger certificates')");
  if (existing->status == "revoked")
    return fail(Domain::policy, "certificate " + serial + " is already revoked (" +
                                    existing->revocation_reason + ")");
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "UPDATE certificates SET status='revoked', revoked_at=?, revocation_reason=? WHERE serial=?",
                     -1, &s, nullptr);
  Stmt st(s);
  Binder{s}.int64(when).text(reason).text(serial);
  if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(sqlite_error("revoking " + serial));
  return {};
}

Result<std::vector<CertificateRecord>> Ledger::revoked() {
  std::vector<CertificateRecord> out;
  KL_CHECK(for_each_certificate({.registration_id = {}, .status = "revoked"},
                                [&](const CertificateRecord& r) { out.push_back(r); }));
  return out;
}

Result<std::uint64_t> Ledger::next_crl_number() {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(number), 0) + 1 FROM crls", -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("numbering the CRL"));
  Stmt st(s);
  if (sqlite3_step(s) != SQLITE_ROW) return std::unexpected(sqlite_error("numbering the CRL"));
  return static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
}

Status Ledger::insert_crl(const CrlRecord& crl) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "INSERT INTO crls (number, this_update, next_update, der) VALUES (?,?,?,?)",
                     -1, &s, nullptr);
  Stmt st(s);
  Binder{s}.int64(static_cast<std::int64_t>(crl.number)).int64(crl.this_update).int64(crl.next_update).blob(crl.der);
  if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(sqlite_error("recording CRL"));
  return {};
}

Status Ledger::set_meta(const std::string& key, const std::string& value) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db_, "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     -1, &s, nullptr);
  Stmt st(s);
  Binder{s}.text(key).text(value);
  if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(sqlite_error("writing " + key));
  return {};
}

Result<std::optional<std::string>> Ledger::meta(const std::string& key) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key=?", -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(sqlite_error("reading " + key));
  Stmt st(s);
  Binder{s}.text(key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<std::string>(sql::text(s, 0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return std::unexpected(sqlite_error("reading " + key));
}

}  // namespace keyline::station
