// Unit tests of station/infra: config validation, the three emitters from one
// model, the enrollment groups, determinism, and the ARM template reader.

#include "infra_support.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/station/arm_template.hpp"
#include "keyline/station/infra.hpp"

namespace keyline::infra_test {
namespace {

namespace infra = station::infra;
using OJson = nlohmann::ordered_json;

struct Pki {
  std::string intermediate = ca_pem("Test Intermediate");
  std::string root = ca_pem("Test Root");
};

const Pki& pki() {
  static const Pki p;
  return p;
}

infra::Deployment deployment(const std::string& toml = station_config()) {
  auto cfg = infra::parse_infra_config(toml, "keyline.toml");
  if (!cfg) throw std::runtime_error(cfg.error().message());
  std::vector<infra::CaCertificate> certs;
  certs.push_back(*infra::ca_certificate(cfg->station_id, infra::CaRole::intermediate, pki().intermediate, "i.pem"));
  certs.push_back(*infra::ca_certificate(cfg->station_id, infra::CaRole::root, pki().root, "r.pem"));
  auto d = infra::make_deployment(std::move(*cfg), std::move(certs));
  if (!d) throw std::runtime_error(d.error().message());
  return std::move(*d);
}

TEST(InfraConfig, ParsesEveryKey) {
  auto c = infra::parse_infra_config(station_config(), "keyline.toml");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->station_id, "plant7-line1");
  const infra::Instance& in = *c->instance;
  EXPECT_EQ(in.name, "factory-dps-1");
  EXPECT_EQ(in.capacity, 2);
  EXPECT_EQ(in.allocation_policy, infra::AllocationPolicy::geo_latency);
  EXPECT_EQ(in.public_network_access, "Disabled");
  EXPECT_TRUE(in.data_residency);
  EXPECT_EQ(in.api_version, "2022-12-12");
  ASSERT_EQ(in.hubs.size(), 2u);
  EXPECT_EQ(in.hubs[1].host_name, "hub-b.azure-devices.net");
  EXPECT_EQ(in.hubs[1].allocation_weight, 1);
  EXPECT_FALSE(in.hubs[1].apply_allocation_policy);
  EXPECT_TRUE(in.hubs[0].apply_allocation_policy);
  EXPECT_EQ(in.tags.at("cost center"), kTrickyTag);
  ASSERT_EQ(in.ip_filter_rules.size(), 2u);
  EXPECT_EQ(in.ip_filter_rules[1].target, "deviceApi");
  ASSERT_EQ(c->groups.size(), 3u);
  EXPECT_EQ(c->groups[0].initial_twin_properties["telemetry"]["interval"], 30);
  EXPECT_EQ(c->groups[0].initial_twin_tags["site"], "O'Hare \"plant\"");
  EXPECT_EQ(c->groups[1].ca, infra::CaRole::root);
  EXPECT_TRUE(c->groups[1].iot_edge);
  EXPECT_EQ(c->groups[2].attestation, infra::Group::Attestation::symmetric_key);
  EXPECT_FALSE(c->groups[2].allocation_policy.has_value());
}

TEST(InfraConfig, WithoutDpsTablesThereIsNoInstance) {
  auto c = infra::parse_infra_config("[station]\nid = \"s\"\n[ca]\nkey_store = \"file:keys\"\n", "keyline.toml");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->instance.has_value());
  auto d = infra::make_deployment(std::move(*c), {});
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("[dps.instance]"), std::string::npos);
}

// Each case replaces one line of the valid configuration; the error names the key.
struct BadCase {
  std::string from, to, message;
};

