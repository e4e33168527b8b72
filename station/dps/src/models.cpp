#include "keyline/station/dps/models.hpp"

#include <algorithm>

#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"

namespace keyline::station::dps {

using Json = nlohmann::json;

std::string_view to_string(EnrollmentKind k) { return k == EnrollmentKind::individual ? "individual" : "group"; }

namespace {
const char* id_member(EnrollmentKind k) {
  return k == EnrollmentKind::individual ? "registrationId" : "enrollmentGroupId";
}
Json certs(const std::string& primary, const std::string& secondary) {
  Json j = {{"primary", {{"certificate", primary}}}};
  if (!secondary.empty()) j["secondary"] = {{"certificate", secondary}};
  return j;
}
const std::vector<std::string> kReadOnly = {"etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc",
                                            "registrationState"};
}  // namespace

Enrollment Enrollment::individual(std::string registration_id) {
  Json doc = {{"registrationId", registration_id}, {"attestation", {{"type", "none"}}}};
  return Enrollment(std::move(doc), EnrollmentKind::individual, std::move(registration_id));
}

Enrollment Enrollment::group(std::string enrollment_group_id) {
  Json doc = {{"enrollmentGroupId", enrollment_group_id}, {"attestation", {{"type", "none"}}}};
  return Enrollment(std::move(doc), EnrollmentKind::group, std::move(enrollment_group_id));
}

Result<Enrollment> Enrollment::from_json(Json doc, EnrollmentKind kind) {
  const char* idm = id_member(kind);
  if (!doc.is_object()) return fail(Domain::input, std::string("enrollment is not a JSON object"));
  auto it = doc.find(idm);
  if (it == doc.end() || !it->is_string() || it->get<std::string>().empty())
    return fail(Domain::input, std::string("enrollment has no ") + idm);
  auto at = doc.find("attestation");
  if (at == doc.end() || !at->is_object() || !at->contains("type") || !(*at)["type"].is_string())
    return fail(Domain::input, "enrollment '" + it->get<std::string>() + "' has no attestation.type");
  std::string id = it->get<std::string>();
  return Enrollment(std::move(doc), kind, std::move(id));
}

Result<Enrollment> Enrollment::parse(std::string_view text, EnrollmentKind kind) {
  Json doc = Json::parse(text, nullptr, false);
  if (doc.is_discarded()) return fail(Domain::input, "enrollment is not valid JSON");
  return from_json(std::move(doc), kind);
}

const std::string& Enrollment::id() const { return id_; }
std::string Enrollment::etag() const { return doc_.value("etag", std::string()); }
std::string Enrollment::attestation_type() const { return doc_["attestation"].value("type", std::string()); }
bool Enrollment::enabled() const { return doc_.value("provisioningStatus", std::string("enabled")) != "disabled"; }

Enrollment& Enrollment::x509_client_certificates(const std::string& p, const std::string& s) {
  doc_["attestation"] = {{"type", "x509"}, {"x509", {{"clientCertificates", certs(p, s)}}}};
  return *this;
}
Enrollment& Enrollment::x509_signing_certificates(const std::string& p, const std::string& s) {
  doc_["attestation"] = {{"type", "x509"}, {"x509", {{"signingCertificates", certs(p, s)}}}};
  return *this;
}
Enrollment& Enrollment::x509_ca_references(const std::string& p, const std::string& s) {
  Json refs = {{"primary", p}};
  if (!s.empty()) refs["secondary"] = s;
  doc_["attestation"] = {{"type", "x509"}, {"x509", {{"caReferences", refs}}}};
  return *this;
}
Enrollment& Enrollment::symmetric_key(const std::string& p, const std::string& s) {
  doc_["attestation"] = {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", p}, {"secondaryKey", s}}}};
  return *this;
}
Enrollment& Enrollment::tpm(const std::string& ek, const std::string& srk) {
  Json t = {{"endorsementKey", ek}};
  if (!srk.empty()) t["storageRootKey"] = srk;
  doc_["attestation"] = {{"type", "tpm"}, {"tpm", t}};
  return *this;
}
Enrollment& Enrollment::device_id(const std::string& id) { doc_["deviceId"] = id; return *this; }
Enrollment& Enrollment::iot_hub_host_name(const std::string& h) { doc_["iotHubHostName"] = h; return *this; }
Enrollment& Enrollment::iot_hubs(const std::vector<std::string>& hubs) { doc_["iotHubs"] = hubs; return *this; }
Enrollment& Enrollment::allocation_policy(const std::string& policy, const std::string& url, const std::string& ver) {
  doc_["allocationPolicy"] = policy;
  if (!url.empty()) doc_["customAllocationDefinition"] = {{"webhookUrl", url}, {"apiVersion", ver}};
  return *this;
}
Enrollment& Enrollment::webhook_source(const std::string& source, const std::string& ver) {
  doc_["customAllocationDefinition"] = {{"webhookUrlSource", source}, {"apiVersion", ver}};
  return *this;
}
Enrollment& Enrollment::initial_twin(const Json& twin) { doc_["initialTwin"] = twin; return *this; }
Enrollment& Enrollment::iot_edge(bool edge) { doc_["capabilities"] = {{"iotEdge", edge}}; return *this; }
Enrollment& Enrollment::provisioning_status(bool enabled) {
  doc_["provisioningStatus"] = enabled ? "enabled" : "disabled";
  return *this;
}
Enrollment& Enrollment::reprovision_policy(bool update, bool migrate) {
  doc_["reprovisionPolicy"] = {{"updateHubAssignment", update}, {"migrateDeviceData", migrate}};
  return *this;
}
Enrollment& Enrollment::optional_device_information(const Json& info) {
  doc_["optionalDeviceInformation"] = info;
  return *this;
}

Json Enrollment::redacted() const {
  Json d = doc_;
  for (auto& k : kReadOnly) d.erase(k);
  if (d["attestation"].contains("symmetricKey")) d["attestation"]["symmetricKey"] = Json::object();
  return d;
}

std::string certificate_thumbprint(std::string_view text) {
  X509Ptr cert;
  if (text.find("-----BEGIN") != std::string_view::npos) {
    auto c = x509_from_pem(text, "enrollment");
    if (c) cert = std::move(*c);
  } else {
    auto der = base64_decode(text);
    if (der) {
      auto c = x509_from_der(*der);
      if (c) cert = std::move(*c);
    }
  }
  if (!cert) return {};
  auto der = to_der(cert.get());
  if (!der) return {};
  return to_hex(sha256(*der));
}

namespace {
bool subset(const Json& want, const Json& have, int depth) {
  if (want.is_object()) {
    if (!have.is_object()) return false;
    for (auto& [k, v] : want.items()) {
      if (depth == 0 && std::find(kReadOnly.begin(), kReadOnly.end(), k) != kReadOnly.end()) continue;
      if (k == "info") continue;
      if (k == "certificate" && v.is_string()) {
        if (have.contains("certificate") && have["certificate"] == v) continue;
        std::string mine = certificate_thumbprint(v.get<std::string>());
        std::string theirs;
        if (have.contains("certificate") && have["certificate"].is_string())
          theirs = certificate_thumbprint(have["certificate"].get<std::string>());
        else if (have.contains("info") && have["info"].contains("sha256Thumbprint"))
          theirs = have["info"]["sha256Thumbprint"].get<std::string>();
        std::transform(theirs.begin(), theirs.end(), theirs.begin(), ::toupper);
        if (mine.empty() || mine != theirs) return false;
        continue;
      }
      if ((k == "primaryKey" || k == "secondaryKey") && !have.contains(k)) continue;
      if (!have.contains(k)) {
        if (v.is_null()) continue;
        return false;
      }
      if (!subset(v, have[k], depth + 1)) return false;
    }
    return true;
  }
  return want == have;
}
}  // namespace

bool same_enrollment(const Json& desired, const Json& service) { return subset(desired, service, 0); }

}  // namespace keyline::station::dps
