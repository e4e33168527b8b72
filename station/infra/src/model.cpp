// The deployment model: certificates, consistency checks, the shared resource
// tree and the quoting rules of the output languages.

#include <algorithm>
#include <cstdio>

#include "keyline/core/hex.hpp"
#include "render.hpp"

namespace keyline::station::infra {

Result<CaCertificate> ca_certificate(const std::string& station_id, CaRole role, std::string_view pem,
                                     std::string_view source) {
  KL_TRY(X509Ptr cert, x509_from_pem(pem, source));
  KL_TRY(Bytes der, to_der(cert.get()));
  CaCertificate c{role, station_id + "-" + std::string(to_string(role)), std::move(der), to_pem(cert.get())};
  bool name_ok = c.name.size() <= 256 && std::all_of(c.name.begin(), c.name.end(), [](char ch) {
                   return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.' || ch == '_';
                 });
  if (!name_ok)
    return fail(Domain::input, "station id '" + station_id +
                                   "' cannot name a DPS certificate (letters, digits, '-', '.', '_' only); "
                                   "change [station] id");
  return c;
}

const CaCertificate* Deployment::certificate(CaRole role) const {
  for (auto& c : certificates)
    if (c.role == role) return &c;
  return nullptr;
}

Result<Deployment> make_deployment(InfraConfig config, std::vector<CaCertificate> certificates) {
  if (!config.instance)
    return fail(Domain::input, "keyline.toml has no [dps.instance] section; add one (see docs/dps-infra.md)");
  Deployment d{std::move(config), std::move(certificates)};
  auto need = [&](CaRole role, const std::string& why) -> Status {
    if (!d.certificate(role))
      return fail(Domain::state, "the " + std::string(to_string(role)) + " CA certificate is needed for " + why +
                                     " but was not given; run 'keyline ca init' first");
    return {};
  };
  for (CaRole r : d.instance().ca_certificates) KL_CHECK(need(r, "dps.instance.ca-certificates"));
  for (auto& g : d.config.groups)
    if (g.attestation == Group::Attestation::x509_ca) KL_CHECK(need(g.ca, "enrollment group '" + g.name + "'"));
  // Keep only what is uploaded or referenced, in a fixed order.
  std::vector<CaCertificate> kept;
  for (CaRole r : {CaRole::intermediate, CaRole::root}) {
    bool used = std::find(d.instance().ca_certificates.begin(), d.instance().ca_certificates.end(), r) !=
                d.instance().ca_certificates.end();
    for (auto& g : d.config.groups) used = used || (g.attestation == Group::Attestation::x509_ca && g.ca == r);
    if (used) kept.push_back(*d.certificate(r));
  }
  d.certificates = std::move(kept);
  return d;
}

namespace detail {

OJson param_ref(const std::string& name) { return OJson{{"<param>", name}}; }

std::optional<std::string> as_param_ref(const OJson& v) {
  if (v.is_object() && v.size() == 1 && v.contains("<param>")) return v["<param>"].get<std::string>();
  return std::nullopt;
}

std::string hub_parameter_description(const LinkedHub& h) {
  return "Connection string of the linked IoT hub " + h.host_name + " (a secret: supply it at deployment time)";
}

OJson dps_body(const Deployment& d) {
  const Instance& in = d.instance();
  OJson hubs = OJson::array();
  for (auto& h : in.hubs)
    hubs.push_back({{"connectionString", param_ref(h.connection_string_parameter)},
                    {"location", h.location},
                    {"allocationWeight", h.allocation_weight},
                    {"applyAllocationPolicy", h.apply_allocation_policy}});
  OJson rules = OJson::array();
  for (auto& r : in.ip_filter_rules)
    rules.push_back({{"filterName", r.name}, {"action", r.action}, {"ipMask", r.ip_mask}, {"target", r.target}});
  OJson props = {{"allocationPolicy", arm_name(in.allocation_policy)},
                 {"iotHubs", hubs},
                 {"ipFilterRules", rules},
                 {"publicNetworkAccess", in.public_network_access}};
  if (in.api_version != "2021-07-01") props["enableDataResidency"] = in.data_residency;
  OJson tags = OJson::object();
  for (auto& [k, v] : in.tags) tags[k] = v;
  return {{"name", in.name},
          {"location", in.location},
          {"tags", tags},
          {"sku", {{"name", in.sku}, {"capacity", in.capacity}}},
          {"properties", props}};
}

OJson certificate_properties(const CaCertificate& c) {
  return {{"certificate", base64_encode(c.der)}, {"isVerified", true}};
}

namespace {
void append_hex4(std::string& out, unsigned c, const char* fmt) {
  char buf[16];
  std::snprintf(buf, sizeof buf, fmt, c);
  out += buf;
}
}  // namespace

std::string bicep_string(std::string_view s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\'': out += "\\'"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '$':
        out += (i + 1 < s.size() && s[i + 1] == '{') ? "\\$" : "$";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) append_hex4(out, static_cast<unsigned char>(c), "\\u{%X}");
        else out += c;
    }
  }
  return out + "'";
}

std::string hcl_string(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool before_brace = i + 1 < s.size() && s[i + 1] == '{';
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '$': out += before_brace ? "$$" : "$"; break;
      case '%': out += before_brace ? "%%" : "%"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) append_hex4(out, static_cast<unsigned char>(c), "\\u%04X");
        else out += c;
    }
  }
  return out + "\"";
}

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string bicep_key(std::string_view k) {
  bool ident = !k.empty() && (std::isalpha(static_cast<unsigned char>(k[0])) || k[0] == '_') &&
               std::all_of(k.begin(), k.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
  return ident ? std::string(k) : bicep_string(k);
}

}  // namespace detail
}  // namespace keyline::station::infra
