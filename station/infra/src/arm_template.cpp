// ARM template -> what a DPS emulator needs (linked hubs, policy, CA certificates).

#include "keyline/station/arm_template.hpp"

#include <algorithm>
#include <cctype>

#include "keyline/core/hex.hpp"

namespace keyline::station::infra {

namespace {

using Json = nlohmann::json;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}
  std::unexpected<Error> error(const std::string& path, std::string_view what) const {
    return fail(Domain::input, source_ + ": " + path + " " + std::string(what));
  }

  // "[parameters('X')]" -> X
  static std::optional<std::string> parameter_of(const std::string& expr) {
    const std::string head = "[parameters('", tail = "')]";
    if (expr.size() <= head.size() + tail.size() || !expr.starts_with(head) || !expr.ends_with(tail)) return {};
    return expr.substr(head.size(), expr.size() - head.size() - tail.size());
  }

  // "HostName=h;SharedAccessKeyName=...;..." -> h
  static std::optional<std::string> host_of(const std::string& cs) {
    std::size_t pos = 0;
    while (pos < cs.size()) {
      std::size_t end = cs.find(';', pos);
      std::string part = cs.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      if (lower(part).starts_with("hostname=")) return part.substr(9);
      if (end == std::string::npos) break;
      pos = end + 1;
    }
    return {};
  }

  Result<TemplateHub> hub(const Json& doc, const Json& h, const std::string& path) const {
    if (!h.is_object()) return error(path, "must be an object");
    TemplateHub out;
    auto loc = h.find("location");
    if (loc == h.end() || !loc->is_string()) return error(path + ".location", "must be a string");
    out.location = loc->get<std::string>();
    if (auto w = h.find("allocationWeight"); w != h.end()) {
      if (!w->is_number_integer()) return error(path + ".allocationWeight", "must be an integer");
      out.allocation_weight = w->get<int>();
    }
    if (auto a = h.find("applyAllocationPolicy"); a != h.end()) {
      if (!a->is_boolean()) return error(path + ".applyAllocationPolicy", "must be true or false");
      out.apply_allocation_policy = a->get<bool>();
    }
    auto cs = h.find("connectionString");
    if (cs == h.end() || !cs->is_string()) return error(path + ".connectionString", "must be a string");
    std::string value = cs->get<std::string>();
    if (auto param = parameter_of(value)) {
      const Json* meta = nullptr;
      if (doc.contains("parameters") && doc["parameters"].is_object() && doc["parameters"].contains(*param)) {
        const Json& p = doc["parameters"][*param];
        if (p.is_object() && p.contains("metadata") && p["metadata"].is_object()) meta = &p["metadata"];
      } else {
        return error(path + ".connectionString", "refers to parameter '" + *param + "', which the template does not declare");
      }
      if (!meta || !meta->contains("hostName") || !(*meta)["hostName"].is_string())
        return error("parameters." + *param + ".metadata.hostName",
                     "is missing: the emulator needs the hub's host name (keyline dps infra writes it)");
      out.host_name = (*meta)["hostName"].get<std::string>();
    } else if (auto host = host_of(value)) {
      out.host_name = *host;
    } else {
      return error(path + ".connectionString", "is neither [parameters('NAME')] nor a HostName=...; connection string");
    }
    if (out.host_name.empty()) return error(path + ".connectionString", "names an empty host");
    return out;
  }

