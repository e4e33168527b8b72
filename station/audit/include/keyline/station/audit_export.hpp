#pragma once
// Audit export and verification.
//
// export_trail() writes FILE (JSON Lines or CSV), FILE.manifest.json and
// FILE.manifest.json.sig (the audit key's DER signature over the manifest's
// bytes), all atomically and only after the ledger committed the checkpoint
// and the "audit.exported" record that describe the export.
//
// The verifiers stream (memory does not grow with the record count) and fail
// with Domain::integrity, the message naming the first broken record by its
// sequence number (also in Error::native_code()).

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "keyline/core/clock.hpp"
#include "keyline/station/audit.hpp"

namespace keyline::station::audit {

enum class Format { jsonl, csv };
Result<Format> parse_format(std::string_view text);

struct ExportOptions {
  std::string since;  // empty: from the first record
  std::string until;  // empty: to the head
  Format format = Format::jsonl;
  std::filesystem::path out;
};

struct ExportResult {
  std::int64_t first_seq = 0;
  std::int64_t last_seq = 0;
  std::int64_t count = 0;
  std::string last_hash;
  std::filesystem::path records;
  std::filesystem::path manifest;
  std::filesystem::path signature;
};

Result<ExportResult> export_trail(Ledger& ledger, Trail& trail, const AuditKey& key, const ExportOptions& options);

struct VerifyResult {
  std::int64_t records = 0;
  std::int64_t first_seq = 0;
  std::int64_t last_seq = 0;
  std::size_t checkpoints = 0;  // signed checkpoints checked
  std::int64_t last_signed_seq = 0;   // the last record a checkpoint signs (0: none)
  std::int64_t unsigned_records = 0;  // records after it: protected by the chain only
  std::string last_hash;
  std::string station;  // whose audit key signed
};

// Checks an export against its manifest and detached signature; the audit
// certificate chain in the manifest must lead to `trust_anchor_pem`, and its
// first certificate must be the audit certificate of the manifest's station.
// Every checkpoint the records name ("audit.checkpoint", and the checkpoint
// of an "audit.exported" record in range) must be in the manifest.
Result<VerifyResult> verify_export(const std::filesystem::path& records, const std::string& trust_anchor_pem,
                                   const Clock& clock);

// Checks the whole trail in the ledger and its signed checkpoints against
// the audit certificate chain (audit certificate, intermediate), which must
// lead to `trust_anchor_pem`. Beyond the export's checks: the audit
// certificate is the one an "audit.key_created" record names, with the
// ledger's station in its subject; a trail made by `ca init` has a signed
// checkpoint; and no record of a command that checkpoints when due lies
// `checkpoint_interval` or more records after the last signed checkpoint
// (0: not checked). docs/audit.md explains the rules.
Result<VerifyResult> verify_ledger(Ledger& ledger, const std::vector<std::string>& audit_chain_pem,
                                   const std::string& trust_anchor_pem, const Clock& clock,
                                   std::int64_t checkpoint_interval);

}  // namespace keyline::station::audit
