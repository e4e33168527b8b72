#include "keyline/station/dps/client.hpp"

#include <thread>

#include "keyline/core/log.hpp"

namespace keyline::station::dps {

using nlohmann::json;

std::string_view to_string(BulkMode m) {
  switch (m) {
    case BulkMode::create: return "create";
    case BulkMode::update: return "update";
    case BulkMode::update_if_match_etag: return "updateIfMatchETag";
    case BulkMode::remove: return "delete";
  }
  return "create";
}

std::int64_t dps_error_code(const Error& e) { return e.domain() == Domain::policy ? e.native_code() : 0; }

namespace {

const char* collection(EnrollmentKind k) { return k == EnrollmentKind::individual ? "/enrollments" : "/enrollmentGroups"; }

Error service_error(const std::string& method, const std::string& path, const HttpResponse& r) {
  json body = json::parse(r.body, nullptr, false);
  std::int64_t code = static_cast<std::int64_t>(r.status) * 1000;
  std::string msg = "DPS refused " + method + " " + path + ": HTTP " + std::to_string(r.status);
  if (body.is_object()) {
    if (body.contains("errorCode") && body["errorCode"].is_number_integer()) code = body["errorCode"].get<std::int64_t>();
    msg += ", errorCode " + std::to_string(code);
    if (body.contains("trackingId") && body["trackingId"].is_string())
      msg += ", trackingId " + body["trackingId"].get<std::string>();
    if (body.contains("message") && body["message"].is_string()) msg += ": " + body["message"].get<std::string>();
  } else if (!r.header("x-ms-error-code").empty()) {
    msg += ", x-ms-error-code " + r.header("x-ms-error-code");
  }
  return Error(Domain::policy, msg, code);
}

}  // namespace

DpsClient::DpsClient(ConnectionString cs, const Clock& clock, ClientOptions options)
    : base_("https://" + cs.host_name),
      options_(options),
      limiter_(options.quota_per_minute),
      sas_(std::move(cs), clock),
      backoff_(options.backoff) {}

DpsClient::~DpsClient() = default;

ClientStats DpsClient::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::unique_ptr<HttpTransport> DpsClient::take_transport() {
  std::lock_guard lock(mu_);
  if (idle_.empty()) return std::make_unique<HttpTransport>(options_.http);
  auto t = std::move(idle_.back());
  idle_.pop_back();
  return t;
}

void DpsClient::give_back(std::unique_ptr<HttpTransport> t) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(t));
}

Result<HttpResponse> DpsClient::call(const std::string& method, const std::string& path, const std::string& body,
                                     std::map<std::string, std::string> headers) {
  auto logger = log::get("dps");
  std::string url = base_ + path + (path.find('?') == std::string::npos ? "?" : "&") +
                    "api-version=" + options_.api_version;
  headers["Accept"] = "application/json";
  if (method != "DELETE" && method != "GET") headers["Content-Type"] = "application/json; charset=utf-8";
  std::optional<Error> last;
  auto transport = take_transport();
  struct GiveBack {
    DpsClient* c;
    std::unique_ptr<HttpTransport>& t;
    ~GiveBack() { c->give_back(std::move(t)); }
  } give_back_on_exit{this, transport};
  for (int attempt = 0; attempt < std::max(1, options_.backoff.max_attempts); ++attempt) {
    limiter_.acquire();
    {
      std::lock_guard lock(mu_);
      auto token = sas_.get();
      if (!token) return std::unexpected(token.error());
      headers["Authorization"] = std::move(*token);
      ++stats_.requests;
    }
    auto r = transport->request(method, url, headers, body);
    std::optional<std::chrono::seconds> retry_after;
    if (!r) {
      {
        std::lock_guard lock(mu_);
        ++stats_.connection_errors;
      }
      last = r.error();
      logger->debug("{} {}: connection error (attempt {}): {}", method, path, attempt + 1, r.error().message());
    } else if (r->status == 429 || r->status >= 500) {
      if (r->status == 429) limiter_.drain();
      {
        std::lock_guard lock(mu_);
        ++(r->status == 429 ? stats_.throttled : stats_.server_errors);
      }
      retry_after = parse_retry_after(r->header("retry-after"));
      last = service_error(method, path, *r);
      logger->debug("{} {}: HTTP {} (attempt {})", method, path, r->status, attempt + 1);
    } else {
      return r;
    }
    if (attempt + 1 < options_.backoff.max_attempts) {
      std::chrono::milliseconds pause;
      {
        std::lock_guard lock(mu_);
        pause = backoff_.delay(attempt, retry_after);
      }
      std::this_thread::sleep_for(pause);
    }
  }
  return std::unexpected(last->with_context("gave up after " + std::to_string(options_.backoff.max_attempts) +
                                            " attempts (DPS unreachable or throttling; the outbox keeps the work)"));
}

Result<json> DpsClient::json_call(const std::string& method, const std::string& path, const std::string& body,
                                  std::map<std::string, std::string> headers) {
  KL_TRY(HttpResponse r, call(method, path, body, std::move(headers)));
  if (r.status < 200 || r.status >= 300) return std::unexpected(service_error(method, path, r));
  if (r.body.empty()) return json();
  json doc = json::parse(r.body, nullptr, false);
  if (doc.is_discarded()) return fail(Domain::io, method + " " + path + ": DPS answered with a body that is not JSON");
  return doc;
}