TEST(InfraConfig, EveryBadValueIsNamed) {
  const std::vector<BadCase> cases = {
      {"allocation-weight = 1\n", "allocation-weight = 1001\n",
       "keyline.toml: dps.instance.hubs[1].allocation-weight must be 0..1000"},
      {"allocation-weight = 3\n", "allocation-weight = \"3\"\n", "dps.instance.hubs[0].allocation-weight must be 0..1000"},
      {"name = \"factory-dps-1\"", "name = \"x\"", "dps.instance.name must be 3..64"},
      {"name = \"factory-dps-1\"", "name = \"bad_name!\"", "dps.instance.name must be 3..64"},
      {"capacity = 2", "capacity = 0", "dps.instance.capacity must be 1..200"},
      {"location = \"westeurope\"\ncapacity", "location = \"\"\ncapacity", "dps.instance.location must be a non-empty string"},
      {"allocation-policy = \"GeoLatency\"", "allocation-policy = \"Custom\"",
       "dps.instance.allocation-policy must be one of Hashed, GeoLatency, Static (got 'Custom')"},
      {"public-network-access = \"Disabled\"", "public-network-access = \"off\"", "dps.instance.public-network-access must be one of"},
      {"data-residency = true", "data-residency = \"yes\"", "dps.instance.data-residency must be true or false"},
      {"data-residency = true", "data-residency = true\napi-version = \"2021-07-01\"",
       "dps.instance.data-residency needs api-version 2022-12-12"},
      {"capacity = 2", "capacity = 2\napi-version = \"2020-01-01\"", "dps.instance.api-version must be one of 2022-12-12, 2021-07-01"},
      {"capacity = 2", "capacity = 2\nsku = \"S2\"", "dps.instance.sku must be one of S1"},
      {"ca-certificates = [\"intermediate\", \"root\"]", "ca-certificates = [\"leaf\"]",
       "dps.instance.ca-certificates[0] must be \"intermediate\" or \"root\""},
      {"ca-certificates = [\"intermediate\", \"root\"]", "ca-certificates = [\"intermediate\"]",
       "dps.groups[1].x509-ca = \"root\" refers to the uploaded root CA"},
      {"capacity = 2", "capacity = 2\nunits = 3", "dps.instance.units is not a known key"},
      {"host-name = \"hub-a.azure-devices.net\"", "host-name = \"hub a\"", "dps.instance.hubs[0].host-name must be a host name"},
      {"host-name = \"hub-b.azure-devices.net\"", "host-name = \"hub-a.azure-devices.net\"",
       "dps.instance.hubs[1].host-name 'hub-a.azure-devices.net' is linked twice"},
      {"connection-string-parameter = \"hubBConnectionString\"", "",
       "dps.instance.hubs[1].connection-string-parameter is required"},
      {"connection-string-parameter = \"hubBConnectionString\"", "connection-string-parameter = \"hubAConnectionString\"",
       "dps.instance.hubs[1].connection-string-parameter 'hubAConnectionString' is used by two hubs"},
      {"connection-string-parameter = \"hubBConnectionString\"", "connection-string-parameter = \"count\"",
       "dps.instance.hubs[1].connection-string-parameter must be the NAME of a secure parameter"},
      {"ip-mask = \"10.1.0.0/16\"", "ip-mask = \"10.1.0.0/33\"", "dps.instance.ip-filter-rules[0].ip-mask must be an IPv4"},
      {"ip-mask = \"192.168.77.5\"", "ip-mask = \"192.168.777.5\"", "dps.instance.ip-filter-rules[1].ip-mask must be an IPv4"},
      {"action = \"Accept\"", "action = \"Allow\"", "dps.instance.ip-filter-rules[0].action must be one of Accept, Reject"},
      {"target = \"deviceApi\"", "target = \"both\"", "dps.instance.ip-filter-rules[1].target must be one of all, serviceApi, deviceApi"},
      {"owner = \"line 1\"", "\"a/b\" = \"line 1\"", "dps.instance.tags.a/b is not a valid tag name"},
      {"owner = \"line 1\"", "owner = 1", "dps.instance.tags.owner must be a string"},
      {"name = \"line1-x509\"", "name = \"line1 x509\"", "dps.groups[0].name must be letters, digits"},
      {"name = \"sensors-symkey\"", "name = \"line1-x509\"", "dps.groups[2].name 'line1-x509' is defined twice"},
      {"attestation = \"symmetric-key\"", "attestation = \"tpm\"", "dps.groups[2].attestation must be one of x509-ca, symmetric-key"},
      {"provisioning-status = \"disabled\"", "provisioning-status = \"off\"", "dps.groups[2].provisioning-status must be one of enabled, disabled"},
      {"attestation = \"symmetric-key\"", "attestation = \"symmetric-key\"\nx509-ca = \"root\"",
       "dps.groups[2].x509-ca applies only to attestation = \"x509-ca\""},
      {"iot-hubs = [\"hub-a.azure-devices.net\"]", "iot-hubs = [\"hub-z.azure-devices.net\"]",
       "dps.groups[0].iot-hubs[0] 'hub-z.azure-devices.net' is not one of dps.instance.hubs"},
      {"iot-edge = true", "iot-edge = 1", "dps.groups[1].iot-edge must be true or false"},
      {"initial-twin-properties = { telemetry = { interval = 30 }, mode = \"factory\" }",
       "initial-twin-properties = \"{not json\"", "dps.groups[0].initial-twin-properties is not valid JSON"},
      {"initial-twin-properties = { telemetry = { interval = 30 }, mode = \"factory\" }",
       "initial-twin-properties = \"[1, 2]\"", "dps.groups[0].initial-twin-properties must be a table or a JSON object"},
      {"initial-twin-properties = { telemetry = { interval = 30 }, mode = \"factory\" }",
       "initial-twin-properties = { version = 3 }", "dps.groups[0].initial-twin-properties must not use the reserved twin member 'version'"},
      {"initial-twin-properties = { telemetry = { interval = 30 }, mode = \"factory\" }",
       "initial-twin-properties = { when = 1979-05-27 }", "dps.groups[0].initial-twin-properties.when must be a string, number"},
      {"allocation-policy = \"Static\"", "allocation-policy = \"static\"", "dps.groups[0].allocation-policy must be one of Hashed"},
  };
  const std::string good = station_config();
  for (auto& bc : cases) {
    std::string text = good;
    auto pos = text.find(bc.from);
    ASSERT_NE(pos, std::string::npos) << bc.from;
    text.replace(pos, bc.from.size(), bc.to);
    auto c = infra::parse_infra_config(text, "keyline.toml");
    ASSERT_FALSE(c) << "accepted: " << bc.to;
    EXPECT_EQ(c.error().domain(), Domain::input);
    EXPECT_NE(c.error().message().find(bc.message), std::string::npos)
        << "for '" << bc.to << "'\n  got: " << c.error().message() << "\n  want: " << bc.message;
  }
}

