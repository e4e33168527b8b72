#pragma once
// station::infra::parse_arm_template -- what a DPS emulator needs from an ARM
// deployment template (ours, or one written by hand in the same shape).
//
// Reads the first Microsoft.Devices/provisioningServices resource: its
// allocation policy and linked hubs, and every
// Microsoft.Devices/provisioningServices/certificates resource (top level or
// nested under the service). A hub's host name comes from its connectionString
// when that is a literal ("HostName=...;..."), else from the metadata.hostName
// of the parameter it references ("[parameters('X')]"), which keyline writes.
// A certificate is base64 DER or PEM text. Errors (Domain::input) name the
// JSON path of what is missing or malformed.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/infra.hpp"

namespace keyline::station::infra {

struct TemplateHub {
  std::string host_name;
  std::string location;
  int allocation_weight = 0;
  bool apply_allocation_policy = false;
};

struct TemplateCertificate {
  std::string name;
  Bytes der;
  bool verified = false;
};

struct ArmTemplate {
  std::string name;  // the DPS resource name
  AllocationPolicy allocation_policy = AllocationPolicy::hashed;
  std::vector<TemplateHub> hubs;
  std::vector<TemplateCertificate> certificates;
};

Result<ArmTemplate> parse_arm_template(std::string_view json_text, std::string_view source);

}  // namespace keyline::station::infra
