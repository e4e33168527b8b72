#pragma once
// The keyline program: shared context of all sub-commands.

#include <functional>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/station/state_dir.hpp"

namespace keyline::cli {

struct Globals {
  std::string state_dir;
  std::string config_file;
  std::string log_level;
  std::string log_format = "text";
  std::string operator_name;  // --operator
  bool json = false;
};

// What a command handler gets: resolved state dir, clock, rng, output mode.
class Context {
 public:
  Context(const Globals& g, const Clock& clock, Rng& rng);

  const station::StateDir& state() const { return state_; }
  // keyline.toml (--config, else STATE/keyline.toml) for a command that uses
  // it, checked with check_station_id: commands load it through here (dps
  // infra, which parses the file itself, calls check_station_id).
  Result<station::Config> config() const;
  const Clock& clock() const { return clock_; }
  Rng& rng() const { return rng_; }
  bool json() const { return json_; }

  // Who runs a state-changing command: --operator, KEYLINE_OPERATOR, then
  // [audit] operator. A usage error when none is set and one is required.
  Result<station::audit::Actor> actor(const station::Config& config) const;
  // For `ca init`, before any configuration exists.
  Result<std::string> operator_name(bool required) const;

  // A command that completed but not fully (batch: partial, interrupted)
  // says so here; main() exits with it after the command's own output.
  void set_outcome(ExitCode code) const { outcome_ = code; }
  ExitCode outcome() const { return outcome_; }

  // Prints a JSON document (with --json) or the text rendering.
  void print(const nlohmann::json& doc, const std::function<void(std::ostream&)>& text) const;

 private:
  station::StateDir state_;
  const Clock& clock_;
  Rng& rng_;
  bool json_;
  std::string operator_flag_;
  mutable ExitCode outcome_ = ExitCode::ok;
};

using Handler = std::function<Status(const Context&)>;

// Each registers its sub-commands; the handler to run is stored in `run`.
void add_ca_commands(CLI::App& app, Handler& run);
void add_ledger_commands(CLI::App& app, Handler& run);
void add_batch_command(CLI::App& ca_cmd, Handler& run);
void add_hsm_commands(CLI::App& app, Handler& run);
void add_audit_commands(CLI::App& app, Handler& run);

// [station] id in `config` must be the station id `ca init` recorded in the
// ledger (and in the audit certificate's name, CN=Keyline audit ID): edited
// afterwards, the audit records and exports would name another station and
// fail verification. A state error naming both ids, the file, and what to do.
// Nothing to compare before `ca init` or in a ledger without the record.
Status check_station_id(const Context& ctx, const station::Config& config);

// The ledger for a command that only reads it (Ledger::open_readonly): it
// works on a read-only copy of the state dir and changes nothing.
Result<station::Ledger> open_ledger_readonly(const Context& ctx);

// The audit key (label [audit] key in the CA key store) with its certificate
// chain (STATE/audit.pem, then chain.pem).
Result<station::audit::AuditKey> open_audit_key(const Context& ctx, const station::Config& config,
                                                hsm::KeyStore& store);
// The audit key's certificate (for STATE/audit.pem) and its SHA-256.
struct AuditCertificate {
  std::string pem;
  std::string sha256;
};
// Generates the audit key `label` in `store` and certifies it with the
// intermediate (CN=Keyline audit STATION_ID). Writes nothing else: the
// caller writes STATE/audit.pem once the key is recorded. A failure after the
// key was generated destroys it again (undo_unrecorded_key).
Result<AuditCertificate> create_audit_key(const Context& ctx, hsm::KeyStore& store, const std::string& label,
                                          const hsm::Signer& issuer_key, const X509& issuer,
                                          const std::string& station_id);

// A key the station created whose record did not reach the ledger (the
// append or the commit failed): destroys it again, best effort, and returns
// `cause` with what became of the key -- removed, or left behind and to be
// removed by hand -- so no key stays in the store that the ledger does not know.
enum class KeyKind { signing, secret };
Error undo_unrecorded_key(hsm::KeyStore& store, KeyKind kind, const std::string& label, const Error& cause);
// A signed checkpoint when the trail is due one; a missing audit key only
// warns (older state dirs: `keyline audit key create`).
Status checkpoint_if_due(const Context& ctx, const station::Config& config, hsm::KeyStore& store,
                         station::audit::Trail& trail);

// The audit body of a "certificate.issued" record (no secrets: fingerprints only).
nlohmann::json issued_body(const station::CertificateRecord& r, const std::string& superseded);
void add_dps_commands(CLI::App& app, Handler& run);
// `keyline dps infra`, added to the `dps` command group.
void add_infra_command(CLI::App& dps, Handler& run);

// Reads a whole input file for a command; "-" is standard input.
Result<std::string> read_input(const std::string& path, std::size_t max_bytes, const char* what);

// Writes `data` to `out` atomically, or to stdout when `out` is empty.
Status write_output(const std::string& out, const std::string& data, unsigned mode = 0644);

std::string iso_time(std::int64_t seconds);

}  // namespace keyline::cli