TEST(InfraConfig, TomlSyntaxErrorNamesTheLine) {
  auto c = infra::parse_infra_config("[dps.instance]\nname = \n", "keyline.toml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("keyline.toml:2"), std::string::npos) << c.error().message();
}

TEST(InfraConfig, ASecretGivenAsParameterNameIsRefusedWithoutEchoingIt) {
  std::string text = station_config();
  std::string from = "connection-string-parameter = \"hubAConnectionString\"";
  text.replace(text.find(from), from.size(), "connection-string-parameter = \"" + kFakeConnectionString + "\"");
  auto c = infra::parse_infra_config(text, "keyline.toml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message().find(kFakeSecret), std::string::npos) << c.error().message();
  EXPECT_NE(c.error().message().find("connection-string-parameter must be the NAME of a secure parameter"), std::string::npos);
}

TEST(InfraDeployment, MissingCertificateIsAStateError) {
  auto cfg = infra::parse_infra_config(station_config(), "keyline.toml");
  ASSERT_TRUE(cfg);
  std::vector<infra::CaCertificate> certs;
  certs.push_back(*infra::ca_certificate(cfg->station_id, infra::CaRole::intermediate, pki().intermediate, "i.pem"));
  auto d = infra::make_deployment(std::move(*cfg), std::move(certs));
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().domain(), Domain::state);
  EXPECT_NE(d.error().message().find("root CA certificate"), std::string::npos) << d.error().message();
}

TEST(InfraArm, TemplateCarriesTheModel) {
  auto d = deployment();
  OJson t = infra::arm_template(d);
  EXPECT_EQ(t["parameters"]["hubAConnectionString"]["type"], "securestring");
  EXPECT_EQ(t["parameters"]["hubBConnectionString"]["metadata"]["hostName"], "hub-b.azure-devices.net");
  ASSERT_EQ(t["resources"].size(), 3u);
  const OJson& dps = t["resources"][0];
  EXPECT_EQ(dps["type"], "Microsoft.Devices/provisioningServices");
  EXPECT_EQ(dps["apiVersion"], "2022-12-12");
  EXPECT_EQ(dps["sku"]["capacity"], 2);
  EXPECT_EQ(dps["properties"]["allocationPolicy"], "GeoLatency");
  EXPECT_EQ(dps["properties"]["iotHubs"][0]["connectionString"], "[parameters('hubAConnectionString')]");
  EXPECT_EQ(dps["properties"]["iotHubs"][1]["allocationWeight"], 1);
  EXPECT_EQ(dps["properties"]["ipFilterRules"][1]["ipMask"], "192.168.77.5");
  EXPECT_EQ(dps["properties"]["enableDataResidency"], true);
  EXPECT_EQ(dps["tags"]["cost center"], "[" + kTrickyTag) << "a literal '[' must be escaped as '[['";
  const OJson& cert = t["resources"][1];
  EXPECT_EQ(cert["name"], "factory-dps-1/plant7-line1-intermediate");
  EXPECT_EQ(cert["properties"]["isVerified"], true);
  auto der = base64_decode(cert["properties"]["certificate"].get<std::string>());
  ASSERT_TRUE(der);
  EXPECT_EQ(*der, d.certificate(infra::CaRole::intermediate)->der);
  EXPECT_EQ(t["resources"][2]["name"], "factory-dps-1/plant7-line1-root");
}

TEST(InfraArm, OlderApiVersionIsApplied) {
  std::string text = station_config();
  text.replace(text.find("data-residency = true"), 21, "api-version = \"2021-07-01\"");
  auto d = deployment(text);
  OJson t = infra::arm_template(d);
  for (auto& r : t["resources"]) EXPECT_EQ(r["apiVersion"], "2021-07-01");
  EXPECT_FALSE(t["resources"][0]["properties"].contains("enableDataResidency"));
  EXPECT_NE(infra::emit_bicep(d).find("provisioningServices@2021-07-01"), std::string::npos);
}

TEST(InfraOutput, IsDeterministic) {
  auto a = infra::render(deployment(), std::vector{infra::Format::arm, infra::Format::bicep, infra::Format::terraform});
  // The same configuration with its tags written in the other order.
  std::string text = station_config();
  std::string from = "tags = { owner = \"line 1\", \"cost center\" = \"[a'b\\\"c\\\\d${x}%{y}\" }";
  auto pos = text.find(from);
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, from.size(), "tags = { \"cost center\" = \"[a'b\\\"c\\\\d${x}%{y}\", owner = \"line 1\" }");
  auto b = infra::render(deployment(text), std::vector{infra::Format::arm, infra::Format::bicep, infra::Format::terraform});
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].path, b[i].path);
    EXPECT_EQ(a[i].content, b[i].content) << a[i].path;
  }
}

