// keyline dps ...: enrollments in Azure IoT Hub DPS (or the emulator).
// Changes are queued in the ledger's enrollment outbox and reach DPS through
// `keyline dps sync`; reads (show, list, registration) go to DPS directly.

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <string_view>
#include <thread>

#include "app.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/station/dps/client.hpp"
#include "keyline/station/dps/sync.hpp"
#include "keyline/station/outbox.hpp"

namespace keyline::cli {

namespace {

// Outbox changes go on the audit trail in the same transaction.
station::Outbox::Recorder audit_recorder(station::audit::Trail& trail) {
  return [&trail](const std::string& event, const station::OutboxRow& row, const std::string& detail) -> Status {
    nlohmann::json body = {{"outbox_id", row.id}, {"registration_id", row.registration_id}, {"kind", row.kind},
                           {"operation", row.operation}};
    if (event == "enrollment.failed") body["reason"] = detail;
    KL_TRY(auto rec, trail.append(event, body));
    (void)rec;
    return {};
  };
}


namespace sd = station::dps;
using nlohmann::json;

struct EnrollmentArgs {
  std::string id;
  std::string certificate;
  std::string key_source;
  std::string tpm_ek;
  std::string x509_ca;
  std::string device_id;
  std::string profile = "device";
  std::string allocation_policy;
  std::string webhook;
  std::vector<std::string> hubs;
  std::string initial_twin;
  bool edge = false;
  std::string provisioning_status = "enabled";
  bool once = false;
  int interval_s = 10;
  std::string group_key_source;
  std::string from;  // group create --from FILE (EnrollmentGroup JSON, as 'dps infra' writes it)
};

Result<std::unique_ptr<sd::DpsClient>> open_client(const Context& ctx, const station::Config& config) {
  if (config.dps.connection_string_source.empty())
    return fail(Domain::usage, "no DPS connection string source: set [dps] connection-string-source = \"file:PATH\" "
                               "or \"env:VAR\" in " + config.source.string());
  KL_TRY(auto cs, sd::load_connection_string(config.dps.connection_string_source));
  sd::ClientOptions o;
  o.http.ca_file = config.dps.ca_file;
  o.quota_per_minute = config.dps.quota_per_minute;
  return std::make_unique<sd::DpsClient>(std::move(cs), ctx.clock(), o);
}

sd::EnrollmentKind kind_of(bool group) { return group ? sd::EnrollmentKind::group : sd::EnrollmentKind::individual; }

// A member that is a JSON string, or `fallback`: DPS answers and --from files
// are not trusted to have the expected shape.
std::string string_member(const json& j, const char* key, const std::string& fallback = {}) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// Webhook URLs: an Azure Functions key travels in the query (`?code=KEY`),
// credentials may travel as user info (`https://user:pass@host/`).
bool url_has_query(std::string_view url) { return url.find('?') != std::string_view::npos; }
bool url_has_user_info(std::string_view url) {
  std::size_t host = url.find("://");
  host = host == std::string_view::npos ? 0 : host + 3;
  std::string_view authority = url.substr(host, url.substr(host).find_first_of("/?#"));
  return authority.find('@') != std::string_view::npos;
}

// A webhook URL as it may be printed: no query string, no user info.
std::string printable_url(const std::string& url) {
  std::string out = url.substr(0, url.find('?'));
  if (out.size() < url.size()) out += std::string("?") + SecretString::redacted();
  std::size_t host = out.find("://");
  host = host == std::string::npos ? 0 : host + 3;
  std::size_t end = out.find_first_of("/#", host);
  std::size_t at = out.substr(host, end == std::string::npos ? std::string::npos : end - host).rfind('@');
  if (at != std::string::npos) out.replace(host, at, SecretString::redacted());
  return out;
}

// An enrollment as DPS returned it, as it may be printed: symmetric keys
// emptied (as Enrollment::redacted() does) and the custom allocation webhook
// without its query string or user info.
json printable(json doc) {
  if (!doc.is_object()) return doc;
  if (auto at = doc.find("attestation"); at != doc.end() && at->is_object() && at->contains("symmetricKey"))
    (*at)["symmetricKey"] = json::object();
  if (auto def = doc.find("customAllocationDefinition"); def != doc.end() && def->is_object())
    if (auto url = def->find("webhookUrl"); url != def->end() && url->is_string())
      *url = printable_url(url->get<std::string>());
  return doc;
}

// --webhook-url: env:VAR or file:PATH (first line) for a URL that carries a
// secret, or a literal http(s) URL without query string or user info (the
// command line is visible to every process on the station). A source is
// resolved now, to refuse a bad one at once, but the outbox keeps the
// source: the sync resolves it again when it sends, and the ledger never
// holds the URL. Error messages never show a resolved URL.
Status check_webhook(const std::string& source) {
  if (source.starts_with("env:") || source.starts_with("file:")) {
    auto url = sd::resolve_webhook_source(source);
    if (!url) return std::unexpected(url.error().with_context("--webhook-url"));
    return {};
  }
  if (!sd::is_http_url(source))
    return fail(Domain::usage, "--webhook-url must be env:VAR, file:PATH or an http(s) URL without query string");
  if (url_has_query(source) || url_has_user_info(source))
    return fail(Domain::usage, "--webhook-url: a URL with a query string or user info (such as an Azure Functions "
                               "key in ?code=) is a secret and is not taken on the command line; pass it as "
                               "--webhook-url env:VAR or --webhook-url file:PATH");
  return {};
}

Status apply_common(sd::Enrollment& e, const EnrollmentArgs& a) {
  if (!a.allocation_policy.empty()) {
    if (a.allocation_policy != "hashed" && a.allocation_policy != "geoLatency" && a.allocation_policy != "static" &&
        a.allocation_policy != "custom")
      return fail(Domain::usage, "--allocation-policy must be hashed, geoLatency, static or custom");
    if (a.allocation_policy == "custom" && a.webhook.empty())
      return fail(Domain::usage, "--allocation-policy custom needs --webhook-url");
    if (a.allocation_policy != "custom" && !a.webhook.empty())
      return fail(Domain::usage, "--webhook-url is only for --allocation-policy custom");
    if (!a.webhook.empty()) KL_CHECK(check_webhook(a.webhook));
    bool by_source = a.webhook.starts_with("env:") || a.webhook.starts_with("file:");
    e.allocation_policy(a.allocation_policy, by_source ? std::string() : a.webhook);
    if (by_source) e.webhook_source(a.webhook);
  } else if (!a.webhook.empty()) {
    return fail(Domain::usage, "--webhook-url needs --allocation-policy custom");
  }
  if (!a.hubs.empty()) e.iot_hubs(a.hubs);
  if (!a.initial_twin.empty()) {
    KL_TRY(std::string text, read_input(a.initial_twin, 1 << 20, "--initial-twin"));
    json twin = json::parse(text, nullptr, false);
    if (!twin.is_object()) return fail(Domain::input, a.initial_twin + ": the initial twin is not a JSON object");
    e.initial_twin(twin);
  }
  if (a.edge) e.iot_edge(true);
  if (a.provisioning_status != "enabled" && a.provisioning_status != "disabled")
    return fail(Domain::usage, "--provisioning-status must be enabled or disabled");
  e.provisioning_status(a.provisioning_status == "enabled");
  return {};
}

// `config` comes from ctx.config(), loaded (and checked) before the command
// reads or changes anything.
Status queue(const Context& ctx, const station::Config& config, const std::string& kind,
             const std::string& op, const std::string& id, const json& payload) {
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  station::audit::Trail trail(ledger, actor, ctx.clock());
  station::Outbox outbox(ledger);
  outbox.set_recorder(audit_recorder(trail));
  std::string text;
  try {
    text = payload.dump();
  } catch (const json::exception&) {  // strings from the command line or a file that are not UTF-8
    return fail(Domain::input, "the " + kind + " enrollment holds text that is not valid UTF-8");
  }
  KL_TRY(auto tx, ledger.begin());
  KL_TRY(std::int64_t row, outbox.enqueue(kind, op, id, text, ctx.clock().now().time_since_epoch().count()));
  KL_CHECK(tx.commit());
  ctx.print({{"queued", {{"id", row}, {"kind", kind}, {"operation", op}, {"registration_id", id}}}},
            [&](std::ostream& os) {
              os << "queued " << kind << " enrollment " << op << " for '" << id << "' (outbox row " << row
                 << "); run 'keyline dps sync' to send it\n";
            });
  return {};
}

Status enrollment_create(const Context& ctx, const EnrollmentArgs& a) {
  KL_TRY(auto regid, ca::RegistrationId::parse(a.id));
  KL_TRY(auto config, ctx.config());
  auto e = sd::Enrollment::individual(regid.str());
  int chosen = !a.certificate.empty() + !a.key_source.empty() + !a.tpm_ek.empty();
  if (chosen > 1) return fail(Domain::usage, "give at most one of --certificate, --symmetric-key-source, --tpm-ek");
  json payload;
  if (!a.certificate.empty()) {
    KL_TRY(std::string pem, read_input(a.certificate, 1 << 20, "--certificate"));
    KL_TRY(auto cert, x509_from_pem(pem, a.certificate));
    e.x509_client_certificates(to_pem(cert.get()));
  } else if (!a.tpm_ek.empty()) {
    KL_TRY(std::string ek, read_input(a.tpm_ek, 1 << 16, "--tpm-ek"));
    while (!ek.empty() && (ek.back() == '\n' || ek.back() == '\r')) ek.pop_back();
    auto ek_bytes = base64_decode(ek);
    if (!ek_bytes || ek_bytes->empty())
      return fail(Domain::input, a.tpm_ek + ": the endorsement key must be non-empty base64 (TPM2B_PUBLIC of the EK)");
    e.tpm(ek);
  } else if (a.key_source.empty()) {
    KL_TRY(auto ledger, ctx.state().open_ledger());
    KL_TRY(auto rec, ledger.active_certificate(regid.str(), a.profile));
    if (!rec)
      return fail(Domain::input, "no active '" + a.profile + "' certificate for '" + regid.str() +
                                     "' in the ledger; issue one first or give --certificate / --symmetric-key-source / --tpm-ek");
    KL_TRY(auto cert, x509_from_der(rec->der));
    e.x509_client_certificates(to_pem(cert.get()));
  }
  if (!a.device_id.empty()) e.device_id(a.device_id);
  KL_CHECK(apply_common(e, a));
  payload = e.json();
  if (!a.key_source.empty()) {
    if (!a.key_source.starts_with("hsm:") && !a.key_source.starts_with("file:"))
      return fail(Domain::usage, "--symmetric-key-source must be hsm:LABEL or file:PATH");
    payload = sd::with_key_source(payload, a.key_source);
  }
  return queue(ctx, config, "individual", "create", regid.str(), payload);
}

// Queues every EnrollmentGroup of a JSON file (one object or an array), as
// `keyline dps infra` writes enrollment-groups.json.
Status groups_from_file(const Context& ctx, const EnrollmentArgs& a) {
  KL_TRY(std::string text, read_input(a.from, 16u << 20, "--from"));
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) return fail(Domain::input, "--from " + a.from + ": not JSON");
  if (doc.is_object()) doc = json::array({doc});
  if (!doc.is_array() || doc.empty())
    return fail(Domain::input, "--from " + a.from + ": expected an EnrollmentGroup object or a non-empty array of them");
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const json& g = doc[i];
    const std::string where = "--from " + a.from + ": item " + std::to_string(i);
    if (!g.is_object()) return fail(Domain::input, where + " is not a JSON object");
    if (auto idm = g.find("enrollmentGroupId"); idm == g.end() || !idm->is_string())
      return fail(Domain::input, where + ": enrollmentGroupId must be a string");
    auto at = g.find("attestation");
    if (at == g.end() || !at->is_object()) return fail(Domain::input, where + ": attestation must be a JSON object");
    if (auto type = at->find("type"); type == at->end() || !type->is_string())
      return fail(Domain::input, where + ": attestation.type must be a string");
    if (auto sym = at->find("symmetricKey"); sym != at->end()) {
      if (!sym->is_object()) return fail(Domain::input, where + ": attestation.symmetricKey must be a JSON object");
      if (sym->contains("primaryKey") || sym->contains("secondaryKey"))
        return fail(Domain::input, where + " carries a symmetric key; keys never enter the ledger -- create that group "
                                           "with --symmetric-key-source file:PATH|hsm:LABEL instead");
      if (auto src = sym->find("keySource"); src != sym->end()) {
        const std::string s = src->is_string() ? src->get<std::string>() : std::string();
        if (!s.starts_with("hsm:") && !s.starts_with("file:"))
          return fail(Domain::input, where + ": attestation.symmetricKey.keySource must be hsm:LABEL or file:PATH");
      }
    }
    if (auto def = g.find("customAllocationDefinition"); def != g.end()) {
      if (!def->is_object()) return fail(Domain::input, where + ": customAllocationDefinition must be a JSON object");
      if (auto url = def->find("webhookUrl"); url != def->end()) {
        if (!url->is_string())
          return fail(Domain::input, where + ": customAllocationDefinition.webhookUrl must be a string");
        if (url_has_query(url->get<std::string>()) || url_has_user_info(url->get<std::string>()))
          return fail(Domain::input, where + ": customAllocationDefinition.webhookUrl carries a query string or "
                                             "user info (a secret such as an Azure Functions key); create that group "
                                             "by NAME with --allocation-policy custom --webhook-url env:VAR|file:PATH");
      }
    }
    auto gid = ca::RegistrationId::parse(g["enrollmentGroupId"].get<std::string>());
    if (!gid) return std::unexpected(gid.error().with_context("--from " + a.from + ": item " + std::to_string(i)));
  }
  KL_TRY(auto config, ctx.config());
  for (const json& g : doc)
    KL_CHECK(queue(ctx, config, "group", "create", g["enrollmentGroupId"].get<std::string>(), g));
  return {};
}

