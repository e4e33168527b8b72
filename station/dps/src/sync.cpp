#include "keyline/station/dps/sync.hpp"

#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <future>
#include <set>

#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"

namespace keyline::station::dps {

using nlohmann::json;

namespace {
std::string lower_id(std::string id) {
  for (auto& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return id;
}
}  // namespace

Status EnrollmentSync::hold(const OutboxRow& row, const std::string& why, std::int64_t now) {
  held_.insert(lower_id(row.registration_id));
  return outbox_.mark_retry(row.id, why, now);
}

Result<KeyPair> resolve_key_source(const std::string& source, const std::string& id, hsm::KeyStore* key_store) {
  KeyPair out;
  if (source.starts_with("file:")) {
    auto text = files::read(source.substr(5), 4096);
    if (!text) return std::unexpected(text.error().with_context("symmetric key source"));
    SecretString t(std::move(*text));
    std::string_view all(t.reveal());
    auto nl = all.find('\n');
    std::string_view first = all.substr(0, nl), second = nl == std::string_view::npos ? "" : all.substr(nl + 1);
    auto clean = [](std::string_view s) {
      while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
      return std::string(s);
    };
    std::string p = clean(first), s = clean(second.substr(0, second.find('\n')));
    auto ok = [](const std::string& k) {
      auto b = base64_decode(k);
      return b && b->size() >= 16 && b->size() <= 64;
    };
    if (!ok(p)) return fail(Domain::input, "symmetric key source " + source + ": the first line is not a base64 key of 16 to 64 bytes");
    if (!s.empty() && !ok(s)) return fail(Domain::input, "symmetric key source " + source + ": the second line is not a base64 key of 16 to 64 bytes");
    out.primary = SecretString(std::move(p));
    out.secondary = SecretString(std::move(s));
    return out;
  }
  if (source.starts_with("hsm:")) {
    if (!key_store) return fail(Domain::keystore, "symmetric key source " + source + " needs the station's key store");
    KL_TRY(auto secret, key_store->secret(source.substr(4)));
    KL_TRY(std::string p, derive_device_key(*secret, id));
    KL_TRY(std::string s, derive_device_key(*secret, id + "/secondary"));
    out.primary = SecretString(std::move(p));
    out.secondary = SecretString(std::move(s));
    return out;
  }
  return fail(Domain::usage, "symmetric key source '" + source + "' must be hsm:LABEL or file:PATH");
}

bool is_http_url(std::string_view url) {
  std::string_view rest;
  if (url.starts_with("https://")) rest = url.substr(8);
  else if (url.starts_with("http://")) rest = url.substr(7);
  else return false;
  if (rest.empty() || rest.front() == '/' || rest.front() == '?' || rest.front() == '#') return false;
  for (char c : url)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  return true;
}

Result<std::string> resolve_webhook_source(const std::string& source) {
  std::string url;
  if (source.starts_with("env:")) {
    std::string var = source.substr(4);
    if (var.empty()) return fail(Domain::usage, "webhook URL source env:VAR needs the variable's name");
    const char* v = std::getenv(var.c_str());
    if (!v || !*v)
      return fail(Domain::input, "webhook URL source " + source + ": environment variable " + var +
                                     " is not set (set it for every keyline command that queues or syncs, or use "
                                     "file:PATH)");
    url = v;
  } else if (source.starts_with("file:")) {
    std::string path = source.substr(5);
    if (path.empty()) return fail(Domain::usage, "webhook URL source file:PATH needs a path");
    auto text = files::read(path, 4096);
    if (!text) return std::unexpected(text.error().with_context("webhook URL source"));
    SecretString t(std::move(*text));
    std::string_view first(t.reveal());
    first = first.substr(0, first.find('\n'));
    while (!first.empty() && (first.back() == '\r' || first.back() == ' ' || first.back() == '\t'))
      first.remove_suffix(1);
    url = std::string(first);
  } else {
    return fail(Domain::usage, "webhook URL source '" + source + "' must be env:VAR or file:PATH");
  }
  if (!is_http_url(url)) return fail(Domain::input, "webhook URL source " + source + " does not hold an http(s) URL");
  return url;
}

json with_key_source(json enrollment, const std::string& source) {
  enrollment["attestation"] = {{"type", "symmetricKey"}, {"symmetricKey", {{"keySource", source}}}};
  return enrollment;
}

Result<json> EnrollmentSync::materialise(const OutboxRow& row) {
  json doc = json::parse(row.payload, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail(Domain::input, "outbox row " + std::to_string(row.id) + ": payload is not JSON");
  auto& sk = doc["attestation"]["symmetricKey"];
  if (sk.is_object() && sk.contains("keySource")) {
    std::string src = sk["keySource"].get<std::string>();
    KL_TRY(KeyPair keys, resolve_key_source(src, row.registration_id, key_store_));
    json k = {{"primaryKey", keys.primary.reveal()}};
    if (!keys.secondary.empty()) k["secondaryKey"] = keys.secondary.reveal();
    sk = k;
  } else if (doc["attestation"].is_null()) {
    doc.erase("attestation");
  }
  if (auto def = doc.find("customAllocationDefinition"); def != doc.end() && def->is_object()) {
    if (auto src = def->find("webhookUrlSource"); src != def->end() && src->is_string()) {
      auto url = resolve_webhook_source(src->get<std::string>());
      // The source may come back (a variable set for the next run, a file
      // restored): the row waits, as for a key store that is away.
      if (!url)
        return std::unexpected(Error(Domain::state, "outbox row " + std::to_string(row.id) + ": " +
                                                        url.error().message() + " (the change waits for the next sync)"));
      (*def)["webhookUrl"] = *url;
      def->erase("webhookUrlSource");
    }
  }
  return doc;
}

Status EnrollmentSync::reconcile(const OutboxRow& row, const json& desired, SyncReport& report) {
  EnrollmentKind kind = row.kind == "group" ? EnrollmentKind::group : EnrollmentKind::individual;
  std::int64_t now = clock_.now().time_since_epoch().count();
  auto found = client_.find(kind, row.registration_id);
  if (!found) {
    KL_CHECK(hold(row, found.error().message(), now));
    ++report.retry;
    return {};
  }
  if (!*found) {  // 409 but gone since: leave pending, the next run creates it
    KL_CHECK(hold(row, "DPS answered 409 but the enrollment is absent on read-back", now));
    ++report.retry;
    return {};
  }
  json service = (*found)->json();
  if (desired["attestation"].value("type", "") == "symmetricKey") {
    auto mech = client_.attestation_mechanism(kind, row.registration_id);
    if (!mech) {
      KL_CHECK(hold(row, mech.error().message(), now));
      ++report.retry;
      return {};
    }
    service["attestation"] = *mech;
  }
  if (same_enrollment(desired, service)) {
    KL_CHECK(outbox_.mark_synced(row.id, (*found)->etag(), now));
    ++report.reconciled;
    ++report.synced;
  } else {
    KL_CHECK(outbox_.mark_dead(row.id, "DPS already holds a different " + std::string(to_string(kind)) +
                                           " enrollment '" + row.registration_id +
                                           "'; delete it there or queue a new enrollment", now));
    ++report.dead;
  }
  return {};
}

struct EnrollmentSync::Flight {
  EnrollmentKind kind = EnrollmentKind::individual;
  bool is_delete = false;
  std::vector<json> items;
  std::vector<OutboxRow> sent;
  std::future<Result<BulkResult>> result;
};

Result<std::optional<EnrollmentSync::Flight>> EnrollmentSync::launch(std::vector<OutboxRow>& batch,
                                                                     SyncReport& report) {
  EnrollmentKind kind = batch.front().kind == "group" ? EnrollmentKind::group : EnrollmentKind::individual;
  bool is_delete = batch.front().operation == "delete";
  std::int64_t now = clock_.now().time_since_epoch().count();
  std::vector<json> items;
  std::vector<OutboxRow> sent;
  for (auto& row : batch) {
    auto doc = materialise(row);
    // The key store, or a webhook URL's source, may come back.
    if (!doc && (doc.error().domain() == Domain::keystore || doc.error().domain() == Domain::state)) {
      KL_TRY(auto tx, ledger_.begin());
      KL_CHECK(hold(row, doc.error().message(), now));
      KL_CHECK(tx.commit());
      ++report.retry;
      continue;
    }
    if (!doc) {
      auto tx = ledger_.begin();
      if (!tx) return std::unexpected(tx.error());
      KL_CHECK(outbox_.mark_dead(row.id, doc.error().message(), now));
      KL_CHECK(tx->commit());
      ++report.dead;
      continue;
    }
    if (is_delete) {
      const char* idm = kind == EnrollmentKind::group ? "enrollmentGroupId" : "registrationId";
      items.push_back(json{{idm, row.registration_id}, {"attestation", {{"type", "none"}}}});
    } else {
      items.push_back(std::move(*doc));
    }
    sent.push_back(row);
  }
  if (items.empty()) return std::optional<Flight>();
  for (const auto& row : sent) ++in_flight_ids_[lower_id(row.registration_id)];
  Flight f{kind, is_delete, std::move(items), std::move(sent), {}};
  DpsClient* client = &client_;
  const BulkMode mode = is_delete ? BulkMode::remove : BulkMode::create;
  f.result = std::async(std::launch::async,
                        [client, kind, mode, payload = f.items] { return client->bulk(kind, mode, payload); });
  ++report.bulk_calls;
  return std::optional<Flight>(std::move(f));
}

Status EnrollmentSync::settle(Flight& f, SyncReport& report) {
  const bool is_delete = f.is_delete;
  std::vector<json>& items = f.items;
  std::vector<OutboxRow>& sent = f.sent;
  auto result = f.result.get();
  for (const auto& row : f.sent)
    if (auto it = in_flight_ids_.find(lower_id(row.registration_id)); it != in_flight_ids_.end() && --it->second == 0)
      in_flight_ids_.erase(it);
  ++bulk_calls_;
  if (const char* crash = std::getenv("KEYLINE_DPS_SYNC_CRASH_AFTER_HTTP"); crash && std::atoi(crash) == bulk_calls_)
    _exit(99);
  std::int64_t now = clock_.now().time_since_epoch().count();
  KL_TRY(auto tx, ledger_.begin());
  if (!result) {
    const Error& e = result.error();
    std::int64_t code = dps_error_code(e);
    int http = static_cast<int>(code / 1000);
    bool permanent = http >= 400 && http < 500 && http != 409 && http != 412 && http != 429;
    for (auto& row : sent) {
      if (permanent && sent.size() == 1) {
        KL_CHECK(outbox_.mark_dead(row.id, e.message(), now));
        ++report.dead;
      } else {
        KL_CHECK(hold(row, e.message(), now));
        ++report.retry;
      }
    }
    KL_CHECK(tx.commit());
    if (permanent && sent.size() > 1) {  // one bad item spoils the call: send them one by one
      for (auto& row : sent) {
        std::vector<OutboxRow> one{row};
        KL_CHECK(process(one, report));
        --report.retry;
      }
      return {};
    }
    if (!permanent && e.domain() != Domain::policy) return std::unexpected(e);
    return {};
  }
  std::map<std::string, const BulkItemError*> errors;
  for (auto& err : result->errors) {
    errors[lower_id(err.id)] = &err;
  }
  std::vector<std::pair<OutboxRow, json>> to_reconcile;
  for (std::size_t i = 0; i < sent.size(); ++i) {
    const OutboxRow& row = sent[i];
    auto it = errors.find(lower_id(row.registration_id));
    if (it == errors.end()) {
      KL_CHECK(outbox_.mark_synced(row.id, "", now));
      ++report.synced;
      continue;
    }
    const BulkItemError& err = *it->second;
    int http = static_cast<int>(err.error_code / 1000);
    std::string reason = "DPS bulk " + std::string(is_delete ? "delete" : "create") + ": errorCode " +
                         std::to_string(err.error_code) + ": " + err.error_status;
    if (is_delete && http == 404) {
      KL_CHECK(outbox_.mark_synced(row.id, "", now));
      ++report.synced;
    } else if (!is_delete && http == 409) {
      to_reconcile.emplace_back(row, items[i]);
    } else if (http >= 400 && http < 500 && http != 412 && http != 429) {
      KL_CHECK(outbox_.mark_dead(row.id, reason, now));
      ++report.dead;
    } else {
      KL_CHECK(hold(row, reason, now));
      ++report.retry;
    }
  }
  KL_CHECK(tx.commit());
  for (auto& [row, desired] : to_reconcile) {
    KL_TRY(auto rtx, ledger_.begin());
    KL_CHECK(reconcile(row, desired, report));
    KL_CHECK(rtx.commit());
  }
  return {};
}

Status EnrollmentSync::process(std::vector<OutboxRow>& batch, SyncReport& report) {
  KL_TRY(auto flight, launch(batch, report));
  if (!flight) return {};
  return settle(*flight, report);
}

Result<SyncReport> EnrollmentSync::run_once() {
  SyncReport report;
  std::int64_t cursor = 0;
  std::deque<Flight> flights;
  held_.clear();
  in_flight_ids_.clear();
  // The first error stops new calls; the calls in flight are still settled
  // (recorded) before it is returned.
  std::optional<Error> stopped;
  auto settle_front = [&] {
    Status s = settle(flights.front(), report);
    flights.pop_front();
    if (!s && !stopped) stopped = s.error();
  };
  while (!stopped) {
    auto rows = outbox_.pending(cursor, 64);
    if (!rows) {
      stopped = rows.error();
      break;
    }
    if (rows->empty()) break;
    // Consecutive rows of one kind and operation, distinct IDs, at most 10.
    // Changes to one registration ID reach DPS in queue order: a row whose ID
    // was left pending earlier in this pass waits for the next pass, and a
    // row whose ID is in flight waits until that call is settled.
    std::vector<OutboxRow> batch;
    std::set<std::string> ids;
    bool wait_for_flights = false;
    for (auto& r : *rows) {
      if (!batch.empty() && (r.kind != batch.front().kind || r.operation != batch.front().operation)) break;
      std::string id = lower_id(r.registration_id);
      if (held_.contains(id)) {
        cursor = r.id;  // skipped in this pass; it stays pending
        if (batch.empty()) continue;
        break;
      }
      if (in_flight_ids_.contains(id)) {
        wait_for_flights = true;
        break;
      }
      if (!ids.insert(id).second) break;
      batch.push_back(r);
      if (batch.size() == DpsClient::kMaxBulk) break;
    }
    if (batch.empty()) {
      if (wait_for_flights) {
        while (!flights.empty()) settle_front();
      }
      continue;
    }
    cursor = batch.back().id;
    auto flight = launch(batch, report);
    if (!flight) {
      stopped = flight.error();
      break;
    }
    if (*flight) flights.push_back(std::move(**flight));
    while (static_cast<int>(flights.size()) >= in_flight_) settle_front();
  }
  while (!flights.empty()) settle_front();
  if (stopped) return std::unexpected(*stopped);
  log::get("dps")->info("sync: {} synced ({} by read-back), {} dead, {} left pending, {} bulk calls", report.synced,
                        report.reconciled, report.dead, report.retry, report.bulk_calls);
  return report;
}

}  // namespace keyline::station::dps
