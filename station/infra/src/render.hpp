#pragma once
// Shared structure of the emitters: the provisioning service and its
// certificates as one resource tree in ARM property names, plus the quoting
// rules of each output language.
//
// In the tree, an object {"<param>": NAME} stands for "the secure parameter
// NAME" (tag names cannot contain '<', so no user value looks like it); ARM
// renders it as "[parameters('NAME')]", Bicep as NAME, Terraform as var.NAME.

#include <optional>
#include <string>
#include <string_view>

#include "keyline/station/infra.hpp"

namespace keyline::station::infra::detail {

using OJson = nlohmann::ordered_json;

OJson param_ref(const std::string& name);
std::optional<std::string> as_param_ref(const OJson& v);

// name, location, tags, sku, properties of Microsoft.Devices/provisioningServices.
OJson dps_body(const Deployment& d);
// properties of a Microsoft.Devices/provisioningServices/certificates resource.
OJson certificate_properties(const CaCertificate& c);
// "Connection string of the linked IoT hub HOST (secret: pass it at deploy time)".
std::string hub_parameter_description(const LinkedHub& h);

// 'text' with Bicep escapes (\\ \' \n \r \t \${ and \u{..} for control characters).
std::string bicep_string(std::string_view s);
// "text" with HCL escapes (\\ \" \n \r \t, $${ and %%{ against interpolation, \uNNNN).
std::string hcl_string(std::string_view s);
// 'text' for POSIX shells ('\'' for a quote).
std::string shell_quote(std::string_view s);
// Bicep object key: bare identifier when possible, else a quoted string.
std::string bicep_key(std::string_view k);

}  // namespace keyline::station::infra::detail