Status group_create(const Context& ctx, const EnrollmentArgs& a) {
  if (!a.from.empty()) {
    if (!a.id.empty() || !a.x509_ca.empty() || !a.key_source.empty())
      return fail(Domain::usage, "--from FILE takes the groups from the file; give no NAME, --x509-ca or "
                                 "--symmetric-key-source with it");
    return groups_from_file(ctx, a);
  }
  if (a.id.empty()) return fail(Domain::usage, "dps group create needs a NAME (or --from FILE)");
  KL_TRY(auto gid, ca::RegistrationId::parse(a.id));
  KL_TRY(auto config, ctx.config());
  auto e = sd::Enrollment::group(gid.str());
  if (a.x509_ca.empty() == a.key_source.empty())
    return fail(Domain::usage, "give exactly one of --x509-ca intermediate|root and --symmetric-key-source");
  json payload;
  if (!a.x509_ca.empty()) {
    if (a.x509_ca != "intermediate" && a.x509_ca != "root") return fail(Domain::usage, "--x509-ca must be intermediate or root");
    KL_CHECK(ctx.state().require_initialised());
    auto path = a.x509_ca == "root" ? ctx.state().root_cert_path() : ctx.state().intermediate_cert_path();
    KL_TRY(std::string pem, files::read(path, 1 << 20));
    e.x509_signing_certificates(pem);
  }
  KL_CHECK(apply_common(e, a));
  payload = e.json();
  if (!a.key_source.empty()) {
    if (!a.key_source.starts_with("hsm:") && !a.key_source.starts_with("file:"))
      return fail(Domain::usage, "--symmetric-key-source must be hsm:LABEL or file:PATH");
    payload = sd::with_key_source(payload, a.key_source);
  }
  return queue(ctx, config, "group", "create", gid.str(), payload);
}

