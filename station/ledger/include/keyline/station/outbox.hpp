#pragma once
// The enrollment outbox: enrollments the station has decided on, waiting to
// reach DPS (station/dps EnrollmentSync drains it). Rows move
// pending -> synced, or pending -> dead (a failure that will not heal, with
// its reason). Payloads never hold a secret (see ledger.cpp migration 4).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keyline/station/ledger.hpp"

namespace keyline::station {

struct OutboxRow {
  std::int64_t id = 0;
  std::string registration_id;  // or enrollment group ID for kind "group"
  std::string kind;             // individual | group
  std::string operation;        // create | delete
  std::string payload;          // enrollment JSON
  std::string state;            // pending | synced | dead
  std::int64_t attempts = 0;
  std::string last_error;
  std::string etag;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

class Outbox {
 public:
  explicit Outbox(Ledger& ledger) : ledger_(ledger) {}

  // Queues one operation; call inside a transaction to tie it to other changes.
  Result<std::int64_t> enqueue(const std::string& kind, const std::string& operation,
                               const std::string& registration_id, const std::string& payload,
                               std::int64_t now);
  // Up to `limit` pending rows with id > after_id, oldest first.
  Result<std::vector<OutboxRow>> pending(std::int64_t after_id, std::size_t limit);
  Status mark_synced(std::int64_t id, const std::string& etag, std::int64_t now);
  Status mark_dead(std::int64_t id, const std::string& reason, std::int64_t now);
  Status mark_retry(std::int64_t id, const std::string& error, std::int64_t now);
  Result<std::map<std::string, std::int64_t>> counts();
  Result<std::vector<OutboxRow>> rows_in_state(const std::string& state, std::size_t limit = 1000);
  Result<std::optional<OutboxRow>> latest(const std::string& kind, const std::string& registration_id);

 private:
  Ledger& ledger_;
};

}  // namespace keyline::station
