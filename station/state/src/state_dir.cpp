#include "keyline/station/state_dir.hpp"

#include <cctype>
#include <cstdio>

#include <toml++/toml.h>

#include "keyline/core/files.hpp"
#include "keyline/core/log.hpp"

namespace keyline::station {

namespace {

Status parse_audit(const toml::table& t, std::string_view source, AuditConfig& a) {
  const toml::table* audit = t["audit"].as_table();
  if (!audit) return {};
  std::string where = std::string(source) + ": [audit] ";
  for (auto&& [k, v] : *audit) {
    std::string_view key = k.str();
    if (key == "operator") {
      auto s = v.value<std::string>();
      if (!s || s->empty()) return fail(Domain::input, where + "operator must be a non-empty string");
      a.operator_name = *s;
    } else if (key == "require_operator") {
      auto b = v.value<bool>();
      if (!b) return fail(Domain::input, where + "require_operator must be true or false");
      a.require_operator = *b;
    } else if (key == "checkpoint_interval") {
      auto n = v.value<std::int64_t>();
      if (!n || *n < 0 || *n > 100000000)
        return fail(Domain::input, where + "checkpoint_interval must be a record count from 0 to 100000000");
      a.checkpoint_interval = *n;
    } else if (key == "key") {
      auto s = v.value<std::string>();
      if (!s || s->empty()) return fail(Domain::input, where + "key must be a non-empty key label");
      a.key = *s;
    } else {
      return fail(Domain::input, where + "unknown key '" + std::string(key) +
                                     "' (known: operator, require_operator, checkpoint_interval, key)");
    }
  }
  return {};
}

Status parse_provision(const toml::table& t, std::string_view source, ProvisionConfig& p) {
  const toml::table* prov = t["provision"].as_table();
  if (!prov) return {};
  std::string where = std::string(source) + ": [provision] ";
  for (auto&& [k, v] : *prov) {
    std::string key(k.str());
    auto str = [&](std::string& out) -> Status {
      auto s = v.value<std::string>();
      if (!s || s->empty()) return fail(Domain::input, where + key + " must be a non-empty string");
      out = *s;
      return {};
    };
    if (key == "mode") {
      KL_CHECK(str(p.mode));
      if (p.mode != "x509-device-key" && p.mode != "x509-station-key" && p.mode != "symmetric-individual" &&
          p.mode != "symmetric-group" && p.mode != "tpm")
        return fail(Domain::input, where + "mode '" + p.mode +
                                       "' is unknown (known: x509-device-key, x509-station-key, "
                                       "symmetric-individual, symmetric-group, tpm)");
    } else if (key == "registration_id_template") {
      KL_CHECK(str(p.registration_id_template));
    } else if (key == "profile") {
      KL_CHECK(str(p.profile));
    } else if (key == "group_key" || key == "individual_key") {
      KL_CHECK(str(key == "group_key" ? p.group_key : p.individual_key));
      const std::string& val = key == "group_key" ? p.group_key : p.individual_key;
      if (!val.starts_with("hsm:") || val.size() == 4)
        return fail(Domain::input, where + key + " must name a secret in the key store as hsm:LABEL");
    } else if (key == "id_scope") {
      KL_CHECK(str(p.id_scope));
    } else if (key == "global_endpoint") {
      KL_CHECK(str(p.global_endpoint));
    } else if (key == "enrollment") {
      KL_CHECK(str(p.enrollment));
      if (p.enrollment != "individual" && p.enrollment != "group")
        return fail(Domain::input, where + "enrollment must be \"individual\" or \"group\"");
    } else if (key == "timeout_ms") {
      auto n = v.value<std::int64_t>();
      if (!n || *n < 10 || *n > 600000) return fail(Domain::input, where + "timeout_ms must be 10..600000");
      p.timeout_ms = *n;
    } else if (key == "baud") {
      auto n = v.value<std::int64_t>();
      if (!n || *n < 1200 || *n > 4000000) return fail(Domain::input, where + "baud must be 1200..4000000");
      p.baud = static_cast<unsigned>(*n);
    } else if (key == "rtscts") {
      auto b = v.value<bool>();
      if (!b) return fail(Domain::input, where + "rtscts must be true or false");
      p.rtscts = *b;
    } else {
      return fail(Domain::input, where + "unknown key '" + key +
                                     "' (known: mode, registration_id_template, profile, group_key, "
                                     "individual_key, id_scope, global_endpoint, enrollment, timeout_ms, baud, rtscts)");
    }
  }
  return {};
}

}  // namespace

Result<Config> parse_config(std::string_view text, std::string_view source) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const auto& err = parsed.error();
    return fail(Domain::input, std::string(source) + ":" + std::to_string(err.source().begin.line) +
                                   ": " + std::string(err.description()));
  }
  const toml::table& t = parsed.table();
  for (auto&& [k, v] : t) {
    std::string_view key = k.str();
    if (key != "station" && key != "ca" && key != "profiles" && key != "dps" && key != "audit" &&
        key != "provision")
      return fail(Domain::input, std::string(source) + ": unknown table [" + std::string(key) +
                                     "] (known: station, ca, profiles, dps, audit, provision)");
  }
  Config c;
  c.source = fs::path(source);
  if (auto v = t["station"]["id"]) {
    auto s = v.value<std::string>();
    if (!s || s->empty()) return fail(Domain::input, std::string(source) + ": [station] id must be a non-empty string");
    c.station_id = *s;
  }
  auto str = [&](const char* key, std::string& out) -> Status {
    if (auto v = t["ca"][key]) {
      auto s = v.value<std::string>();
      if (!s || s->empty())
        return fail(Domain::input, std::string(source) + ": [ca] " + key + " must be a non-empty string");
      out = *s;
    }
    return {};
  };
  KL_CHECK(str("key_store", c.ca.key_store));
  KL_CHECK(str("root_key", c.ca.root_key));
  KL_CHECK(str("intermediate_key", c.ca.intermediate_key));
  KL_CHECK(parse_audit(t, source, c.audit));
  if (auto dps = t["dps"].as_table()) {
    for (auto&& [k, v] : *dps) {
      std::string key(k.str());
      if (v.is_table() || v.is_array_of_tables()) continue;  // dps.instance, dps.groups: other parts
      std::string where = std::string(source) + ": [dps] " + key;
      if (key == "quota-per-minute") {
        auto q = v.value<double>();
        if (!q || *q <= 0) return fail(Domain::input, where + " must be a positive number (operations per minute)");
        c.dps.quota_per_minute = *q;
        continue;
      }
      std::string* out = key == "connection-string-source" ? &c.dps.connection_string_source
                         : key == "id-scope"                ? &c.dps.id_scope
                         : key == "global-endpoint"         ? &c.dps.global_endpoint
                         : key == "ca-file"                 ? &c.dps.ca_file
                                                            : nullptr;
      if (!out)
        return fail(Domain::input, where + ": unknown key (known: connection-string-source, id-scope, "
                                           "global-endpoint, ca-file, quota-per-minute)");
      auto sv = v.value<std::string>();
      if (!sv || sv->empty()) return fail(Domain::input, where + " must be a non-empty string");
      *out = *sv;
    }
    if (!c.dps.connection_string_source.empty() && !c.dps.connection_string_source.starts_with("file:") &&
        !c.dps.connection_string_source.starts_with("env:"))
      return fail(Domain::input, std::string(source) + ": [dps] connection-string-source must be file:PATH or env:VAR "
                                                       "(never the connection string itself)");
  }
  KL_CHECK(parse_provision(t, source, c.provision));
  KL_TRY(c.profiles, ca::parse_profiles(text, source));
  return c;
}

