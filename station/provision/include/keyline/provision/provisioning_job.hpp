#pragma once
// provision::ProvisioningJob -- one device's provisioning, as a state
// machine over a DeviceSession, every step recorded in the ledger:
//
//   INFO -> registration ID (template over INFO fields, validated) ->
//   by mode:
//     x509-device-key      KEYGEN (CN = registration ID) -> CSR -> ca::check_csr -> issue
//     x509-station-key     the station makes a P-256 key -> issue -> WRITE private_key (PKCS#8)
//     symmetric-individual WRITE symmetric_key = HMAC-SHA256(master secret, registration ID)
//     symmetric-group      WRITE symmetric_key = HMAC-SHA256(group key, registration ID)
//     tpm                  GET_EK (recorded for a TPM individual enrollment)
//   -> WRITE cert_chain (x509) -> WRITE dps_settings (when an ID scope is set)
//   -> READ_HASH of every slot written -> CHALLENGE (x509: the device signs a
//   station nonce; checked against the certificate's key) -> LOCK, and in the
//   same transaction the DPS enrollment the device needs is queued in the
//   enrollment outbox: x509 individual (the leaf as client certificate)
//   unless a group enrollment covers the device, symmetric-individual with
//   keySource "hsm:LABEL" (never the key), tpm with the endorsement key.
//
// Both symmetric modes compute the key inside the key store
// (hsm::SecretKey::hmac_sha256): no device key is stored anywhere, and the
// DPS sync recomputes the same key from the same "hsm:LABEL" reference.
//
// Each step commits, in one ledger transaction, the device row, a
// provisioning_steps row and an audit record ("device.STEP"), so a device
// that goes away at any step resumes when it comes back (only the issuing,
// final and failed steps wait for the disk; see record()):
//   * a locked device whose ledger row is done is reported as already done;
//   * a device that still holds the key of its active certificate (checked
//     with a CHALLENGE) gets that certificate again -- it is not re-issued;
//   * a device whose key changed gets a new certificate; the old one becomes
//     "superseded".
// A failing device is recorded as failed, with its error, before the error
// is returned. Thread-safety: jobs on different devices may run at once when
// they share `ledger_mutex` (the ledger connection is used under it).

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/profile.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/hsm/signer.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/station/ledger.hpp"

namespace keyline::station::provision {

enum class Mode { x509_device_key, x509_station_key, symmetric_individual, symmetric_group, tpm };
Result<Mode> parse_mode(std::string_view text);
std::string_view to_string(Mode m) noexcept;
bool is_x509(Mode m) noexcept;

// Expands {model}, {serial}, {hardware_id}, {firmware} in `tmpl` with INFO
// fields and validates the result as a registration ID (64 characters at
// most for x509 modes: it becomes the certificate CN).
Result<ca::RegistrationId> registration_id_from(std::string_view tmpl, const protocol::Info& info, Mode mode);

struct JobSettings {
  Mode mode = Mode::x509_device_key;
  std::string registration_id_template = "{model}-{serial}";
  const ca::Profile* profile = nullptr;  // x509 modes
  // symmetric modes: the key-store secret the device key is derived from,
  // and its reference ("hsm:LABEL") for the records.
  std::shared_ptr<const hsm::SecretKey> derivation_key;
  std::string derivation_key_ref;
  std::string id_scope;  // empty: no DPS settings written
  std::string global_endpoint;
  // x509 modes: true when a DPS enrollment group covers the devices (no
  // individual enrollment is queued); symmetric-group never queues one.
  bool group_enrollment = false;
};

struct JobContext {
  Ledger& ledger;
  std::mutex& ledger_mutex;
  const ca::Authority* authority = nullptr;  // x509 modes
  audit::Actor actor;
  const Clock& clock;
  Rng& rng;
  // Called inside each step's transaction after its audit record (e.g. a
  // signed checkpoint when due); may be empty.
  std::function<Status(audit::Trail&)> after_record;
  // Called (outside the ledger lock) when a step starts, for status lines.
  std::function<void(std::string_view step)> on_step;
  // Asked before each step; true stops the job there (recorded as failed,
  // "interrupted"), so a shutdown finishes the step in flight and records it.
  std::function<bool()> should_stop;
};

struct JobResult {
  std::string registration_id;
  std::string mode;
  std::string serial_number;
  std::string cert_serial;
  std::string state;  // "done" or "already done"
  std::vector<std::string> steps;
  double seconds = 0;
  bool reissued = false;  // a new certificate superseded an older one
  // What crossed the link during the job, and frames sent again.
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t retries = 0;
};

class ProvisioningJob {
 public:
  ProvisioningJob(DeviceSession& session, const JobSettings& settings, JobContext& context)
      : session_(session), settings_(settings), ctx_(context) {}
  // Provisions the device; on failure the device row says failed, with the error.
  Result<JobResult> run();

 private:
  struct State;
  // Commits one step. Steps that are safe to redo are `deferred` (no fsync);
  // an issued certificate (before it leaves the station), the final step and
  // failures are `durable`, which also makes every step before them durable.
  Status record(State& st, const std::string& step, const std::string& outcome, const std::string& detail,
                Ledger::Durability durability = Ledger::Durability::deferred,
                const std::function<Status()>& extra = {});
  Status fail_device(State& st, const std::string& step, const Error& e);
  Status run_steps(State& st);
  DeviceSession& session_;
  const JobSettings& settings_;
  JobContext& ctx_;
};

}  // namespace keyline::station::provision
