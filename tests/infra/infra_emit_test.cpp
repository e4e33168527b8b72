// Bicep and Terraform carry every property of the ARM output and are
// well-formed; the enrollment groups; the ARM template reader on our own output.

#include <regex>

#include "infra_support.hpp"
#include "keyline/station/arm_template.hpp"
#include "keyline/station/infra.hpp"

namespace keyline::infra_test {
namespace {

namespace infra = station::infra;
using OJson = nlohmann::ordered_json;

infra::Deployment sample_deployment(std::string toml = station_config()) {
  static const std::string intermediate = ca_pem("Emit Intermediate");
  static const std::string root = ca_pem("Emit Root");
  auto cfg = infra::parse_infra_config(toml, "keyline.toml");
  if (!cfg) throw std::runtime_error(cfg.error().message());
  std::vector<infra::CaCertificate> certs;
  certs.push_back(*infra::ca_certificate(cfg->station_id, infra::CaRole::intermediate, intermediate, "i.pem"));
  certs.push_back(*infra::ca_certificate(cfg->station_id, infra::CaRole::root, root, "r.pem"));
  auto d = infra::make_deployment(std::move(*cfg), std::move(certs));
  if (!d) throw std::runtime_error(d.error().message());
  return std::move(*d);
}

// Every (key, value) leaf of an ARM resource; ARM escapes undone, "[parameters('X')]" kept.
void leaves(const OJson& v, const std::string& key, const std::function<void(const std::string&, const OJson&)>& f) {
  if (v.is_object()) {
    for (auto& [k, e] : v.items()) leaves(e, k, f);
  } else if (v.is_array()) {
    for (auto& e : v) leaves(e, key, f);
  } else if (v.is_string() && v.get<std::string>().starts_with("[[")) {
    f(key, OJson(v.get<std::string>().substr(1)));
  } else {
    f(key, v);
  }
}

std::optional<std::string> param_of(const OJson& v) {
  static const std::regex re(R"(^\[parameters\('([A-Za-z_][A-Za-z0-9_]*)'\)\]$)");
  std::smatch m;
  std::string s = v.is_string() ? v.get<std::string>() : "";
  if (std::regex_match(s, m, re)) return m[1].str();
  return std::nullopt;
}

// The resources' leaves, except what only ARM has (type, apiVersion, dependsOn).
std::vector<std::pair<std::string, OJson>> arm_leaves(const infra::Deployment& d) {
  std::vector<std::pair<std::string, OJson>> out;
  const OJson t = infra::arm_template(d);
  for (const OJson& r : t["resources"]) {
    for (auto& [k, v] : r.items()) {
      if (k == "type" || k == "apiVersion" || k == "dependsOn") continue;
      if (k == "name" && v.get<std::string>().find('/') != std::string::npos) {
        std::string n = v.get<std::string>();
        out.emplace_back("name", OJson(n.substr(n.find('/') + 1)));  // child name without the parent
        continue;
      }
      leaves(v, k, [&](const std::string& key, const OJson& leaf) { out.emplace_back(key, leaf); });
    }
  }
  return out;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::string l = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    out.push_back(l.substr(std::min(l.find_first_not_of(' '), l.size())));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

bool identifier(const std::string& s) { return std::regex_match(s, std::regex("^[A-Za-z_][A-Za-z0-9_]*$")); }

TEST(InfraBicep, CarriesEveryArmProperty) {
  auto d = sample_deployment();
  std::string bicep = infra::emit_bicep(d);
  auto ls = lines(bicep);
  std::size_t checked = 0;
  for (auto& [key, value] : arm_leaves(d)) {
    std::string prefix = (identifier(key) ? key : "'" + key + "'") + ": ";
    bool found = false;
    for (auto& l : ls) {
      if (!l.starts_with(prefix)) continue;
      std::string rhs = l.substr(prefix.size());
      if (auto p = param_of(value)) found = found || rhs == *p;
      else if (value.is_string()) {
        Scan s = scan(rhs, Lang::bicep);
        found = found || (s.literals.size() == 1 && s.literals[0] == value.get<std::string>() && s.problems.empty());
      } else {
        found = found || rhs == value.dump();
      }
    }
    EXPECT_TRUE(found) << "Bicep lacks " << key << " = " << value.dump();
    ++checked;
  }
  EXPECT_GT(checked, 20u);
  EXPECT_NE(bicep.find("resource dps 'Microsoft.Devices/provisioningServices@2022-12-12'"), std::string::npos);
  EXPECT_NE(bicep.find("resource rootCa 'Microsoft.Devices/provisioningServices/certificates@2022-12-12'"), std::string::npos);
  for (std::string p : {"hubAConnectionString", "hubBConnectionString"}) {
    std::size_t at = bicep.find("\nparam " + p + " string\n");
    ASSERT_NE(at, std::string::npos) << p;
    std::size_t secure = bicep.rfind("@secure()\n@description(", at);
    ASSERT_NE(secure, std::string::npos) << p;
    EXPECT_EQ(bicep.find('\n', bicep.find('\n', secure) + 1), at) << p << " is not marked @secure()";
  }
}

TEST(InfraBicep, IsWellFormed) {
  std::string bicep = infra::emit_bicep(sample_deployment());
  Scan s = scan(bicep, Lang::bicep);
  EXPECT_TRUE(s.balanced);
  EXPECT_TRUE(s.problems.empty()) << s.problems.front();
  EXPECT_TRUE(has_literal(s, kTrickyTag)) << "the tag with quotes, backslash, ${ and %{ must survive quoting";
  static const std::regex decl(R"(^(param|resource|output) (\S+) )");
  for (auto& l : lines(bicep)) {
    std::smatch m;
    if (std::regex_search(l, m, decl)) {
      EXPECT_TRUE(identifier(m[2].str())) << l;
    }
  }
}

// ARM key -> azurerm attribute, and how ARM values read in HCL.
std::string tf_name(const std::string& arm) {
  static const std::map<std::string, std::string> names = {
      {"allocationPolicy", "allocation_policy"}, {"connectionString", "connection_string"},
      {"allocationWeight", "allocation_weight"}, {"applyAllocationPolicy", "apply_allocation_policy"},
      {"filterName", "name"}, {"ipMask", "ip_mask"}, {"publicNetworkAccess", "public_network_access_enabled"},
      {"enableDataResidency", "data_residency_enabled"}, {"certificate", "certificate_content"},
      {"isVerified", "is_verified"}};
  auto it = names.find(arm);
  return it == names.end() ? arm : it->second;
}

TEST(InfraTerraform, CarriesEveryArmProperty) {
  auto d = sample_deployment();
  std::string tf = infra::emit_terraform(d);
  static const std::regex attr(R"(^("[^"]*"|[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$)");
  std::vector<std::pair<std::string, std::string>> attrs;
  for (auto& l : lines(tf)) {
    std::smatch m;
    if (std::regex_match(l, m, attr)) attrs.emplace_back(m[1].str(), m[2].str());
  }
  std::size_t checked = 0;
  for (auto& [key, value] : arm_leaves(d)) {
    std::string name = tf_name(key);
    bool found = false;
    for (auto& [k, rhs] : attrs) {
      bool key_match = k == name || (k.size() >= 2 && k.front() == '"' && scan(k, Lang::hcl).literals.at(0) == key);
      if (!key_match) continue;
      if (auto p = param_of(value)) found = found || rhs == "var." + *p;
      else if (key == "publicNetworkAccess") found = found || rhs == (value == "Enabled" ? "true" : "false");
      else if (value.is_string()) {
        Scan s = scan(rhs, Lang::hcl);
        found = found || (s.literals.size() == 1 && s.literals[0] == value.get<std::string>() && s.problems.empty());
      } else {
        found = found || rhs == value.dump();
      }
    }
    EXPECT_TRUE(found) << "Terraform lacks " << key << " (" << name << ") = " << value.dump();
    ++checked;
  }
  EXPECT_GT(checked, 20u);
  EXPECT_NE(tf.find("resource \"azurerm_iothub_dps\" \"dps\""), std::string::npos);
  EXPECT_NE(tf.find("resource \"azurerm_iothub_dps_certificate\" \"root\""), std::string::npos);
  EXPECT_NE(tf.find("variable \"hubBConnectionString\" {\n  type = string\n  sensitive = true\n"), std::string::npos);
}

TEST(InfraTerraform, IsWellFormed) {
  std::string tf = infra::emit_terraform(sample_deployment());
  Scan s = scan(tf, Lang::hcl);
  EXPECT_TRUE(s.balanced);
  EXPECT_TRUE(s.problems.empty()) << s.problems.front();
  EXPECT_TRUE(has_literal(s, kTrickyTag));
  static const std::regex decl(R"(^(resource|variable|output) ((\"[^\"]*\" ?)+)\{$)");
  std::size_t blocks = 0;
  for (auto& l : lines(tf)) {
    std::smatch m;
    if (!std::regex_match(l, m, decl)) continue;
    ++blocks;
    for (auto& label : scan(m[2].str(), Lang::hcl).literals) EXPECT_TRUE(identifier(label)) << l;
  }
  EXPECT_EQ(blocks, 3u + 3u + 3u);  // variables, dps + 2 certificates, outputs
}

TEST(InfraGroups, JsonIsTheServiceApiShape) {
  auto d = sample_deployment();
  auto j = nlohmann::json::parse(infra::emit_groups_json(d));
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["enrollmentGroupId"], "line1-x509");
  EXPECT_EQ(j[0]["attestation"]["type"], "x509");
  EXPECT_EQ(j[0]["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"],
            d.certificate(infra::CaRole::intermediate)->pem);
  EXPECT_EQ(j[0]["initialTwin"]["tags"]["site"], "O'Hare \"plant\"");
  EXPECT_EQ(j[0]["initialTwin"]["properties"]["desired"]["telemetry"]["interval"], 30);
  EXPECT_EQ(j[0]["allocationPolicy"], "static");
  EXPECT_EQ(j[0]["iotHubs"], nlohmann::json::array({"hub-a.azure-devices.net"}));
  EXPECT_EQ(j[0]["capabilities"]["iotEdge"], false);
  EXPECT_EQ(j[0]["provisioningStatus"], "enabled");
  EXPECT_EQ(j[1]["attestation"]["x509"]["caReferences"]["primary"], "plant7-line1-root");
  EXPECT_EQ(j[1]["capabilities"]["iotEdge"], true);
  EXPECT_EQ(j[2]["attestation"], nlohmann::json({{"type", "symmetricKey"}}));
  EXPECT_EQ(j[2]["provisioningStatus"], "disabled");
  EXPECT_FALSE(j[2].contains("allocationPolicy"));
}

TEST(InfraGroups, ScriptUsesTheAzFlags) {
  std::string sh = infra::emit_groups_script(sample_deployment());
  for (auto flag : {"--dps-name \"$dps_name\"", "--resource-group \"$resource_group\"", "--enrollment-id 'line1-x509'",
                    "--certificate-path \"$here/intermediate.pem\"", "--ca-name 'plant7-line1-root'",
                    "--provisioning-status 'disabled'", "--initial-twin-properties '{\"mode\":\"factory\",\"telemetry\":{\"interval\":30}}'",
                    "--initial-twin-tags '{\"site\":\"O'\\''Hare \\\"plant\\\"\"}'", "--allocation-policy 'static'",
                    "--iot-hubs 'hub-a.azure-devices.net hub-b.azure-devices.net'", "--edge-enabled true"})
    EXPECT_NE(sh.find(flag), std::string::npos) << flag;
  EXPECT_EQ(sh.find("--primary-key"), std::string::npos) << "symmetric keys are generated by DPS, never written";
}

TEST(InfraArmTemplate, ReadsOurOwnOutput) {
  auto d = sample_deployment();
  auto t = infra::parse_arm_template(infra::emit_arm(d), "azuredeploy.json");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->name, "factory-dps-1");
  EXPECT_EQ(t->allocation_policy, infra::AllocationPolicy::geo_latency);
  ASSERT_EQ(t->hubs.size(), 2u);
  EXPECT_EQ(t->hubs[0].host_name, "hub-a.azure-devices.net");
  EXPECT_EQ(t->hubs[0].allocation_weight, 3);
  EXPECT_TRUE(t->hubs[0].apply_allocation_policy);
  EXPECT_EQ(t->hubs[1].host_name, "hub-b.azure-devices.net");
  EXPECT_EQ(t->hubs[1].location, "northeurope");
  EXPECT_FALSE(t->hubs[1].apply_allocation_policy);
  ASSERT_EQ(t->certificates.size(), 2u);
  EXPECT_EQ(t->certificates[0].name, "plant7-line1-intermediate");
  EXPECT_EQ(t->certificates[0].der, d.certificate(infra::CaRole::intermediate)->der);
  EXPECT_TRUE(t->certificates[0].verified);
  EXPECT_EQ(t->certificates[1].der, d.certificate(infra::CaRole::root)->der);
}

TEST(InfraArmTemplate, ReadsHandWrittenShapes) {
  auto d = sample_deployment();
  // Literal connection string, certificate as a nested child in PEM, not verified.
  nlohmann::json t = {
      {"resources",
       {{{"type", "Microsoft.Devices/provisioningServices"},
         {"name", "hand"},
         {"properties",
          {{"allocationPolicy", "Static"},
           {"iotHubs",
            {{{"connectionString", "HostName=lit.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=x"},
              {"location", "eastus"}}}}}},
         {"resources",
          {{{"type", "certificates"},
            {"name", "ca1"},
            {"properties", {{"certificate", d.certificate(infra::CaRole::root)->pem}}}}}}}}}};
  auto r = infra::parse_arm_template(t.dump(), "hand.json");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->allocation_policy, infra::AllocationPolicy::static_hub);
  ASSERT_EQ(r->hubs.size(), 1u);
  EXPECT_EQ(r->hubs[0].host_name, "lit.azure-devices.net");
  ASSERT_EQ(r->certificates.size(), 1u);
  EXPECT_EQ(r->certificates[0].der, d.certificate(infra::CaRole::root)->der);
  EXPECT_FALSE(r->certificates[0].verified);
}

TEST(InfraArmTemplate, ErrorsNameThePath) {
  auto base = nlohmann::json::parse(infra::emit_arm(sample_deployment()));
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](nlohmann::json& t) { t.erase("resources"); }, "t.json: resources must be an array"},
      {[](nlohmann::json& t) { t["resources"].erase(0); }, "resources has no Microsoft.Devices/provisioningServices"},
      {[](nlohmann::json& t) { t["parameters"]["hubAConnectionString"].erase("metadata"); },
       "parameters.hubAConnectionString.metadata.hostName is missing"},
      {[](nlohmann::json& t) { t["parameters"].erase("hubBConnectionString"); },
       "resources[0].properties.iotHubs[1].connectionString refers to parameter 'hubBConnectionString'"},
      {[](nlohmann::json& t) { t["resources"][0]["properties"]["iotHubs"][0]["connectionString"] = "secret"; },
       "resources[0].properties.iotHubs[0].connectionString is neither"},
      {[](nlohmann::json& t) { t["resources"][0]["properties"]["iotHubs"][1]["allocationWeight"] = "3"; },
       "resources[0].properties.iotHubs[1].allocationWeight must be an integer"},
      {[](nlohmann::json& t) { t["resources"][0]["properties"]["allocationPolicy"] = "Custom"; },
       "resources[0].properties.allocationPolicy must be Hashed, GeoLatency or Static"},
      {[](nlohmann::json& t) { t["resources"][2]["properties"]["certificate"] = "bm90IGEgY2VydA=="; },
       "resources[2].properties.certificate is neither PEM nor base64"},
  };
  for (auto& c : cases) {
    nlohmann::json t = base;
    c.edit(t);
    auto r = infra::parse_arm_template(t.dump(), "t.json");
    ASSERT_FALSE(r) << c.message;
    EXPECT_EQ(r.error().domain(), Domain::input);
    EXPECT_NE(r.error().message().find(c.message), std::string::npos) << r.error().message();
  }
  auto r = infra::parse_arm_template("{not json", "t.json");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("t.json: not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace keyline::infra_test
