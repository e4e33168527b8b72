#include "keyline/station/outbox.hpp"

#include <sqlite3.h>

#include <memory>

#include "keyline/station/sqlite_util.hpp"

namespace keyline::station {

namespace {

using sql::bind;
using sql::text;

Error outbox_db_error(sqlite3* db, const std::string& what) { return sql::error(db, what + " (enrollment outbox)"); }

Result<sql::Stmt> outbox_prepare(sqlite3* db, const char* statement) { return sql::prepare(db, statement, "prepare (enrollment outbox)"); }

constexpr const char* kOutboxColumns =
    "id, registration_id, kind, operation, payload, state, attempts, last_error, etag, created_at, updated_at";

OutboxRow read_row(sqlite3_stmt* s) {
  OutboxRow r;
  r.id = sqlite3_column_int64(s, 0);
  r.registration_id = text(s, 1);
  r.kind = text(s, 2);
  r.operation = text(s, 3);
  r.payload = text(s, 4);
  r.state = text(s, 5);
  r.attempts = sqlite3_column_int64(s, 6);
  r.last_error = text(s, 7);
  r.etag = text(s, 8);
  r.created_at = sqlite3_column_int64(s, 9);
  r.updated_at = sqlite3_column_int64(s, 10);
  return r;
}

Status step_done(sqlite3* db, sqlite3_stmt* s, const char* what) {
  if (sqlite3_step(s) != SQLITE_DONE) return std::unexpected(outbox_db_error(db, what));
  return {};
}

}  // namespace

Result<std::int64_t> Outbox::enqueue(const std::string& kind, const std::string& operation,
                                     const std::string& registration_id, const std::string& payload,
                                     std::int64_t now) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "INSERT INTO enrollment_outbox (registration_id, kind, operation, payload, state, "
                             "created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)"));
  bind(s.get(), 1, registration_id);
  bind(s.get(), 2, kind);
  bind(s.get(), 3, operation);
  bind(s.get(), 4, payload);
  bind(s.get(), 5, now);
  bind(s.get(), 6, now);
  KL_CHECK(step_done(db, s.get(), "queue an enrollment"));
  std::int64_t id = sqlite3_last_insert_rowid(db);
  KL_CHECK(record("enrollment.queued", id, ""));
  return id;
}

Status Outbox::record(const char* event, std::int64_t id, const std::string& detail) {
  if (!recorder_) return {};
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "SELECT registration_id, kind, operation FROM enrollment_outbox WHERE id = ?"));
  bind(s.get(), 1, id);
  if (sqlite3_step(s.get()) != SQLITE_ROW) return std::unexpected(outbox_db_error(db, "read back an outbox row"));
  OutboxRow row;
  row.id = id;
  row.registration_id = text(s.get(), 0);
  row.kind = text(s.get(), 1);
  row.operation = text(s.get(), 2);
  return recorder_(event, row, detail);
}

Result<std::vector<OutboxRow>> Outbox::pending(std::int64_t after_id, std::size_t limit) {
  sqlite3* db = ledger_.handle();
  std::string sql = std::string("SELECT ") + kOutboxColumns +
                    " FROM enrollment_outbox WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?";
  KL_TRY(sql::Stmt s, outbox_prepare(db, sql.c_str()));
  bind(s.get(), 1, after_id);
  bind(s.get(), 2, static_cast<std::int64_t>(limit));
  std::vector<OutboxRow> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(read_row(s.get()));
  if (rc != SQLITE_DONE) return std::unexpected(outbox_db_error(db, "read pending enrollments"));
  return out;
}

Status Outbox::mark_synced(std::int64_t id, const std::string& etag, std::int64_t now) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "UPDATE enrollment_outbox SET state = 'synced', etag = ?, last_error = NULL, "
                             "attempts = attempts + 1, updated_at = ? WHERE id = ?"));
  bind(s.get(), 1, etag);
  bind(s.get(), 2, now);
  bind(s.get(), 3, id);
  KL_CHECK(step_done(db, s.get(), "mark an enrollment synced"));
  return record("enrollment.synced", id, etag);
}

Status Outbox::mark_dead(std::int64_t id, const std::string& reason, std::int64_t now) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "UPDATE enrollment_outbox SET state = 'dead', last_error = ?, "
                             "attempts = attempts + 1, updated_at = ? WHERE id = ?"));
  bind(s.get(), 1, reason);
  bind(s.get(), 2, now);
  bind(s.get(), 3, id);
  KL_CHECK(step_done(db, s.get(), "mark an enrollment dead"));
  return record("enrollment.failed", id, reason);
}

Status Outbox::mark_retry(std::int64_t id, const std::string& error, std::int64_t now) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "UPDATE enrollment_outbox SET last_error = ?, attempts = attempts + 1, "
                             "updated_at = ? WHERE id = ? AND state = 'pending'"));
  bind(s.get(), 1, error);
  bind(s.get(), 2, now);
  bind(s.get(), 3, id);
  return step_done(db, s.get(), "record a failed attempt");
}

Result<std::map<std::string, std::int64_t>> Outbox::counts() {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, outbox_prepare(db, "SELECT state, count(*) FROM enrollment_outbox GROUP BY state"));
  std::map<std::string, std::int64_t> out{{"pending", 0}, {"synced", 0}, {"dead", 0}};
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out[text(s.get(), 0)] = sqlite3_column_int64(s.get(), 1);
  if (rc != SQLITE_DONE) return std::unexpected(outbox_db_error(db, "count enrollments"));
  return out;
}

Result<std::vector<OutboxRow>> Outbox::rows_in_state(const std::string& state, std::size_t limit) {
  sqlite3* db = ledger_.handle();
  std::string sql = std::string("SELECT ") + kOutboxColumns + " FROM enrollment_outbox WHERE state = ? ORDER BY id LIMIT ?";
  KL_TRY(sql::Stmt s, outbox_prepare(db, sql.c_str()));
  bind(s.get(), 1, state);
  bind(s.get(), 2, static_cast<std::int64_t>(limit));
  std::vector<OutboxRow> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(read_row(s.get()));
  if (rc != SQLITE_DONE) return std::unexpected(outbox_db_error(db, "read enrollments"));
  return out;
}

Result<std::optional<OutboxRow>> Outbox::latest(const std::string& kind, const std::string& registration_id) {
  sqlite3* db = ledger_.handle();
  std::string sql = std::string("SELECT ") + kOutboxColumns +
                    " FROM enrollment_outbox WHERE kind = ? AND registration_id = ? ORDER BY id DESC LIMIT 1";
  KL_TRY(sql::Stmt s, outbox_prepare(db, sql.c_str()));
  bind(s.get(), 1, kind);
  bind(s.get(), 2, registration_id);
  int rc = sqlite3_step(s.get());
  if (rc == SQLITE_ROW) return std::optional<OutboxRow>(read_row(s.get()));
  if (rc != SQLITE_DONE) return std::unexpected(outbox_db_error(db, "read an enrollment"));
  return std::optional<OutboxRow>();
}

}  // namespace keyline::station
