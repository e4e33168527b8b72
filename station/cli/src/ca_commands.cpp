// keyline ca ...: the certificate authority commands.

#include <sys/stat.h>

#include <iomanip>

#include "app.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/ca/csr_policy.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"

namespace keyline::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::int64_t seconds(TimePoint t) { return t.time_since_epoch().count(); }

json certificate_json(const station::CertificateRecord& r) {
  json j = {{"serial", r.serial},
            {"registration_id", r.registration_id},
            {"profile", r.profile},
            {"subject", r.subject},
            {"status", r.status},
            {"not_before", iso_time(r.not_before)},
            {"not_after", iso_time(r.not_after)},
            {"issued_at", iso_time(r.issued_at)},
            {"cert_sha256", r.cert_sha256},
            {"pubkey_sha256", r.pubkey_sha256}};
  if (r.revoked_at) {
    j["revoked_at"] = iso_time(*r.revoked_at);
    j["revocation_reason"] = r.revocation_reason;
  }
  if (!r.superseded_by.empty()) j["superseded_by"] = r.superseded_by;
  return j;
}

}  // namespace

json issued_body(const station::CertificateRecord& r, const std::string& superseded) {
  json j = {{"serial", r.serial},         {"registration_id", r.registration_id}, {"profile", r.profile},
            {"cert_sha256", r.cert_sha256}, {"pubkey_sha256", r.pubkey_sha256},     {"not_after", iso_time(r.not_after)}};
  if (!r.device_serial.empty()) j["device_serial"] = r.device_serial;
  if (!r.batch_id.empty()) j["batch"] = r.batch_id;
  if (!superseded.empty()) j["supersedes"] = superseded;
  return j;
}

namespace {

// ---------------------------------------------------------------- ca init

struct InitOptions {
  std::string key_store;
  std::string algorithm = "ec-p256";
  std::string root_subject = "CN=Keyline Root CA";
  std::string intermediate_subject = "CN=Keyline Intermediate CA";
  int root_days = 7300;
  int intermediate_days = 3650;
  std::string import_intermediate;
  std::string root_pem;
  std::string station_id = "station-1";
  std::string root_key = "keyline-root";
  std::string intermediate_key = "keyline-intermediate";
  std::string audit_key = "keyline-audit";
};

// Removes what a failed `ca init` created, so a retry starts clean.
class InitRollback {
 public:
  InitRollback(fs::path dir, bool created_dir) : dir_(std::move(dir)), created_dir_(created_dir) {}
  ~InitRollback() {
    if (done_) return;
    std::error_code ec;
    if (created_dir_) {
      fs::remove_all(dir_, ec);
    } else {
      for (auto& p : created_) fs::remove_all(p, ec);
    }
  }
  void track(fs::path p) { created_.push_back(std::move(p)); }
  void keep() { done_ = true; }

