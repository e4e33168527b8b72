// [dps.instance] and [[dps.groups]] of keyline.toml -> infra::InfraConfig.
// Every value is checked here, so the emitters can trust the model.

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "keyline/station/infra.hpp"

namespace keyline::station::infra {

namespace {

using Json = nlohmann::json;

// Names a key in messages: "dps.instance.hubs[1].allocation-weight".
struct Key {
  std::string path;
  Key operator/(std::string_view k) const { return {path + "." + std::string(k)}; }
  Key operator[](std::size_t i) const { return {path + "[" + std::to_string(i) + "]"}; }
};

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  std::unexpected<Error> error(const Key& k, std::string_view what) const {
    return fail(Domain::input, source_ + ": " + k.path + " " + std::string(what));
  }

  Status only_keys(const toml::table& t, const Key& k, std::initializer_list<std::string_view> known) const {
    for (auto&& [name, v] : t) {
      if (std::find(known.begin(), known.end(), name.str()) != known.end()) continue;
      std::string list;
      for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
      return error(k / name.str(), "is not a known key (known: " + list + ")");
    }
    return {};
  }

  Result<std::optional<std::string>> opt_string(const toml::table& t, const Key& k, std::string_view name,
                                                std::size_t max_len = 256) const {
    const toml::node* n = t.get(name);
    if (!n) return std::optional<std::string>{};
    auto s = n->value<std::string>();
    if (!n->is_string() || !s || s->empty()) return error(k / name, "must be a non-empty string");
    if (s->size() > max_len) return error(k / name, "must be at most " + std::to_string(max_len) + " characters");
    for (unsigned char c : *s)
      if (c < 0x20 || c == 0x7f) return error(k / name, "must not contain control characters");
    return s;
  }

  Result<std::string> string(const toml::table& t, const Key& k, std::string_view name,
                             std::size_t max_len = 256) const {
    KL_TRY(auto s, opt_string(t, k, name, max_len));
    if (!s) return error(k / name, "is required");
    return *s;
  }

  Result<std::string> one_of(const toml::table& t, const Key& k, std::string_view name, std::string def,
                             std::initializer_list<std::string_view> allowed) const {
    KL_TRY(auto s, opt_string(t, k, name));
    std::string v = s ? *s : def;
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return error(k / name, "must be one of " + list + " (got '" + v + "')");
  }

  Result<bool> boolean(const toml::table& t, const Key& k, std::string_view name, bool def) const {
    const toml::node* n = t.get(name);
    if (!n) return def;
    if (!n->is_boolean()) return error(k / name, "must be true or false");
    return *n->value<bool>();
  }

  Result<int> integer(const toml::table& t, const Key& k, std::string_view name, int def, int lo, int hi) const {
    const toml::node* n = t.get(name);
    if (!n) return def;
    auto v = n->value<std::int64_t>();
    if (!n->is_integer() || !v || *v < lo || *v > hi)
      return error(k / name, "must be " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int>(*v);
  }

  Result<const toml::table*> table(const toml::node* n, const Key& k) const {
    if (!n || !n->is_table()) return error(k, "must be a table");
    return n->as_table();
  }

  Result<std::vector<const toml::table*>> tables(const toml::table& t, const Key& k, std::string_view name) const {
    std::vector<const toml::table*> out;
    const toml::node* n = t.get(name);
    if (!n || (n->is_array() && n->as_array()->empty())) return out;
    if (!n->is_array_of_tables()) return error(k / name, "must be an array of tables ([[" + (k / name).path + "]])");
    for (auto& e : *n->as_array()) out.push_back(e.as_table());
    return out;
  }

  // TOML value -> JSON (twin properties/tags). Dates and times are refused.
  Result<Json> to_json(const toml::node& n, const Key& k) const {
    if (auto* t = n.as_table()) {
      Json o = Json::object();
      for (auto&& [name, v] : *t) {
        KL_TRY(o[std::string(name.str())], to_json(v, k / name.str()));
      }
      return o;
    }
    if (auto* a = n.as_array()) {
      Json arr = Json::array();
      for (std::size_t i = 0; i < a->size(); ++i) {
        KL_TRY(auto v, to_json(*a->get(i), k[i]));
        arr.push_back(std::move(v));
      }
      return arr;
    }
    if (n.is_string()) return Json(*n.value<std::string>());
    if (n.is_integer()) return Json(*n.value<std::int64_t>());
    if (n.is_floating_point()) return Json(*n.value<double>());
    if (n.is_boolean()) return Json(*n.value<bool>());
    return error(k, "must be a string, number, boolean, array or table (dates are not twin values)");
  }

  // An inline table, or a string holding a JSON object.
  Result<Json> twin(const toml::table& t, const Key& k, std::string_view name) const {
    const toml::node* n = t.get(name);
    if (!n) return Json::object();
    Json j;
    if (n->is_string()) {
      j = Json::parse(*n->value<std::string>(), nullptr, false);
      if (j.is_discarded()) return error(k / name, "is not valid JSON");
    } else {
      KL_TRY(j, to_json(*n, k / name));
    }
    if (!j.is_object()) return error(k / name, "must be a table or a JSON object");
    for (auto& [member, v] : j.items()) {
      (void)v;
      if (member == "version" || member == "count" || member == "metadata" || member.starts_with("$"))
        return error(k / name, "must not use the reserved twin member '" + member + "'");
    }
    return j;
  }

 private:
  std::string source_;
};

bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool digit(char c) { return c >= '0' && c <= '9'; }

bool dps_name_ok(const std::string& s) {
  if (s.size() < 3 || s.size() > 64 || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return alnum(c) || c == '-'; });
}

bool host_name_ok(const std::string& s) {
  if (s.size() > 253 || s.front() == '.' || s.back() == '.' || s.find("..") != std::string::npos) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return alnum(c) || c == '-' || c == '.'; });
}

