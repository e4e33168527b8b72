// The line benchmark: one device session over a pty paced like a 115,200-baud
// UART, beside its wire-time lower bound, and 8 devices on 8 ptys at once
// beside one. Session: INFO -> KEYGEN -> WRITE chain -> READ_HASH ->
// CHALLENGE -> LOCK (later: the full provisioning job).
//
// Lower bound = (bytes sent + bytes received, counted by the Link) x 10 / baud
// + the simulated key generation time. Targets: one device <= 1.25 x its
// lower bound; 8 in parallel <= 1.3 x one.
//
// Usage: line_bench [BAUD] [KEYGEN_MS] [REPEATS]
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "keyline/core/hex.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
using namespace keyline::station;
namespace proto = keyline::station::protocol;
using Clock = std::chrono::steady_clock;

namespace {

struct Run {
  double seconds = 0;
  std::uint64_t bytes = 0;
  bool ok = false;
  std::string error;
};

std::string chain_text() {
  // Two PEM blocks of certificate size: the device stores the slot as bytes.
  std::string out;
  for (int i = 0; i < 2; ++i) {
    Bytes der(560);
    RAND_bytes(der.data(), static_cast<int>(der.size()));
    out += pem_encode("CERTIFICATE", der);
  }
  return out;
}

Run session(const std::string& port, unsigned baud) {
  Run r;
  link::SerialOptions so;
  so.baud = baud;
  auto l = link::SerialLink::open(port, so);
  if (!l) return {0, 0, false, l.error().message()};
  provision::SessionOptions o;
  o.baud = baud;
  provision::DeviceSession s(**l, o);
  const std::string chain = chain_text();
  Bytes nonce(32);
  RAND_bytes(nonce.data(), 32);
  const auto t0 = Clock::now();
  auto fail = [&](const Error& e) {
    r.error = e.message();
    return r;
  };
  auto info = s.info();
  if (!info) return fail(info.error());
  auto csr = s.keygen(info->model + "-" + info->serial_number);
  if (!csr) return fail(csr.error());
  auto w = s.write(proto::Slot::cert_chain,
                   ByteView(reinterpret_cast<const unsigned char*>(chain.data()), chain.size()));
  if (!w) return fail(w.error());
  auto h = s.read_hash(proto::Slot::cert_chain);
  if (!h) return fail(h.error());
  auto sig = s.challenge(nonce);
  if (!sig) return fail(sig.error());
  auto lk = s.lock();
  if (!lk) return fail(lk.error());
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.bytes = (*l)->bytes_sent() + (*l)->bytes_received();
  r.ok = s.stats().retries == 0;
  if (!r.ok) r.error = "retries happened";
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned baud = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 115200;
  const unsigned keygen_ms = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 100;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  testkit::TempDir dir;
  const std::vector<std::string> args{"--baud", std::to_string(baud), "--keygen-delay-ms",
                                      std::to_string(keygen_ms)};

  // One device, best of `repeats` (fresh device each time).
  Run best;
  for (int i = 0; i < repeats; ++i) {
    auto sim = testkit::Devsim::pty(dir / ("one-" + std::to_string(i) + ".json"), args);
    Run r = session(sim.port(), baud);
    if (!r.ok) {
      std::fprintf(stderr, "line_bench: session failed: %s\n", r.error.c_str());
      return 1;
    }
    if (best.seconds == 0 || r.seconds < best.seconds) best = r;
  }
  const double wire = static_cast<double>(best.bytes) * 10.0 / baud;
  const double bound = wire + keygen_ms / 1000.0;
  std::printf(
      "one device, %u baud: %.1f ms for %llu bytes; lower bound %.1f ms (wire %.1f + keygen %u) -> ratio "
      "%.3f (target <= 1.25)\n",
      baud, best.seconds * 1000, static_cast<unsigned long long>(best.bytes), bound * 1000, wire * 1000,
      keygen_ms, best.seconds / bound);

  // Eight devices at once, one thread each; the time until the last is done.
  constexpr int kDevices = 8;
  double best8 = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    std::vector<testkit::Devsim> sims;
    for (int i = 0; i < kDevices; ++i)
      sims.push_back(testkit::Devsim::pty(
          dir / ("eight-" + std::to_string(rep) + "-" + std::to_string(i) + ".json"), args));
    std::vector<Run> runs(kDevices);
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < kDevices; ++i)
      threads.emplace_back([&, i] { runs[i] = session(sims[i].port(), baud); });
    for (auto& t : threads) t.join();
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    for (auto& r : runs)
      if (!r.ok) {
        std::fprintf(stderr, "line_bench: a parallel session failed: %s\n", r.error.c_str());
        return 1;
      }
    if (best8 == 0 || took < best8) best8 = took;
  }
  std::printf("8 devices on 8 ptys at once: %.1f ms (one alone: %.1f ms) -> ratio %.3f (target <= 1.3)\n",
              best8 * 1000, best.seconds * 1000, best8 / best.seconds);
  return 0;
}
