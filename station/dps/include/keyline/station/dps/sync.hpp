#pragma once
// EnrollmentSync: drains the ledger's enrollment outbox into DPS in bulk
// calls of at most 10, exactly once.
//
// Exactly once: a row becomes "synced" only after DPS confirmed it, in a
// ledger transaction after the HTTP call. If the process dies between the
// call and the commit, the row is still pending; the next run sends the same
// bulk "create" again, DPS answers 409 for the items it already holds, and
// each such item is read back: if DPS holds an equal enrollment the row is
// marked synced (no duplicate, nothing lost); a different one is a dead
// letter (an operator must decide). A "delete" answered 404 is synced.
// 4xx answers other than 409/412/429 are dead letters with DPS's reason;
// everything else stays pending and is retried by the next run.
//
// Symmetric keys never sit in the outbox: payloads carry
// attestation.symmetricKey.keySource and the keys are resolved here.
//
// Fault point for tests: KEYLINE_DPS_SYNC_CRASH_AFTER_HTTP=N makes the
// process _exit(99) after the N-th bulk call answered, before the commit.

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "keyline/core/clock.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/station/dps/client.hpp"
#include "keyline/station/outbox.hpp"

namespace keyline::station::dps {

// Resolves a key source for one enrollment ID:
//   file:PATH   the base64 key on the file's first line (its second line, if
//               any, is the secondary key);
//   hsm:LABEL   base64(HMAC-SHA256(key-store secret LABEL, id)): the
//               secret never leaves the key store; the secondary key uses
//               id + "/secondary".
// Returns {primary, secondary} base64 keys.
struct KeyPair {
  SecretString primary;
  SecretString secondary;
};
Result<KeyPair> resolve_key_source(const std::string& source, const std::string& id, hsm::KeyStore* key_store);

// A custom allocation webhook's URL from its source: env:VAR or file:PATH
// (the first line). Such URLs carry a secret (an Azure Functions key in
// ?code=), so the outbox stores the source ("webhookUrlSource" in
// customAllocationDefinition) and the sync resolves it when it sends. The
// value must be an http(s) URL; errors name the source, never the URL.
Result<std::string> resolve_webhook_source(const std::string& source);
bool is_http_url(std::string_view url);

// Payload helpers: a symmetric-key enrollment that names its key source.
nlohmann::json with_key_source(nlohmann::json enrollment, const std::string& source);

struct SyncReport {
  std::uint64_t synced = 0;
  std::uint64_t reconciled = 0;  // already in DPS, confirmed by read-back
  std::uint64_t dead = 0;
  std::uint64_t retry = 0;       // still pending
  std::uint64_t bulk_calls = 0;
};

class EnrollmentSync {
 public:
  EnrollmentSync(Ledger& ledger, DpsClient& client, const Clock& clock, hsm::KeyStore* key_store)
      : ledger_(ledger), outbox_(ledger), client_(client), clock_(clock), key_store_(key_store) {}

  // One pass over every pending row (oldest first). Transient failures stay
  // pending (counted in `retry`); an unreachable DPS ends the pass with the
  // transport error after recording it on the rows.
  Result<SyncReport> run_once();
  // The audit trail's hook (see Outbox::set_recorder).
  void set_recorder(Outbox::Recorder r) { outbox_.set_recorder(std::move(r)); }
  // Bulk calls in flight at once (default 4): DPS answers in tens to hundreds
  // of milliseconds, so one call at a time cannot use the quota. The rate
  // limit is shared; the ledger is written by the calling thread only.
  void set_in_flight(int n) { in_flight_ = n < 1 ? 1 : n; }

 private:
  struct Flight;
  // Materialises a batch (rows that cannot be are recorded now) and starts
  // its bulk call; nullopt when nothing is left to send.
  Result<std::optional<Flight>> launch(std::vector<OutboxRow>& batch, SyncReport& report);
  // Waits for a flight's answer and records it in the ledger.
  Status settle(Flight& flight, SyncReport& report);
  // launch + settle, for one batch.
  Status process(std::vector<OutboxRow>& batch, SyncReport& report);
  Status reconcile(const OutboxRow& row, const nlohmann::json& desired, SyncReport& report);
  Result<nlohmann::json> materialise(const OutboxRow& row);

  Ledger& ledger_;
  Outbox outbox_;
  DpsClient& client_;
  const Clock& clock_;
  hsm::KeyStore* key_store_;
  // Leaves a row pending and holds back its ID's later rows in this pass.
  Status hold(const OutboxRow& row, const std::string& why, std::int64_t now);

  int bulk_calls_ = 0;
  int in_flight_ = 4;
  std::set<std::string> held_;                  // IDs left pending in this pass (lower case)
  std::map<std::string, int> in_flight_ids_;    // IDs in calls not yet settled
};

}  // namespace keyline::station::dps
