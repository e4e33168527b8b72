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

// The audit key (label [audit] key in the CA key store) with its certificate
// chain (STATE/audit.pem, then chain.pem).
Result<station::audit::AuditKey> open_audit_key(const Context& ctx, const station::Config& config,
                                                hsm::KeyStore& store);
// Generates the audit key in `store` and certifies it with the intermediate;
// writes STATE/audit.pem. Returns the certificate's SHA-256.
Result<std::string> create_audit_key(const Context& ctx, hsm::KeyStore& store, const std::string& label,
                                     const hsm::Signer& issuer_key, const X509& issuer, const std::string& station_id);
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
