#pragma once
// DPS enrollments as JSON (dps-api.md §1.5). The whole document is kept, so
// every member -- including ones this code does not know -- round-trips;
// typed builders and accessors cover what the station sets.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "keyline/core/error.hpp"

namespace keyline::station::dps {

enum class EnrollmentKind { individual, group };
std::string_view to_string(EnrollmentKind k);

class Enrollment {
 public:
  static Enrollment individual(std::string registration_id);
  static Enrollment group(std::string enrollment_group_id);
  // Validates the required members (id, attestation.type); keeps the rest as is.
  static Result<Enrollment> from_json(nlohmann::json doc, EnrollmentKind kind);
  static Result<Enrollment> parse(std::string_view text, EnrollmentKind kind);

  EnrollmentKind kind() const { return kind_; }
  const std::string& id() const;
  std::string etag() const;
  std::string attestation_type() const;
  bool enabled() const;
  const nlohmann::json& json() const { return doc_; }
  nlohmann::json& json() { return doc_; }

  // Attestation (replaces any previous attestation).
  Enrollment& x509_client_certificates(const std::string& primary_pem, const std::string& secondary_pem = {});
  Enrollment& x509_signing_certificates(const std::string& primary_pem, const std::string& secondary_pem = {});
  Enrollment& x509_ca_references(const std::string& primary, const std::string& secondary = {});
  Enrollment& symmetric_key(const std::string& primary_b64, const std::string& secondary_b64);
  Enrollment& tpm(const std::string& endorsement_key_b64, const std::string& storage_root_key_b64 = {});

  Enrollment& device_id(const std::string& id);
  Enrollment& iot_hub_host_name(const std::string& host);
  Enrollment& iot_hubs(const std::vector<std::string>& hubs);
  // "hashed" | "geoLatency" | "static" | "custom" (custom needs a webhook).
  Enrollment& allocation_policy(const std::string& policy, const std::string& webhook_url = {},
                                const std::string& api_version = "2021-10-01");
  // A custom allocation webhook named by its source (env:VAR or file:PATH),
  // resolved when the outbox sends (see resolve_webhook_source).
  Enrollment& webhook_source(const std::string& source, const std::string& api_version = "2021-10-01");
  Enrollment& initial_twin(const nlohmann::json& twin);
  Enrollment& iot_edge(bool edge);
  Enrollment& provisioning_status(bool enabled);
  Enrollment& reprovision_policy(bool update_hub_assignment, bool migrate_device_data);
  Enrollment& optional_device_information(const nlohmann::json& info);

  // The document without read-only members and without secrets (symmetric
  // keys): what may be stored or printed.
  nlohmann::json redacted() const;

 private:
  Enrollment(nlohmann::json doc, EnrollmentKind kind, std::string id)
      : doc_(std::move(doc)), kind_(kind), id_(std::move(id)) {}
  nlohmann::json doc_;
  EnrollmentKind kind_;
  std::string id_;
};

// True when `service` (as returned by DPS) holds what `desired` asks for:
// every writable member of `desired` is present and equal, ignoring
// read-only members (etag, timestamps, registrationState) and certificate
// "info" blocks; an X.509 certificate matches by SHA-256 thumbprint when
// the service returns only "info". Symmetric keys are compared only when
// both documents carry them.
bool same_enrollment(const nlohmann::json& desired, const nlohmann::json& service);

// Upper-case hex SHA-256 of a certificate given as PEM or base64 DER ("" if neither).
std::string certificate_thumbprint(std::string_view pem_or_b64);

}  // namespace keyline::station::dps