bool identifier_ok(const std::string& s) {
  if (s.empty() || s.size() > 64 || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return alnum(c) || c == '_'; });
}

// Terraform refuses these as variable names.
bool reserved_variable(const std::string& s) {
  static const std::set<std::string> kReserved = {"source", "version", "providers", "count", "for_each",
                                                  "lifecycle", "depends_on", "locals",
                                                  "resource_group_name"};
  return kReserved.contains(s);
}

bool location_ok(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return alnum(c) || c == ' '; });
}

bool ipv4_cidr_ok(const std::string& s) {
  std::size_t slash = s.find('/');
  std::string addr = s.substr(0, slash);
  if (slash != std::string::npos) {
    std::string bits = s.substr(slash + 1);
    if (bits.empty() || bits.size() > 2 || !std::all_of(bits.begin(), bits.end(), digit) || std::stoi(bits) > 32)
      return false;
  }
  int parts = 0;
  std::size_t pos = 0;
  while (pos <= addr.size()) {
    std::size_t dot = addr.find('.', pos);
    std::string p = addr.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), digit) || std::stoi(p) > 255) return false;
    ++parts;
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return parts == 4;
}

// DPS enrollment group ids: alphanumeric and - . _ :, at most 128, last char alphanumeric or '-'.
bool group_id_ok(const std::string& s) {
  if (s.size() > 128 || !(alnum(s.back()) || s.back() == '-')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return alnum(c) || c == '-' || c == '.' || c == '_' || c == ':'; });
}

Result<AllocationPolicy> policy_from(const std::string& s) {
  if (s == "Hashed") return AllocationPolicy::hashed;
  if (s == "GeoLatency") return AllocationPolicy::geo_latency;
  return AllocationPolicy::static_hub;
}

