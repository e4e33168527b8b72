#include "keyline/station/devices.hpp"

#include <sqlite3.h>

#include <memory>

#include "keyline/station/sqlite_util.hpp"

namespace keyline::station {

namespace {

using sql::text;

Error device_db_error(sqlite3* db, const std::string& what) { return sql::error(db, "ledger " + what); }

Result<sql::Stmt> device_prepare(sqlite3* db, const char* statement) { return sql::prepare(db, statement, "ledger prepare"); }

void bind_text(sqlite3_stmt* s, int i, const std::string& v) { sql::bind(s, i, v); }

constexpr const char* kDeviceColumns =
    "id, serial_number, model, hardware_id, registration_id, profile, mode, state, pubkey_sha256, "
    "cert_serial, endorsement_key, locked, last_error, created_at, updated_at";

DeviceRecord read_device(sqlite3_stmt* s) {
  DeviceRecord d;
  d.id = sqlite3_column_int64(s, 0);
  d.serial_number = text(s, 1);
  d.model = text(s, 2);
  d.hardware_id = text(s, 3);
  d.registration_id = text(s, 4);
  d.profile = text(s, 5);
  d.mode = text(s, 6);
  d.state = text(s, 7);
  d.pubkey_sha256 = text(s, 8);
  d.cert_serial = text(s, 9);
  d.endorsement_key = text(s, 10);
  d.locked = sqlite3_column_int64(s, 11) != 0;
  d.last_error = text(s, 12);
  d.created_at = sqlite3_column_int64(s, 13);
  d.updated_at = sqlite3_column_int64(s, 14);
  return d;
}

Result<std::optional<DeviceRecord>> one(sqlite3* db, sqlite3_stmt* s) {
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<DeviceRecord>(read_device(s));
  if (rc == SQLITE_DONE) return std::optional<DeviceRecord>();
  return std::unexpected(device_db_error(db, "reading devices"));
}

}  // namespace

Result<std::optional<DeviceRecord>> Devices::find(const std::string& model, const std::string& serial_number,
                                                  const std::string& hardware_id) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, device_prepare(db, (std::string("SELECT ") + kDeviceColumns +
                              " FROM devices WHERE model = ?1 AND serial_number = ?2 AND hardware_id = ?3")
                                 .c_str()));
  bind_text(s.get(), 1, model);
  bind_text(s.get(), 2, serial_number);
  bind_text(s.get(), 3, hardware_id);
  return one(db, s.get());
}

Result<std::optional<DeviceRecord>> Devices::by_registration_id(const std::string& registration_id) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, device_prepare(db, (std::string("SELECT ") + kDeviceColumns +
                              " FROM devices WHERE registration_id = ?1 ORDER BY id DESC LIMIT 1")
                                 .c_str()));
  bind_text(s.get(), 1, registration_id);
  return one(db, s.get());
}

Status Devices::save(DeviceRecord& d) {
  sqlite3* db = ledger_.handle();
  const char* sql =
      d.id == 0 ? "INSERT INTO devices (serial_number, model, hardware_id, registration_id, profile, mode, state, "
                  "pubkey_sha256, cert_serial, endorsement_key, locked, last_error, created_at, updated_at) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                : "UPDATE devices SET serial_number = ?1, model = ?2, hardware_id = ?3, registration_id = ?4, "
                  "profile = ?5, mode = ?6, state = ?7, pubkey_sha256 = ?8, cert_serial = ?9, "
                  "endorsement_key = ?10, locked = ?11, last_error = ?12, created_at = ?13, updated_at = ?14 "
                  "WHERE id = ?15";
  KL_TRY(sql::Stmt s, device_prepare(db, sql));
  bind_text(s.get(), 1, d.serial_number);
  bind_text(s.get(), 2, d.model);
  bind_text(s.get(), 3, d.hardware_id);
  bind_text(s.get(), 4, d.registration_id);
  bind_text(s.get(), 5, d.profile);
  bind_text(s.get(), 6, d.mode);
  bind_text(s.get(), 7, d.state);
  bind_text(s.get(), 8, d.pubkey_sha256);
  bind_text(s.get(), 9, d.cert_serial);
  bind_text(s.get(), 10, d.endorsement_key);
  sqlite3_bind_int64(s.get(), 11, d.locked ? 1 : 0);
  bind_text(s.get(), 12, d.last_error);
  sqlite3_bind_int64(s.get(), 13, d.created_at);
  sqlite3_bind_int64(s.get(), 14, d.updated_at);
  if (d.id != 0) sqlite3_bind_int64(s.get(), 15, d.id);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return std::unexpected(device_db_error(db, "saving device " + d.serial_number));
  if (d.id == 0) d.id = sqlite3_last_insert_rowid(db);
  return {};
}

Status Devices::add_step(const StepRecord& st) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, device_prepare(db, "INSERT INTO provisioning_steps (device_id, step, outcome, detail, time) "
                             "VALUES (?1, ?2, ?3, ?4, ?5)"));
  sqlite3_bind_int64(s.get(), 1, st.device_id);
  bind_text(s.get(), 2, st.step);
  bind_text(s.get(), 3, st.outcome);
  bind_text(s.get(), 4, st.detail);
  sqlite3_bind_int64(s.get(), 5, st.time);
  if (sqlite3_step(s.get()) != SQLITE_DONE) return std::unexpected(device_db_error(db, "recording a provisioning step"));
  return {};
}

Result<std::vector<StepRecord>> Devices::steps(std::int64_t device_id) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, device_prepare(db, "SELECT device_id, step, outcome, detail, time FROM provisioning_steps "
                             "WHERE device_id = ?1 ORDER BY id"));
  sqlite3_bind_int64(s.get(), 1, device_id);
  std::vector<StepRecord> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW)
    out.push_back({sqlite3_column_int64(s.get(), 0), text(s.get(), 1), text(s.get(), 2), text(s.get(), 3),
                   sqlite3_column_int64(s.get(), 4)});
  if (rc != SQLITE_DONE) return std::unexpected(device_db_error(db, "reading provisioning steps"));
  return out;
}

Status Devices::for_each(const std::function<void(const DeviceRecord&)>& fn) {
  sqlite3* db = ledger_.handle();
  KL_TRY(sql::Stmt s, device_prepare(db, (std::string("SELECT ") + kDeviceColumns + " FROM devices ORDER BY id").c_str()));
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) fn(read_device(s.get()));
  if (rc != SQLITE_DONE) return std::unexpected(device_db_error(db, "reading devices"));
  return {};
}

}  // namespace keyline::station
