// The output bundle: which files, their READMEs, and the atomic writes.

#include <algorithm>

#include "keyline/core/files.hpp"
#include "render.hpp"

namespace keyline::station::infra {

namespace {

std::string parameter_hint(const Instance& in, std::string_view style) {
  std::string out;
  for (auto& h : in.hubs) {
    std::string fetch = "\"$(az iot hub connection-string show --hub-name " +
                        h.host_name.substr(0, h.host_name.find('.')) + " --policy-name iothubowner -o tsv)\"";
    if (style == "az") out += " \\\n    " + h.connection_string_parameter + "=" + fetch;
    else out += "export TF_VAR_" + h.connection_string_parameter + "=" + fetch + "\n";
  }
  return out;
}

std::string secrets_note(const Instance& in) {
  std::string out =
      "Linked hub connection strings are secrets and are not in these files. Each is a secure\n"
      "parameter (Terraform: a sensitive variable) that you supply at deployment time:\n\n";
  for (auto& h : in.hubs) out += "- `" + h.connection_string_parameter + "`: IoT hub `" + h.host_name + "`\n";
  if (in.hubs.empty()) out += "- (no linked hubs configured)\n";
  return out +
         "\nThe commands below read them with `az iot hub connection-string show`; a secrets store or\n"
         "a parameters file kept out of version control works as well.\n";
}

std::string certificates_note(const Deployment& d) {
  std::string out;
  for (auto& c : d.certificates)
    if (std::find(d.instance().ca_certificates.begin(), d.instance().ca_certificates.end(), c.role) !=
        d.instance().ca_certificates.end())
      out += "- `" + c.name + "`: the station's " + std::string(to_string(c.role)) +
             " CA certificate, uploaded as verified (`isVerified: true`), so X.509 enrollment groups work without "
             "a proof-of-possession round trip. `keyline ca verification-cert` remains available for the manual "
             "route.\n";
  return out;
}

std::string arm_readme(const Deployment& d) {
  const Instance& in = d.instance();
  return "# " + in.name + " as an ARM template\n\n"
         "`azuredeploy.json` creates the Device Provisioning Service `" + in.name + "` (api-version " +
         in.api_version + ") in `" + in.location + "` and its CA certificates:\n\n" + certificates_note(d) + "\n" +
         secrets_note(in) +
         "\n## Deploy\n\n```sh\naz deployment group create -g RG --template-file azuredeploy.json \\\n  --parameters" +
         parameter_hint(in, "az") + "\n```\n\nThen create the enrollment groups: see `../enrollment-groups/README.md`.\n";
}

std::string bicep_readme(const Deployment& d) {
  const Instance& in = d.instance();
  return "# " + in.name + " in Bicep\n\n"
         "`main.bicep` declares the same resources as `../arm/azuredeploy.json` (api-version " + in.api_version +
         "), with the hub connection strings as `@secure()` parameters.\n\n" + certificates_note(d) + "\n" +
         secrets_note(in) +
         "\n## Deploy\n\n```sh\naz deployment group create -g RG --template-file main.bicep \\\n  --parameters" +
         parameter_hint(in, "az") + "\n```\n\nThen create the enrollment groups: see `../enrollment-groups/README.md`.\n";
}

std::string terraform_readme(const Deployment& d) {
  const Instance& in = d.instance();
  return "# " + in.name + " with Terraform\n\n"
         "`main.tf` uses the azurerm provider: `azurerm_iothub_dps` (linked hubs as `linked_hub` blocks\n"
         "that read sensitive variables, IP filter rules, public network access, data residency, tags)\n"
         "and `azurerm_iothub_dps_certificate` with `is_verified = true`. azurerm covers every property\n"
         "keyline sets, so AzAPI is not needed; the provider chooses the ARM api-version itself, so\n"
         "`dps.instance.api-version` affects only the ARM and Bicep outputs.\n\n" +
         certificates_note(d) + "\n" + secrets_note(in) +
         "\n## Deploy\n\nTerraform reads sensitive variables from `TF_VAR_<name>` environment variables, which\n"
         "keeps the connection strings off the command line:\n\n```sh\n" +
         parameter_hint(in, "tf") + "terraform init && terraform apply -var resource_group_name=RG\n```\n\nThen create the enrollment groups: see `../enrollment-groups/README.md`.\n";
}

std::string groups_readme(const Deployment& d) {
  std::string out =
      "# Enrollment groups of " + d.instance().name + "\n\n"
      "Enrollment groups are data plane, not ARM, so they are not in the templates.\n\n"
      "- `enrollment-groups.sh`: `az iot dps enrollment-group create` per group (azure-iot extension).\n"
      "  Run it after deploying the service: `RESOURCE_GROUP=RG ./enrollment-groups.sh`\n"
      "  (`DPS_NAME` overrides the service name).\n"
      "- `enrollment-groups.json`: the same groups as EnrollmentGroup objects (service API 2021-10-01),\n"
      "  for `keyline dps group create --from enrollment-groups.json`.\n"
      "- `*.pem`: the CA certificates the groups refer to.\n\nGroups:\n\n";
  for (auto& g : d.config.groups)
    out += "- `" + g.name + "`: " +
           (g.attestation == Group::Attestation::symmetric_key
                ? std::string("symmetric key (DPS generates the group keys)")
                : "X.509, " + std::string(to_string(g.ca)) + " CA") +
           ", " + g.provisioning_status + "\n";
  if (d.config.groups.empty()) out += "- (none configured in [[dps.groups]])\n";
  return out;
}

std::string top_readme(const Deployment& d, std::span<const Format> formats) {
  std::string out = "# Infrastructure of station " + d.config.station_id + "\n\n"
                    "Generated by `keyline dps infra` from keyline.toml; re-generate instead of editing.\n\n";
  for (Format f : formats) {
    if (f == Format::arm) out += "- `arm/`: ARM deployment template (`az deployment group create`)\n";
    if (f == Format::bicep) out += "- `bicep/`: Bicep (`az deployment group create`)\n";
    if (f == Format::terraform) out += "- `terraform/`: Terraform, azurerm provider (`terraform apply`)\n";
  }
  return out + "- `enrollment-groups/`: the enrollment groups (az CLI script and service-API JSON)\n";
}

}  // namespace

std::vector<OutputFile> render(const Deployment& d, std::span<const Format> formats) {
  std::vector<OutputFile> files;
  files.push_back({"README.md", top_readme(d, formats)});
  for (Format f : {Format::arm, Format::bicep, Format::terraform}) {
    if (std::find(formats.begin(), formats.end(), f) == formats.end()) continue;
    if (f == Format::arm) {
      files.push_back({"arm/azuredeploy.json", emit_arm(d)});
      files.push_back({"arm/README.md", arm_readme(d)});
    } else if (f == Format::bicep) {
      files.push_back({"bicep/main.bicep", emit_bicep(d)});
      files.push_back({"bicep/README.md", bicep_readme(d)});
    } else {
      files.push_back({"terraform/main.tf", emit_terraform(d)});
      files.push_back({"terraform/README.md", terraform_readme(d)});
    }
  }
  files.push_back({"enrollment-groups/enrollment-groups.sh", emit_groups_script(d), 0755});
  files.push_back({"enrollment-groups/enrollment-groups.json", emit_groups_json(d)});
  for (auto& c : d.certificates) files.push_back({"enrollment-groups/" + std::string(to_string(c.role)) + ".pem", c.pem});
  files.push_back({"enrollment-groups/README.md", groups_readme(d)});
  return files;
}

Status write_files(const fs::path& out, const std::vector<OutputFile>& files) {
  for (auto& f : files) {
    fs::path p = out / f.path;
    KL_CHECK(files::ensure_dir(p.parent_path(), 0755));
    KL_CHECK(files::write_atomic(p, f.content, f.mode));
  }
  return {};
}

}  // namespace keyline::station::infra
