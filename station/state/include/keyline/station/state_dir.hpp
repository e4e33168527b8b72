#pragma once
// station::StateDir -- the station's state directory and what lives in it:
//
//   STATE/keyline.toml       configuration (key store URI, key labels, profiles)
//   STATE/ledger.db          the ledger (SQLite, mode 0600); its presence means "initialised"
//   STATE/root.pem           the root CA certificate
//   STATE/intermediate.pem   the issuing (intermediate) CA certificate
//   STATE/chain.pem          intermediate then root
//   STATE/audit.pem          the audit key's certificate (signed by the intermediate)
//   STATE/keys/              the development file: key store, when used
//
// open_authority() wires config + key store + certificates into a
// ca::Authority; every failure says which file or key and what to do.

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/profile.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/station/ledger.hpp"

namespace keyline::station {

namespace fs = std::filesystem;

struct CaConfig {
  std::string key_store = "file:keys";
  std::string root_key = "keyline-root";
  std::string intermediate_key = "keyline-intermediate";
};

// [audit]: who acts, and how the trail is signed.
struct AuditConfig {
  std::string operator_name;     // default operator when --operator / KEYLINE_OPERATOR are absent
  bool require_operator = true;  // state-changing commands refuse to run without one
  std::int64_t checkpoint_interval = 1000;  // records between signed checkpoints (0: only at export)
  std::string key = "keyline-audit";        // label of the audit signing key in the CA key store
};

// [dps] in keyline.toml (scalar keys only; sub-tables belong to other parts).
struct DpsConfig {
  std::string connection_string_source;  // file:PATH or env:VAR
  std::string id_scope;
  std::string global_endpoint = "global.azure-devices-provisioning.net";
  std::string ca_file;                   // extra trust anchors (the emulator's CA)
  double quota_per_minute = 1000;        // the DPS unit quota (operations/minute)
};

// [provision]: how devices on the line are provisioned (README "Provisioning
// and the line"); every key can be overridden per command.
struct ProvisionConfig {
  std::string mode = "x509-device-key";  // x509-device-key | x509-station-key | symmetric-individual | symmetric-group | tpm
  std::string registration_id_template = "{model}-{serial}";
  std::string profile = "device";
  std::string group_key;       // hsm:LABEL (symmetric-group)
  std::string individual_key;  // hsm:LABEL (symmetric-individual: the master secret)
  std::string id_scope;        // DPS ID scope written to the device (empty: no DPS settings)
  std::string global_endpoint = "global.azure-devices-provisioning.net";
  std::string enrollment = "individual";  // individual | group (x509: which DPS enrollment covers the device)
  std::int64_t timeout_ms = 2000;
  unsigned baud = 115200;
  bool rtscts = false;  // RTS/CTS hardware flow control on serial ports
};

struct Config {
  std::string station_id = "station-1";
  CaConfig ca;
  AuditConfig audit;
  DpsConfig dps;
  ProvisionConfig provision;
  std::map<std::string, ca::Profile> profiles;
  fs::path source;  // where it was read from
};

// Parses keyline.toml text. Unknown top-level tables are errors naming them.
Result<Config> parse_config(std::string_view text, std::string_view source);
// A station ID as `ca init --station-id` takes it: 1 to 64 letters, digits,
// spaces (not at either end) and . _ : - -- it is written into keyline.toml
// and into the audit certificate's subject name.
Status validate_station_id(std::string_view id);
// The commented keyline.toml that `ca init` writes.
std::string default_config_toml(const CaConfig& ca, const std::string& station_id);

class StateDir {
 public:
  // `config_override`: --config FILE, else STATE/keyline.toml.
  explicit StateDir(fs::path root, std::optional<fs::path> config_override = std::nullopt)
      : root_(std::move(root)), config_override_(std::move(config_override)) {}

  const fs::path& root() const { return root_; }
  fs::path ledger_path() const { return root_ / "ledger.db"; }
  fs::path config_path() const { return config_override_ ? *config_override_ : root_ / "keyline.toml"; }
  fs::path root_cert_path() const { return root_ / "root.pem"; }
  fs::path intermediate_cert_path() const { return root_ / "intermediate.pem"; }
  fs::path chain_path() const { return root_ / "chain.pem"; }
  fs::path audit_cert_path() const { return root_ / "audit.pem"; }

  bool initialised() const;
  // A state error naming `keyline ca init` when the dir is not initialised.
  Status require_initialised() const;

  Result<Config> load_config() const;
  Result<Ledger> open_ledger() const;
  Result<std::unique_ptr<hsm::KeyStore>> open_key_store(const Config& config) const;

  struct Ca {
    std::unique_ptr<hsm::KeyStore> key_store;
    std::optional<ca::Authority> authority;
  };
  Result<Ca> open_authority(const Config& config, const Clock& clock, Rng& rng) const;

 private:
  fs::path root_;
  std::optional<fs::path> config_override_;
};

// Looks up a profile by name; the error lists the configured ones.
Result<const ca::Profile*> find_profile(const Config& config, const std::string& name);

}  // namespace keyline::station