Result<Instance> parse_instance(const Parser& p, const toml::table& t, const Key& k) {
  KL_CHECK(p.only_keys(t, k, {"name", "location", "sku", "capacity", "allocation-policy", "hubs", "tags",
                              "public-network-access", "ip-filter-rules", "data-residency", "api-version",
                              "ca-certificates"}));
  Instance in;
  KL_TRY(in.name, p.string(t, k, "name"));
  if (!dps_name_ok(in.name))
    return p.error(k / "name", "must be 3..64 letters, digits or '-', not ending in '-' (got '" + in.name + "')");
  KL_TRY(in.location, p.string(t, k, "location", 64));
  if (!location_ok(in.location)) return p.error(k / "location", "must be an Azure region such as 'westeurope'");
  KL_TRY(in.sku, p.one_of(t, k, "sku", "S1", {"S1"}));
  KL_TRY(in.capacity, p.integer(t, k, "capacity", 1, 1, 200));
  KL_TRY(auto policy, p.one_of(t, k, "allocation-policy", "Hashed", {"Hashed", "GeoLatency", "Static"}));
  KL_TRY(in.allocation_policy, policy_from(policy));
  KL_TRY(in.public_network_access, p.one_of(t, k, "public-network-access", "Enabled", {"Enabled", "Disabled"}));
  KL_TRY(in.data_residency, p.boolean(t, k, "data-residency", false));
  KL_TRY(in.api_version, p.one_of(t, k, "api-version", std::string(kDefaultApiVersion), {"2022-12-12", "2021-07-01"}));
  if (in.data_residency && in.api_version == "2021-07-01")
    return p.error(k / "data-residency", "needs api-version 2022-12-12 (2021-07-01 has no enableDataResidency)");

  if (const toml::node* n = t.get("ca-certificates")) {
    auto* arr = n->as_array();
    if (!arr || arr->empty()) return p.error(k / "ca-certificates", "must be a list such as [\"intermediate\", \"root\"]");
    in.ca_certificates.clear();
    for (std::size_t i = 0; i < arr->size(); ++i) {
      auto s = arr->get(i)->value<std::string>();
      if (!arr->get(i)->is_string() || (*s != "intermediate" && *s != "root"))
        return p.error((k / "ca-certificates")[i], "must be \"intermediate\" or \"root\"");
      CaRole r = *s == "root" ? CaRole::root : CaRole::intermediate;
      if (std::find(in.ca_certificates.begin(), in.ca_certificates.end(), r) != in.ca_certificates.end())
        return p.error((k / "ca-certificates")[i], "names '" + *s + "' twice");
      in.ca_certificates.push_back(r);
    }
  }

  if (const toml::node* n = t.get("tags")) {
    KL_TRY(const toml::table* tags, p.table(n, k / "tags"));
    if (tags->size() > 50) return p.error(k / "tags", "may hold at most 50 tags");
    for (auto&& [name, v] : *tags) {
      std::string tag(name.str());
      if (tag.empty() || tag.size() > 512 || tag.find_first_of("<>%&\\?/") != std::string::npos)
        return p.error(k / "tags" / tag, "is not a valid tag name (1..512 characters, none of < > % & \\ ? /)");
      auto value = v.value<std::string>();
      if (!v.is_string() || value->size() > 256) return p.error(k / "tags" / tag, "must be a string of at most 256 characters");
      in.tags[tag] = *value;
    }
  }

  KL_TRY(auto hubs, p.tables(t, k, "hubs"));
  std::set<std::string> hosts, params;
  for (std::size_t i = 0; i < hubs.size(); ++i) {
    Key hk = (k / "hubs")[i];
    const toml::table& h = *hubs[i];
    KL_CHECK(p.only_keys(h, hk, {"host-name", "location", "allocation-weight", "apply-allocation-policy",
                                 "connection-string-parameter"}));
    LinkedHub hub;
    KL_TRY(hub.host_name, p.string(h, hk, "host-name", 253));
    if (!host_name_ok(hub.host_name))
      return p.error(hk / "host-name", "must be a host name such as 'myhub.azure-devices.net'");
    if (!hosts.insert(hub.host_name).second) return p.error(hk / "host-name", "'" + hub.host_name + "' is linked twice");
    KL_TRY(hub.location, p.string(h, hk, "location", 64));
    if (!location_ok(hub.location)) return p.error(hk / "location", "must be an Azure region such as 'westeurope'");
    KL_TRY(hub.allocation_weight, p.integer(h, hk, "allocation-weight", 1, 0, 1000));
    KL_TRY(hub.apply_allocation_policy, p.boolean(h, hk, "apply-allocation-policy", true));
    KL_TRY(hub.connection_string_parameter, p.string(h, hk, "connection-string-parameter", 4096));
    const std::string& param = hub.connection_string_parameter;
    if (!identifier_ok(param) || reserved_variable(param))
      return p.error(hk / "connection-string-parameter",
                     "must be the NAME of a secure parameter (letters, digits, '_', not starting with a digit; "
                     "not a Terraform reserved name), not the connection string itself");
    if (!params.insert(param).second)
      return p.error(hk / "connection-string-parameter", "'" + param + "' is used by two hubs");
    in.hubs.push_back(std::move(hub));
  }

  KL_TRY(auto rules, p.tables(t, k, "ip-filter-rules"));
  std::set<std::string> rule_names;
  for (std::size_t i = 0; i < rules.size(); ++i) {
    Key rk = (k / "ip-filter-rules")[i];
    const toml::table& r = *rules[i];
    KL_CHECK(p.only_keys(r, rk, {"name", "action", "ip-mask", "target"}));
    IpFilterRule rule;
    KL_TRY(rule.name, p.string(r, rk, "name", 128));
    if (!rule_names.insert(rule.name).second) return p.error(rk / "name", "'" + rule.name + "' is used twice");
    KL_TRY(rule.action, p.one_of(r, rk, "action", "", {"Accept", "Reject"}));
    KL_TRY(rule.ip_mask, p.string(r, rk, "ip-mask", 18));
    if (!ipv4_cidr_ok(rule.ip_mask))
      return p.error(rk / "ip-mask", "must be an IPv4 address or CIDR range such as '192.168.0.0/24'");
    KL_TRY(rule.target, p.one_of(r, rk, "target", "all", {"all", "serviceApi", "deviceApi"}));
    in.ip_filter_rules.push_back(std::move(rule));
  }
  return in;
}

