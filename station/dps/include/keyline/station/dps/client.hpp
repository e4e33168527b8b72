#pragma once
// DpsClient: the DPS service API, api-version 2021-10-01 (dps-api.md §1).
//
// Every call is signed with a service SAS token (renewed before expiry),
// passes the client-side rate limiter (the DPS unit quota), and is retried
// on 429, 5xx and connection errors with jittered exponential backoff that
// honours Retry-After. Other failures come back as a Domain::policy Error
// whose message carries DPS's errorCode, trackingId and message verbatim and
// whose native code is the errorCode (HTTP status × 1000 when DPS gave none).
// Safe to share between threads (see DpsClient).

#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "keyline/core/clock.hpp"
#include "keyline/core/error.hpp"
#include "keyline/station/dps/http.hpp"
#include "keyline/station/dps/models.hpp"
#include "keyline/station/dps/retry.hpp"
#include "keyline/station/dps/sas.hpp"

namespace keyline::station::dps {

struct ClientOptions {
  std::string api_version = "2021-10-01";
  HttpOptions http;
  BackoffPolicy backoff;
  double quota_per_minute = 0;  // 0: no client-side limit
};

enum class BulkMode { create, update, update_if_match_etag, remove };
std::string_view to_string(BulkMode m);

struct BulkItemError {
  std::string id;
  std::int64_t error_code = 0;
  std::string error_status;
};
struct BulkResult {
  bool successful = false;
  std::vector<BulkItemError> errors;
};

struct QueryPage {
  std::vector<nlohmann::json> items;
  std::string continuation;  // empty on the last page
  std::string item_type;     // Enrollment | EnrollmentGroup | DeviceRegistration
};

struct ClientStats {
  std::uint64_t requests = 0;
  std::uint64_t throttled = 0;       // 429 answers
  std::uint64_t server_errors = 0;   // 5xx answers
  std::uint64_t connection_errors = 0;
};

// The errorCode of a DPS error (0 for other errors): native_code of Domain::policy errors.
std::int64_t dps_error_code(const Error& e);

// Thread-safe: calls from several threads share the rate limiter, the SAS
// token and the statistics, each on its own HTTP connection (a small pool).
class DpsClient {
 public:
  static constexpr std::size_t kMaxBulk = 10;

  DpsClient(ConnectionString cs, const Clock& clock, ClientOptions options);
  ~DpsClient();

  Result<Enrollment> get(EnrollmentKind kind, const std::string& id);
  // nullopt when DPS says 404.
  Result<std::optional<Enrollment>> find(EnrollmentKind kind, const std::string& id);
  // Create or replace; `if_match` ("" = unconditional, "*" = must exist, or an etag).
  Result<Enrollment> put(const Enrollment& e, const std::string& if_match = {});
  Status remove(EnrollmentKind kind, const std::string& id, const std::string& if_match = {});
  Result<nlohmann::json> attestation_mechanism(EnrollmentKind kind, const std::string& id);
  // At most kMaxBulk items; per-item failures are in the result, not an Error.
  Result<BulkResult> bulk(EnrollmentKind kind, BulkMode mode, const std::vector<nlohmann::json>& items);
  Result<QueryPage> query(EnrollmentKind kind, int page_size = 0, const std::string& continuation = {},
                          const std::string& query_text = "SELECT *");
  Result<std::vector<nlohmann::json>> query_all(EnrollmentKind kind, int page_size = 100);

  Result<nlohmann::json> registration_state(const std::string& registration_id);
  Status delete_registration_state(const std::string& registration_id, const std::string& if_match = {});
  Result<QueryPage> query_registration_states(const std::string& group_id, int page_size = 0,
                                              const std::string& continuation = {});

  ClientStats stats() const;

 private:
  Result<HttpResponse> call(const std::string& method, const std::string& path, const std::string& body,
                            std::map<std::string, std::string> headers);
  Result<nlohmann::json> json_call(const std::string& method, const std::string& path, const std::string& body,
                                   std::map<std::string, std::string> headers = {});

  std::unique_ptr<HttpTransport> take_transport();
  void give_back(std::unique_ptr<HttpTransport> t);

  std::string base_;
  ClientOptions options_;
  RateLimiter limiter_;
  mutable std::mutex mu_;  // guards what follows
  SasToken sas_;
  std::vector<std::unique_ptr<HttpTransport>> idle_;
  Backoff backoff_;
  ClientStats stats_;
};

}  // namespace keyline::station::dps