 private:
  fs::path dir_;
  bool created_dir_;
  bool done_ = false;
  std::vector<fs::path> created_;
};

Status ca_init(const Context& ctx, const InitOptions& o) {
  const auto& state = ctx.state();
  fs::path dir = state.root();
  std::error_code ec;
  if (state.initialised() || fs::exists(dir / "keyline.toml", ec))
    return fail(Domain::state, "state dir " + dir.string() +
                                   " is already initialised; Keyline never overwrites a CA. "
                                   "Use another --state directory for a new CA");
  bool created_dir = !fs::exists(dir, ec);
  if (!created_dir) {
    if (!fs::is_directory(dir, ec)) return fail(Domain::state, dir.string() + " exists and is not a directory");
    if (!fs::is_empty(dir, ec))
      return fail(Domain::state, "state dir " + dir.string() +
                                     " is not empty; give ca init a new or empty directory");
  }
  // Everything that can be checked is checked before a key is generated:
  // a key store outside the state dir keeps what it generates.
  if (o.root_days < 1 || o.root_days > 36500) return fail(Domain::usage, "--root-days must be 1 to 36500");
  if (o.intermediate_days < 1 || o.intermediate_days > 36500)
    return fail(Domain::usage, "--intermediate-days must be 1 to 36500");
  KL_TRY(hsm::Algorithm algorithm, hsm::parse_algorithm(o.algorithm));
  KL_TRY(X509NamePtr inter_subject, parse_dn(o.intermediate_subject));
  KL_TRY(X509NamePtr root_subject, parse_dn(o.root_subject));
  KL_CHECK(hsm::validate_label(o.root_key));
  KL_CHECK(hsm::validate_label(o.intermediate_key));
  KL_CHECK(hsm::validate_label(o.audit_key));
  KL_CHECK(station::validate_station_id(o.station_id));
  KL_TRY(std::string operator_name, ctx.operator_name(true));
  if (!o.import_intermediate.empty() && o.root_pem.empty())
    return fail(Domain::usage, "--import-intermediate needs --root ROOT.pem (the root that signed it)");
  if (o.import_intermediate.empty() && !o.root_pem.empty())
    return fail(Domain::usage, "--root is only used with --import-intermediate");

  KL_CHECK(files::ensure_dir(dir, 0700));
  ::chmod(dir.c_str(), 0700);  // also when the directory existed (empty)
  InitRollback rollback(dir, created_dir);
  // The key store dir (file:keys) is created inside the state dir.
  rollback.track(dir / "keys");

  station::CaConfig ca_config;
  ca_config.key_store = o.key_store.empty() ? "file:keys" : o.key_store;
  ca_config.root_key = o.root_key;
  ca_config.intermediate_key = o.intermediate_key;
  KL_TRY(auto store, hsm::open(ca_config.key_store, dir));
  if (store->is_development())
    log::get("hsm")->warn("using the development key store {}: CA keys are plain files", store->uri());

  X509Ptr root, intermediate;
  std::shared_ptr<hsm::Signer> inter_key;
  if (!o.import_intermediate.empty()) {
    KL_TRY(std::string inter_text, read_input(o.import_intermediate, 1 << 20, "--import-intermediate"));
    KL_TRY(intermediate, x509_from_pem(inter_text, o.import_intermediate));
    KL_TRY(std::string root_text, read_input(o.root_pem, 1 << 20, "--root"));
    KL_TRY(root, x509_from_pem(root_text, o.root_pem));
    KL_TRY(inter_key, store->signer(o.intermediate_key));
    KL_CHECK(ca::check_import(*intermediate, *root, *inter_key, ctx.clock()));
  } else {
    KL_TRY(auto root_key, store->generate_signing_key(o.root_key, algorithm));
    KL_TRY(inter_key, store->generate_signing_key(o.intermediate_key, algorithm));
    KL_TRY(root, ca::make_root(*root_key, *root_subject, o.root_days, ctx.clock(), ctx.rng()));
    KL_TRY(intermediate, ca::make_intermediate(*root_key, *root, inter_key->public_key(),
                                               *inter_subject, o.intermediate_days, ctx.clock(),
                                               ctx.rng()));
  }

  std::string root_text = to_pem(root.get());
  std::string inter_text = to_pem(intermediate.get());
  for (auto& [path, text] : {std::pair{state.root_cert_path(), root_text},
                             std::pair{state.intermediate_cert_path(), inter_text},
                             std::pair{state.chain_path(), inter_text + root_text}}) {
    rollback.track(path);
    KL_CHECK(files::write_atomic(path, text, 0644));
  }
  rollback.track(state.audit_cert_path());
  KL_TRY(AuditCertificate audit_cert,
         create_audit_key(ctx, *store, o.audit_key, *inter_key, *intermediate, o.station_id));
  KL_CHECK(files::write_atomic(state.audit_cert_path(), audit_cert.pem, 0644));
  const std::string& audit_id = audit_cert.sha256;
  rollback.track(dir / "keyline.toml");
  std::string config_text = station::default_config_toml(ca_config, o.station_id);
  if (o.audit_key != "keyline-audit") {
    auto at = config_text.find("key = \"keyline-audit\"");
    if (at != std::string::npos) config_text.replace(at, 22, "key = \"" + o.audit_key + "\"");
  }
  KL_CHECK(files::write_atomic(dir / "keyline.toml", config_text, 0600));

  // The ledger is made under a temporary name and renamed last: its presence
  // is what marks the state dir initialised.
  fs::path tmp_ledger = dir / ".ledger.db.init";
  rollback.track(tmp_ledger);
  rollback.track(dir / ".ledger.db.init-wal");
  rollback.track(dir / ".ledger.db.init-shm");
  KL_TRY(Bytes root_der, to_der(root.get()));
  KL_TRY(Bytes inter_der, to_der(intermediate.get()));
  {
    KL_TRY(station::Ledger ledger, station::Ledger::create(tmp_ledger));
    KL_TRY(auto tx, ledger.begin());
    KL_CHECK(ledger.set_meta("station_id", o.station_id));
    KL_CHECK(ledger.set_meta("created_at", format_utc(ctx.clock().now())));
    KL_CHECK(ledger.set_meta("key_store", store->uri()));
    KL_CHECK(ledger.set_meta("root_sha256", sha256_hex(root_der)));
    KL_CHECK(ledger.set_meta("intermediate_sha256", sha256_hex(inter_der)));
    KL_CHECK(ledger.set_meta("ca_mode", o.import_intermediate.empty() ? "created" : "imported"));
    station::audit::Trail trail(ledger, {o.station_id, operator_name}, ctx.clock());
    KL_TRY(auto r1, trail.append("keystore.opened", {{"key_store", store->uri()},
                                                      {"development", store->is_development()}}));
    KL_TRY(auto r2, trail.append(o.import_intermediate.empty() ? "ca.created" : "ca.imported",
                                 {{"root_subject", name_to_string(X509_get_subject_name(root.get()))},
                                  {"root_sha256", sha256_hex(root_der)},
                                  {"intermediate_subject", name_to_string(X509_get_subject_name(intermediate.get()))},
                                  {"intermediate_sha256", sha256_hex(inter_der)},
                                  {"intermediate_key", o.intermediate_key},
                                  {"root_key", o.import_intermediate.empty() ? o.root_key : ""},
                                  {"algorithm", to_string(inter_key->algorithm())}}));
    KL_TRY(auto r3, trail.append("audit.key_created", {{"key", o.audit_key}, {"certificate_sha256", audit_id},
                                                        {"key_store", store->uri()}}));
    KL_TRY(auto r4, trail.append("config.written", {{"file", "keyline.toml"},
                                                     {"sha256", sha256_hex(ByteView(
                                                          reinterpret_cast<const unsigned char*>(config_text.data()),
                                                          config_text.size()))}}));
    (void)r1, (void)r2, (void)r3, (void)r4;
    KL_TRY(auto audit_signer, store->signer(o.audit_key));
    KL_TRY(auto cp, trail.checkpoint(*audit_signer, audit_id));
    (void)cp;
    KL_CHECK(tx.commit());
  }
  if (::rename(tmp_ledger.c_str(), state.ledger_path().c_str()) != 0)
    return fail(Domain::io, "cannot rename the new ledger into place: " + files::errno_text(state.ledger_path(), errno));
  rollback.track(state.ledger_path());
  // The rename is what makes the state dir initialised: durable before init
  // reports success.
  KL_CHECK(files::sync_dir(dir));
  rollback.keep();

  json doc = {{"state_dir", dir.string()},
              {"key_store", store->uri()},
              {"development_key_store", store->is_development()},
              {"root", {{"subject", name_to_string(X509_get_subject_name(root.get()))}, {"sha256", sha256_hex(root_der)}}},
              {"intermediate", {{"subject", name_to_string(X509_get_subject_name(intermediate.get()))},
                                {"sha256", sha256_hex(inter_der)}}},
              {"mode", o.import_intermediate.empty() ? "created" : "imported"}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Initialised CA in " << dir.string() << "\n"
       << "  root:         " << doc["root"]["subject"].get<std::string>() << "\n"
       << "  intermediate: " << doc["intermediate"]["subject"].get<std::string>() << "\n"
       << "  key store:    " << store->uri() << "\n";
    if (store->is_development())
      os << "  WARNING: development key store -- the CA keys are plain files. Use an HSM or TPM in production.\n";
    os << "  chain:        " << state.chain_path().string() << "\n";
  });
  return {};
}

