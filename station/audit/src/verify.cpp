#include <cstring>
#include <fstream>
#include <map>

#include "format.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/audit_export.hpp"

namespace keyline::station::audit {

namespace fs = std::filesystem;

namespace {

Error broken(std::int64_t seq, std::string message) { return Error(Domain::integrity, std::move(message), seq); }

// Walks records in order and checks sequence, hash chain and checkpoints.
// The canonical record arrives in two parts (a JSONL line's head and "}").
class ChainChecker {
 public:
  ChainChecker(std::int64_t first_seq, std::string_view prev_hash, std::string cert_pem,
               std::multimap<std::int64_t, Checkpoint> checkpoints)
      : expected_(first_seq), cert_pem_(std::move(cert_pem)), checkpoints_(std::move(checkpoints)) {
    if (!parse_hash(prev_hash, prev_)) std::memset(prev_, 0, sizeof prev_);
    lower_hex(prev_, prev_hex_);
  }

  // `where` and `station` are only called when needed (an error, a checkpoint).
  Status next(std::int64_t seq, std::string_view part1, std::string_view part2, std::string_view hash,
              const std::function<std::string()>& where, const std::function<std::string()>& station) {
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
      }
    }
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

  std::int64_t last() const { return expected_ - 1; }
  std::string last_hash() const { return std::string(prev_hex_, 64); }
  std::size_t checked() const { return checked_; }

 private:
  std::int64_t expected_;
  unsigned char prev_[32];
  char prev_hex_[64];
  std::string cert_pem_;
  std::multimap<std::int64_t, Checkpoint> checkpoints_;
  std::size_t checked_ = 0;
};

// The audit certificate must chain to the trust anchor through the intermediate.
Status check_audit_chain(const std::vector<std::string>& chain, const std::string& trust_anchor_pem,
                         const Clock& clock) {
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
  return {};
}

std::string station_of(std::string_view canonical) {
  auto j = nlohmann::json::parse(canonical, nullptr, false);
  if (j.is_discarded() || !j.contains("station") || !j["station"].is_string()) return {};
  return j["station"].get<std::string>();
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
  try {
    chain = m.at("audit_key").at("certificate_chain").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception&) {
    return fail(Domain::integrity, manifest_path.string() + ": audit_key.certificate_chain is missing or malformed");
  }
  KL_CHECK(check_audit_chain(chain, trust_anchor_pem, clock));
  auto sig_ok = verify_signature(
      chain[0], ByteView(reinterpret_cast<const unsigned char*>(manifest_text.data()), manifest_text.size()),
      ByteView(reinterpret_cast<const unsigned char*>(sig.data()), sig.size()));
  if (!sig_ok)
    return fail(Domain::integrity, "the manifest " + manifest_path.string() +
                                       " does not match its signature: it was altered, or not signed by the audit key");

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
  ChainChecker checker(first, prev_hash, chain[0], std::move(cps));
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
      KL_CHECK(checker.next(rec->seq, canonical_record(*rec), {}, rec->hash, where,
                            [&]() { return rec->station; }));
    } else {
      auto parsed = parse_jsonl_line(line);
      if (!parsed)
        return fail(Domain::integrity, records.string() + " line " + std::to_string(line_no) + ": " +
                                           parsed.error().message());
      KL_CHECK(checker.next(parsed->seq, parsed->head, "}", parsed->hash, where,
                            [&]() { return station_of(std::string(parsed->head) + "}"); }));
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
  r.last_hash = last_hash;
  return r;
}

Result<VerifyResult> verify_ledger(Ledger& ledger, const std::vector<std::string>& audit_chain_pem,
                                   const std::string& trust_anchor_pem, const Clock& clock) {
  KL_CHECK(check_audit_chain(audit_chain_pem, trust_anchor_pem, clock));
  KL_TRY(std::int64_t head, head_seq(ledger));
  KL_TRY(auto all, checkpoints(ledger, 0, INT64_MAX));
  std::multimap<std::int64_t, Checkpoint> cps;
  std::int64_t last_signed = 0;
  for (auto& c : all) {
    last_signed = std::max(last_signed, c.seq);
    cps.emplace(c.seq, std::move(c));
  }
  ChainChecker checker(1, std::string(kGenesisHash), audit_chain_pem[0], std::move(cps));
  KL_CHECK(for_each_record(ledger, 0, INT64_MAX, [&](const Record& r) -> Status {
    return checker.next(r.seq, canonical_record(r), {}, r.hash, [] { return std::string("(ledger)"); },
                        [&]() { return r.station; });
  }));
  KL_CHECK(checker.finish(last_signed, "a checkpoint signs records up to"));
  VerifyResult res;
  res.records = checker.last();
  res.first_seq = head > 0 ? 1 : 0;
  res.last_seq = checker.last();
  res.checkpoints = checker.checked();
  res.last_hash = checker.last_hash();
  return res;
}

}  // namespace keyline::station::audit