Result<Group> parse_group(const Parser& p, const toml::table& g, const Key& k, const std::optional<Instance>& in) {
  KL_CHECK(p.only_keys(g, k, {"name", "attestation", "x509-ca", "provisioning-status", "initial-twin-properties",
                              "initial-twin-tags", "allocation-policy", "iot-hubs", "iot-edge"}));
  Group grp;
  KL_TRY(grp.name, p.string(g, k, "name", 128));
  if (!group_id_ok(grp.name))
    return p.error(k / "name", "must be letters, digits and - . _ : (at most 128, ending in a letter, digit or '-')");
  KL_TRY(auto att, p.one_of(g, k, "attestation", "x509-ca", {"x509-ca", "symmetric-key"}));
  grp.attestation = att == "x509-ca" ? Group::Attestation::x509_ca : Group::Attestation::symmetric_key;
  if (g.get("x509-ca") && grp.attestation != Group::Attestation::x509_ca)
    return p.error(k / "x509-ca", "applies only to attestation = \"x509-ca\"");
  KL_TRY(auto ca, p.one_of(g, k, "x509-ca", "intermediate", {"intermediate", "root"}));
  grp.ca = ca == "root" ? CaRole::root : CaRole::intermediate;
  if (grp.attestation == Group::Attestation::x509_ca && grp.ca == CaRole::root && in &&
      std::find(in->ca_certificates.begin(), in->ca_certificates.end(), CaRole::root) == in->ca_certificates.end())
    return p.error(k / "x509-ca", "= \"root\" refers to the uploaded root CA; add \"root\" to dps.instance.ca-certificates");
  KL_TRY(grp.provisioning_status, p.one_of(g, k, "provisioning-status", "enabled", {"enabled", "disabled"}));
  KL_TRY(grp.initial_twin_properties, p.twin(g, k, "initial-twin-properties"));
  KL_TRY(grp.initial_twin_tags, p.twin(g, k, "initial-twin-tags"));
  if (g.get("allocation-policy")) {
    KL_TRY(auto policy, p.one_of(g, k, "allocation-policy", "", {"Hashed", "GeoLatency", "Static"}));
    KL_TRY(grp.allocation_policy, policy_from(policy));
  }
  if (const toml::node* n = g.get("iot-hubs")) {
    auto* arr = n->as_array();
    if (!arr) return p.error(k / "iot-hubs", "must be a list of linked hub host names");
    for (std::size_t i = 0; i < arr->size(); ++i) {
      auto s = arr->get(i)->value<std::string>();
      if (!arr->get(i)->is_string()) return p.error((k / "iot-hubs")[i], "must be a host name string");
      bool linked = in && std::any_of(in->hubs.begin(), in->hubs.end(), [&](const LinkedHub& h) { return h.host_name == *s; });
      if (!linked) return p.error((k / "iot-hubs")[i], "'" + *s + "' is not one of dps.instance.hubs");
      grp.iot_hubs.push_back(*s);
    }
  }
  KL_TRY(grp.iot_edge, p.boolean(g, k, "iot-edge", false));
  return grp;
}

}  // namespace

std::string_view arm_name(AllocationPolicy p) {
  switch (p) {
    case AllocationPolicy::hashed: return "Hashed";
    case AllocationPolicy::geo_latency: return "GeoLatency";
    case AllocationPolicy::static_hub: return "Static";
  }
  return "Hashed";
}

std::string_view service_name(AllocationPolicy p) {
  switch (p) {
    case AllocationPolicy::hashed: return "hashed";
    case AllocationPolicy::geo_latency: return "geoLatency";
    case AllocationPolicy::static_hub: return "static";
  }
  return "hashed";
}

std::string_view to_string(CaRole r) { return r == CaRole::root ? "root" : "intermediate"; }

bool known_api_version(std::string_view v) { return v == "2022-12-12" || v == "2021-07-01"; }

Result<InfraConfig> parse_infra_config(std::string_view text, std::string_view source) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const auto& err = parsed.error();
    return fail(Domain::input, std::string(source) + ":" + std::to_string(err.source().begin.line) + ": " +
                                   std::string(err.description()));
  }
  const toml::table& root = parsed.table();
  Parser p(source);
  InfraConfig c;
  if (auto id = root["station"]["id"].value<std::string>(); id && !id->empty()) c.station_id = *id;
  const toml::node* dps = root.get("dps");
  if (!dps) return c;
  KL_TRY(const toml::table* dt, p.table(dps, Key{"dps"}));
  if (const toml::node* n = dt->get("instance")) {
    KL_TRY(const toml::table* it, p.table(n, Key{"dps.instance"}));
    KL_TRY(c.instance, parse_instance(p, *it, Key{"dps.instance"}));
  }
  KL_TRY(auto groups, p.tables(*dt, Key{"dps"}, "groups"));
  std::set<std::string> names;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    Key gk = Key{"dps.groups"}[i];
    KL_TRY(auto g, parse_group(p, *groups[i], gk, c.instance));
    if (!names.insert(g.name).second) return p.error(gk / "name", "'" + g.name + "' is defined twice");
    c.groups.push_back(std::move(g));
  }
  return c;
}

}  // namespace keyline::station::infra