Status show(const Context& ctx, bool group, const std::string& id) {
  KL_TRY(auto config, ctx.config());
  KL_TRY(auto client, open_client(ctx, config));
  KL_TRY(auto e, client->get(kind_of(group), id));
  json doc = printable(e.redacted());
  doc["etag"] = e.etag();
  std::cout << doc.dump(2) << "\n";
  return {};
}

Status list(const Context& ctx, bool group) {
  KL_TRY(auto config, ctx.config());
  KL_TRY(auto client, open_client(ctx, config));
  KL_TRY(auto all, client->query_all(kind_of(group)));
  json items = json::array();
  for (auto& e : all) items.push_back(printable(std::move(e)));
  if (ctx.json()) {
    std::cout << json{{group ? "enrollment_groups" : "enrollments", items}}.dump(2) << "\n";
    return {};
  }
  for (const json& e : items) {
    const json none = json::object();
    auto at = e.is_object() ? e.find("attestation") : e.end();
    std::cout << string_member(e, group ? "enrollmentGroupId" : "registrationId") << "  "
              << string_member(at != e.end() ? *at : none, "type") << "  "
              << string_member(e, "provisioningStatus", "enabled") << "\n";
  }
  std::cout << all.size() << (group ? " enrollment group(s)\n" : " enrollment(s)\n");
  return {};
}

