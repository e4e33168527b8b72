#pragma once
// What `device provision` and `line run` share: the [provision] settings with
// command-line overrides, the opened CA / key store / ledger, and the result
// rendering.

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "app.hpp"
#include "keyline/provision/provisioning_job.hpp"

namespace keyline::cli {

struct ProvisionOverrides {
  std::string mode;
  std::string profile;
  std::string registration_id_template;
  std::string id_scope;
  std::int64_t timeout_ms = 0;
  std::int64_t keygen_timeout_ms = 0;
  unsigned baud = 0;
  bool rtscts = false;     // --rtscts: on for this command
  bool no_rtscts = false;  // --no-rtscts: off for this command; neither: [provision] rtscts
};

void add_provision_overrides(CLI::App* cmd, ProvisionOverrides& o);

// Everything a job needs, opened once per process (one ledger connection,
// shared by the workers under `ledger_mutex`).
struct ProvisionEnv {
  station::Config config;
  station::audit::Actor actor;
  std::unique_ptr<station::Ledger> ledger;
  station::StateDir::Ca ca;
  station::provision::JobSettings settings;
  station::provision::SessionOptions session;
  unsigned baud = 115200;
  bool rtscts = false;
  std::mutex ledger_mutex;
};

Result<std::unique_ptr<ProvisionEnv>> open_provision_env(const Context& ctx, const ProvisionOverrides& o);
// The job settings for one port: [provision] with overrides `o`.
Result<station::provision::JobSettings> settings_for(ProvisionEnv& env, const ProvisionOverrides& o);
station::provision::JobContext job_context(const Context& ctx, ProvisionEnv& env);
nlohmann::json result_json(const station::provision::JobResult& r);
std::string result_line(const station::provision::JobResult& r);

void add_device_commands(CLI::App& app, Handler& run);
void add_line_commands(CLI::App& app, Handler& run);

}  // namespace keyline::cli
