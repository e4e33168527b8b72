// The line benchmark: full provisioning of one simulated device over a pty
// paced like a 115,200-baud UART (INFO, KEYGEN, CSR check, issue, WRITE
// chain, WRITE DPS settings, READ_HASH, CHALLENGE, LOCK, every step in the
// ledger, the enrollment queued), beside its wire-time lower bound; and 8
// devices on 8 ports provisioned by one `keyline line run` beside one.
//
// Lower bound = (bytes sent + bytes received during the job, counted by the
// station's link) x 10 / baud + the device's simulated key generation time.
// The per-device time is the job's own time as `keyline device provision
// --json` reports it (what a running line spends per device); the whole
// command, start-up included, is printed beside it. Targets: one device
// <= 1.25 x its lower bound; 8 in parallel <= 1.3 x one (both measured as
// whole `keyline line run --once` commands).
//
// Usage: line_bench [BAUD] [KEYGEN_MS] [REPEATS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

const std::map<std::string, std::string> kEnv{{"KEYLINE_LOG", "error"}, {"KEYLINE_OPERATOR", "bench"}};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "line_bench: %s\n", what.c_str());
  std::exit(1);
}

void init_station(const fs::path& state) {
  auto r = testkit::keyline(state, {"ca", "init"}, kEnv);
  if (r.exit_code != 0) die("ca init failed: " + r.err);
  std::string toml = testkit::read_file(state / "keyline.toml");
  toml += "\n[provision]\nmode = \"x509-device-key\"\nregistration_id_template = \"{model}-{serial}\"\n"
          "id_scope = \"0ne00000001\"\n";
  testkit::write_file(state / "keyline.toml", toml);
}

struct Job {
  double job_seconds = 0;   // the job, as the station measured it
  double wall_seconds = 0;  // the whole command
  std::uint64_t bytes = 0;
};

Job provision_one(const fs::path& state, const std::string& port) {
  const auto t0 = Clock::now();
  auto r = testkit::keyline(state, {"--json", "device", "provision", "--port", port}, kEnv);
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  if (r.exit_code != 0) die("device provision failed: " + r.err);
  json doc = json::parse(r.out, nullptr, false);
  if (doc.is_discarded() || doc.value("state", "") != "done") die("device provision did not report done: " + r.out);
  if (doc["link"].value("retries", 1) != 0) die("frames were sent again; the link is not clean: " + r.out);
  return {doc.value("seconds", 0.0), wall,
          doc["link"].value("bytes_sent", std::uint64_t{0}) + doc["link"].value("bytes_received", std::uint64_t{0})};
}

// One `keyline line run --once` over the given devices; its wall time.
double line_run(const fs::path& state, const std::vector<testkit::Devsim>& sims) {
  std::vector<std::string> args{"--json", "line", "run", "--once"};
  for (auto& s : sims) {
    args.push_back("--port");
    args.push_back(s.port());
  }
  const auto t0 = Clock::now();
  auto r = testkit::keyline(state, args, kEnv);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  json doc = json::parse(r.out, nullptr, false);
  if (r.exit_code != 0 || doc.is_discarded() || doc.value("done", 0) != static_cast<int>(sims.size()))
    die("line run did not provision every device: " + r.err + r.out);
  return took;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned baud = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 115200;
  const unsigned keygen_ms = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 100;
  const int repeats = std::max(1, argc > 3 ? std::atoi(argv[3]) : 3);
  testkit::TempDir dir;
  const fs::path state = dir / "state";
  init_station(state);
  int serial = 0;
  auto device = [&](const std::string& tag) {
    ++serial;
    return testkit::Devsim::pty(dir / (tag + std::to_string(serial) + ".json"),
                                {"--baud", std::to_string(baud), "--keygen-delay-ms", std::to_string(keygen_ms),
                                 "--serial-number", "B" + std::to_string(serial), "--model", "bench"});
  };

  // One device at a time, best of `repeats` (a new device each time).
  Job best;
  for (int i = 0; i < repeats; ++i) {
    auto sim = device("one-");
    Job j = provision_one(state, sim.port());
    if (best.job_seconds == 0 || j.job_seconds < best.job_seconds) best = j;
  }
  const double wire = static_cast<double>(best.bytes) * 10.0 / baud;
  const double bound = wire + keygen_ms / 1000.0;
  std::printf("one device, full provisioning at %u baud: %.1f ms for %llu bytes (whole command %.1f ms)\n", baud,
              best.job_seconds * 1000, static_cast<unsigned long long>(best.bytes), best.wall_seconds * 1000);
  std::printf("  lower bound %.1f ms (wire %.1f + keygen %u) -> ratio %.3f (target <= 1.25)\n", bound * 1000,
              wire * 1000, keygen_ms, best.job_seconds / bound);

  // `line run --once` with one device, then with eight on eight ports.
  constexpr int kDevices = 8;
  double best1 = 0, best8 = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    std::vector<testkit::Devsim> one;
    one.push_back(device("line1-"));
    double t1 = line_run(state, one);
    if (best1 == 0 || t1 < best1) best1 = t1;
    std::vector<testkit::Devsim> eight;
    for (int i = 0; i < kDevices; ++i) eight.push_back(device("line8-"));
    double t8 = line_run(state, eight);
    if (best8 == 0 || t8 < best8) best8 = t8;
  }
  std::printf("keyline line run --once: 8 devices on 8 ptys %.1f ms, one device %.1f ms -> ratio %.3f "
              "(target <= 1.3)\n",
              best8 * 1000, best1 * 1000, best8 / best1);
  return 0;
}
