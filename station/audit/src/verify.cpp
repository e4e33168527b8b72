#include <cctype>
#include <cstring>
#include <fstream>
#include <map>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "format.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/audit_export.hpp"

namespace keyline::station::audit {

namespace fs = std::filesystem;

namespace {

Error broken(std::int64_t seq, std::string message) { return Error(Domain::integrity, std::move(message), seq); }

// Record types whose command makes a signed checkpoint when one is due, once
// the transaction's records are all appended (checkpoint_if_due at the end of
// `ca issue`, `ca crl`, every `ca batch` group and outcome, every provisioning
// step). Records of other commands (revoke, DPS, secrets, ...) may follow the
// last checkpoint in any number until the next of these.
bool checkpointed_type(std::string_view type) {
  return type == "certificate.issued" || type == "crl.issued" || type == "batch.finished" ||
         type == "batch.interrupted" || type.starts_with("device.");
}

bool same_hex(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// Walks records in order and checks sequence, hash chain and checkpoints,
// and that every checkpoint the chain itself records is there. The canonical
// record arrives in two parts (a JSONL line's head and "}").
class ChainChecker {
 public:
  ChainChecker(std::int64_t first_seq, std::string_view prev_hash, std::string cert_pem,
               std::multimap<std::int64_t, Checkpoint> checkpoints, std::string checkpoints_source)
      : first_(first_seq),
        expected_(first_seq),
        cert_pem_(std::move(cert_pem)),
        checkpoints_(std::move(checkpoints)),
        source_(std::move(checkpoints_source)) {
    if (!parse_hash(prev_hash, prev_)) std::memset(prev_, 0, sizeof prev_);
    lower_hex(prev_, prev_hex_);
  }

  // The audit certificate's SHA-256: an "audit.key_created" record naming it is looked for.
  void look_for_key(std::string fingerprint) { key_fingerprint_ = std::move(fingerprint); }

  // `where`, `station` and `body` are only called when needed (an error, a
  // checkpoint, a record type whose body names a checkpoint or key).
  Status next(std::int64_t seq, std::string_view part1, std::string_view part2, std::string_view hash,
              std::string_view type, const std::function<std::string()>& where,
              const std::function<std::string()>& station, const std::function<std::string()>& body) {
    if (seq > expected_)
      return std::unexpected(broken(expected_, "record " + std::to_string(expected_) + " is missing or out of place: " +
                                                   where() + " holds record " + std::to_string(seq) +
                                                   " (records were deleted or reordered)"));
    if (seq < expected_)
      return std::unexpected(broken(seq, "record " + std::to_string(seq) + " " + where() + " is out of order: record " +
                                             std::to_string(expected_) +
                                             " was expected (records were reordered or inserted)"));
    unsigned char md[32];
    chain_hash_raw(prev_, part1, part2, md);
    char hex[64];
    lower_hex(md, hex);
    if (hash != std::string_view(hex, 64))
      return std::unexpected(broken(seq, "record " + std::to_string(seq) + " " + where() +
                                             " was modified: its content does not match its hash"));
    bool signed_here = false;
    if (!checkpoints_.empty()) {
      auto [lo, hi] = checkpoints_.equal_range(seq);
      for (auto it = lo; it != hi; ++it) {
        const Checkpoint& cp = it->second;
        if (cp.hash != hash)
          return std::unexpected(broken(seq, "the trail up to record " + std::to_string(seq) +
                                                 " differs from the checkpoint signed at record " +
                                                 std::to_string(seq) + " (the trail was rewritten)"));
        std::string msg = checkpoint_message(station(), cp.seq, cp.hash, cp.time);
        auto ok = verify_signature(cert_pem_, ByteView(reinterpret_cast<const unsigned char*>(msg.data()), msg.size()),
                                   cp.signature);
        if (!ok)
          return std::unexpected(broken(seq, "the checkpoint at record " + std::to_string(seq) +
                                                 " is not signed by the audit key (the trail was rewritten)"));
        ++checked_;
        signed_here = true;
      }
    }
    if (signed_here) last_signed_ = seq;
    KL_CHECK(check_type(seq, type, signed_here, where, station, body));
    std::memcpy(prev_, md, 32);
    std::memcpy(prev_hex_, hex, 64);
    ++expected_;
    return {};
  }

  Status finish(std::int64_t last_seq, const std::string& what) const {
    if (expected_ - 1 < last_seq)
      return std::unexpected(broken(expected_, "records after " + std::to_string(expected_ - 1) +
                                                   " are missing (truncated): " + what + " " +
                                                   std::to_string(last_seq)));
    return {};
  }

  // The ledger's own rules, once all records were read: ca init signs the
  // trail it starts; the audit certificate is the key the ledger recorded;
  // records that a checkpoint was due for are not left unsigned.
  Status finish_ledger(std::int64_t checkpoint_interval) const {
    if (init_seq_ && last_signed_ < init_seq_)
      return std::unexpected(broken(init_seq_, "no signed checkpoint covers the trail, yet 'ca init' signed one over "
                                               "its first records (record " + std::to_string(init_seq_) +
                                               " on): checkpoints were deleted"));
    if (!key_fingerprint_.empty() && !key_recorded_)
      return fail(Domain::integrity, "the audit certificate (sha256 " + key_fingerprint_ +
                                         ") is not an audit key this ledger recorded: no audit.key_created record "
                                         "names it (audit.pem was replaced)");
    // Only trails that have always had the audit key (made by ca init, or
    // holding checkpoint records) are held to the cadence: a station older
    // than the audit trail had records before it had a key.
    std::int64_t due_span = last_checkpointed_ - last_signed_;
    if (checkpoint_interval > 0 && (init_seq_ || saw_checkpoint_record_) && due_span >= checkpoint_interval)
      return std::unexpected(broken(
          last_signed_ + checkpoint_interval,
          "records " + std::to_string(last_signed_ + 1) + " to " + std::to_string(last()) +
              " are covered by no signed checkpoint, though [audit] checkpoint_interval " +
              std::to_string(checkpoint_interval) + " required one by the end of the transaction holding record " +
              std::to_string(last_signed_ + checkpoint_interval) + " (" + std::to_string(due_span) +
              " records up to record " + std::to_string(last_checkpointed_) + ", " + checkpointed_type_ +
              "): checkpoints were deleted, or the audit key could not be opened when one was due"));
    return {};
  }

  std::int64_t last() const { return expected_ - 1; }
  std::int64_t last_signed() const { return last_signed_; }
  std::string last_hash() const { return std::string(prev_hex_, 64); }
  std::size_t checked() const { return checked_; }
  const std::string& key_station() const { return key_station_; }

 private:
  Status check_type(std::int64_t seq, std::string_view type, bool signed_here,
                    const std::function<std::string()>& where, const std::function<std::string()>& station,
                    const std::function<std::string()>& body) {
    if (type == kCheckpointRecord) {
      saw_checkpoint_record_ = true;
      if (!signed_here)
        return std::unexpected(broken(seq, "record " + std::to_string(seq) + " " + where() +
                                               " records a checkpoint signed at it, but that checkpoint is not " +
                                               source_ + " (checkpoints were deleted)"));
    } else if (type == "audit.exported") {
      // An export signs a checkpoint at its last record in the same transaction.
      auto j = nlohmann::json::parse(body(), nullptr, false);
      std::int64_t at = j.is_object() && j.contains("last_seq") && j["last_seq"].is_number_integer()
                            ? j["last_seq"].get<std::int64_t>()
                            : -1;
      if (at < 1 || at >= seq)
        return std::unexpected(broken(seq, "record " + std::to_string(seq) + " " + where() +
                                               " records an export without a valid last_seq"));
      if (at >= first_ && checkpoints_.count(at) == 0)
        return std::unexpected(broken(seq, "record " + std::to_string(seq) + " " + where() +
                                               " records an export signed at record " + std::to_string(at) +
                                               ", but that checkpoint is not " + source_ +
                                               " (checkpoints were deleted)"));
    } else if (type == "ca.created" || type == "ca.imported") {
      if (!init_seq_) init_seq_ = seq;
    } else if (type == "audit.key_created" && !key_fingerprint_.empty() && !key_recorded_) {
      auto j = nlohmann::json::parse(body(), nullptr, false);
      if (j.is_object() && j.contains("certificate_sha256") && j["certificate_sha256"].is_string() &&
          same_hex(j["certificate_sha256"].get<std::string>(), key_fingerprint_)) {
        key_recorded_ = true;
        key_station_ = station();
      }
    } else if (checkpointed_type(type)) {
      last_checkpointed_ = seq;
      checkpointed_type_.assign(type);  // keeps its capacity: no allocation per record
    }
    return {};
  }

  std::int64_t first_;
  std::int64_t expected_;
  unsigned char prev_[32];
  char prev_hex_[64];
  std::string cert_pem_;
  std::multimap<std::int64_t, Checkpoint> checkpoints_;
  std::string source_;  // where checkpoints are: "in the ledger", "in the manifest"
  std::size_t checked_ = 0;
  std::int64_t last_signed_ = 0;
  std::int64_t init_seq_ = 0;
  bool saw_checkpoint_record_ = false;
  std::int64_t last_checkpointed_ = 0;
  std::string checkpointed_type_;
  std::string key_fingerprint_;
  bool key_recorded_ = false;
  std::string key_station_;
};

std::string cert_text(X509* cert, int nid) {
  X509_NAME* name = X509_get_subject_name(cert);
  int at = X509_NAME_get_index_by_NID(name, nid, -1);
  if (at < 0 || X509_NAME_get_index_by_NID(name, nid, at) >= 0) return {};  // none, or more than one
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
  if (n < 0) return {};
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

Status check_audit_subject(X509* leaf, const std::string& station) {
  std::string cn = cert_text(leaf, NID_commonName);
  std::string expected = "Keyline audit " + station;
  if (cn != expected)
    return fail(Domain::integrity, "the audit signing certificate's subject CN is '" + cn + "', expected '" + expected +
                                       "': it is not the audit key of station '" + station + "'");
  return {};
}

// The certificate that signs checkpoints and manifests must be the station's
// audit certificate, not any other leaf the CA issued: not a CA, keyUsage for
// signatures, no TLS extended key usage (device certificates have clientAuth),
// and the subject "CN=Keyline audit STATION" (empty: checked later).
Status check_audit_identity(X509* leaf, const std::string& station) {
  std::string what = "the audit signing certificate (" + name_to_string(X509_get_subject_name(leaf)) + ")";
  std::uint32_t flags = X509_get_extension_flags(leaf);
  if (flags & EXFLAG_CA) return fail(Domain::integrity, what + " is a CA certificate, not the station's audit key");
  std::uint32_t ku = X509_get_key_usage(leaf);
  if (!(flags & EXFLAG_KUSAGE) || !(ku & (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION)))
    return fail(Domain::integrity, what + " has no keyUsage digitalSignature or nonRepudiation: it is not an audit key");
  if (flags & EXFLAG_XKUSAGE) {
    std::uint32_t xku = X509_get_extended_key_usage(leaf);
    if (xku & (XKU_SSL_CLIENT | XKU_SSL_SERVER | XKU_ANYEKU))
      return fail(Domain::integrity, what + " is a TLS client or server certificate (extendedKeyUsage), not the "
                                            "station's audit key: the export or checkpoints were not signed by it");
  }
  if (!station.empty()) KL_CHECK(check_audit_subject(leaf, station));
  return {};
}

// The audit certificate must chain to the trust anchor through the
// intermediate and be the station's audit certificate.
Status check_audit_chain(const std::vector<std::string>& chain, const std::string& trust_anchor_pem,
                         const Clock& clock, const std::string& station) {
  if (chain.size() < 2)
    return fail(Domain::integrity, "the audit certificate chain has " + std::to_string(chain.size()) +
                                       " certificate(s); expected the audit certificate and the intermediate");
  KL_TRY(X509Ptr leaf, x509_from_pem(chain[0], "audit certificate"));
  KL_TRY(X509Ptr inter, x509_from_pem(chain[1], "intermediate certificate"));
  KL_TRY(X509Ptr root, x509_from_pem(trust_anchor_pem, "trust anchor"));
  auto ok = ca::verify_chain(*leaf, *inter, *root, clock);
  if (!ok)
    return fail(Domain::integrity, "the audit key's certificate does not chain to the trust anchor (" +
                                       ok.error().message() + "): not signed by this station's CA");
  return check_audit_identity(leaf.get(), station);
}

std::string station_of(std::string_view canonical) {
  auto j = nlohmann::json::parse(canonical, nullptr, false);
  if (j.is_discarded() || !j.contains("station") || !j["station"].is_string()) return {};
  return j["station"].get<std::string>();
}

// The type member of a canonical record: the first `,"type":"` is it, since
// the string members before it cannot hold an unescaped quote.
std::string_view type_of(std::string_view canonical) {
  constexpr std::string_view kKey = ",\"type\":\"";
  auto at = canonical.find(kKey);
  if (at == std::string_view::npos) return {};
  at += kKey.size();
  auto end = canonical.find('"', at);
  return end == std::string_view::npos ? std::string_view{} : canonical.substr(at, end - at);
}

std::string body_of(std::string_view canonical) {
  auto j = nlohmann::json::parse(canonical, nullptr, false);
  if (j.is_discarded() || !j.contains("body")) return {};
  return j["body"].dump();
}

}  // namespace

Result<VerifyResult> verify_export(const fs::path& records, const std::string& trust_anchor_pem, const Clock& clock) {
  fs::path manifest_path = records.string() + ".manifest.json";
  fs::path sig_path = records.string() + ".manifest.json.sig";
  KL_TRY(std::string manifest_text, files::read(manifest_path, 64u << 20));
  KL_TRY(std::string sig, files::read(sig_path, 64u << 10));
  auto m = nlohmann::json::parse(manifest_text, nullptr, false);
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != "keyline-audit-export")
    return fail(Domain::integrity, manifest_path.string() + " is not a Keyline audit export manifest");
  std::vector<std::string> chain;
  std::string station;
  try {
    chain = m.at("audit_key").at("certificate_chain").get<std::vector<std::string>>();
    station = m.at("station").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return fail(Domain::integrity,
                manifest_path.string() + ": station or audit_key.certificate_chain is missing or malformed");
  }
  if (station.empty()) return fail(Domain::integrity, manifest_path.string() + ": the manifest names no station");
  KL_CHECK(check_audit_chain(chain, trust_anchor_pem, clock, ""));
  auto sig_ok = verify_signature(
      chain[0], ByteView(reinterpret_cast<const unsigned char*>(manifest_text.data()), manifest_text.size()),
      ByteView(reinterpret_cast<const unsigned char*>(sig.data()), sig.size()));
  if (!sig_ok)
    return fail(Domain::integrity, "the manifest " + manifest_path.string() +
                                       " does not match its signature: it was altered, or not signed by the audit key");
  {
    // Signed by this certificate, so the station it names is the signer's claim.
    KL_TRY(X509Ptr leaf, x509_from_pem(chain[0], "audit certificate"));
    KL_CHECK(check_audit_subject(leaf.get(), station));
  }

  std::int64_t first = 0, last = 0, count = 0;
  std::string prev_hash, last_hash, format, file_sha256;
  std::multimap<std::int64_t, Checkpoint> cps;
  try {
    first = m.at("first_seq").get<std::int64_t>();
    last = m.at("last_seq").get<std::int64_t>();
    count = m.at("count").get<std::int64_t>();
    prev_hash = m.at("prev_hash").get<std::string>();
    last_hash = m.at("last_hash").get<std::string>();
    format = m.at("records_format").get<std::string>();
    file_sha256 = m.at("records_sha256").get<std::string>();
    for (const auto& c : m.at("checkpoints")) {
      Checkpoint cp;
      cp.seq = c.at("seq").get<std::int64_t>();
      cp.hash = c.at("hash").get<std::string>();
      cp.time = c.at("time").get<std::string>();
      cp.key = c.at("key").get<std::string>();
      auto raw = base64_decode(c.at("signature").get<std::string>());
      if (!raw) return fail(Domain::integrity, manifest_path.string() + ": a checkpoint signature is not base64");
      cp.signature = *raw;
      cps.emplace(cp.seq, std::move(cp));
    }
  } catch (const nlohmann::json::exception& e) {
    return fail(Domain::integrity, manifest_path.string() + ": " + e.what());
  }
  KL_TRY(Format fmt, parse_format(format));

  std::ifstream in(records, std::ios::binary);
  if (!in) return fail(Domain::io, "cannot read " + files::errno_text(records, errno));
  ChainChecker checker(first, prev_hash, chain[0], std::move(cps), "in the manifest");
  Sha256Stream digest;
  std::string line;
  std::int64_t line_no = 0;
  auto where = [&]() { return "(" + records.filename().string() + " line " + std::to_string(line_no) + ")"; };
  while (std::getline(in, line)) {
    ++line_no;
    digest.update(line);
    if (!in.eof()) digest.update("\n");
    if (fmt == Format::csv) {
      if (line_no == 1) {
        if (line != "seq,time,station,operator,type,body,hash")
          return fail(Domain::integrity, records.string() + " line 1: not the audit CSV header");
        continue;
      }
      auto rec = parse_csv_line(line);
      if (!rec) return fail(Domain::integrity, records.string() + " line " + std::to_string(line_no) + ": " + rec.error().message());
      KL_CHECK(checker.next(rec->seq, canonical_record(*rec), {}, rec->hash, rec->type, where,
                            [&]() { return rec->station; }, [&]() { return rec->body; }));
    } else {
      auto parsed = parse_jsonl_line(line);
      if (!parsed)
        return fail(Domain::integrity, records.string() + " line " + std::to_string(line_no) + ": " +
                                           parsed.error().message());
      KL_CHECK(checker.next(parsed->seq, parsed->head, "}", parsed->hash, type_of(parsed->head), where,
                            [&]() { return station_of(std::string(parsed->head) + "}"); },
                            [&]() { return body_of(std::string(parsed->head) + "}"); }));
    }
  }
  KL_CHECK(checker.finish(last, "the manifest lists records up to"));
  if (checker.last() > last)
    return fail(Domain::integrity, "record " + std::to_string(last + 1) + " follows the exported range (ending at " +
                                       std::to_string(last) + "): records were appended", last + 1);
  if (checker.last_hash() != last_hash)
    return fail(Domain::integrity, "the last record's hash differs from the manifest's", last);
  if (digest.hex() != file_sha256)
    return fail(Domain::integrity, records.string() + " differs from the SHA-256 in its manifest (extra or altered bytes)");
  VerifyResult r;
  r.records = count;
  r.first_seq = first;
  r.last_seq = last;
  r.checkpoints = checker.checked();
  r.last_signed_seq = checker.last_signed();
  r.unsigned_records = last - checker.last_signed();
  r.last_hash = last_hash;
  r.station = station;
  return r;
}

Result<VerifyResult> verify_ledger(Ledger& ledger, const std::vector<std::string>& audit_chain_pem,
                                   const std::string& trust_anchor_pem, const Clock& clock,
                                   std::int64_t checkpoint_interval) {
  // The station the ledger was made for; the audit certificate must name it.
  KL_TRY(std::optional<std::string> station, ledger.meta("station_id"));
  KL_CHECK(check_audit_chain(audit_chain_pem, trust_anchor_pem, clock, station.value_or("")));
  KL_TRY(X509Ptr cert, x509_from_pem(audit_chain_pem[0], "audit certificate"));
  KL_TRY(Bytes der, to_der(cert.get()));
  KL_TRY(std::int64_t head, head_seq(ledger));
  KL_TRY(auto all, checkpoints(ledger, 0, INT64_MAX));
  std::multimap<std::int64_t, Checkpoint> cps;
  std::int64_t last_signed = 0;
  for (auto& c : all) {
    last_signed = std::max(last_signed, c.seq);
    cps.emplace(c.seq, std::move(c));
  }
  ChainChecker checker(1, std::string(kGenesisHash), audit_chain_pem[0], std::move(cps), "in the ledger");
  checker.look_for_key(sha256_hex(der));
  std::int64_t not_utf8 = 0, first_not_utf8 = 0;
  KL_CHECK(for_each_record(ledger, 0, INT64_MAX, [&](const Record& r) -> Status {
    // Bytes that are not UTF-8 hash as U+FFFD, so the chain cannot tell
    // one such byte from another. Keyline refuses such names now; older
    // versions recorded them, so they are reported, not failed.
    for (const std::string* field : {&r.time, &r.station, &r.operator_name, &r.type})
      if (!valid_utf8(*field)) {
        if (!not_utf8++) first_not_utf8 = r.seq;
        break;
      }
    return checker.next(r.seq, canonical_record(r), {}, r.hash, r.type, [] { return std::string("(ledger)"); },
                        [&]() { return r.station; }, [&]() { return r.body; });
  }));
  if (not_utf8)
    log::get("audit")->warn("{} audit record(s) from record {} on hold a time, station, operator or type that is not "
                            "valid UTF-8 (recorded before Keyline refused such names): the chain covers those "
                            "fields only as U+FFFD",
                            not_utf8, first_not_utf8);
  KL_CHECK(checker.finish(last_signed, "a checkpoint signs records up to"));
  KL_CHECK(checker.finish_ledger(checkpoint_interval));
  if (!station) {
    KL_TRY(X509Ptr leaf, x509_from_pem(audit_chain_pem[0], "audit certificate"));
    KL_CHECK(check_audit_subject(leaf.get(), checker.key_station()));
  }
  VerifyResult res;
  res.records = checker.last();
  res.first_seq = head > 0 ? 1 : 0;
  res.last_seq = checker.last();
  res.checkpoints = checker.checked();
  res.last_signed_seq = checker.last_signed();
  res.unsigned_records = checker.last() - checker.last_signed();
  res.last_hash = checker.last_hash();
  res.station = station ? *station : checker.key_station();
  return res;
}

}  // namespace keyline::station::audit
