// keyline dps enrollment create --certificate, dps registration delete and
// the continuous dps sync (--interval) against the DPS emulator: a CA in a
// temp state dir, the emulator started per test, the device played by
// keyline-dps-register.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <thread>

#include <openssl/pem.h>

#include "keyline/core/hex.hpp"
#include "keyline/station/dps/client.hpp"
#include "dps_station.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using nlohmann::json;
namespace tk = keyline::testkit;
namespace sd = keyline::station::dps;
namespace fs = std::filesystem;

namespace {

const std::map<std::string, std::string> kEnv{{"KEYLINE_LOG", "off"}, {"KEYLINE_OPERATOR", "dps-tester"}};

std::string describe(const tk::RunResult& r) {
  return "exit code " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out + "--- stderr:\n" + r.err;
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// A station (CA, [dps] pointing at its own emulator) in one temp dir.
class DpsStation {
 public:
  DpsStation() {
    auto init = tk::keyline(state_, {"ca", "init"}, kEnv);
    if (init.exit_code != 0) throw std::runtime_error("ca init: " + describe(init));
    emu_ = std::make_unique<tk::DpsEmulator>(dir_ / "emulator");
    dps_test::point_station_at(state_, dir_.path(), *emu_, emu_->connection_string());
  }

  const fs::path& state() const { return state_; }
  fs::path operator/(const std::string& name) const { return dir_ / name; }
  tk::DpsEmulator& emulator() { return *emu_; }

  tk::RunResult kl(const std::vector<std::string>& args) { return tk::keyline(state_, args, kEnv); }

  // The emulator seen through the service API, as a test's own client.
  sd::DpsClient& client() {
    if (!client_) {
      sd::ClientOptions o;
      o.http.ca_file = emu_->ca_cert();
      auto cs = sd::parse_connection_string(emu_->connection_string());
      if (!cs) throw std::runtime_error(cs.error().message());
      client_ = std::make_unique<sd::DpsClient>(std::move(*cs), clock_, o);
    }
    return *client_;
  }

  // The individual enrollment `id` as the emulator holds it, or null.
  json enrollment(const std::string& id) {
    auto found = client().find(sd::EnrollmentKind::individual, id);
    if (!found) throw std::runtime_error("query " + id + ": " + found.error().message());
    return *found ? (**found).json() : json();
  }

  json outbox_counts() {
    auto r = kl({"--json", "dps", "status"});
    if (r.exit_code != 0) throw std::runtime_error("dps status: " + describe(r));
    return json::parse(r.out)["outbox"];
  }

  // A device key (written as KEY.pem) and its certificate from this CA
  // (leaf, then leaf + intermediate for the device's TLS chain).
  void issue(const std::string& id, const std::vector<std::string>& extra = {}) {
    EvpPkeyPtr key = tk::ec_key("P-256");
    tk::write_file(dir_ / (id + ".csr"), tk::csr_pem(key.get(), id));
    std::vector<std::string> args{"ca", "issue", "--csr", (dir_ / (id + ".csr")).string(), "--out",
                                  (dir_ / (id + ".pem")).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = kl(args);
    if (r.exit_code != 0) throw std::runtime_error("ca issue: " + describe(r));
    tk::write_file(dir_ / (id + ".chain.pem"),
                   tk::read_file(dir_ / (id + ".pem")) + tk::read_file(state_ / "intermediate.pem"));
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    tk::write_file(dir_ / (id + ".key.pem"), std::string(data, static_cast<std::size_t>(n)));
  }

 private:
  tk::TempDir dir_;
  fs::path state_ = dir_ / "state";
  std::unique_ptr<tk::DpsEmulator> emu_;
  SystemClock clock_;
  std::unique_ptr<sd::DpsClient> client_;
};

// SHA-256 of a PEM certificate's DER, upper-case hex (as DPS's thumbprints).
std::string thumbprint(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) throw std::runtime_error("not a PEM certificate");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert.get(), EVP_sha256(), md, &n);
  return to_hex(std::span<const unsigned char>(md, n));
}

// Polls `done` every 100 ms until it holds or `limit` has passed.
bool eventually(const std::function<bool()>& done, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// True once the child has exited (without reaping it: Child::wait does).
bool has_exited(const tk::Child& child) {
  siginfo_t info{};
  info.si_pid = 0;
  if (::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;
  return info.si_pid == child.pid();
}

TEST(DpsCommands, EnrollmentCreateWithACertificateReachesTheEmulator) {
  DpsStation s;
  // The certificate comes from a profile the ledger lookup (--profile device)
  // does not search: only --certificate can enroll it.
  std::string toml = tk::read_file(s.state() / "keyline.toml");
  tk::write_file(s.state() / "keyline.toml", toml + "\n[profiles.line2]\nvalidity_days = 30\n");
  s.issue("meter-0042", {"--profile", "line2"});
  auto v = tk::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (s.state() / "root.pem").string(),
                    "-untrusted", (s.state() / "intermediate.pem").string(), (s / "meter-0042.pem").string()});
  ASSERT_EQ(v.exit_code, 0) << describe(v);

  auto from_ledger = s.kl({"dps", "enrollment", "create", "meter-0042"});
  EXPECT_EQ(from_ledger.exit_code, 3) << describe(from_ledger);
  auto not_a_cert = s.kl({"dps", "enrollment", "create", "meter-0042", "--certificate", (s / "meter-0042.csr").string()});
  EXPECT_EQ(not_a_cert.exit_code, 3) << describe(not_a_cert);
  auto missing = s.kl({"dps", "enrollment", "create", "meter-0042", "--certificate", (s / "absent.pem").string()});
  EXPECT_NE(missing.exit_code, 0) << describe(missing);
  auto both = s.kl({"dps", "enrollment", "create", "meter-0042", "--certificate", (s / "meter-0042.pem").string(),
                    "--tpm-ek", (s / "meter-0042.pem").string()});
  EXPECT_EQ(both.exit_code, 2) << describe(both);
  EXPECT_EQ(s.outbox_counts()["pending"], 0);

  auto created = s.kl({"--json", "dps", "enrollment", "create", "meter-0042", "--certificate",
                       (s / "meter-0042.pem").string(), "--device-id", "meter-42"});
  ASSERT_EQ(created.exit_code, 0) << describe(created);
  json queued = json::parse(created.out)["queued"];
  EXPECT_EQ(queued["kind"], "individual");
  EXPECT_EQ(queued["operation"], "create");
  EXPECT_EQ(queued["registration_id"], "meter-0042");
  EXPECT_TRUE(s.enrollment("meter-0042").is_null());  // queued, not sent yet
  EXPECT_EQ(s.outbox_counts()["pending"], 1);

  auto sync = s.kl({"dps", "sync", "--once"});
  ASSERT_EQ(sync.exit_code, 0) << describe(sync);
  json counts = s.outbox_counts();
  EXPECT_EQ(counts["pending"], 0);
  EXPECT_EQ(counts["synced"], 1);

  json e = s.enrollment("meter-0042");
  ASSERT_FALSE(e.is_null());
  EXPECT_EQ(e["deviceId"], "meter-42");
  ASSERT_EQ(e["attestation"]["type"], "x509") << e.dump();
  json primary = e["attestation"]["x509"]["clientCertificates"]["primary"];
  ASSERT_TRUE(primary.is_object()) << e.dump();
  const std::string pem = tk::read_file(s / "meter-0042.pem");
  EXPECT_EQ(primary["info"]["sha256Thumbprint"], thumbprint(pem)) << e.dump();
  EXPECT_EQ(thumbprint(primary["certificate"].get<std::string>()), thumbprint(pem));

  // The device registers with that certificate, then its registration state
  // is deleted in DPS; the enrollment stays.
  auto reg = tk::run({tk::bin("keyline-dps-register").string(), "--endpoint", s.emulator().endpoint(), "--id-scope",
                      s.emulator().id_scope(), "--registration-id", "meter-0042", "--cert-chain",
                      (s / "meter-0042.chain.pem").string(), "--key", (s / "meter-0042.key.pem").string(),
                      "--ca-cert", s.emulator().ca_cert()});
  ASSERT_EQ(reg.exit_code, 0) << describe(reg);
  EXPECT_EQ(json::parse(reg.out)["status"], "assigned") << reg.out;
  auto shown = s.kl({"dps", "registration", "show", "meter-0042"});
  ASSERT_EQ(shown.exit_code, 0) << describe(shown);
  json state = json::parse(shown.out);
  EXPECT_EQ(state["registrationId"], "meter-0042") << shown.out;
  EXPECT_EQ(state["status"], "assigned") << shown.out;
  ASSERT_TRUE(s.client().registration_state("meter-0042"));

  auto deleted = s.kl({"dps", "registration", "delete", "meter-0042"});
  ASSERT_EQ(deleted.exit_code, 0) << describe(deleted);
  EXPECT_EQ(deleted.out, "deleted the registration state of 'meter-0042'\n");
  auto gone = s.client().registration_state("meter-0042");
  ASSERT_FALSE(gone) << gone->dump();
  EXPECT_TRUE(contains(gone.error().message(), "404")) << gone.error().message();
  auto shown_again = s.kl({"dps", "registration", "show", "meter-0042"});
  EXPECT_EQ(shown_again.exit_code, 4) << describe(shown_again);
  EXPECT_TRUE(contains(shown_again.err, "404")) << shown_again.err;
  auto deleted_again = s.kl({"dps", "registration", "delete", "meter-0042"});
  EXPECT_EQ(deleted_again.exit_code, 4) << describe(deleted_again);
  EXPECT_TRUE(contains(deleted_again.err, "404")) << deleted_again.err;
  EXPECT_FALSE(s.enrollment("meter-0042").is_null());

  // The device can register again afterwards: a fresh registration state.
  auto again = tk::run({tk::bin("keyline-dps-register").string(), "--endpoint", s.emulator().endpoint(),
                        "--id-scope", s.emulator().id_scope(), "--registration-id", "meter-0042", "--cert-chain",
                        (s / "meter-0042.chain.pem").string(), "--key", (s / "meter-0042.key.pem").string(),
                        "--ca-cert", s.emulator().ca_cert()});
  EXPECT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_TRUE(s.client().registration_state("meter-0042"));

  // Queueing and sending went on the audit trail, which still verifies.
  auto audit = tk::run({"/usr/bin/sqlite3", (s.state() / "ledger.db").string(),
                        "SELECT type || ' ' || operator FROM audit_events WHERE type LIKE 'enrollment.%' ORDER BY seq"});
  EXPECT_EQ(audit.out, "enrollment.queued dps-tester\nenrollment.synced dps-tester\n");
  auto verified = s.kl({"audit", "verify", "--ledger"});
  EXPECT_EQ(verified.exit_code, 0) << describe(verified);
}

// `dps sync --interval S` runs until stopped; each pass sends what was queued
// since the last one.
void continuous_sync_then_stop(int stop_signal) {
  DpsStation s;
  tk::write_file(s / "device.key", "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=\n");
  std::map<std::string, std::string> env = kEnv;
  tk::Child sync({tk::bin("keyline").string(), "--state", s.state().string(), "dps", "sync", "--interval", "1"}, env);

  // Queued while the sync runs: it reaches DPS within a few intervals.
  auto first = s.kl({"dps", "enrollment", "create", "cont-dev-1", "--symmetric-key-source",
                     "file:" + (s / "device.key").string()});
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  EXPECT_TRUE(eventually([&] { return !s.enrollment("cont-dev-1").is_null(); }, std::chrono::seconds(30)))
      << "cont-dev-1 never reached the emulator";
  EXPECT_TRUE(eventually([&] { return s.outbox_counts()["synced"] == 1; }, std::chrono::seconds(30)))
      << s.outbox_counts().dump();
  ASSERT_FALSE(has_exited(sync)) << "the continuous sync stopped by itself";

  // A later change (a deletion) is picked up by a later pass.
  auto second = s.kl({"dps", "enrollment", "delete", "cont-dev-1"});
  ASSERT_EQ(second.exit_code, 0) << describe(second);
  auto third = s.kl({"dps", "enrollment", "create", "cont-dev-2", "--symmetric-key-source",
                     "file:" + (s / "device.key").string()});
  ASSERT_EQ(third.exit_code, 0) << describe(third);
  EXPECT_TRUE(eventually(
      [&] { return s.enrollment("cont-dev-1").is_null() && !s.enrollment("cont-dev-2").is_null(); },
      std::chrono::seconds(30)))
      << "the second round of changes never reached the emulator";
  EXPECT_TRUE(eventually(
      [&] {
        json c = s.outbox_counts();
        return c["pending"] == 0 && c["synced"] == 3;
      },
      std::chrono::seconds(30)))
      << s.outbox_counts().dump();
  ASSERT_FALSE(has_exited(sync));

  sync.signal(stop_signal);
  ASSERT_TRUE(eventually([&] { return has_exited(sync); }, std::chrono::seconds(20)))
      << "dps sync did not stop on signal " << stop_signal;
  const int code = sync.wait();
  // A stop between passes: the pass in flight finishes and commits, and
  // the exit code says interrupted.
  EXPECT_EQ(code, 8);

  // The ledger is whole and nothing is left pending.
  json counts = s.outbox_counts();
  EXPECT_EQ(counts["pending"], 0);
  EXPECT_EQ(counts["synced"], 3);
  auto verified = s.kl({"audit", "verify", "--ledger"});
  EXPECT_EQ(verified.exit_code, 0) << describe(verified);
  auto once = s.kl({"--json", "dps", "sync", "--once"});
  ASSERT_EQ(once.exit_code, 0) << describe(once);
  EXPECT_EQ(json::parse(once.out)["synced"], 0);
}

TEST(DpsCommands, ContinuousSyncPicksUpChangesAndStopsOnSigterm) { continuous_sync_then_stop(SIGTERM); }

TEST(DpsCommands, ContinuousSyncPicksUpChangesAndStopsOnSigint) { continuous_sync_then_stop(SIGINT); }

}  // namespace