Result<Enrollment> DpsClient::get(EnrollmentKind kind, const std::string& id) {
  KL_TRY(json doc, json_call("GET", std::string(collection(kind)) + "/" + url_encode(id), ""));
  return Enrollment::from_json(std::move(doc), kind);
}

Result<std::optional<Enrollment>> DpsClient::find(EnrollmentKind kind, const std::string& id) {
  auto e = get(kind, id);
  if (!e) {
    if (dps_error_code(e.error()) / 1000 == 404) return std::optional<Enrollment>();
    return std::unexpected(e.error());
  }
  return std::optional<Enrollment>(std::move(*e));
}

Result<Enrollment> DpsClient::put(const Enrollment& e, const std::string& if_match) {
  std::map<std::string, std::string> h;
  if (!if_match.empty()) h["If-Match"] = if_match;
  KL_TRY(json doc, json_call("PUT", std::string(collection(e.kind())) + "/" + url_encode(e.id()), e.json().dump(), h));
  return Enrollment::from_json(std::move(doc), e.kind());
}

Status DpsClient::remove(EnrollmentKind kind, const std::string& id, const std::string& if_match) {
  std::map<std::string, std::string> h;
  if (!if_match.empty()) h["If-Match"] = if_match;
  KL_CHECK(json_call("DELETE", std::string(collection(kind)) + "/" + url_encode(id), "", h));
  return {};
}

Result<json> DpsClient::attestation_mechanism(EnrollmentKind kind, const std::string& id) {
  return json_call("POST", std::string(collection(kind)) + "/" + url_encode(id) + "/attestationmechanism", "");
}

Result<BulkResult> DpsClient::bulk(EnrollmentKind kind, BulkMode mode, const std::vector<json>& items) {
  if (items.empty() || items.size() > kMaxBulk)
    return fail(Domain::internal, "a bulk enrollment operation takes 1 to 10 items, not " + std::to_string(items.size()));
  json body = {{"mode", to_string(mode)},
               {kind == EnrollmentKind::individual ? "enrollments" : "enrollmentGroups", items}};
  KL_TRY(json doc, json_call("POST", collection(kind), body.dump()));
  BulkResult out;
  out.successful = doc.value("isSuccessful", false);
  if (doc.contains("errors") && doc["errors"].is_array()) {
    for (auto& e : doc["errors"]) {
      BulkItemError item;
      item.id = e.value("registrationId", e.value("enrollmentGroupId", std::string()));
      item.error_code = e.value("errorCode", std::int64_t{0});
      item.error_status = e.value("errorStatus", std::string());
      out.errors.push_back(std::move(item));
    }
  }
  return out;
}

namespace {
Result<QueryPage> page_from(const HttpResponse& r, const std::string& method, const std::string& path) {
  if (r.status != 200) return std::unexpected(service_error(method, path, r));
  QueryPage p;
  json doc = json::parse(r.body, nullptr, false);
  if (!doc.is_array()) return fail(Domain::io, "DPS query " + path + " did not answer with a JSON array");
  for (auto& it : doc) p.items.push_back(it);
  p.continuation = r.header("x-ms-continuation");
  p.item_type = r.header("x-ms-item-type");
  return p;
}
}  // namespace

Result<QueryPage> DpsClient::query(EnrollmentKind kind, int page_size, const std::string& continuation,
                                   const std::string& query_text) {
  std::map<std::string, std::string> h;
  if (page_size > 0) h["x-ms-max-item-count"] = std::to_string(page_size);
  if (!continuation.empty()) h["x-ms-continuation"] = continuation;
  std::string path = std::string(collection(kind)) + "/query";
  KL_TRY(HttpResponse r, call("POST", path, json{{"query", query_text}}.dump(), h));
  return page_from(r, "POST", path);
}

Result<std::vector<json>> DpsClient::query_all(EnrollmentKind kind, int page_size) {
  std::vector<json> all;
  std::string cont;
  do {
    KL_TRY(QueryPage p, query(kind, page_size, cont));
    for (auto& i : p.items) all.push_back(std::move(i));
    cont = p.continuation;
  } while (!cont.empty());
  return all;
}

Result<json> DpsClient::registration_state(const std::string& id) {
  return json_call("GET", "/registrations/" + url_encode(id), "");
}

Status DpsClient::delete_registration_state(const std::string& id, const std::string& if_match) {
  std::map<std::string, std::string> h;
  if (!if_match.empty()) h["If-Match"] = if_match;
  KL_CHECK(json_call("DELETE", "/registrations/" + url_encode(id), "", h));
  return {};
}

Result<QueryPage> DpsClient::query_registration_states(const std::string& group_id, int page_size,
                                                       const std::string& continuation) {
  std::map<std::string, std::string> h;
  if (page_size > 0) h["x-ms-max-item-count"] = std::to_string(page_size);
  if (!continuation.empty()) h["x-ms-continuation"] = continuation;
  std::string path = "/registrations/" + url_encode(group_id) + "/query";
  KL_TRY(HttpResponse r, call("POST", path, json{{"query", "SELECT *"}}.dump(), h));
  return page_from(r, "POST", path);
}

}  // namespace keyline::station::dps
