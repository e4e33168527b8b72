// keyline audit ... and keyline report devices: the compliance side.

#include "app.hpp"
#include "keyline/core/files.hpp"
#include "keyline/station/audit_export.hpp"
#include "keyline/station/outbox.hpp"

namespace keyline::cli {

namespace {

namespace fs = std::filesystem;
namespace audit = station::audit;
using nlohmann::json;

struct ExportArgs {
  std::string since, until, format = "jsonl", out;
};

Status audit_export(const Context& ctx, const ExportArgs& a) {
  KL_TRY(audit::Format format, audit::parse_format(a.format));
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  KL_TRY(auto store, ctx.state().open_key_store(config));
  KL_TRY(auto key, open_audit_key(ctx, config, *store));
  audit::Trail trail(ledger, actor, ctx.clock());
  KL_TRY(auto r, audit::export_trail(ledger, trail, key, {a.since, a.until, format, a.out}));
  json doc = {{"records", r.records.string()}, {"manifest", r.manifest.string()}, {"signature", r.signature.string()},
              {"first_seq", r.first_seq}, {"last_seq", r.last_seq}, {"count", r.count}, {"last_hash", r.last_hash}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Exported audit records " << r.first_seq << " to " << r.last_seq << " (" << r.count << ") -> "
       << r.records.string() << "\n  manifest:  " << r.manifest.string() << "\n  signature: " << r.signature.string()
       << "\n  last hash: " << r.last_hash << "\nCheck it with: keyline audit verify " << r.records.string() << "\n";
  });
  return {};
}

struct VerifyArgs {
  std::string file;
  bool ledger = false;
  std::string trust_anchor;
};

Status audit_verify(const Context& ctx, const VerifyArgs& a) {
  if (a.ledger == !a.file.empty())
    return fail(Domain::usage, "audit verify takes either an export FILE or --ledger");
  std::string anchor_path = a.trust_anchor.empty() ? ctx.state().root_cert_path().string() : a.trust_anchor;
  auto anchor = files::read(anchor_path, 1 << 20);
  if (!anchor)
    return fail(Domain::usage, "audit verify needs the station's root certificate as trust anchor: " +
                                   anchor.error().message() + " (give --trust-anchor ROOT.pem)");
  audit::VerifyResult r;
  std::int64_t interval = 0;
  if (a.ledger) {
    KL_TRY(station::Config config, ctx.config());
    interval = config.audit.checkpoint_interval;
    KL_TRY(auto ledger, open_ledger_readonly(ctx));
    std::vector<std::string> chain;
    for (const fs::path& p : {ctx.state().audit_cert_path(), ctx.state().intermediate_cert_path()}) {
      auto text = files::read(p, 1 << 20);
      if (!text)
        return fail(Domain::state, "cannot read the audit certificate chain: " + text.error().message() +
                                       " (create the audit key with 'keyline audit key create')");
      chain.push_back(*text);
    }
    KL_TRY(r, audit::verify_ledger(ledger, chain, *anchor, ctx.clock(), interval));
  } else {
    KL_TRY(r, audit::verify_export(a.file, *anchor, ctx.clock()));
  }
  json doc = {{"verified", true}, {"source", a.ledger ? ctx.state().ledger_path().string() : a.file},
              {"station", r.station}, {"records", r.records}, {"first_seq", r.first_seq},
              {"last_seq", r.last_seq}, {"signed_checkpoints", r.checkpoints},
              {"last_signed_seq", r.last_signed_seq}, {"unsigned_records", r.unsigned_records},
              {"last_hash", r.last_hash}};
  if (a.ledger) doc["checkpoint_interval"] = interval;
  ctx.print(doc, [&](std::ostream& os) {
    os << "OK: " << r.records << " audit record(s) " << r.first_seq << " to " << r.last_seq << " verified, "
       << r.checkpoints << " signed checkpoint(s), last hash " << r.last_hash << "\n"
       << "  signed by the audit key of station " << r.station << "\n";
    if (r.unsigned_records == 0)
      os << "  every record is covered by a signed checkpoint\n";
    else
      os << "  " << r.unsigned_records << " record(s) after the last signed checkpoint (record " << r.last_signed_seq
         << ") are covered by no signature yet: only the hash chain protects them until the next checkpoint\n";
  });
  return {};
}

Status audit_key_create(const Context& ctx) {
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));
  hsm::KeyStore& store = *opened.key_store;
  const std::string& label = config.audit.key;
  if (auto existing = store.signer(label))
    return fail(Domain::state,
                "the key store already holds an audit key '" + label + "'; Keyline never replaces it");
  audit::Trail trail(ledger, actor, ctx.clock());
  // The ledger's write lock comes first, so a busy or read-only ledger
  // refuses before the key store changes. The record names the certificate,
  // so the key is made before it; if the record does not commit, the key is
  // destroyed again. STATE/audit.pem appears only after the commit.
  KL_TRY(auto tx, ledger.begin());
  KL_TRY(AuditCertificate cert, create_audit_key(ctx, store, label, opened.authority->signer(),
                                                 opened.authority->issuer(), config.station_id));
  const std::string& id = cert.sha256;
  auto recorded = [&]() -> Result<files::PendingFile> {
    KL_TRY(files::PendingFile pem, files::PendingFile::create(ctx.state().audit_cert_path(), cert.pem, 0644));
    KL_TRY(auto rec, trail.append("audit.key_created",
                                  {{"key", label}, {"certificate_sha256", id}, {"key_store", store.uri()}}));
    (void)rec;
    // The new key signs the trail at once, as ca init does: from here on
    // every record is signed within the checkpoint interval.
    KL_TRY(auto signer, store.signer(label));
    KL_TRY(auto cp, trail.checkpoint(*signer, id));
    (void)cp;
    KL_CHECK(tx.commit());
    return pem;
  }();
  if (!recorded)
    return std::unexpected(undo_unrecorded_key(store, KeyKind::signing, label, recorded.error()));
  if (auto published = recorded->publish(); !published)
    return fail(published.error().domain(),
                "the audit key '" + label +
                    "' is created and recorded, but its certificate could not be written: " +
                    published.error().message() + "; set another [audit] key label in " +
                    config.source.string() + " and run 'keyline audit key create' again");
  json doc = {{"key", config.audit.key}, {"certificate", ctx.state().audit_cert_path().string()},
              {"certificate_sha256", id}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Created audit key " << config.audit.key << "; certificate " << ctx.state().audit_cert_path().string()
       << " (sha256 " << id << ")\n";
  });
  return {};
}

