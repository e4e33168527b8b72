// keyline ledger ...: what the station has on record.

#include <iomanip>

#include "app.hpp"

namespace keyline::cli {

namespace {

Status ledger_certificates(const Context& ctx, const std::string& registration_id,
                           const std::string& status) {
  if (!status.empty() && status != "active" && status != "revoked" && status != "superseded")
    return fail(Domain::usage, "--status must be active, revoked or superseded");
  KL_TRY(auto ledger, open_ledger_readonly(ctx));
  station::CertificateFilter filter;
  if (!registration_id.empty()) {
    std::string lower;
    for (char c : registration_id) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    filter.registration_id = lower;
  }
  if (!status.empty()) filter.status = status;
  if (ctx.json()) {
    nlohmann::json rows = nlohmann::json::array();
    KL_CHECK(ledger.for_each_certificate(filter, [&](const station::CertificateRecord& r) {
      nlohmann::json j = {{"serial", r.serial}, {"registration_id", r.registration_id},
                          {"profile", r.profile}, {"subject", r.subject}, {"status", r.status},
                          {"not_before", iso_time(r.not_before)}, {"not_after", iso_time(r.not_after)},
                          {"issued_at", iso_time(r.issued_at)}, {"cert_sha256", r.cert_sha256},
                          {"pubkey_sha256", r.pubkey_sha256}};
      if (r.revoked_at) {
        j["revoked_at"] = iso_time(*r.revoked_at);
        j["revocation_reason"] = r.revocation_reason;
      }
      if (!r.superseded_by.empty()) j["superseded_by"] = r.superseded_by;
      rows.push_back(std::move(j));
    }));
    std::cout << nlohmann::json{{"certificates", rows}}.dump(2) << "\n";
    return {};
  }
  std::cout << std::left << std::setw(34) << "SERIAL" << std::setw(34) << "REGISTRATION ID"
            << std::setw(12) << "PROFILE" << std::setw(12) << "STATUS" << "NOT AFTER\n";
  std::size_t n = 0;
  KL_CHECK(ledger.for_each_certificate(filter, [&](const station::CertificateRecord& r) {
    std::cout << std::left << std::setw(34) << r.serial << std::setw(34) << r.registration_id
              << std::setw(12) << r.profile << std::setw(12) << r.status << iso_time(r.not_after) << "\n";
    ++n;
  }));
  std::cout << n << " certificate(s)\n";
  return {};
}

}  // namespace

void add_ledger_commands(CLI::App& app, Handler& run) {
  auto* ledger = app.add_subcommand("ledger", "What the station has on record");
  ledger->require_subcommand(1);
  auto id = std::make_shared<std::string>();
  auto status = std::make_shared<std::string>();
  auto* certs = ledger->add_subcommand("certificates", "List issued certificates");
  certs->add_option("--registration-id", *id, "Only this registration ID");
  certs->add_option("--status", *status, "Only active, revoked or superseded");
  certs->callback([&run, id, status] {
    run = [id, status](const Context& c) { return ledger_certificates(c, *id, *status); };
  });
}

}  // namespace keyline::cli