std::atomic<bool> g_sync_stop{false};
extern "C" void on_sync_stop_signal(int) { g_sync_stop.store(true); }

Status sync(const Context& ctx, const EnrollmentArgs& a) {
  KL_TRY(auto config, ctx.config());
  KL_TRY(auto actor, ctx.actor(config));
  KL_TRY(auto client, open_client(ctx, config));
  KL_TRY(auto ledger, ctx.state().open_ledger());
  auto ks = ctx.state().open_key_store(config);
  std::unique_ptr<hsm::KeyStore> key_store = ks ? std::move(*ks) : nullptr;
  station::audit::Trail trail(ledger, actor, ctx.clock());
  sd::EnrollmentSync sync(ledger, *client, ctx.clock(), key_store.get());
  sync.set_recorder(audit_recorder(trail));
  if (!a.once) {
    // Continuous: SIGINT/SIGTERM end the run between passes (a pass in
    // flight finishes and commits), exit 8.
    struct sigaction sa{};
    sa.sa_handler = on_sync_stop_signal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
  }
  for (;;) {
    auto report = sync.run_once();
    if (report) {
      station::Outbox outbox(ledger);
      KL_TRY(auto counts, outbox.counts());
      ctx.print({{"synced", report->synced}, {"reconciled", report->reconciled}, {"dead", report->dead},
                 {"retry", report->retry}, {"bulk_calls", report->bulk_calls}, {"outbox", counts}},
                [&](std::ostream& os) {
                  os << "sync: " << report->synced << " synced (" << report->reconciled << " already in DPS), "
                     << report->dead << " dead, " << report->retry << " to retry; outbox: " << counts["pending"]
                     << " pending, " << counts["synced"] << " synced, " << counts["dead"] << " dead\n";
                });
      if (a.once) return counts["pending"] > 0 ? fail(Domain::io, std::to_string(counts["pending"]) +
                                                                     " enrollment(s) still pending; run 'keyline dps sync' again")
                                               : Status{};
    } else if (a.once) {
      return std::unexpected(report.error());
    } else {
      std::cerr << "keyline: dps sync: " << report.error().message() << " (retrying)\n";
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(a.interval_s);
    while (!g_sync_stop.load() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_sync_stop.load()) {
      std::cerr << "keyline: dps sync stopped; what was sent is recorded, what is pending waits for the next run\n";
      ctx.set_outcome(ExitCode::interrupted);
      return {};
    }
  }
}

Status status(const Context& ctx) {
  KL_TRY(auto ledger, open_ledger_readonly(ctx));
  station::Outbox outbox(ledger);
  KL_TRY(auto counts, outbox.counts());
  KL_TRY(auto dead, outbox.rows_in_state("dead"));
  json dead_json = json::array();
  for (auto& r : dead)
    dead_json.push_back({{"id", r.id}, {"kind", r.kind}, {"operation", r.operation}, {"registration_id", r.registration_id},
                         {"attempts", r.attempts}, {"reason", r.last_error}});
  ctx.print({{"outbox", counts}, {"dead", dead_json}}, [&](std::ostream& os) {
    os << "outbox: " << counts["pending"] << " pending, " << counts["synced"] << " synced, " << counts["dead"] << " dead\n";
    for (auto& r : dead)
      os << "dead: " << r.kind << " " << r.operation << " '" << r.registration_id << "' after " << r.attempts
         << " attempt(s): " << r.last_error << "\n";
  });
  return {};
}

Status compute_key(const Context& ctx, const EnrollmentArgs& a) {
  KL_TRY(auto regid, ca::RegistrationId::parse(a.id));
  std::string key;
  if (a.group_key_source.starts_with("hsm:")) {
    KL_TRY(auto config, ctx.config());
    KL_TRY(auto store, ctx.state().open_key_store(config));
    KL_TRY(auto secret, store->secret(a.group_key_source.substr(4)));
    KL_TRY(key, sd::derive_device_key(*secret, regid.str()));
  } else if (a.group_key_source == "-" || a.group_key_source.starts_with("file:")) {
    std::string path = a.group_key_source == "-" ? "-" : a.group_key_source.substr(5);
    KL_TRY(std::string text, read_input(path, 4096, "--group-key-source"));
    SecretString group(text.substr(0, text.find_first_of("\r\n")));
    OPENSSL_cleanse(text.data(), text.size());
    KL_TRY(key, sd::derive_device_key(std::string_view(group.reveal()), regid.str()));
  } else {
    return fail(Domain::usage, "--group-key-source must be file:PATH, - (standard input) or hsm:LABEL");
  }
  std::cout << key << "\n";
  return {};
}

}  // namespace