// ---------------------------------------------------------------- ca request

struct RequestOptions {
  std::string key_store;
  std::string subject;
  std::string out;
  std::string algorithm = "ec-p256";
  std::string key_label = "keyline-intermediate";
};

Status ca_request(const Context& ctx, const RequestOptions& o) {
  KL_TRY(X509NamePtr subject, parse_dn(o.subject));
  KL_TRY(hsm::Algorithm algorithm, hsm::parse_algorithm(o.algorithm));
  KL_TRY(auto store, hsm::open(o.key_store, fs::current_path()));
  std::shared_ptr<hsm::Signer> key;
  bool reused = false;
  if (auto existing = store->signer(o.key_label)) {
    key = *existing;
    reused = true;
  } else {
    KL_TRY(key, store->generate_signing_key(o.key_label, algorithm));
  }
  KL_TRY(X509ReqPtr req, ca::make_request(*key, *subject));
  KL_CHECK(write_output(o.out, to_pem_req(req.get())));
  json doc = {{"csr", o.out}, {"key", key->describe()}, {"algorithm", to_string(key->algorithm())},
              {"reused_existing_key", reused}};
  if (!o.out.empty() && o.out != "-")
    ctx.print(doc, [&](std::ostream& os) {
      os << (reused ? "Reused existing key " : "Generated key ") << key->describe() << "\n"
         << "Wrote CSR " << o.out << ": have the offline root sign it, then run\n"
         << "  keyline ca init --import-intermediate CERT.pem --root ROOT.pem --key-store " << store->uri() << "\n";
    });
  return {};
}

