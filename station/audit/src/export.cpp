#include <openssl/evp.h>

#include "format.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/audit_export.hpp"

namespace keyline::station::audit {

namespace fs = std::filesystem;

Result<Format> parse_format(std::string_view text) {
  if (text == "jsonl") return Format::jsonl;
  if (text == "csv") return Format::csv;
  return fail(Domain::usage, "--format must be jsonl or csv, not '" + std::string(text) + "'");
}

std::string jsonl_line(const Record& r) {
  std::string line = canonical_record(r);
  line.pop_back();  // the closing brace; the hash follows as the last member
  line += ",\"hash\":\"";
  line += r.hash;
  line += "\"}\n";
  return line;
}

namespace {

void csv_field(std::string& out, std::string_view v) {
  if (v.find_first_of(",\"\r\n") == std::string_view::npos) {
    out.append(v);
    return;
  }
  out += '"';
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

}  // namespace

std::string csv_line(const Record& r) {
  std::string line = std::to_string(r.seq);
  for (std::string_view v : {std::string_view(r.time), std::string_view(r.station), std::string_view(r.operator_name),
                             std::string_view(r.type), std::string_view(r.body), std::string_view(r.hash)}) {
    line += ',';
    csv_field(line, v);
  }
  line += '\n';
  return line;
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(ctx_); }
void Sha256Stream::update(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
std::string Sha256Stream::hex() {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, md, &n);
  return lower(to_hex(std::span<const unsigned char>(md, n)));
}

nlohmann::json checkpoint_json(const Checkpoint& c) {
  return {{"seq", c.seq}, {"hash", c.hash}, {"time", c.time}, {"key", c.key},
          {"signature", base64_encode(c.signature)}};
}

Result<Bytes> sign_message(const hsm::Signer& key, std::string_view message) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(message.data(), message.size(), md, &n, hsm::evp_md(hsm::digest_for(key.algorithm())), nullptr);
  return key.sign(ByteView(md, n));
}

Result<ExportResult> export_trail(Ledger& ledger, Trail& trail, const AuditKey& key, const ExportOptions& o) {
  if (o.out.empty()) return fail(Domain::usage, "audit export needs --out FILE");
  KL_TRY(std::int64_t head, head_seq(ledger));
  std::int64_t first = 1, last = head;
  if (!o.since.empty()) {
    KL_TRY(first, resolve_bound(ledger, o.since, false, "--since"));
  }
  if (!o.until.empty()) {
    KL_TRY(last, resolve_bound(ledger, o.until, true, "--until"));
  }
  first = std::max<std::int64_t>(first, 1);
  last = std::min(last, head);
  if (head == 0) return fail(Domain::state, "the audit trail is empty: nothing to export");
  if (first > last)
    return fail(Domain::usage, "the range --since " + (o.since.empty() ? "1" : o.since) + " --until " +
                                   (o.until.empty() ? "head" : o.until) + " holds no audit record (records 1 to " +
                                   std::to_string(head) + " exist)");

  ExportResult result;
  result.records = o.out;
  result.manifest = fs::path(o.out.string() + ".manifest.json");
  result.signature = fs::path(o.out.string() + ".manifest.json.sig");
  std::string prev_hash(kGenesisHash);
  if (first > 1) {
    KL_TRY(auto before, record_at(ledger, first - 1));
    if (!before) return fail(Domain::integrity, "audit record " + std::to_string(first - 1) + " is missing", first - 1);
    prev_hash = before->hash;
  }

  KL_TRY(files::StreamingFile file, files::StreamingFile::open(o.out, 0644));
  Sha256Stream digest;
  std::string first_hash;
  auto emit = [&](std::string_view text) -> Status {
    digest.update(text);
    return file.write(text);
  };
  if (o.format == Format::csv) KL_CHECK(emit("seq,time,station,operator,type,body,hash\n"));
  KL_CHECK(for_each_record(ledger, first, last, [&](const Record& r) -> Status {
    if (result.count == 0) first_hash = r.hash;
    result.last_hash = r.hash;
    ++result.count;
    return emit(o.format == Format::csv ? csv_line(r) : jsonl_line(r));
  }));
  KL_TRY(files::PendingFile records, file.finish());
  std::string file_sha256 = digest.hex();
  result.first_seq = first;
  result.last_seq = last;

  // The checkpoint over the exported range and the record of the export go
  // into the ledger together; the files appear only once that committed.
  KL_TRY(auto tx, ledger.begin());
  KL_TRY(auto cp, trail.checkpoint(*key.signer, key.id, last));
  (void)cp;
  KL_TRY(auto cps, checkpoints(ledger, first, last));
  nlohmann::json manifest = {
      {"format", "keyline-audit-export"},
      {"version", 1},
      {"station", trail.actor().station},
      {"exported_by", trail.actor().operator_name},
      {"records_file", o.out.filename().string()},
      {"records_format", o.format == Format::csv ? "csv" : "jsonl"},
      {"records_sha256", file_sha256},
      {"first_seq", first},
      {"last_seq", last},
      {"count", result.count},
      {"prev_hash", prev_hash},
      {"first_hash", first_hash},
      {"last_hash", result.last_hash},
      {"checkpoints", nlohmann::json::array()},
      {"audit_key", {{"id", key.id}, {"certificate_chain", key.chain_pem}}}};
  for (const auto& c : cps) manifest["checkpoints"].push_back(checkpoint_json(c));
  std::string manifest_text = manifest.dump(2) + "\n";
  KL_TRY(Bytes signature, sign_message(*key.signer, manifest_text));
  KL_TRY(files::PendingFile manifest_file, files::PendingFile::create(result.manifest, manifest_text, 0644));
  std::string sig_text(signature.begin(), signature.end());
  KL_TRY(files::PendingFile sig_file, files::PendingFile::create(result.signature, sig_text, 0644));
  KL_TRY(auto rec, trail.append("audit.exported", {{"first_seq", first},
                                                     {"last_seq", last},
                                                     {"count", result.count},
                                                     {"format", o.format == Format::csv ? "csv" : "jsonl"},
                                                     {"file", o.out.filename().string()},
                                                     {"records_sha256", file_sha256},
                                                     {"manifest_sha256", sha256_hex(ByteView(
                                                          reinterpret_cast<const unsigned char*>(manifest_text.data()),
                                                          manifest_text.size()))}}));
  (void)rec;
  KL_CHECK(tx.commit());
  KL_CHECK(records.publish());
  KL_CHECK(manifest_file.publish());
  KL_CHECK(sig_file.publish());
  return result;
}

}  // namespace keyline::station::audit