Status validate_station_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return fail(Domain::usage, "--station-id must be 1 to 64 characters long");
  for (std::size_t i = 0; i < id.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(id[i]);
    bool ok = std::isalnum(c) || c == ' ' || c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) {
      char shown[8];
      std::snprintf(shown, sizeof shown, c >= 0x21 && c < 0x7f ? "'%c'" : "0x%02X", c);
      return fail(Domain::usage, "--station-id: character " + std::string(shown) + " at position " +
                                     std::to_string(i + 1) +
                                     " is not allowed (it names the station in the ledger and in the audit "
                                     "certificate); use letters, digits, space and . _ : -");
    }
  }
  if (id.front() == ' ' || id.back() == ' ')
    return fail(Domain::usage, "--station-id must not begin or end with a space");
  return {};
}

namespace {

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string toml_string(std::string_view v) {
  std::string out = "\"";
  for (char ch : v) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04X", c);
      out += esc;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

std::string default_config_toml(const CaConfig& ca, const std::string& station_id) {
  return "# Keyline station configuration. Written by 'keyline ca init'; edit freely.\n"
         "# Flags override KEYLINE_* environment variables, which override this file.\n\n"
         "[station]\n"
         "id = " + toml_string(station_id) + "\n\n"
         "[ca]\n"
         "# Where the CA private keys live. file: is for development only.\n"
         "key_store = " + toml_string(ca.key_store) + "\n"
         "root_key = " + toml_string(ca.root_key) + "\n"
         "intermediate_key = " + toml_string(ca.intermediate_key) + "\n\n"
         "[audit]\n"
         "# Every state-changing command records who ran it: --operator NAME,\n"
         "# KEYLINE_OPERATOR, or this default.\n"
         "# operator = \"line-1-shift-a\"\n"
         "require_operator = true\n"
         "# A signed checkpoint of the audit trail after this many records (and at every export).\n"
         "checkpoint_interval = 1000\n"
         "key = \"keyline-audit\"\n\n"
         "# Leaf certificate profiles; 'device' is the default (--profile NAME).\n"
         "[profiles.device]\n"
         "validity_days = 365\n"
         "key_algorithms = [\"ec-p256\", \"ec-p384\", \"rsa\"]\n"
         "min_rsa_bits = 2048\n"
         "backdate_minutes = 5\n"
         "# subject = { O = \"Example Corp\", OU = \"Line 1\", C = \"DE\" }\n"
         "# uri_san = \"urn:example:device:{registration_id}\"\n"
         "# key_agreement = true\n"
         "# allowed_request_extensions = [\"subjectAltName\"]\n\n"
         "# IEEE 802.1AR-style initial device identity: never expires, carries the\n"
         "# device serial number (give --device-serial when issuing).\n"
         "[profiles.idevid]\n"
         "validity = \"forever\"\n"
         "key_algorithms = [\"ec-p256\", \"ec-p384\"]\n"
         "serial_number_attribute = true\n"
         "# hardware_module_oid = \"1.3.6.1.4.1.99999.1\"\n";
}

bool StateDir::initialised() const {
  std::error_code ec;
  return fs::exists(ledger_path(), ec);
}

Status StateDir::require_initialised() const {
  std::error_code ec;
  if (!fs::is_directory(root_, ec))
    return fail(Domain::state, "state dir " + root_.string() +
                                   " does not exist; create a CA there with 'keyline ca init' "
                                   "(or point --state / KEYLINE_STATE at an existing one)");
  if (!initialised())
    return fail(Domain::state, "state dir " + root_.string() +
                                   " is not initialised (no ledger.db); run 'keyline ca init' first");
  return {};
}

Result<Config> StateDir::load_config() const {
  fs::path path = config_path();
  auto text = files::read(path, 1 << 20);
  if (!text) {
    if (!config_override_ && !initialised()) KL_CHECK(require_initialised());
    return fail(Domain::state, "cannot read the configuration: " + text.error().message());
  }
  return parse_config(*text, path.string());
}

Result<Ledger> StateDir::open_ledger() const {
  KL_CHECK(require_initialised());
  return Ledger::open(ledger_path());
}

Result<std::unique_ptr<hsm::KeyStore>> StateDir::open_key_store(const Config& config) const {
  return hsm::open(config.ca.key_store, root_);
}

namespace {
Result<X509Ptr> read_cert(const fs::path& path) {
  auto text = files::read(path, 1 << 20);
  if (!text) return fail(Domain::state, "cannot read CA certificate: " + text.error().message());
  auto cert = x509_from_pem(*text, path.string());
  if (!cert) return fail(Domain::state, cert.error().message());
  return cert;
}
}  // namespace

Result<StateDir::Ca> StateDir::open_authority(const Config& config, const Clock& clock,
                                             Rng& rng) const {
  KL_CHECK(require_initialised());
  Ca out;
  KL_TRY(out.key_store, open_key_store(config));
  if (out.key_store->is_development())
    log::get("hsm")->warn("CA keys are in the development key store {}; use an HSM or TPM in production",
                          out.key_store->uri());
  KL_TRY(auto signer, out.key_store->signer(config.ca.intermediate_key));
  KL_TRY(X509Ptr intermediate, read_cert(intermediate_cert_path()));
  KL_TRY(X509Ptr root, read_cert(root_cert_path()));
  std::vector<X509Ptr> chain;
  chain.push_back(std::move(root));
  KL_TRY(auto authority, ca::Authority::create(std::move(intermediate), std::move(chain),
                                               std::move(signer), clock, rng));
  out.authority.emplace(std::move(authority));
  return out;
}

Result<const ca::Profile*> find_profile(const Config& config, const std::string& name) {
  auto it = config.profiles.find(name);
  if (it == config.profiles.end()) {
    std::string known;
    for (auto& [k, v] : config.profiles) known += (known.empty() ? "" : ", ") + k;
    return fail(Domain::usage, "no profile '" + name + "' in " + config.source.string() +
                                   " (configured: " + known + ")");
  }
  return &it->second;
}

}  // namespace keyline::station
