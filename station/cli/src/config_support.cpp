// How commands get the configuration and the ledger: keyline.toml checked
// against the station it configures, and the ledger opened for reading.

#include "app.hpp"

namespace keyline::cli {

Result<station::Config> Context::config() const {
  KL_TRY(station::Config config, state_.load_config());
  KL_CHECK(check_station_id(*this, config));
  return config;
}

Status check_station_id(const Context& ctx, const station::Config& config) {
  if (!ctx.state().initialised()) return {};
  const auto ledger = ctx.state().ledger_path();
  KL_TRY(std::optional<std::string> recorded, station::Ledger::read_meta(ledger, "station_id"));
  if (!recorded || *recorded == config.station_id) return {};
  const std::string file = config.source.string();
  const std::string configured = "\"" + config.station_id + "\"";
  const std::string initialised = "\"" + *recorded + "\"";
  return fail(Domain::state,
              file + " gives the station id " + configured +
                  " ([station] id), but this station was initialised as " + initialised +
                  ": that id is recorded in its ledger " + ledger.string() +
                  " and in its audit certificate (CN=Keyline audit " + *recorded +
                  "), and audit records and exports under another id would fail verification. To go on with "
                  "this station, restore id = " +
                  initialised + " in " + file +
                  "; for a station with the new id, run 'keyline ca init --station-id " + configured +
                  "' in another state dir");
}

Result<station::Ledger> open_ledger_readonly(const Context& ctx) {
  KL_CHECK(ctx.state().require_initialised());
  return station::Ledger::open_readonly(ctx.state().ledger_path());
}

}  // namespace keyline::cli
