#pragma once
// station::Devices -- the provisioning state of each device in the ledger:
// one `devices` row per hardware identity (UNIQUE (model, serial_number,
// hardware_id)) and one `provisioning_steps` row per step attempt.
//
// Call the writers inside a Ledger::Transaction, together with the audit
// record of the same step, so a device's state and its trail never diverge.
// No secret is stored here: keys are referenced by fingerprint (SHA-256 of
// the public key) or by key-store label, never by value.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/station/ledger.hpp"

namespace keyline::station {

struct DeviceRecord {
  std::int64_t id = 0;
  std::string serial_number;
  std::string model;
  std::string hardware_id;  // hex
  std::string registration_id;
  std::string profile;
  std::string mode;
  std::string state = "new";  // new | in_progress | done | failed
  std::string pubkey_sha256;
  std::string cert_serial;
  std::string endorsement_key;  // base64 TPM2B_PUBLIC (public data), tpm mode
  bool locked = false;
  std::string last_error;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

struct StepRecord {
  std::int64_t device_id = 0;
  std::string step;
  std::string outcome;  // ok | failed | skipped
  std::string detail;
  std::int64_t time = 0;
};

class Devices {
 public:
  explicit Devices(Ledger& ledger) : ledger_(ledger) {}

  // The device with this hardware identity, if known.
  Result<std::optional<DeviceRecord>> find(const std::string& model, const std::string& serial_number,
                                           const std::string& hardware_id);
  Result<std::optional<DeviceRecord>> by_registration_id(const std::string& registration_id);
  // Inserts (id == 0; fills id) or updates every mutable column.
  Status save(DeviceRecord& device);
  Status add_step(const StepRecord& step);
  Result<std::vector<StepRecord>> steps(std::int64_t device_id);
  Status for_each(const std::function<void(const DeviceRecord&)>& fn);

 private:
  Ledger& ledger_;
};

}  // namespace keyline::station
