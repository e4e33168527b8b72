// Sync N enrollments queued in the outbox into the emulator, which enforces
// a quota of Q operations per minute and injects 429s and 500s. Prints the
// enrollments per minute achieved against the ideal 10 x Q (bulk of 10 per
// operation) and checks that the emulator then holds exactly the N expected.
//
//   dps_sync_bench N Q FAIL_RATE_429 FAIL_RATE_500

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <set>

#include "keyline/core/log.hpp"
#include "keyline/station/dps/sync.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using namespace keyline::station;
using namespace keyline::station::dps;

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  double q = argc > 2 ? std::atof(argv[2]) : 1000;
  std::string f429 = argc > 3 ? argv[3] : "0.005", f500 = argc > 4 ? argv[4] : "0.005";
  if (const char* spec = std::getenv("KEYLINE_LOG")) (void)log::configure(spec, log::Format::text);
  testkit::TempDir dir;
  testkit::DpsEmulator emu(dir / "emu", {"--quota", std::to_string(q), "--fail-rate-429", f429, "--fail-rate-500", f500,
                                         "--retry-after", "1", "--seed", "5"});
  SystemClock clock;
  auto ledger = Ledger::create(dir / "ledger.db");
  if (!ledger) return std::cerr << ledger.error().message() << "\n", 1;
  Outbox outbox(*ledger);
  testkit::write_file(dir / "key", "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=\n");
  {
    auto tx = ledger->begin();
    for (int i = 0; i < n; ++i) {
      std::string id = "bench-" + std::to_string(i);
      auto payload = with_key_source(Enrollment::individual(id).json(), "file:" + (dir / "key").string());
      if (!outbox.enqueue("individual", "create", id, payload.dump(), 0)) return 1;
    }
    if (!tx || !tx->commit()) return 1;
  }
  ClientOptions o;
  o.http.ca_file = emu.ca_cert();
  o.quota_per_minute = q;
  o.backoff = BackoffPolicy{std::chrono::milliseconds(50), std::chrono::milliseconds(5000), 10};
  DpsClient client(*parse_connection_string(emu.connection_string()), clock, o);
  EnrollmentSync sync(*ledger, client, clock, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  std::uint64_t calls = 0;
  for (int pass = 0; pass < 20; ++pass) {
    auto r = sync.run_once();
    if (r) calls += r->bulk_calls;
    if ((*outbox.counts())["pending"] == 0) break;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto counts = *outbox.counts();
  // Check with one large page (one operation against the quota).
  auto page = client.query(EnrollmentKind::individual, n + 10);
  std::set<std::string> ids;
  if (page)
    for (auto& e : page->items) ids.insert(e.value("registrationId", ""));
  double per_min = counts["synced"] / secs * 60.0, ideal = 10.0 * q;
  std::cout << "dps sync: " << counts["synced"] << " of " << n << " enrollments in " << secs << " s, " << calls
            << " bulk calls, " << client.stats().requests << " requests, " << client.stats().throttled << " x 429, "
            << client.stats().server_errors << " x 5xx, " << client.stats().connection_errors << " connection errors\n"
            << "  achieved " << per_min << " enrollments/min; ideal 10 x Q = " << ideal << " (Q = " << q
            << " ops/min); ratio " << per_min / ideal << " (target >= 0.9)\n"
            << "  emulator holds " << (page ? page->items.size() : 0) << " enrollments, " << ids.size()
            << " distinct; expected " << n << (ids.size() == static_cast<std::size_t>(n) && page && page->items.size() == ids.size() ? " -- OK" : " -- MISMATCH")
            << "\n";
  return ids.size() == static_cast<std::size_t>(n) && counts["dead"] == 0 ? 0 : 1;
}
