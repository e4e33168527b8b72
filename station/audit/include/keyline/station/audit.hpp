#pragma once
// station::audit -- the tamper-evident audit trail.
//
// Every security-relevant change appends a record in the same ledger
// transaction as the change itself; if the record cannot be written the
// transaction rolls back (fail closed). A record is
//
//   {"seq":N,"time":"…Z","station":"…","operator":"…","type":"…","body":{…}}
//
// in exactly this member order, compact, with the body's members sorted and
// every non-ASCII character escaped (the canonical form), and
//
//   hash(N) = SHA-256(raw hash(N-1) || canonical record N),  hash(0) = 32 zero bytes.
//
// Checkpoints sign a (seq, hash) head with the audit key, so a chain that was
// rebuilt consistently by someone without that key is still detected. A
// checkpoint of the head is itself a record ("audit.checkpoint") that the
// checkpoint signs, so a deleted checkpoint leaves a record naming it.
// docs/audit.md documents the formats for auditors.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/hsm/signer.hpp"
#include "keyline/station/ledger.hpp"

struct sqlite3_stmt;

namespace keyline::station::audit {

// Who acts: the station and the operator recorded with every record.
struct Actor {
  std::string station;
  std::string operator_name;
};

struct Record {
  std::int64_t seq = 0;
  std::string time;  // ISO 8601 UTC, seconds
  std::string station;
  std::string operator_name;
  std::string type;
  std::string body;  // canonical JSON object
  std::string hash;  // lower-case hex
};

struct Checkpoint {
  std::int64_t seq = 0;
  std::string hash;
  std::string time;
  std::string key;  // which key signed (its certificate's SHA-256)
  Bytes signature;  // DER signature over SHA-256(checkpoint_message(...))
};

// The record a checkpoint of the head appends and then signs.
inline constexpr std::string_view kCheckpointRecord = "audit.checkpoint";

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or
// code points above U+10FFFF). The canonical form would turn other bytes into
// U+FFFD, so names that are not UTF-8 are refused before they are recorded.
bool valid_utf8(std::string_view text);

inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The canonical forms (see above).
std::string canonical_body(const nlohmann::json& body);
std::string canonical_record(const Record& r);
// hex(SHA-256(raw(prev_hash_hex) || canonical)).
std::string chain_hash(std::string_view prev_hash_hex, std::string_view canonical);
// What a checkpoint signs: "keyline-audit-checkpoint-v1\n" station \n seq \n hash \n time \n.
std::string checkpoint_message(std::string_view station, std::int64_t seq, std::string_view hash,
                               std::string_view time);

// Appends records to the ledger's trail. Use inside an open ledger
// transaction; destroy before the ledger.
class Trail {
 public:
  Trail(Ledger& ledger, Actor actor, const Clock& clock);
  ~Trail();
  Trail(const Trail&) = delete;
  Trail& operator=(const Trail&) = delete;

  const Actor& actor() const { return actor_; }

  // Appends one record after the current head. Secrets must never be put in
  // `body`: callers pass identifiers, fingerprints and reasons only.
  Result<Record> append(std::string_view type, const nlohmann::json& body);
  // The same with a body already in canonical form (what canonical_body
  // makes of it), for callers on a hot path that build it by hand; their
  // tests check it against canonical_body.
  Result<Record> append_canonical(std::string_view type, std::string canonical);

  // Signs (seq, hash) of record `seq` and stores the checkpoint. Without
  // `seq`, first appends an "audit.checkpoint" record ({"key": key_id}) and
  // signs that record, the new head. Nothing to sign (empty trail) gives
  // std::nullopt.
  Result<std::optional<Checkpoint>> checkpoint(const hsm::Signer& key, const std::string& key_id,
                                               std::optional<std::int64_t> seq = std::nullopt);
  // True when at least `interval` records follow the last checkpoint (cheap:
  // ask this before opening the audit key).
  Result<bool> checkpoint_due(std::int64_t interval);
  // A checkpoint when checkpoint_due(interval).
  Status checkpoint_if_due(const hsm::Signer& key, const std::string& key_id, std::int64_t interval);

 private:
  Result<std::pair<std::int64_t, std::string>> head();
  Ledger& ledger_;
  Actor actor_;
  bool actor_checked_ = false;
  const Clock& clock_;
  sqlite3_stmt* head_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  // The head this trail appended last, valid for the rest of that ledger
  // transaction (a rollback ends it, and the next begin() has a new number).
  struct CachedHead {
    std::uint64_t transaction = 0;
    std::int64_t seq = 0;
    std::string hash;
  };
  std::optional<CachedHead> cached_head_;
};

// Reading the trail (no transaction needed; each call is one read).
Result<std::optional<Record>> record_at(Ledger& ledger, std::int64_t seq);
Result<std::int64_t> head_seq(Ledger& ledger);
// Streams records with first <= seq <= last in sequence order.
Status for_each_record(Ledger& ledger, std::int64_t first, std::int64_t last,
                       const std::function<Status(const Record&)>& fn);
Result<std::vector<Checkpoint>> checkpoints(Ledger& ledger, std::int64_t first, std::int64_t last);
// --since / --until: a sequence number, or an ISO 8601 UTC time (YYYY-MM-DD or
// YYYY-MM-DDTHH:MM:SSZ). `since` resolves to the first record at or after the
// time, `until` to the last record at or before it.
Result<std::int64_t> resolve_bound(Ledger& ledger, const std::string& text, bool is_until, const char* what);

// The audit signing key and the certificate chain that vouches for it.
struct AuditKey {
  std::shared_ptr<hsm::Signer> signer;
  std::string id;                      // SHA-256 of the audit certificate (hex)
  std::vector<std::string> chain_pem;  // audit certificate, intermediate, root
};

Status verify_signature(const std::string& cert_pem, ByteView message, ByteView signature);

}  // namespace keyline::station::audit