  Result<TemplateCertificate> certificate(const Json& r, const std::string& path) const {
    TemplateCertificate out;
    auto name = r.find("name");
    if (name == r.end() || !name->is_string()) return error(path + ".name", "must be a string");
    out.name = name->get<std::string>();
    if (auto slash = out.name.rfind('/'); slash != std::string::npos) out.name = out.name.substr(slash + 1);
    auto props = r.find("properties");
    if (props == r.end() || !props->is_object()) return error(path + ".properties", "must be an object");
    auto cert = props->find("certificate");
    if (cert == props->end() || !cert->is_string()) return error(path + ".properties.certificate", "must be a string");
    std::string text = cert->get<std::string>();
    if (text.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
      KL_TRY(X509Ptr x, x509_from_pem(text, source_ + ": " + path + ".properties.certificate"));
      KL_TRY(out.der, to_der(x.get()));
    } else {
      auto der = base64_decode(text);
      if (!der || der.value().empty() || !x509_from_der(*der))
        return error(path + ".properties.certificate", "is neither PEM nor base64 of a DER X.509 certificate");
      out.der = std::move(*der);
    }
    if (auto v = props->find("isVerified"); v != props->end()) {
      if (!v->is_boolean()) return error(path + ".properties.isVerified", "must be true or false");
      out.verified = v->get<bool>();
    }
    return out;
  }

 private:
  std::string source_;
};

constexpr std::string_view kDps = "microsoft.devices/provisioningservices";
constexpr std::string_view kCert = "microsoft.devices/provisioningservices/certificates";

}  // namespace

Result<ArmTemplate> parse_arm_template(std::string_view json_text, std::string_view source) {
  Reader rd(source);
  Json doc = Json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) return fail(Domain::input, std::string(source) + ": not valid JSON");
  if (!doc.is_object() || !doc.contains("resources") || !doc["resources"].is_array())
    return rd.error("resources", "must be an array (is this an ARM deployment template?)");
  ArmTemplate out;
  bool found = false;
  const Json& resources = doc["resources"];
  for (std::size_t i = 0; i < resources.size(); ++i) {
    const Json& r = resources[i];
    std::string path = "resources[" + std::to_string(i) + "]";
    if (!r.is_object() || !r.contains("type") || !r["type"].is_string()) return rd.error(path + ".type", "must be a string");
    std::string type = lower(r["type"].get<std::string>());
    if (type == kCert) {
      KL_TRY(auto c, rd.certificate(r, path));
      out.certificates.push_back(std::move(c));
      continue;
    }
    if (type != kDps || found) continue;
    found = true;
    if (r.contains("name") && r["name"].is_string()) out.name = r["name"].get<std::string>();
    if (!r.contains("properties") || !r["properties"].is_object()) return rd.error(path + ".properties", "must be an object");
    const Json& props = r["properties"];
    if (auto p = props.find("allocationPolicy"); p != props.end()) {
      std::string v = p->is_string() ? p->get<std::string>() : "";
      if (v == "Hashed") out.allocation_policy = AllocationPolicy::hashed;
      else if (v == "GeoLatency") out.allocation_policy = AllocationPolicy::geo_latency;
      else if (v == "Static") out.allocation_policy = AllocationPolicy::static_hub;
      else return rd.error(path + ".properties.allocationPolicy", "must be Hashed, GeoLatency or Static");
    }
    if (auto hubs = props.find("iotHubs"); hubs != props.end()) {
      if (!hubs->is_array()) return rd.error(path + ".properties.iotHubs", "must be an array");
      for (std::size_t h = 0; h < hubs->size(); ++h) {
        KL_TRY(auto hub, rd.hub(doc, (*hubs)[h], path + ".properties.iotHubs[" + std::to_string(h) + "]"));
        out.hubs.push_back(std::move(hub));
      }
    }
    if (auto children = r.find("resources"); children != r.end() && children->is_array()) {
      for (std::size_t c = 0; c < children->size(); ++c) {
        const Json& child = (*children)[c];
        std::string cpath = path + ".resources[" + std::to_string(c) + "]";
        if (!child.is_object() || !child.contains("type") || !child["type"].is_string()) continue;
        std::string ct = lower(child["type"].get<std::string>());
        if (ct != "certificates" && ct != kCert) continue;
        KL_TRY(auto cert, rd.certificate(child, cpath));
        out.certificates.push_back(std::move(cert));
      }
    }
  }
  if (!found) return rd.error("resources", "has no Microsoft.Devices/provisioningServices resource");
  return out;
}

}  // namespace keyline::station::infra