// ---------------------------------------------------------------- ca show

Status ca_show(const Context& ctx) {
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto ledger, open_ledger_readonly(ctx));
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));
  const ca::Authority& authority = *opened.authority;
  KL_TRY(auto counts, ledger.counts_by_status());
  KL_TRY(ca::IssuedCertificate inter, ca::describe(authority.issuer()));
  KL_TRY(ca::IssuedCertificate root, ca::describe(*authority.chain().back()));
  bool dev = opened.key_store->is_development();
  json doc = {{"state_dir", ctx.state().root().string()},
              {"issuer", {{"subject", inter.subject}, {"serial", inter.serial_hex},
                          {"not_before", format_utc(inter.not_before)}, {"not_after", format_utc(inter.not_after)},
                          {"sha256", inter.cert_sha256}}},
              {"root", {{"subject", root.subject}, {"not_after", format_utc(root.not_after)}, {"sha256", root.cert_sha256}}},
              {"key_store", opened.key_store->uri()},
              {"signing_key", {{"label", config.ca.intermediate_key},
                               {"algorithm", to_string(authority.signer().algorithm())}}},
              {"development_key_store", dev},
              {"certificates", counts},
              {"profiles", json::array()},
              {"ledger", {{"path", ledger.path().string()}, {"schema_version", ledger.schema_version()}}}};
  for (auto& [name, p] : config.profiles) doc["profiles"].push_back(name);
  ctx.print(doc, [&](std::ostream& os) {
    os << "Issuer:       " << inter.subject << "\n"
       << "  valid:      " << format_utc(inter.not_before) << " to " << format_utc(inter.not_after) << "\n"
       << "  sha256:     " << inter.cert_sha256 << "\n"
       << "Root:         " << root.subject << " (valid to " << format_utc(root.not_after) << ")\n"
       << "Key store:    " << opened.key_store->uri() << "\n";
    if (dev)
      os << "  WARNING:    development key store: CA keys are plain files; use an HSM or TPM in production\n";
    os << "Signing key:  " << config.ca.intermediate_key << " (" << to_string(authority.signer().algorithm()) << ")\n"
       << "Certificates: " << counts["active"] << " active, " << counts["revoked"] << " revoked, "
       << counts["superseded"] << " superseded\n"
       << "Profiles:     ";
    bool first = true;
    for (auto& [name, p] : config.profiles) {
      os << (first ? "" : ", ") << name;
      first = false;
    }
    os << "\nLedger:       " << ledger.path().string() << " (schema " << ledger.schema_version() << ")\n";
  });
  return {};
}

