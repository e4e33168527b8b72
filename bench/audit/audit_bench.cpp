// Audit export and verification at scale: N records (default 1,000,000)
// appended to a fresh station's trail, then `keyline audit export` (JSONL),
// `keyline audit verify FILE` and `keyline audit verify --ledger`, each a
// separate process timed with its peak RSS (wait4). Targets (issue "Tamper-
// evident audit trail"): verify >= 200,000 records/s; peak RSS <= 64 MiB
// whatever the size.
//
// Usage: audit_bench BIN_DIR [N]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "keyline/core/clock.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/station/ledger.hpp"

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

namespace {

struct Run {
  int exit_code;
  double seconds;
  long max_rss_kib;
};

Run run(const std::vector<std::string>& argv) {
  auto start = Steady::now();
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    setenv("KEYLINE_LOG", "error", 1);
    setenv("KEYLINE_OPERATOR", "bench", 1);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128,
          std::chrono::duration<double>(Steady::now() - start).count(), ru.ru_maxrss};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: audit_bench BIN_DIR [N]\n");
    return 2;
  }
  fs::path bin = argv[1];
  long n = argc > 2 ? std::stol(argv[2]) : 1000000;
  fs::path dir = fs::temp_directory_path() / ("keyline-audit-bench-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path state = dir / "state";
  std::string keyline = (bin / "keyline").string();
  if (run({keyline, "--state", state.string(), "ca", "init"}).exit_code != 0) {
    std::fprintf(stderr, "ca init failed\n");
    return 1;
  }

  // Fill the trail: realistic "certificate.issued" bodies, one transaction.
  auto fill_start = Steady::now();
  {
    auto ledger = keyline::station::Ledger::open(state / "ledger.db");
    if (!ledger) return 1;
    keyline::SystemClock clock;
    keyline::station::audit::Trail trail(*ledger, {"station-1", "bench"}, clock);
    auto tx = ledger->begin();
    for (long i = 0; i < n; ++i) {
      char serial[40];
      std::snprintf(serial, sizeof serial, "4%031lX", static_cast<unsigned long>(i) * 2654435761ul);
      auto r = trail.append("certificate.issued",
                            {{"serial", serial},
                             {"registration_id", "sn-" + std::to_string(i)},
                             {"profile", "device"},
                             {"cert_sha256", std::string(64, 'A')},
                             {"pubkey_sha256", std::string(64, 'B')},
                             {"not_after", "2027-11-26T00:00:00Z"}});
      if (!r) {
        std::fprintf(stderr, "append: %s\n", r.error().message().c_str());
        return 1;
      }
    }
    if (!tx->commit()) return 1;
  }
  double fill = std::chrono::duration<double>(Steady::now() - fill_start).count();
  std::printf("Audit trail: %ld records appended in %.1f s (%.0f records/s, one transaction)\n", n, fill, n / fill);

  fs::path out = dir / "trail.jsonl";
  Run ex = run({keyline, "--state", state.string(), "audit", "export", "--out", out.string()});
  Run vf = run({keyline, "--state", state.string(), "audit", "verify", out.string()});
  Run vl = run({keyline, "--state", state.string(), "audit", "verify", "--ledger"});
  if (ex.exit_code || vf.exit_code || vl.exit_code) {
    std::fprintf(stderr, "export/verify failed: %d %d %d\n", ex.exit_code, vf.exit_code, vl.exit_code);
    return 1;
  }
  double records = static_cast<double>(n + 4);  // plus the records ca init wrote
  auto line = [&](const char* what, const Run& r, bool rate_target) {
    double rate = records / r.seconds;
    double rss = r.max_rss_kib / 1024.0;
    std::printf("  %-26s %8.2f s  %9.0f records/s = %5.2f x 200,000 target  peak RSS %6.1f MiB = %4.2f x 64 MiB limit\n",
                what, r.seconds, rate, rate / 200000.0, rss, rss / 64.0);
    return (!rate_target || rate >= 200000.0) && rss <= 64.0;
  };
  std::printf("Export and verify %.0f records (file %.0f MiB):\n", records,
              static_cast<double>(fs::file_size(out)) / (1 << 20));
  bool ok_export = line("audit export (jsonl)", ex, false);
  bool ok_file = line("audit verify FILE", vf, true);
  bool ok_ledger = line("audit verify --ledger", vl, true);
  std::printf("  targets: verify >= 200,000 records/s; peak RSS <= 64 MiB (export: RSS only): export %s, verify FILE %s, "
              "verify --ledger %s\n",
              ok_export ? "met" : "NOT MET", ok_file ? "met" : "NOT MET", ok_ledger ? "met" : "NOT MET");
  fs::remove_all(dir);
  return 0;
}