void add_dps_commands(CLI::App& app, Handler& run) {
  auto* dps = app.add_subcommand("dps", "Enrollments in Azure IoT Hub DPS (queued in the ledger, sent by 'dps sync')");
  dps->require_subcommand(1);
  auto a = std::make_shared<EnrollmentArgs>();
  auto common = [a](CLI::App* c) {
    c->add_option("--allocation-policy", a->allocation_policy, "hashed | geoLatency | static | custom");
    c->add_option("--webhook-url", a->webhook,
                  "Custom allocation webhook (with --allocation-policy custom): env:VAR or file:PATH holding the URL "
                  "(needed when it carries a query string such as ?code=KEY), or an http(s) URL without query "
                  "string; a source is checked now and resolved again by dps sync (the ledger keeps the source)");
    c->add_option("--iot-hub", a->hubs, "An IoT hub host name (repeatable)");
    c->add_option("--initial-twin", a->initial_twin, "JSON file with the initial twin");
    c->add_flag("--edge", a->edge, "The device is an IoT Edge device");
    c->add_option("--provisioning-status", a->provisioning_status, "enabled | disabled");
  };
  auto* enr = dps->add_subcommand("enrollment", "Individual enrollments");
  enr->require_subcommand(1);
  auto* ec = enr->add_subcommand("create", "Queue an individual enrollment (X.509 from the ledger by default)");
  ec->add_option("registration-id", a->id, "Registration ID")->required();
  ec->add_option("--certificate", a->certificate, "PEM certificate instead of the ledger's active one");
  ec->add_option("--symmetric-key-source", a->key_source, "hsm:LABEL (derived per ID) or file:PATH");
  ec->add_option("--tpm-ek", a->tpm_ek, "File with the base64 TPM endorsement key");
  ec->add_option("--device-id", a->device_id, "IoT Hub device ID (default: the registration ID)");
  ec->add_option("--profile", a->profile, "Certificate profile to look up in the ledger")->capture_default_str();
  common(ec);
  ec->callback([&run, a] { run = [a](const Context& c) { return enrollment_create(c, *a); }; });
  for (auto [name, group] : {std::pair{"enrollment", false}, std::pair{"group", true}}) {
    CLI::App* parent = group ? nullptr : enr;
    if (group) {
      parent = dps->add_subcommand("group", "Enrollment groups");
      parent->require_subcommand(1);
      auto* gc = parent->add_subcommand("create", "Queue an enrollment group");
      gc->add_option("name", a->id, "Enrollment group ID");
      gc->add_option("--from", a->from, "Queue the EnrollmentGroup JSON of this file (e.g. the enrollment-groups.json "
                                        "that 'keyline dps infra' writes) instead");
      gc->add_option("--x509-ca", a->x509_ca, "intermediate | root: the station CA that signs the group's devices");
      gc->add_option("--symmetric-key-source", a->key_source, "hsm:LABEL or file:PATH");
      common(gc);
      gc->callback([&run, a] { run = [a](const Context& c) { return group_create(c, *a); }; });
    }
    bool g = group;
    auto* sh = parent->add_subcommand("show", "Show it as DPS holds it");
    sh->add_option("id", a->id, "ID")->required();
    sh->callback([&run, a, g] { run = [a, g](const Context& c) { return show(c, g, a->id); }; });
    auto* del = parent->add_subcommand("delete", "Queue its deletion");
    del->add_option("id", a->id, "ID")->required();
    del->callback([&run, a, g] {
      run = [a, g](const Context& c) -> Status {
        const char* idm = g ? "enrollmentGroupId" : "registrationId";
        KL_TRY(auto config, c.config());
        return queue(c, config, g ? "group" : "individual", "delete", a->id,
                     json{{idm, a->id}, {"attestation", {{"type", "none"}}}});
      };
    });
    auto* ls = parent->add_subcommand("list", "List them (from DPS)");
    ls->callback([&run, g] { run = [g](const Context& c) { return list(c, g); }; });
    (void)name;
  }
  auto* sy = dps->add_subcommand("sync", "Send the outbox to DPS (bulk, exactly once)");
  sy->add_flag("--once", a->once, "One pass, then exit (non-zero while enrollments remain pending)");
  sy->add_option("--interval", a->interval_s, "Seconds between passes")->capture_default_str();
  sy->callback([&run, a] { run = [a](const Context& c) { return sync(c, *a); }; });
  auto* st = dps->add_subcommand("status", "Outbox counts and dead letters with their reasons");
  st->callback([&run] { run = [](const Context& c) { return status(c); }; });
  auto* reg = dps->add_subcommand("registration", "Device registration states in DPS");
  reg->require_subcommand(1);
  auto* rs = reg->add_subcommand("show", "Show a device's registration state");
  rs->add_option("registration-id", a->id)->required();
  rs->callback([&run, a] {
    run = [a](const Context& c) -> Status {
      KL_TRY(auto config, c.config());
      KL_TRY(auto client, open_client(c, config));
      KL_TRY(auto st, client->registration_state(a->id));
      std::cout << st.dump(2) << "\n";
      return {};
    };
  });
  auto* rd = reg->add_subcommand("delete", "Delete a device's registration state");
  rd->add_option("registration-id", a->id)->required();
  rd->callback([&run, a] {
    run = [a](const Context& c) -> Status {
      KL_TRY(auto config, c.config());
      KL_TRY(auto client, open_client(c, config));
      KL_CHECK(client->delete_registration_state(a->id));
      std::cout << "deleted the registration state of '" << a->id << "'\n";
      return {};
    };
  });
  auto* ck = dps->add_subcommand("compute-device-key", "Derive a device key from a group key (as az iot dps does)");
  ck->add_option("--group-key-source", a->group_key_source, "file:PATH | - | hsm:LABEL")->required();
  ck->add_option("--registration-id", a->id, "Registration ID")->required();
  ck->callback([&run, a] { run = [a](const Context& c) { return compute_key(c, *a); }; });
}

}  // namespace keyline::cli
