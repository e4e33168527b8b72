// Who acts (operator), and the audit key every command that signs uses.

#include <cstdlib>

#include "app.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/log.hpp"

namespace keyline::cli {

namespace {

// The operator name goes into every record. It must be UTF-8: the canonical
// form escapes characters, and bytes that are not UTF-8 would all become
// U+FFFD there, so the stored name could be changed without changing a hash.
Status check_operator(const std::string& name, const char* source) {
  if (name.size() > 128) return fail(Domain::usage, std::string(source) + ": the operator name is longer than 128 characters");
  if (!station::audit::valid_utf8(name))
    return fail(Domain::usage, std::string(source) + ": the operator name is not valid UTF-8 (check the terminal's "
                                                     "or the file's encoding)");
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f)
      return fail(Domain::usage, std::string(source) + ": the operator name contains a control character");
  return {};
}

}  // namespace

Result<std::string> Context::operator_name(bool required) const {
  if (!operator_flag_.empty()) {
    KL_CHECK(check_operator(operator_flag_, "--operator"));
    return operator_flag_;
  }
  const char* env = std::getenv("KEYLINE_OPERATOR");
  if (env && *env) {
    KL_CHECK(check_operator(env, "KEYLINE_OPERATOR"));
    return std::string(env);
  }
  if (required)
    return fail(Domain::usage,
                "this command changes the station's state and must name its operator for the audit trail: "
                "give --operator NAME, set KEYLINE_OPERATOR, or set [audit] operator in keyline.toml");
  return std::string();
}

Result<station::audit::Actor> Context::actor(const station::Config& config) const {
  KL_TRY(std::string name, operator_name(false));
  if (name.empty()) name = config.audit.operator_name;
  if (name.empty()) {
    if (config.audit.require_operator) {
      auto refused = operator_name(true);
      return std::unexpected(refused.error());
    }
    name = "unnamed";
  }
  KL_CHECK(check_operator(name, "[audit] operator"));
  return station::audit::Actor{config.station_id, name};
}

Result<AuditCertificate> create_audit_key(const Context& ctx, hsm::KeyStore& store, const std::string& label,
                                          const hsm::Signer& issuer_key, const X509& issuer,
                                          const std::string& station_id) {
  KL_CHECK(hsm::validate_label(label));
  KL_TRY(X509NamePtr subject, parse_dn("CN=Keyline audit " + station_id));
  KL_TRY(auto key, store.generate_signing_key(label, hsm::Algorithm::ec_p256));
  auto certified = [&]() -> Result<AuditCertificate> {
    KL_TRY(X509Ptr cert, ca::make_signing_certificate(issuer_key, issuer, key->public_key(), *subject, 36500,
                                                      ctx.clock(), ctx.rng()));
    KL_TRY(Bytes der, to_der(cert.get()));
    return AuditCertificate{to_pem(cert.get()), sha256_hex(der)};
  }();
  if (!certified)
    return std::unexpected(undo_unrecorded_key(store, KeyKind::signing, label, certified.error()));
  return certified;
}

Error undo_unrecorded_key(hsm::KeyStore& store, KeyKind kind, const std::string& label, const Error& cause) {
  const std::string what = (kind == KeyKind::secret ? "secret '" : "key '") + label + "'";
  Status undone = kind == KeyKind::secret ? store.destroy_secret(label) : store.destroy_signing_key(label);
  if (undone)
    return Error(cause.domain(),
                 cause.message() + "; the new " + what + " was removed from " + store.uri() +
                     " again: nothing changed",
                 cause.native_code());
  return Error(cause.domain(),
               cause.message() + "; the new " + what + " could not be removed from " + store.uri() + " (" +
                   undone.error().message() +
                   "): it is there without a record in the ledger -- remove it by hand "
                   "before creating it again",
               cause.native_code());
}

Result<station::audit::AuditKey> open_audit_key(const Context& ctx, const station::Config& config,
                                                hsm::KeyStore& store) {
  auto cert_text = files::read(ctx.state().audit_cert_path(), 1 << 20);
  if (!cert_text)
    return fail(Domain::state, "this station has no audit key certificate (" + ctx.state().audit_cert_path().string() +
                                   "); create the audit key with 'keyline audit key create'");
  KL_TRY(X509Ptr cert, x509_from_pem(*cert_text, ctx.state().audit_cert_path().string()));
  KL_TRY(Bytes der, to_der(cert.get()));
  station::audit::AuditKey key;
  KL_TRY(key.signer, store.signer(config.audit.key));
  KL_TRY(auto pub, hsm::public_key_der(X509_get0_pubkey(cert.get())));
  if (pub != key.signer->public_key())
    return fail(Domain::state, ctx.state().audit_cert_path().string() + " does not certify the audit key " +
                                   key.signer->describe() + "; recreate it with 'keyline audit key create'");
  key.id = sha256_hex(der);
  key.chain_pem.push_back(to_pem(cert.get()));
  KL_TRY(std::string inter, files::read(ctx.state().intermediate_cert_path(), 1 << 20));
  KL_TRY(std::string root, files::read(ctx.state().root_cert_path(), 1 << 20));
  key.chain_pem.push_back(inter);
  key.chain_pem.push_back(root);
  return key;
}

Status checkpoint_if_due(const Context& ctx, const station::Config& config, hsm::KeyStore& store,
                         station::audit::Trail& trail) {
  // The key is opened only when a checkpoint is due (this runs after every record).
  KL_TRY(bool due, trail.checkpoint_due(config.audit.checkpoint_interval));
  if (!due) return {};
  auto key = open_audit_key(ctx, config, store);
  if (!key) {
    log::get("audit")->warn("no signed checkpoint: {}", key.error().message());
    return {};
  }
  return trail.checkpoint_if_due(*key->signer, key->id, config.audit.checkpoint_interval);
}

}  // namespace keyline::cli