// ---------------------------------------------------------------- ca issue

struct IssueOptions {
  std::string csr;
  std::string registration_id;
  std::string device_serial;
  std::string profile = "device";
  std::string out;
  bool chain = false;
  bool reissue = false;
};

Status ca_issue(const Context& ctx, const IssueOptions& o) {
  KL_CHECK(ctx.state().require_initialised());
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(const ca::Profile* profile, station::find_profile(config, o.profile));
  std::optional<ca::RegistrationId> expected;
  if (!o.registration_id.empty()) {
    auto id = ca::RegistrationId::for_certificate(o.registration_id);
    if (!id) return std::unexpected(id.error().with_context("--registration-id"));
    expected = *id;
  }
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(std::string csr_text, read_input(o.csr, ca::kMaxCsrBytes, "--csr"));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  station::audit::Trail trail(ledger, actor, ctx.clock());
  // A refused request is recorded (with its reason) before the refusal is reported.
  auto record_rejection = [&](const Error& e) -> Error {
    auto tx = ledger.begin();
    if (!tx) return tx.error();
    auto rec = trail.append("request.rejected", {{"source", o.csr == "-" ? "stdin" : fs::path(o.csr).filename().string()},
                                                 {"profile", profile->name},
                                                 {"registration_id", o.registration_id},
                                                 {"reason", e.message()}});
    if (!rec) return rec.error();
    if (auto c = tx->commit(); !c) return c.error();
    return e;
  };
  auto csr = ca::parse_csr(csr_text, o.csr, ca::CsrEncoding::pem);
  if (!csr) return std::unexpected(record_rejection(csr.error()));
  auto checked = ca::check_csr(**csr, *profile, expected, o.csr);
  if (!checked) return std::unexpected(record_rejection(checked.error()));
  ca::AcceptedCsr accepted = std::move(*checked);
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));

  // Refuse early (before signing) when the ledger would refuse anyway.
  if (!o.reissue) {
    KL_TRY(auto existing, ledger.active_certificate(accepted.registration_id.str(), profile->name));
    if (existing)
      return fail(Domain::policy, "registration ID '" + accepted.registration_id.str() +
                                      "' already has an active certificate (serial " + existing->serial +
                                      ") for profile '" + profile->name +
                                      "'; use --reissue to supersede it, or revoke it first");
  }
  ca::IssueRequest request{accepted.registration_id, accepted.public_key,
                           o.device_serial.empty() ? std::nullopt : std::optional(o.device_serial)};
  KL_TRY(ca::IssuedCertificate cert, opened.authority->issue(request, *profile));

  std::string output = cert.pem;
  if (o.chain) output += opened.authority->chain_pem();
  std::optional<files::PendingFile> pending;
  if (!o.out.empty() && o.out != "-") {
    KL_TRY(auto file, files::PendingFile::create(o.out, output, 0644));
    pending.emplace(std::move(file));
  }

  station::CertificateRecord record;
  record.serial = cert.serial_hex;
  record.registration_id = cert.registration_id;
  record.profile = profile->name;
  record.subject = cert.subject;
  record.cert_sha256 = cert.cert_sha256;
  record.pubkey_sha256 = cert.pubkey_sha256;
  record.not_before = seconds(cert.not_before);
  record.not_after = seconds(cert.not_after);
  record.issued_at = seconds(ctx.clock().now());
  record.der = cert.der;
  record.operator_name = actor.operator_name;
  record.device_serial = o.device_serial;
  {
    KL_TRY(auto tx, ledger.begin());
    KL_TRY(auto superseded, ledger.active_ref(record.registration_id, record.profile));
    KL_CHECK(ledger.insert_certificate(record, o.reissue));
    KL_TRY(auto r1, trail.append("keystore.opened", {{"key_store", opened.key_store->uri()}}));
    KL_TRY(auto r2, trail.append("certificate.issued", issued_body(record, superseded ? superseded->serial : "")));
    (void)r1, (void)r2;
    KL_CHECK(checkpoint_if_due(ctx, config, *opened.key_store, trail));
    KL_CHECK(tx.commit());
  }
  log::get("ca")->info("issued {} for {} (profile {})", cert.serial_hex, cert.registration_id, profile->name);
  if (pending) KL_CHECK(pending->publish());

  json doc = certificate_json(record);
  if (pending) doc["out"] = o.out;
  else doc["certificate_pem"] = output;
  if (pending || ctx.json()) {
    ctx.print(doc, [&](std::ostream& os) {
      os << "Issued " << record.serial << " for " << record.registration_id << " (profile "
         << record.profile << ", valid to " << iso_time(record.not_after) << ") -> " << o.out << "\n";
    });
  } else {
    std::cout << output;
  }
  return {};
}