// ---------------------------------------------------------------- report devices

std::string csv_escape(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Status report_devices(const Context& ctx, const std::string& since, const std::string& format, const std::string& out) {
  if (format != "csv" && format != "jsonl") return fail(Domain::usage, "--format must be csv or jsonl");
  std::int64_t since_time = 0;
  if (!since.empty()) {
    auto t = parse_utc(since.size() == 10 ? since + "T00:00:00Z" : since);
    if (!t) return fail(Domain::usage, "--since '" + since + "' is not a UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)");
    since_time = t->time_since_epoch().count();
  }
  KL_TRY(auto ledger, open_ledger_readonly(ctx));
  KL_TRY(auto station_id, ledger.meta("station_id"));
  static const char* kColumns[] = {"device_serial", "registration_id", "certificate_serial", "certificate_sha256",
                                   "public_key_sha256", "profile", "status", "issued_at", "not_after",
                                   "enrollment", "station", "operator", "batch"};
  std::optional<files::StreamingFile> file;
  if (!out.empty() && out != "-") {
    KL_TRY(auto f, files::StreamingFile::open(out, 0644));
    file.emplace(std::move(f));
  }
  auto emit = [&](const std::string& text) -> Status {
    if (file) return file->write(text);
    std::cout << text;
    return {};
  };
  if (format == "csv") {
    std::string header;
    for (const char* c : kColumns) header += (header.empty() ? "" : ",") + std::string(c);
    KL_CHECK(emit(header + "\n"));
  }
  std::size_t count = 0;
  Status inner;
  station::Outbox outbox(ledger);
  KL_CHECK(ledger.for_each_certificate({}, [&](const station::CertificateRecord& r) {
    if (!inner || r.issued_at < since_time) return;
    // The registration ID's latest individual enrollment in the outbox
    // ("individual create synced"), or "none" (a group covers it, or DPS is not used).
    auto enrolled = outbox.latest("individual", r.registration_id);
    if (!enrolled) {
      inner = std::unexpected(enrolled.error());
      return;
    }
    std::string enrollment =
        *enrolled ? "individual " + (*enrolled)->operation + " " + (*enrolled)->state : std::string("none");
    std::vector<std::string> v = {r.device_serial, r.registration_id, r.serial, r.cert_sha256, r.pubkey_sha256,
                                  r.profile, r.status, iso_time(r.issued_at), iso_time(r.not_after), enrollment,
                                  station_id.value_or(""), r.operator_name, r.batch_id};
    std::string line;
    if (format == "csv") {
      for (std::size_t i = 0; i < v.size(); ++i) line += (i ? "," : "") + csv_escape(v[i]);
    } else {
      json j;
      for (std::size_t i = 0; i < v.size(); ++i) j[kColumns[i]] = v[i];
      line = j.dump();
    }
    inner = emit(line + "\n");
    ++count;
  }));
  KL_CHECK(inner);
  if (file) {
    KL_TRY(auto pending, file->finish());
    KL_CHECK(pending.publish());
    if (ctx.json()) ctx.print(json{{"out", out}, {"devices", count}}, [](std::ostream&) {});
    else std::cerr << "Wrote " << count << " device record(s) -> " << out << "\n";
  }
  return {};
}

}  // namespace

