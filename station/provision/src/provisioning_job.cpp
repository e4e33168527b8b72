#include "keyline/provision/provisioning_job.hpp"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <optional>

#include "keyline/ca/csr_policy.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/station/devices.hpp"
#include "keyline/station/dps/models.hpp"
#include "keyline/station/dps/sync.hpp"
#include "keyline/station/outbox.hpp"

namespace keyline::station::provision {

namespace {

std::int64_t epoch(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

ByteView bytes_of(const std::string& s) { return {reinterpret_cast<const unsigned char*>(s.data()), s.size()}; }

// PKCS#8 PrivateKeyInfo (RFC 5208), DER, for the device's private_key slot.
Result<SecretBytes> pkcs8_der(EVP_PKEY* key) {
  PKCS8_PRIV_KEY_INFO* info = EVP_PKEY2PKCS8(key);
  if (!info) return std::unexpected(openssl_error(Domain::openssl, "encoding the station-generated device key"));
  unsigned char* der = nullptr;
  int n = i2d_PKCS8_PRIV_KEY_INFO(info, &der);
  PKCS8_PRIV_KEY_INFO_free(info);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding the station-generated device key"));
  Bytes out(der, der + n);
  OPENSSL_clear_free(der, static_cast<std::size_t>(n));
  return SecretBytes(std::move(out));
}

Result<EvpPkeyPtr> new_p256() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (!k) return std::unexpected(openssl_error(Domain::openssl, "generating a device key"));
  return EvpPkeyPtr(k);
}

}  // namespace

Result<Mode> parse_mode(std::string_view t) {
  if (t == "x509-device-key") return Mode::x509_device_key;
  if (t == "x509-station-key") return Mode::x509_station_key;
  if (t == "symmetric-individual") return Mode::symmetric_individual;
  if (t == "symmetric-group") return Mode::symmetric_group;
  if (t == "tpm") return Mode::tpm;
  return fail(Domain::usage, "provisioning mode '" + std::string(t) +
                                 "' is unknown (known: x509-device-key, x509-station-key, symmetric-individual, "
                                 "symmetric-group, tpm)");
}

std::string_view to_string(Mode m) noexcept {
  switch (m) {
    case Mode::x509_device_key: return "x509-device-key";
    case Mode::x509_station_key: return "x509-station-key";
    case Mode::symmetric_individual: return "symmetric-individual";
    case Mode::symmetric_group: return "symmetric-group";
    case Mode::tpm: return "tpm";
  }
  return "?";
}

bool is_x509(Mode m) noexcept { return m == Mode::x509_device_key || m == Mode::x509_station_key; }

Result<ca::RegistrationId> registration_id_from(std::string_view tmpl, const protocol::Info& info, Mode mode) {
  std::string out;
  for (std::size_t i = 0; i < tmpl.size();) {
    if (tmpl[i] != '{') {
      out.push_back(tmpl[i++]);
      continue;
    }
    auto end = tmpl.find('}', i);
    if (end == std::string_view::npos)
      return fail(Domain::input, "registration ID template '" + std::string(tmpl) + "': unclosed '{'");
    std::string_view field = tmpl.substr(i + 1, end - i - 1);
    if (field == "model") out += info.model;
    else if (field == "serial") out += info.serial_number;
    else if (field == "hardware_id") out += to_hex(info.hardware_id);
    else if (field == "firmware") out += info.firmware_version;
    else
      return fail(Domain::input, "registration ID template '" + std::string(tmpl) + "': unknown field {" +
                                     std::string(field) + "} (known: model, serial, hardware_id, firmware)");
    i = end + 1;
  }
  auto id = ca::RegistrationId::parse(out, is_x509(mode) ? ca::RegistrationId::kMaxCnLength
                                                         : ca::RegistrationId::kMaxLength);
  if (!id)
    return std::unexpected(id.error().with_context("registration ID '" + out + "' from template '" +
                                                   std::string(tmpl) + "'"));
  return id;
}

struct ProvisioningJob::State {
  DeviceRecord device;
  std::optional<ca::RegistrationId> regid;
  JobResult result;
  std::optional<CertificateRecord> cert;  // the certificate the device gets
  std::vector<std::pair<protocol::Slot, protocol::Digest>> written;
};

Status ProvisioningJob::record(State& st, const std::string& step, const std::string& outcome,
                               const std::string& detail, Ledger::Durability durability,
                               const std::function<Status()>& extra) {
  std::lock_guard lock(ctx_.ledger_mutex);
  Devices devices(ctx_.ledger);
  st.device.updated_at = epoch(ctx_.clock.now());
  KL_TRY(auto tx, ctx_.ledger.begin(durability));
  if (extra) KL_CHECK(extra());
  KL_CHECK(devices.save(st.device));
  KL_CHECK(devices.add_step({st.device.id, step, outcome, detail, st.device.updated_at}));
  {
    audit::Trail trail(ctx_.ledger, ctx_.actor, ctx_.clock);
    nlohmann::json body = {{"device_id", st.device.id},
                           {"serial_number", st.device.serial_number},
                           {"registration_id", st.device.registration_id},
                           {"mode", st.device.mode},
                           {"outcome", outcome},
                           {"detail", detail}};
    KL_TRY(auto rec, trail.append("device." + step, body));
    (void)rec;
    if (ctx_.after_record) KL_CHECK(ctx_.after_record(trail));
  }
  KL_CHECK(tx.commit());
  st.result.steps.push_back(step + (outcome == "ok" ? "" : ":" + outcome));
  return {};
}

Status ProvisioningJob::fail_device(State& st, const std::string& step, const Error& e) {
  if (st.device.id == 0 && st.device.serial_number.empty()) return {};  // nothing known to record against
  st.device.state = "failed";
  st.device.last_error = e.message();
  log::get("provision")->warn("{} ({}) failed at {}: {}", st.device.registration_id, st.device.serial_number, step,
                              e.message());
  return record(st, step, "failed", e.message(), Ledger::Durability::durable);
}

Result<JobResult> ProvisioningJob::run() {
  auto started = std::chrono::steady_clock::now();
  const std::uint64_t sent0 = session_.link().bytes_sent(), received0 = session_.link().bytes_received(),
                      retries0 = session_.stats().retries;
  State st;
  st.result.mode = std::string(to_string(settings_.mode));
  Status s = run_steps(st);
  st.result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  st.result.bytes_sent = session_.link().bytes_sent() - sent0;
  st.result.bytes_received = session_.link().bytes_received() - received0;
  st.result.retries = session_.stats().retries - retries0;
  if (!s) return std::unexpected(s.error());
  return st.result;
}

Status ProvisioningJob::run_steps(State& st) {
  std::string step = "info";
  auto begin = [&](const char* name) -> Status {
    step = name;
    if (ctx_.should_stop && ctx_.should_stop())
      return fail(Domain::device, "interrupted before step " + step +
                                      ": the line is shutting down; plug the device in again to resume");
    if (ctx_.on_step) ctx_.on_step(step);
    return {};
  };
  // Every error after the device row exists is recorded before it is returned.
  auto failed = [&](const Error& e) -> Status {
    if (auto r = fail_device(st, step, e); !r)
      return std::unexpected(e.with_context("and recording the failure failed too (" + r.error().message() + ")"));
    return std::unexpected(e);
  };
#define KL_STEP(decl, expr)                           \
  auto KL_TRY_CAT(step_, __LINE__) = (expr);          \
  if (!KL_TRY_CAT(step_, __LINE__)) return failed(KL_TRY_CAT(step_, __LINE__).error()); \
  decl = std::move(*KL_TRY_CAT(step_, __LINE__))
#define KL_STEP_CHECK(expr)                     \
  do {                                          \
    auto kl_s_ = (expr);                        \
    if (!kl_s_) return failed(kl_s_.error());   \
  } while (0)

  KL_STEP_CHECK(begin("info"));
  KL_TRY(protocol::Info info, session_.info());
  st.result.serial_number = info.serial_number;
  {
    std::lock_guard lock(ctx_.ledger_mutex);
    Devices devices(ctx_.ledger);
    KL_TRY(auto found, devices.find(info.model, info.serial_number, to_hex(info.hardware_id)));
    if (found) st.device = std::move(*found);
  }
  if (st.device.id == 0) {
    st.device.serial_number = info.serial_number;
    st.device.model = info.model;
    st.device.hardware_id = to_hex(info.hardware_id);
    st.device.created_at = epoch(ctx_.clock.now());
  }
  st.device.mode = std::string(to_string(settings_.mode));
  st.device.profile = settings_.profile ? settings_.profile->name : "";
  auto regid = registration_id_from(settings_.registration_id_template, info, settings_.mode);
  if (!regid) {
    st.device.registration_id = "";
    return failed(regid.error());
  }
  st.regid = *regid;
  st.device.registration_id = regid->str();
  st.result.registration_id = regid->str();
  KL_STEP(protocol::DeviceStatus status, session_.status());
  if (status.locked) {
    if (st.device.state == "done" && st.device.locked) {
      st.result.state = "already done";
      st.result.cert_serial = st.device.cert_serial;
      KL_CHECK(record(st, "info", "skipped", "device is locked and was provisioned before: already done"));
      return {};
    }
    return failed(Error(Domain::device,
                        "device " + info.serial_number +
                            " is locked but this station's ledger has no completed provisioning for it; "
                            "it was provisioned elsewhere or its ledger row was lost -- take it off the line"));
  }
  st.device.state = "in_progress";
  st.device.last_error.clear();
  KL_CHECK(record(st, "info", "ok",
                  "model " + info.model + ", firmware " + info.firmware_version + ", registration ID " +
                      regid->str()));

  const Mode mode = settings_.mode;
  if (is_x509(mode)) {
    if (!settings_.profile || !ctx_.authority)
      return failed(Error(Domain::internal, "x509 provisioning without a profile or an authority"));
    // Resume: does the device still hold the key of its active certificate?
    if (!st.device.cert_serial.empty() && status.has_device_key) {
      std::optional<CertificateRecord> old;
      {
        std::lock_guard lock(ctx_.ledger_mutex);
        KL_TRY(old, ctx_.ledger.certificate(st.device.cert_serial));
      }
      if (old && old->status == "active" && old->registration_id == regid->str()) {
        KL_STEP_CHECK(begin("resume"));
        Bytes nonce(32);
        ctx_.rng.fill(nonce);
        KL_STEP(Bytes sig, session_.challenge(nonce));
        const unsigned char* p = old->der.data();
        X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(old->der.size())));
        if (!x) return failed(Error(Domain::state, "certificate " + old->serial + " in the ledger does not parse"));
        if (verify_challenge(X509_get0_pubkey(x.get()), nonce, sig)) {
          st.cert = std::move(old);
          KL_CHECK(record(st, "resume", "ok",
                          "device holds the key of certificate " + st.cert->serial + "; re-sending it"));
        } else {
          KL_CHECK(record(st, "resume", "ok",
                          "device key changed since certificate " + old->serial + "; issuing a new one"));
        }
      }
    }
    if (!st.cert) {
      Bytes spki;
      std::optional<SecretBytes> private_key;
      if (mode == Mode::x509_device_key) {
        KL_STEP_CHECK(begin("keygen"));
        KL_STEP(Bytes csr_der, session_.keygen(regid->str()));
        KL_CHECK(record(st, "keygen", "ok", "CSR of " + std::to_string(csr_der.size()) + " bytes"));
        KL_STEP_CHECK(begin("csr"));
        std::string csr_bytes(csr_der.begin(), csr_der.end());
        KL_STEP(X509ReqPtr csr, ca::parse_csr(csr_bytes, "device " + info.serial_number, ca::CsrEncoding::der));
        KL_STEP(ca::AcceptedCsr accepted,
                ca::check_csr(*csr, *settings_.profile, *regid, "CSR from device " + info.serial_number));
        spki = accepted.public_key;
        KL_CHECK(record(st, "csr", "ok", "accepted: CN " + regid->str()));
      } else {
        KL_STEP_CHECK(begin("station_key"));
        KL_STEP(EvpPkeyPtr key, new_p256());
        KL_STEP(spki, hsm::public_key_der(key.get()));
        KL_STEP(auto alg, ca::check_key(key.get(), *settings_.profile, "station-generated key"));
        (void)alg;
        KL_STEP(SecretBytes der, pkcs8_der(key.get()));
        private_key.emplace(std::move(der));
        KL_CHECK(record(st, "station_key", "ok", "P-256 key generated by the station"));
      }
      KL_STEP_CHECK(begin("issue"));
      ca::IssueRequest request{*regid, spki, info.serial_number};
      KL_STEP(ca::IssuedCertificate cert, ctx_.authority->issue(request, *settings_.profile));
      CertificateRecord rec;
      rec.serial = cert.serial_hex;
      rec.registration_id = cert.registration_id;
      rec.profile = settings_.profile->name;
      rec.subject = cert.subject;
      rec.cert_sha256 = cert.cert_sha256;
      rec.pubkey_sha256 = cert.pubkey_sha256;
      rec.not_before = epoch(cert.not_before);
      rec.not_after = epoch(cert.not_after);
      rec.issued_at = epoch(ctx_.clock.now());
      rec.der = cert.der;
      rec.operator_name = ctx_.actor.operator_name;
      rec.device_serial = info.serial_number;
      std::string superseded;
      st.device.cert_serial = rec.serial;
      st.device.pubkey_sha256 = rec.pubkey_sha256;
      KL_CHECK(record(st, "issue", "ok", "certificate " + rec.serial, Ledger::Durability::durable, [&]() -> Status {
        KL_TRY(auto prev, ctx_.ledger.active_ref(rec.registration_id, rec.profile));
        if (prev) superseded = prev->serial;
        KL_CHECK(ctx_.ledger.insert_certificate(rec, true));
        audit::Trail trail(ctx_.ledger, ctx_.actor, ctx_.clock);
        KL_TRY(auto r, trail.append("certificate.issued", {{"serial", rec.serial},
                                                          {"registration_id", rec.registration_id},
                                                          {"profile", rec.profile},
                                                          {"cert_sha256", rec.cert_sha256},
                                                          {"pubkey_sha256", rec.pubkey_sha256},
                                                          {"device_serial", rec.device_serial},
                                                          {"superseded", superseded}}));
        (void)r;
        return {};
      }));
      st.result.reissued = !superseded.empty();
      st.cert = std::move(rec);
      if (private_key) {
        KL_STEP_CHECK(begin("write_key"));
        KL_STEP(auto d, session_.write(protocol::Slot::private_key, private_key->reveal()));
        (void)d;
        KL_CHECK(record(st, "write_key", "ok", "private key written (" + std::to_string(private_key->reveal().size()) +
                                                   " bytes)"));
      }
    }
    st.result.cert_serial = st.cert->serial;
    KL_STEP_CHECK(begin("write_chain"));
    const unsigned char* p = st.cert->der.data();
    X509Ptr leaf(d2i_X509(nullptr, &p, static_cast<long>(st.cert->der.size())));
    if (!leaf) return failed(Error(Domain::state, "certificate " + st.cert->serial + " does not parse"));
    std::string chain = to_pem(leaf.get()) + ctx_.authority->chain_pem();
    KL_STEP(protocol::Digest dc, session_.write(protocol::Slot::cert_chain, bytes_of(chain)));
    st.written.emplace_back(protocol::Slot::cert_chain, dc);
    KL_CHECK(record(st, "write_chain", "ok", "certificate " + st.cert->serial + " and its chain"));
  } else if (mode == Mode::tpm) {
    KL_STEP_CHECK(begin("get_ek"));
    KL_STEP(Bytes ek, session_.get_ek());
    st.device.endorsement_key = base64_encode(ek);
    st.device.pubkey_sha256 = sha256_hex(ek);
    KL_CHECK(record(st, "get_ek", "ok", "endorsement key SHA-256 " + st.device.pubkey_sha256));
  } else {
    KL_STEP_CHECK(begin("write_symmetric_key"));
    if (!settings_.derivation_key)
      return failed(Error(Domain::usage, std::string(mode == Mode::symmetric_group ? "[provision] group_key"
                                                                                   : "[provision] individual_key") +
                                             " (hsm:LABEL) is required for mode " + std::string(to_string(mode))));
    KL_STEP(Bytes derived, settings_.derivation_key->hmac_sha256(bytes_of(regid->str())));
    SecretBytes key(std::move(derived));
    KL_STEP(protocol::Digest dk, session_.write(protocol::Slot::symmetric_key, key.reveal()));
    st.written.emplace_back(protocol::Slot::symmetric_key, dk);
    KL_CHECK(record(st, "write_symmetric_key", "ok", "derived from " + settings_.derivation_key_ref));
  }

  if (!settings_.id_scope.empty()) {
    KL_STEP_CHECK(begin("write_dps"));
    Bytes dps = protocol::encode_dps_settings({settings_.id_scope, settings_.global_endpoint, regid->str()});
    KL_STEP(protocol::Digest dd, session_.write(protocol::Slot::dps_settings, dps));
    st.written.emplace_back(protocol::Slot::dps_settings, dd);
    KL_CHECK(record(st, "write_dps", "ok", "ID scope " + settings_.id_scope + ", " + settings_.global_endpoint));
  }

  KL_STEP_CHECK(begin("read_hash"));
  for (auto& [slot, digest] : st.written) {
    KL_STEP(protocol::Digest got, session_.read_hash(slot));
    if (got != digest)
      return failed(Error(Domain::device, "device " + info.serial_number + ": slot " +
                                              std::string(protocol::to_string(slot)) +
                                              " does not hold what was written (READ_HASH differs)"));
  }
  KL_CHECK(record(st, "read_hash", "ok", std::to_string(st.written.size()) + " slot(s) verified"));

  if (is_x509(mode)) {
    KL_STEP_CHECK(begin("challenge"));
    Bytes nonce(32);
    ctx_.rng.fill(nonce);
    KL_STEP(Bytes sig, session_.challenge(nonce));
    const unsigned char* p = st.cert->der.data();
    X509Ptr leaf(d2i_X509(nullptr, &p, static_cast<long>(st.cert->der.size())));
    if (auto v = verify_challenge(X509_get0_pubkey(leaf.get()), nonce, sig); !v)
      return failed(v.error().with_context("device " + info.serial_number + ": CHALLENGE refused, not locking"));
    KL_CHECK(record(st, "challenge", "ok", "device proved possession of the certificate's key"));
  }

  KL_STEP_CHECK(begin("lock"));
  KL_STEP_CHECK(session_.lock());
  st.device.locked = true;
  st.device.state = "done";
  st.result.state = "done";
  // The DPS enrollment this device needs, queued with its final step.
  std::optional<nlohmann::json> enrollment;
  if (is_x509(mode) && !settings_.group_enrollment) {
    const unsigned char* p = st.cert->der.data();
    X509Ptr leaf(d2i_X509(nullptr, &p, static_cast<long>(st.cert->der.size())));
    enrollment = dps::Enrollment::individual(regid->str()).x509_client_certificates(to_pem(leaf.get())).json();
  } else if (mode == Mode::symmetric_individual) {
    enrollment = dps::with_key_source(dps::Enrollment::individual(regid->str()).json(), settings_.derivation_key_ref);
  } else if (mode == Mode::tpm) {
    enrollment = dps::Enrollment::individual(regid->str()).tpm(st.device.endorsement_key).json();
  }
  std::string detail = enrollment ? "provisioning closed; DPS individual enrollment queued"
                                  : "provisioning closed; covered by a DPS enrollment group";
  KL_CHECK(record(st, "lock", "ok", detail, Ledger::Durability::durable, [&]() -> Status {
    if (!enrollment) return {};
    Outbox outbox(ctx_.ledger);
    KL_TRY(auto id, outbox.enqueue("individual", "create", regid->str(), enrollment->dump(), epoch(ctx_.clock.now())));
    (void)id;
    return {};
  }));
#undef KL_STEP
#undef KL_STEP_CHECK
  return {};
}

}  // namespace keyline::station::provision