// ---------------------------------------------------------------- ca revoke / crl

std::string normalise_serial(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ':') continue;
    out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  while (out.size() > 1 && out[0] == '0') out.erase(0, 1);
  return out;
}

Status ca_revoke(const Context& ctx, const std::string& serial_text, const std::string& reason_text) {
  KL_TRY(ca::RevocationReason reason, ca::parse_revocation_reason(reason_text));
  std::string serial = normalise_serial(serial_text);
  if (serial.empty() || !from_hex(serial.size() % 2 ? "0" + serial : serial))
    return fail(Domain::input, "--serial '" + serial_text + "' is not a hexadecimal serial number");
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  std::int64_t now = seconds(ctx.clock().now());
  {
    KL_TRY(auto tx, ledger.begin());
    KL_CHECK(ledger.revoke(serial, std::string(to_string(reason)), now));
    KL_TRY(auto cert, ledger.certificate(serial));
    station::audit::Trail trail(ledger, actor, ctx.clock());
    KL_TRY(auto rec, trail.append("certificate.revoked", {{"serial", serial},
                                                          {"registration_id", cert ? cert->registration_id : ""},
                                                          {"reason", to_string(reason)}}));
    (void)rec;
    KL_CHECK(tx.commit());
  }
  log::get("ca")->info("revoked {} ({})", serial, to_string(reason));
  json doc = {{"serial", serial}, {"status", "revoked"}, {"reason", to_string(reason)}, {"revoked_at", iso_time(now)}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Revoked " << serial << " (" << to_string(reason) << "). Publish a new CRL with 'keyline ca crl'.\n";
  });
  return {};
}

Status ca_crl(const Context& ctx, const std::string& out, int days) {
  if (days < 1 || days > 366) return fail(Domain::usage, "--days must be 1 to 366");
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));
  station::audit::Trail trail(ledger, actor, ctx.clock());
  KL_TRY(auto tx, ledger.begin());
  KL_TRY(auto revoked, ledger.revoked());
  KL_TRY(std::uint64_t number, ledger.next_crl_number());
  std::vector<ca::RevokedEntry> entries;
  for (auto& r : revoked) {
    auto serial = from_hex(r.serial.size() % 2 ? "0" + r.serial : r.serial);
    auto reason = ca::parse_revocation_reason(r.revocation_reason);
    entries.push_back({serial.value_or(Bytes{}), TimePoint(std::chrono::seconds(r.revoked_at.value_or(0))),
                       reason.value_or(ca::RevocationReason::unspecified)});
  }
  KL_TRY(X509CrlPtr crl, opened.authority->crl(number, entries, std::chrono::days(days)));
  unsigned char* der_p = nullptr;
  int n = i2d_X509_CRL(crl.get(), &der_p);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding CRL " + std::to_string(number)));
  Bytes der(der_p, der_p + n);
  OPENSSL_free(der_p);
  std::int64_t now = seconds(ctx.clock().now());
  std::string pem = to_pem_crl(crl.get());
  std::optional<files::PendingFile> pending;
  if (!out.empty() && out != "-") {
    KL_TRY(auto file, files::PendingFile::create(out, pem, 0644));
    pending.emplace(std::move(file));
  }
  KL_CHECK(ledger.insert_crl({number, now, now + std::int64_t(days) * 86400, der}));
  KL_TRY(auto r1, trail.append("keystore.opened", {{"key_store", opened.key_store->uri()}}));
  KL_TRY(auto r2, trail.append("crl.issued", {{"crl_number", number}, {"revoked", entries.size()},
                                              {"next_update", iso_time(now + std::int64_t(days) * 86400)},
                                              {"sha256", sha256_hex(der)}}));
  (void)r1, (void)r2;
  KL_CHECK(checkpoint_if_due(ctx, config, *opened.key_store, trail));
  KL_CHECK(tx.commit());
  if (pending) {
    KL_CHECK(pending->publish());
    json doc = {{"crl_number", number}, {"revoked", entries.size()}, {"out", out},
                {"next_update", iso_time(now + std::int64_t(days) * 86400)}};
    ctx.print(doc, [&](std::ostream& os) {
      os << "CRL number " << number << " with " << entries.size() << " revoked certificate(s), next update "
         << iso_time(now + std::int64_t(days) * 86400) << " -> " << out << "\n";
    });
  } else {
    std::cout << pem;
  }
  return {};
}

