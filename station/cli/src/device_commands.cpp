// keyline device provision | device list: one device over a serial port or
// USB, and what the ledger says about the provisioned devices.

#include <iomanip>

#include "keyline/core/log.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/link/usb_link.hpp"
#include "keyline/station/devices.hpp"
#include "provision_support.hpp"

namespace keyline::cli {

using json = nlohmann::json;
namespace prov = station::provision;

void add_provision_overrides(CLI::App* cmd, ProvisionOverrides& o) {
  cmd->add_option("--mode", o.mode,
                  "x509-device-key | x509-station-key | symmetric-individual | symmetric-group | tpm "
                  "(default: [provision] mode)");
  cmd->add_option("--profile", o.profile, "Certificate profile (default: [provision] profile)");
  cmd->add_option("--registration-id-template", o.registration_id_template,
                  "Registration ID template over INFO fields, e.g. '{model}-{serial}'");
  cmd->add_option("--id-scope", o.id_scope, "DPS ID scope written to the device (default: [provision] id_scope)");
  cmd->add_option("--timeout-ms", o.timeout_ms, "Per-request timeout (default: [provision] timeout_ms)")
      ->check(CLI::Range(10, 600000));
  cmd->add_option("--keygen-timeout-ms", o.keygen_timeout_ms, "KEYGEN timeout per attempt (default: 15000)")
      ->check(CLI::Range(10, 600000));
  cmd->add_option("--baud", o.baud, "Serial baud rate (default: [provision] baud)")->check(CLI::Range(1200, 4000000));
  auto* on = cmd->add_flag("--rtscts", o.rtscts,
                           "RTS/CTS hardware flow control on the serial port (default: [provision] rtscts, off)");
  cmd->add_flag("--no-rtscts", o.no_rtscts, "No RTS/CTS flow control, whatever [provision] rtscts says")
      ->excludes(on);
}

namespace {

// "hsm:LABEL" -> the secret LABEL in the CA key store.
Result<std::shared_ptr<hsm::SecretKey>> secret_ref(hsm::KeyStore& store, const std::string& ref, const char* what) {
  if (!ref.starts_with("hsm:") || ref.size() == 4)
    return fail(Domain::usage, std::string(what) + " must name a key-store secret as hsm:LABEL; set it in "
                                                   "[provision] of keyline.toml");
  auto key = store.secret(ref.substr(4));
  if (!key) return std::unexpected(key.error().with_context(what));
  return key;
}

}  // namespace

Result<prov::JobSettings> settings_for(ProvisionEnv& env, const ProvisionOverrides& o) {
  const auto& pc = env.config.provision;
  prov::JobSettings s;
  KL_TRY(s.mode, prov::parse_mode(o.mode.empty() ? pc.mode : o.mode));
  s.registration_id_template = o.registration_id_template.empty() ? pc.registration_id_template
                                                                  : o.registration_id_template;
  s.id_scope = o.id_scope.empty() ? pc.id_scope : o.id_scope;
  s.global_endpoint = pc.global_endpoint;
  // [dps] id-scope / global-endpoint when [provision] does not set them.
  if (s.id_scope.empty()) s.id_scope = env.config.dps.id_scope;
  if (pc.global_endpoint == station::ProvisionConfig{}.global_endpoint) s.global_endpoint = env.config.dps.global_endpoint;
  s.group_enrollment = pc.enrollment == "group";
  if (prov::is_x509(s.mode)) {
    KL_TRY(s.profile, station::find_profile(env.config, o.profile.empty() ? pc.profile : o.profile));
  } else if (s.mode == prov::Mode::symmetric_group || s.mode == prov::Mode::symmetric_individual) {
    bool group = s.mode == prov::Mode::symmetric_group;
    s.derivation_key_ref = group ? pc.group_key : pc.individual_key;
    KL_TRY(s.derivation_key, secret_ref(*env.ca.key_store, s.derivation_key_ref,
                                        group ? "[provision] group_key" : "[provision] individual_key"));
  }
  return s;
}

Result<std::unique_ptr<ProvisionEnv>> open_provision_env(const Context& ctx, const ProvisionOverrides& o) {
  KL_CHECK(ctx.state().require_initialised());
  auto env = std::make_unique<ProvisionEnv>();
  KL_TRY(env->config, ctx.config());
  const auto& pc = env->config.provision;
  KL_TRY(env->actor, ctx.actor(env->config));
  KL_TRY(station::Ledger ledger, ctx.state().open_ledger());
  env->ledger = std::make_unique<station::Ledger>(std::move(ledger));
  KL_TRY(env->ca, ctx.state().open_authority(env->config, ctx.clock(), ctx.rng()));
  KL_TRY(env->settings, settings_for(*env, o));
  env->baud = o.baud ? o.baud : pc.baud;
  env->rtscts = !o.no_rtscts && (o.rtscts || pc.rtscts);
  env->session.timeout = std::chrono::milliseconds(o.timeout_ms ? o.timeout_ms : pc.timeout_ms);
  env->session.baud = env->baud;
  if (o.keygen_timeout_ms) env->session.keygen_timeout = std::chrono::milliseconds(o.keygen_timeout_ms);
  return env;
}

prov::JobContext job_context(const Context& ctx, ProvisionEnv& env) {
  prov::JobContext jc{*env.ledger, env.ledger_mutex, env.ca.authority ? &*env.ca.authority : nullptr,
                      env.actor, ctx.clock(), ctx.rng(), {}, {}, {}};
  ProvisionEnv* e = &env;
  const Context* c = &ctx;
  jc.after_record = [e, c](station::audit::Trail& trail) {
    return checkpoint_if_due(*c, e->config, *e->ca.key_store, trail);
  };
  return jc;
}

json result_json(const prov::JobResult& r) {
  return {{"registration_id", r.registration_id}, {"mode", r.mode},   {"serial_number", r.serial_number},
          {"certificate_serial", r.cert_serial},  {"state", r.state}, {"steps", r.steps},
          {"seconds", std::round(r.seconds * 1000) / 1000},           {"reissued", r.reissued},
          {"link", {{"bytes_sent", r.bytes_sent}, {"bytes_received", r.bytes_received}, {"retries", r.retries}}}};
}

std::string result_line(const prov::JobResult& r) {
  std::ostringstream os;
  os << r.state << " " << r.registration_id << " (" << r.mode << ", serial " << r.serial_number;
  if (!r.cert_serial.empty()) os << ", certificate " << r.cert_serial;
  os << ", " << std::fixed << std::setprecision(2) << r.seconds << " s)";
  return os.str();
}

namespace {

Result<std::unique_ptr<station::link::Link>> open_link(const std::string& port, const std::string& usb,
                                                       unsigned baud, bool rtscts) {
  namespace link = station::link;
  if (!port.empty()) {
    KL_TRY(auto l, link::SerialLink::open(port, {baud, rtscts}));
    return std::unique_ptr<link::Link>(std::move(l));
  }
  KL_TRY(auto sel, link::UsbSelector::parse(usb));
  KL_TRY(auto l, link::UsbLink::open(sel));
  return std::unique_ptr<link::Link>(std::move(l));
}

Status device_provision(const Context& ctx, const std::string& port, const std::string& usb,
                        const ProvisionOverrides& o) {
  if (port.empty() == usb.empty())
    return fail(Domain::usage, "give exactly one of --port PATH or --usb VID:PID[:SERIAL]");
  KL_TRY(auto env, open_provision_env(ctx, o));
  KL_TRY(auto link, open_link(port, usb, env->baud, env->rtscts));
  prov::DeviceSession session(*link, env->session);
  auto jc = job_context(ctx, *env);
  prov::ProvisioningJob job(session, env->settings, jc);
  KL_TRY(prov::JobResult r, job.run());
  ctx.print(result_json(r), [&](std::ostream& os) { os << result_line(r) << "\n"; });
  return {};
}

Status device_list(const Context& ctx) {
  KL_TRY(station::Ledger ledger, open_ledger_readonly(ctx));
  station::Devices devices(ledger);
  json rows = json::array();
  KL_CHECK(devices.for_each([&](const station::DeviceRecord& d) {
    rows.push_back({{"registration_id", d.registration_id}, {"serial_number", d.serial_number},
                    {"model", d.model},  {"mode", d.mode}, {"state", d.state}, {"locked", d.locked},
                    {"certificate_serial", d.cert_serial}, {"last_error", d.last_error},
                    {"updated_at", iso_time(d.updated_at)}});
  }));
  ctx.print(json{{"devices", rows}}, [&](std::ostream& os) {
    os << std::left << std::setw(28) << "REGISTRATION ID" << std::setw(22) << "MODE" << std::setw(8) << "STATE"
       << std::setw(34) << "CERTIFICATE" << "ERROR\n";
    if (rows.empty()) os << "(no devices provisioned yet)\n";
    for (auto& r : rows)
      os << std::setw(28) << r["registration_id"].get<std::string>() << std::setw(22) << r["mode"].get<std::string>()
         << std::setw(8) << r["state"].get<std::string>() << std::setw(34)
         << r["certificate_serial"].get<std::string>() << r["last_error"].get<std::string>() << "\n";
  });
  return {};
}

}  // namespace

void add_device_commands(CLI::App& app, Handler& run) {
  auto* device = app.add_subcommand("device", "Provision devices one at a time; list provisioned devices");
  device->require_subcommand(1);
  auto* p = device->add_subcommand(
      "provision",
      "Provision one device on a serial port or USB: identity, certificate or key, DPS settings, lock.\n"
      "Exit 0 when done (also when it was already done), 10 for a device problem.");
  auto port = std::make_shared<std::string>();
  auto usb = std::make_shared<std::string>();
  auto o = std::make_shared<ProvisionOverrides>();
  p->add_option("--port", *port, "Serial port of the device (e.g. /dev/ttyUSB0)");
  p->add_option("--usb", *usb, "USB device as VID:PID[:SERIAL] (hex)");
  add_provision_overrides(p, *o);
  p->callback([&run, port, usb, o] { run = [port, usb, o](const Context& c) { return device_provision(c, *port, *usb, *o); }; });
  auto* l = device->add_subcommand("list", "Devices in the ledger with their provisioning state");
  l->callback([&run] { run = [](const Context& c) { return device_list(c); }; });
}

}  // namespace keyline::cli
