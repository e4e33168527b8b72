// keyline dps infra: the DPS instance as code (ARM, Bicep, Terraform) and its
// enrollment groups, from keyline.toml and the station's CA certificates.

#include "app.hpp"
#include "keyline/core/files.hpp"
#include "keyline/station/infra.hpp"

namespace keyline::cli {

namespace {

namespace infra = station::infra;
namespace fs = std::filesystem;

struct InfraOptions {
  std::string format = "all";
  std::string out;
  std::string api_version;
};

Status dps_infra(const Context& ctx, const InfraOptions& o) {
  std::vector<infra::Format> formats;
  if (o.format == "arm" || o.format == "all") formats.push_back(infra::Format::arm);
  if (o.format == "bicep" || o.format == "all") formats.push_back(infra::Format::bicep);
  if (o.format == "terraform" || o.format == "all") formats.push_back(infra::Format::terraform);
  if (formats.empty()) return fail(Domain::usage, "--format must be arm, bicep, terraform or all");
  if (!o.api_version.empty() && !infra::known_api_version(o.api_version))
    return fail(Domain::usage, "--api-version must be 2022-12-12 or 2021-07-01 (got '" + o.api_version + "')");

  const station::StateDir& state = ctx.state();
  KL_CHECK(state.require_initialised());
  fs::path config_path = state.config_path();
  KL_TRY(std::string text, files::read(config_path, 1 << 20));
  // The station's own parser first: it owns the file's other tables, and
  // the station id that names the CA certificates must be this station's.
  KL_TRY(station::Config station_config, station::parse_config(text, config_path.string()));
  KL_CHECK(check_station_id(ctx, station_config));
  KL_TRY(auto config, infra::parse_infra_config(text, config_path.string()));
  if (config.instance && !o.api_version.empty()) {
    if (config.instance->data_residency && o.api_version == "2021-07-01")
      return fail(Domain::usage, "--api-version 2021-07-01 has no data residency; dps.instance.data-residency is true");
    config.instance->api_version = o.api_version;
  }

  std::vector<infra::CaCertificate> certs;
  for (infra::CaRole role : {infra::CaRole::intermediate, infra::CaRole::root}) {
    fs::path p = role == infra::CaRole::root ? state.root_cert_path() : state.intermediate_cert_path();
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    KL_TRY(std::string pem, files::read(p, 1 << 20));
    KL_TRY(auto cert, infra::ca_certificate(config.station_id, role, pem, p.string()));
    certs.push_back(std::move(cert));
  }
  KL_TRY(auto deployment, infra::make_deployment(std::move(config), std::move(certs)));
  auto out_files = infra::render(deployment, formats);
  KL_CHECK(infra::write_files(o.out, out_files));

  nlohmann::json written = nlohmann::json::array();
  for (auto& f : out_files) written.push_back((fs::path(o.out) / f.path).string());
  ctx.print({{"out", o.out}, {"files", written}}, [&](std::ostream& os) {
    os << "wrote " << out_files.size() << " files under " << o.out << "\n";
    for (auto& f : out_files) os << "  " << f.path << "\n";
  });
  return {};
}

}  // namespace

void add_infra_command(CLI::App& dps, Handler& run) {
  auto o = std::make_shared<InfraOptions>();
  auto* cmd = dps.add_subcommand(
      "infra", "Write the DPS instance as code (ARM, Bicep, Terraform) and its enrollment groups");
  cmd->add_option("--format", o->format, "arm, bicep, terraform or all")
      ->check(CLI::IsMember({"arm", "bicep", "terraform", "all"}))
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Output directory (created if missing)")->required();
  cmd->add_option("--api-version", o->api_version,
                  "ARM api-version of Microsoft.Devices/provisioningServices: 2022-12-12 or 2021-07-01 "
                  "(default: dps.instance.api-version, else 2022-12-12)");
  cmd->footer("Reads [dps.instance] and [[dps.groups]] of keyline.toml (docs/dps-infra.md) and the CA\n"
              "certificates of the state dir. Connection strings are never read or written: each linked\n"
              "hub names the secure parameter that carries its connection string at deployment time.\n");
  cmd->callback([&run, o] { run = [o](const Context& c) { return dps_infra(c, *o); }; });
}

}  // namespace keyline::cli