Status ca_verification_cert(const Context& ctx, const std::string& code, const std::string& out) {
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));
  KL_TRY(X509Ptr cert, opened.authority->verification_certificate(code));
  std::string pem = to_pem(cert.get());
  KL_TRY(Bytes der, to_der(cert.get()));
  {
    station::audit::Trail trail(ledger, actor, ctx.clock());
    KL_TRY(auto tx, ledger.begin());
    KL_TRY(auto r1, trail.append("keystore.opened", {{"key_store", opened.key_store->uri()}}));
    KL_TRY(auto r2, trail.append("verification_certificate.issued", {{"code", code}, {"sha256", sha256_hex(der)}}));
    (void)r1, (void)r2;
    KL_CHECK(tx.commit());
  }
  KL_CHECK(write_output(out, pem));
  if (!out.empty() && out != "-") {
    json doc = {{"code", code}, {"out", out}};
    ctx.print(doc, [&](std::ostream& os) {
      os << "Wrote proof-of-possession certificate (CN=" << code << ") -> " << out
         << "; upload it to DPS to verify the CA certificate.\n";
    });
  }
  return {};
}

}  // namespace

void add_ca_commands(CLI::App& app, Handler& run) {
  auto* ca_cmd = app.add_subcommand("ca", "The certificate authority: create, issue, revoke");
  ca_cmd->require_subcommand(1);

  auto init_o = std::make_shared<InitOptions>();
  auto* init = ca_cmd->add_subcommand(
      "init",
      "Create the state dir, the ledger, a root CA and an intermediate CA signed by it\n"
      "(or, with --import-intermediate, accept an intermediate signed by an offline root)");
  init->add_option("--key-store", init_o->key_store, "Key store URI (default: file:keys inside the state dir)");
  init->add_option("--algorithm", init_o->algorithm, "CA key algorithm")
      ->check(CLI::IsMember({"ec-p256", "ec-p384", "rsa-3072"}))->capture_default_str();
  init->add_option("--root-subject", init_o->root_subject, "Root CA subject DN")->capture_default_str();
  init->add_option("--intermediate-subject", init_o->intermediate_subject, "Intermediate CA subject DN")->capture_default_str();
  init->add_option("--root-days", init_o->root_days, "Root validity in days")->capture_default_str();
  init->add_option("--intermediate-days", init_o->intermediate_days, "Intermediate validity in days")->capture_default_str();
  init->add_option("--import-intermediate", init_o->import_intermediate,
                   "PEM intermediate certificate signed elsewhere for the key store's key");
  init->add_option("--root", init_o->root_pem, "PEM root certificate that signed --import-intermediate");
  init->add_option("--station-id", init_o->station_id, "Station identifier recorded in the ledger and in the audit certificate's name: letters, digits, "
                   "space, . _ : - (1 to 64)")->capture_default_str();
  init->add_option("--root-key", init_o->root_key, "Label of the root key in the key store")->capture_default_str();
  init->add_option("--intermediate-key", init_o->intermediate_key, "Label of the intermediate key")->capture_default_str();
  init->add_option("--audit-key", init_o->audit_key, "Label of the audit signing key")->capture_default_str();
  init->callback([&run, init_o] { run = [init_o](const Context& c) { return ca_init(c, *init_o); }; });

  auto req_o = std::make_shared<RequestOptions>();
  auto* request = ca_cmd->add_subcommand(
      "request", "Generate the intermediate key in a key store and write its CSR for an offline root");
  request->add_option("--key-store", req_o->key_store, "Key store URI")->required();
  request->add_option("--subject", req_o->subject, "Intermediate subject DN, e.g. 'CN=Line 1 CA,O=Example'")->required();
  request->add_option("--out", req_o->out, "Where to write the CSR (PEM)")->required();
  request->add_option("--algorithm", req_o->algorithm, "Key algorithm")
      ->check(CLI::IsMember({"ec-p256", "ec-p384", "rsa-3072"}))->capture_default_str();
  request->add_option("--key-label", req_o->key_label, "Label of the key in the key store")->capture_default_str();
  request->callback([&run, req_o] { run = [req_o](const Context& c) { return ca_request(c, *req_o); }; });

  auto* show = ca_cmd->add_subcommand("show", "Issuer, key store, validity and certificate counts");
  show->callback([&run] { run = [](const Context& c) { return ca_show(c); }; });

  auto iss_o = std::make_shared<IssueOptions>();
  auto* issue = ca_cmd->add_subcommand("issue", "Issue one leaf certificate for a CSR (PEM)");
  issue->add_option("--csr", iss_o->csr, "CSR file (PEM), or - for standard input")->required();
  issue->add_option("--registration-id", iss_o->registration_id,
                    "Registration ID the CSR's CN must equal (default: the CN, validated)");
  issue->add_option("--device-serial", iss_o->device_serial, "Device serial number (IDevID profiles)");
  issue->add_option("--profile", iss_o->profile, "Profile in keyline.toml")->capture_default_str();
  issue->add_option("--out", iss_o->out, "Write the certificate here (default: stdout)");
  issue->add_flag("--chain", iss_o->chain, "Append the intermediate and root certificates");
  issue->add_flag("--reissue", iss_o->reissue, "Supersede an active certificate for the same registration ID");
  issue->callback([&run, iss_o] { run = [iss_o](const Context& c) { return ca_issue(c, *iss_o); }; });

  auto serial = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>("unspecified");
  auto* revoke = ca_cmd->add_subcommand("revoke", "Revoke a certificate by serial number");
  revoke->add_option("--serial", *serial, "Serial number (hex, as 'ledger certificates' shows)")->required();
  revoke->add_option("--reason", *reason,
                     "keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, "
                     "certificateHold, privilegeWithdrawn or unspecified")->capture_default_str();
  revoke->callback([&run, serial, reason] {
    run = [serial, reason](const Context& c) { return ca_revoke(c, *serial, *reason); };
  });

  auto crl_out = std::make_shared<std::string>();
  auto crl_days = std::make_shared<int>(7);
  auto* crl = ca_cmd->add_subcommand("crl", "Issue a v2 CRL of every revoked certificate");
  crl->add_option("--out", *crl_out, "Write the CRL (PEM) here (default: stdout)");
  crl->add_option("--days", *crl_days, "Days until nextUpdate")->capture_default_str();
  crl->callback([&run, crl_out, crl_days] {
    run = [crl_out, crl_days](const Context& c) { return ca_crl(c, *crl_out, *crl_days); };
  });

  add_batch_command(*ca_cmd, run);

  auto code = std::make_shared<std::string>();
  auto vc_out = std::make_shared<std::string>();
  auto* vc = ca_cmd->add_subcommand(
      "verification-cert", "DPS proof of possession: a certificate with CN = the verification code");
  vc->add_option("--code", *code, "Verification code from DPS")->required();
  vc->add_option("--out", *vc_out, "Write the certificate here (default: stdout)");
  vc->callback([&run, code, vc_out] {
    run = [code, vc_out](const Context& c) { return ca_verification_cert(c, *code, *vc_out); };
  });
}

}  // namespace keyline::cli