TEST(InfraConfig, AMinimalInstanceTakesTheDefaults) {
  auto c = infra::parse_infra_config("[dps.instance]\nname = \"min-dps\"\nlocation = \"eastus\"\n"
                                     "ip-filter-rules = []\n", "keyline.toml");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->instance->sku, "S1");
  EXPECT_EQ(c->instance->capacity, 1);
  EXPECT_EQ(c->instance->allocation_policy, infra::AllocationPolicy::hashed);
  EXPECT_EQ(c->instance->ca_certificates, std::vector<infra::CaRole>{infra::CaRole::intermediate});
  EXPECT_TRUE(c->instance->hubs.empty());
  auto wrong = infra::parse_infra_config("[dps.instance]\nname = \"min-dps\"\nlocation = \"eastus\"\n"
                                         "[dps.instance.hubs]\nhost-name = \"h.example\"\n", "keyline.toml");
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("dps.instance.hubs must be an array of tables ([[dps.instance.hubs]])"),
            std::string::npos) << wrong.error().message();
}

// The example in docs/dps-infra.md is a valid configuration.
TEST(InfraConfig, TheDocumentedExampleParses) {
  std::string doc = testkit::read_file(KEYLINE_DOCS_DIR "/dps-infra.md");
  auto start = doc.find("```toml\n");
  ASSERT_NE(start, std::string::npos);
  start += 8;
  std::string toml = doc.substr(start, doc.find("```", start) - start);
  auto c = infra::parse_infra_config(toml, "docs/dps-infra.md");
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE(c->instance);
  EXPECT_EQ(c->instance->hubs.size(), 1u);
  EXPECT_EQ(c->groups.size(), 1u);
  EXPECT_EQ(c->groups[0].initial_twin_tags["site"], "plant 7");
}

}  // namespace
}  // namespace keyline::infra_test
