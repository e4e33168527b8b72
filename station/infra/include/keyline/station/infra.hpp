#pragma once
// station::infra -- the DPS instance as code.
//
// One model, read from the [dps.instance] and [[dps.groups]] tables of
// keyline.toml (docs/dps-infra.md), rendered into:
//   arm/azuredeploy.json        ARM deployment template (Microsoft.Devices/provisioningServices
//                               + its certificates, verified on upload)
//   bicep/main.bicep            the same resources in Bicep
//   terraform/main.tf           the same with the azurerm provider
//   enrollment-groups/          enrollment-groups.sh (az iot dps enrollment-group create),
//                               enrollment-groups.json (EnrollmentGroup objects, service API
//                               2021-10-01), the CA certificates the script points at
//   */README.md                 how to deploy each
//
// Secrets: a linked hub's connection string is never part of the model, only
// the NAME of the secure parameter / sensitive variable that will carry it.
// Output is deterministic: same config and certificates, same bytes.

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"

namespace keyline::station::infra {

namespace fs = std::filesystem;

enum class AllocationPolicy { hashed, geo_latency, static_hub };
// "Hashed", "GeoLatency", "Static" (ARM, Terraform, keyline.toml).
std::string_view arm_name(AllocationPolicy p);
// "hashed", "geoLatency", "static" (service API and az CLI).
std::string_view service_name(AllocationPolicy p);

enum class CaRole { intermediate, root };
std::string_view to_string(CaRole r);

inline constexpr std::string_view kDefaultApiVersion = "2022-12-12";
// The ARM api-versions the emitters know: 2022-12-12 and 2021-07-01.
bool known_api_version(std::string_view v);

struct LinkedHub {
  std::string host_name;
  std::string location;
  int allocation_weight = 1;
  bool apply_allocation_policy = true;
  std::string connection_string_parameter;  // a parameter NAME, never the secret
};

struct IpFilterRule {
  std::string name;
  std::string action;  // Accept | Reject
  std::string ip_mask;
  std::string target = "all";  // all | serviceApi | deviceApi
};

struct Instance {
  std::string name;
  std::string location;
  std::string sku = "S1";
  int capacity = 1;
  AllocationPolicy allocation_policy = AllocationPolicy::hashed;
  std::vector<LinkedHub> hubs;
  std::map<std::string, std::string> tags;
  std::string public_network_access = "Enabled";  // Enabled | Disabled
  std::vector<IpFilterRule> ip_filter_rules;
  bool data_residency = false;
  std::string api_version = std::string(kDefaultApiVersion);
  std::vector<CaRole> ca_certificates = {CaRole::intermediate};  // uploaded, verified
};

struct Group {
  enum class Attestation { x509_ca, symmetric_key };
  std::string name;  // enrollmentGroupId
  Attestation attestation = Attestation::x509_ca;
  CaRole ca = CaRole::intermediate;  // for x509_ca
  std::string provisioning_status = "enabled";
  nlohmann::json initial_twin_properties = nlohmann::json::object();  // desired
  nlohmann::json initial_twin_tags = nlohmann::json::object();
  std::optional<AllocationPolicy> allocation_policy;
  std::vector<std::string> iot_hubs;  // host names, a subset of the instance's hubs
  bool iot_edge = false;
};

struct InfraConfig {
  std::string station_id = "station-1";
  std::optional<Instance> instance;  // absent: no [dps.instance]
  std::vector<Group> groups;
};

// Parses [station] id, [dps.instance] and [[dps.groups]] of keyline.toml and
// validates every field; errors (Domain::input) name the file and the key,
// e.g. "keyline.toml: dps.instance.hubs[1].allocation-weight must be 0..1000".
Result<InfraConfig> parse_infra_config(std::string_view toml_text, std::string_view source);

// A CA certificate to upload, named "<station-id>-<role>" in DPS.
struct CaCertificate {
  CaRole role;
  std::string name;
  Bytes der;
  std::string pem;
};
Result<CaCertificate> ca_certificate(const std::string& station_id, CaRole role, std::string_view pem,
                                     std::string_view source);

// Config + the certificates it names: what every emitter renders.
// make_deployment checks that [dps.instance] exists and that each uploaded or
// group-referenced CA has its certificate.
struct Deployment {
  InfraConfig config;
  std::vector<CaCertificate> certificates;
  const Instance& instance() const { return *config.instance; }
  const CaCertificate* certificate(CaRole role) const;
};
Result<Deployment> make_deployment(InfraConfig config, std::vector<CaCertificate> certificates);

enum class Format { arm, bicep, terraform };

// The ARM template as a JSON document (what arm/azuredeploy.json holds).
nlohmann::ordered_json arm_template(const Deployment& d);
std::string emit_arm(const Deployment& d);
std::string emit_bicep(const Deployment& d);
std::string emit_terraform(const Deployment& d);
std::string emit_groups_script(const Deployment& d);
std::string emit_groups_json(const Deployment& d);

struct OutputFile {
  std::string path;  // relative to the output dir, e.g. "arm/azuredeploy.json"
  std::string content;
  unsigned mode = 0644;
};
// Every file of the requested formats (plus README.md and enrollment-groups/), in a fixed order.
std::vector<OutputFile> render(const Deployment& d, std::span<const Format> formats);
// Writes each file atomically under `out` (created if missing).
Status write_files(const fs::path& out, const std::vector<OutputFile>& files);

}  // namespace keyline::station::infra
