// keyline -- factory-floor device identity and certificate authority station.
// Parses the command line, wires the parts, maps errors to exit codes
// (README "Exit codes").

#include <cstdlib>
#include <iostream>

#include "app.hpp"
#include "provision_support.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/log.hpp"

namespace keyline::cli {

Context::Context(const Globals& g, const Clock& clock, Rng& rng)
    : state_(std::filesystem::absolute(g.state_dir), g.config_file.empty() ? std::nullopt
                                                : std::optional<station::fs::path>(g.config_file)),
      clock_(clock), rng_(rng), json_(g.json), operator_flag_(g.operator_name) {}

void Context::print(const nlohmann::json& doc, const std::function<void(std::ostream&)>& text) const {
  if (json_) std::cout << doc.dump(2) << "\n";
  else text(std::cout);
  std::cout.flush();
}

Result<std::string> read_input(const std::string& path, std::size_t max_bytes, const char* what) {
  if (path == "-") {
    std::string data;
    char buf[65536];
    while (std::cin.read(buf, sizeof buf) || std::cin.gcount() > 0) {
      data.append(buf, static_cast<std::size_t>(std::cin.gcount()));
      if (data.size() > max_bytes)
        return fail(Domain::input, std::string(what) + " on standard input is larger than " +
                                       std::to_string(max_bytes) + " bytes");
    }
    return data;
  }
  auto data = files::read(path, max_bytes);
  if (!data) return std::unexpected(data.error().with_context(what));
  return data;
}

Status write_output(const std::string& out, const std::string& data, unsigned mode) {
  if (out.empty() || out == "-") {
    std::cout << data;
    std::cout.flush();
    return {};
  }
  return files::write_atomic(out, data, mode);
}

std::string iso_time(std::int64_t seconds) { return format_utc(TimePoint(std::chrono::seconds(seconds))); }

}  // namespace keyline::cli

int main(int argc, char** argv) {
  using namespace keyline;
  CLI::App app{
      "Keyline: factory-floor device identity and certificate authority station.\n"
      "Issues device certificates from a CA whose key stays in its key store, and\n"
      "records every certificate in the station's ledger.",
      "keyline"};
  app.require_subcommand(1);
  // The global options are also taken after the command
  // (`keyline ledger certificates --json`); the commands inherit this.
  app.fallthrough();
  app.set_version_flag("--version", std::string("keyline ") + "0.1.0");
  cli::Globals g;
  const char* env_state = std::getenv("KEYLINE_STATE");
  g.state_dir = env_state && *env_state ? env_state : "./keyline-state";
  app.add_option("--state", g.state_dir,
                 "State directory (default: $KEYLINE_STATE, else ./keyline-state)")
      ->capture_default_str();
  app.add_option("--config", g.config_file, "Configuration file (default: STATE/keyline.toml)");
  app.add_option("--log-level", g.log_level,
                 "Log levels, e.g. 'info' or 'all=warn,ca=debug' (default: $KEYLINE_LOG, else warn)");
  app.add_option("--log-format", g.log_format, "Log format on stderr")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_flag("--json", g.json, "Print one JSON document on stdout");
  app.add_option("--operator", g.operator_name,
                 "Who runs this command, recorded in the audit trail (default: $KEYLINE_OPERATOR, "
                 "else [audit] operator in keyline.toml)");
  app.footer(
      "Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad input, 4 refused by policy,\n"
      "5 state/ledger/file-system problem, 6 key store problem, 7 partially done (batch:\n"
      "some inputs rejected), 8 interrupted by SIGINT/SIGTERM (batch: run it again),\n"
      "9 audit verification failed (a record or signature does not verify),\n"
      "10 device problem (refused, failed, timed out or disconnected).\n"
      "Run 'keyline COMMAND --help' for a command's options.");

  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("keyline: error: ") + e.what() + "\nRun 'keyline --help' (or 'keyline COMMAND --help') for usage.\n";
  });
  cli::Handler run;
  cli::add_ca_commands(app, run);
  cli::add_ledger_commands(app, run);
  cli::add_hsm_commands(app, run);
  cli::add_audit_commands(app, run);
  cli::add_dps_commands(app, run);
  // `dps infra` joins the dps command group (created by add_dps_commands).
  CLI::App* dps = nullptr;
  for (CLI::App* s : app.get_subcommands([](const CLI::App* a) { return a->get_name() == "dps"; })) dps = s;
  if (!dps) {
    dps = app.add_subcommand("dps", "Device Provisioning Service: infrastructure and enrollments");
    dps->require_subcommand(1);
  }
  cli::add_infra_command(*dps, run);
  cli::add_device_commands(app, run);
  cli::add_line_commands(app, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ExitCode::usage);
  }

  std::string spec = g.log_level;
  if (spec.empty()) {
    const char* env = std::getenv("KEYLINE_LOG");
    spec = env && *env ? env : "warn";
  }
  auto logged = log::configure(spec, g.log_format == "json" ? log::Format::json : log::Format::text);
  if (!logged) {
    std::cerr << "keyline: " << logged.error().message() << "\n";
    return static_cast<int>(ExitCode::usage);
  }

  SystemClock clock;
  SystemRng rng;
  cli::Context ctx(g, clock, rng);
  Status result = run ? run(ctx) : Status{};
  if (!result) {
    const Error& e = result.error();
    ExitCode code = exit_code_for(e);
    std::cerr << "keyline: error: " << e.message() << "\n";
    if (g.json) {
      nlohmann::json doc = {{"error", {{"domain", std::string(to_string(e.domain()))},
                                       {"code", e.native_code()},
                                       {"exit_code", static_cast<int>(code)},
                                       {"message", e.message()}}}};
      std::cout << doc.dump(2) << "\n";
    }
    return static_cast<int>(code);
  }
  return static_cast<int>(ctx.outcome());
}
