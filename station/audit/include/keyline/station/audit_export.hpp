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
  std::string last_hash;
};

// Checks an export against its manifest and detached signature; the audit
// certificate chain in the manifest must lead to `trust_anchor_pem`.
Result<VerifyResult> verify_export(const std::filesystem::path& records, const std::string& trust_anchor_pem,
                                   const Clock& clock);

// Checks the whole trail in the ledger and its signed checkpoints against
// the audit certificate chain (audit, intermediate, root).
Result<VerifyResult> verify_ledger(Ledger& ledger, const std::vector<std::string>& audit_chain_pem,
                                   const std::string& trust_anchor_pem, const Clock& clock);

}  // namespace keyline::station::audit