void add_audit_commands(CLI::App& app, Handler& run) {
  auto* audit_cmd = app.add_subcommand("audit", "The tamper-evident audit trail: export and verify");
  audit_cmd->require_subcommand(1);

  auto ex = std::make_shared<ExportArgs>();
  auto* exp = audit_cmd->add_subcommand(
      "export", "Write audit records to FILE, with FILE.manifest.json and its detached signature\n"
                "FILE.manifest.json.sig (signed by the audit key after a fresh checkpoint)");
  exp->add_option("--since", ex->since, "First record: a sequence number or a UTC time (YYYY-MM-DD[THH:MM:SSZ])");
  exp->add_option("--until", ex->until, "Last record: a sequence number or a UTC time");
  exp->add_option("--format", ex->format, "jsonl or csv")->check(CLI::IsMember({"jsonl", "csv"}))->capture_default_str();
  exp->add_option("--out", ex->out, "Records file to write")->required();
  exp->callback([&run, ex] { run = [ex](const Context& c) { return audit_export(c, *ex); }; });

  auto va = std::make_shared<VerifyArgs>();
  auto* ver = audit_cmd->add_subcommand(
      "verify", "Recompute the hash chain and check the signatures of an export (FILE) or of the ledger\n"
                "(--ledger). Exit code 9 names the first broken record by its sequence number.");
  ver->add_option("file", va->file, "An export's records file (its manifest and signature beside it)");
  ver->add_flag("--ledger", va->ledger, "Verify the station's own ledger instead");
  ver->add_option("--trust-anchor", va->trust_anchor, "Root certificate to trust (default: STATE/root.pem)");
  ver->callback([&run, va] { run = [va](const Context& c) { return audit_verify(c, *va); }; });

  auto* key = audit_cmd->add_subcommand("key", "The audit signing key");
  key->require_subcommand(1);
  auto* create = key->add_subcommand(
      "create", "Generate the audit key in the CA key store and certify it with the intermediate\n"
                "(ca init does this; for state dirs made before the audit trail existed)");
  create->callback([&run] { run = [](const Context& c) { return audit_key_create(c); }; });

  auto* report = app.add_subcommand("report", "Reports for customers and auditors");
  report->require_subcommand(1);
  auto since = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("csv");
  auto out = std::make_shared<std::string>();
  auto* devices = report->add_subcommand(
      "devices", "One \"birth certificate\" per issued device identity: device serial, registration ID,\n"
                 "certificate serial and fingerprints, enrollment, timestamps, station, operator");
  devices->add_option("--since", *since, "Only certificates issued at or after this UTC time");
  devices->add_option("--format", *format, "csv or jsonl")->check(CLI::IsMember({"csv", "jsonl"}))->capture_default_str();
  devices->add_option("--out", *out, "Write here (default: stdout)");
  devices->callback([&run, since, format, out] {
    run = [since, format, out](const Context& c) { return report_devices(c, *since, *format, *out); };
  });
}

}  // namespace keyline::cli
