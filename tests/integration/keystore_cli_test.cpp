// The keyline binary with hardware key stores: SoftHSM2 (PKCS#11) and swtpm
// (TPM 2.0), each started by the test and stopped afterwards.
#include <sqlite3.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "keyline/testkit/softhsm.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline {
namespace {

namespace fs = std::filesystem;
const std::map<std::string, std::string> kEnv{{"KEYLINE_LOG", "error"}, {"TSS2_LOG", "all+NONE"}};

long long rows(const fs::path& ledger) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(ledger.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM certificates", -1, &s, nullptr);
  long long n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n;
}

std::size_t lines(const fs::path& p) {
  std::ifstream in(p);
  std::string l;
  std::size_t n = 0;
  while (std::getline(in, l)) ++n;
  return n;
}

std::size_t cert_files(const fs::path& out) {
  std::size_t n = 0;
  for (auto& e : fs::directory_iterator(out)) {
    std::string name = e.path().filename().string();
    if (name.ends_with(".pem") && name != "chain.pem") ++n;
  }
  return n;
}

void write_csrs(const fs::path& dir, int n) {
  fs::create_directories(dir);
  for (int i = 0; i < n; ++i) {
    auto key = testkit::ec_key();
    std::string id = "tpm-dev-" + std::to_string(i);
    testkit::write_file(dir / (id + ".csr"), testkit::csr_pem(key.get(), id));
  }
}

void expect_issue_verifies(const fs::path& state, const fs::path& dir) {
  auto key = testkit::ec_key();
  testkit::write_file(dir / "one.csr", testkit::csr_pem(key.get(), "one-device"));
  auto r = testkit::keyline(state, {"ca", "issue", "--csr", (dir / "one.csr").string(), "--out",
                                    (dir / "one.pem").string()},
                            kEnv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto v = testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                         "-untrusted", (state / "intermediate.pem").string(), (dir / "one.pem").string()});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

TEST(KeyStoreCli, Pkcs11CaEndToEndAndAMissingTokenIsNamed) {
  // A PIN that cannot turn up by chance in the output (temp paths, serials).
  testkit::SoftHsm hsm("LINE1", "pin-KeyStore-4Rw9");
  testkit::TempDir dir;
  auto state = dir / "state";
  auto init = testkit::keyline(state, {"ca", "init", "--key-store", hsm.uri()}, kEnv);
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_FALSE(fs::exists(state / "keys"));  // nothing on disk but certificates
  EXPECT_EQ(init.out.find(hsm.pin()), std::string::npos);
  expect_issue_verifies(state, dir.path());
  auto list = testkit::keyline(state, {"hsm", "list"}, kEnv);
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("keyline-intermediate"), std::string::npos);
  EXPECT_NE(list.out.find("keyline-root"), std::string::npos);
  auto test = testkit::keyline(state, {"hsm", "test", "--count", "50"}, kEnv);
  EXPECT_EQ(test.exit_code, 0) << test.err;
  EXPECT_NE(test.out.find("OK"), std::string::npos);

  // The configured token disappears (another label): a key store error naming it.
  std::string toml = testkit::read_file(state / "keyline.toml");
  auto at = toml.find("token=" + hsm.label());
  ASSERT_NE(at, std::string::npos);
  toml.replace(at, 6 + hsm.label().size(), "token=GONE");
  testkit::write_file(state / "keyline.toml", toml);
  auto gone = testkit::keyline(state, {"ca", "issue", "--csr", (dir / "one.csr").string(), "--reissue"}, kEnv);
  EXPECT_EQ(gone.exit_code, 6) << gone.err;
  EXPECT_NE(gone.err.find("GONE"), std::string::npos) << gone.err;
}

// swtpm dies in the middle of a batch: the batch stops with a key store
// error, nothing is half recorded (ledger rows = manifest lines = files);
// with swtpm back, the same command completes the batch exactly once.
TEST(KeyStoreCli, TpmDiesMidBatchThenTheSameCommandCompletes) {
  testkit::Swtpm tpm;
  testkit::TempDir dir;
  auto state = dir / "state";
  auto init = testkit::keyline(state, {"ca", "init", "--key-store", tpm.uri()}, kEnv);
  ASSERT_EQ(init.exit_code, 0) << init.err;
  expect_issue_verifies(state, dir.path());
  const int n = 5000;  // about 3 s through swtpm
  write_csrs(dir / "csrs", n);
  auto out = dir / "out";
  std::vector<std::string> argv{testkit::bin("keyline").string(), "--state", state.string(), "ca", "batch",
                                "--csr-dir", (dir / "csrs").string(), "--out", out.string(), "--jobs", "2"};
  testkit::RunResult first;
  std::thread runner([&] { first = testkit::run(argv, kEnv); });
  // Kill the TPM once the batch has committed something (a group or two):
  // the ledger row, not the manifest line, which waits for a file-system
  // sync that can take seconds while other tests write.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (rows(state / "ledger.db") <= 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  tpm.kill();
  runner.join();
  EXPECT_EQ(first.exit_code, 6) << first.err;
  EXPECT_NE(first.err.find("TPM"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("batch stopped"), std::string::npos) << first.err;
  long long recorded = rows(state / "ledger.db") - 1;  // minus the single issue above
  EXPECT_GT(recorded, 0);
  EXPECT_LT(recorded, n);
  EXPECT_EQ(static_cast<long long>(lines(out / "manifest.jsonl")), recorded);
  EXPECT_EQ(static_cast<long long>(cert_files(out)), recorded);

  tpm.start();
  auto second = testkit::run(argv, kEnv);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(rows(state / "ledger.db") - 1, n);
  EXPECT_EQ(lines(out / "manifest.jsonl"), static_cast<std::size_t>(n));
  EXPECT_EQ(cert_files(out), static_cast<std::size_t>(n));
  // Independent check with openssl of the batch's output, against its own
  // chain.pem: the first and last device of the batch.
  for (const std::string& id : std::vector<std::string>{"tpm-dev-0", "tpm-dev-" + std::to_string(n - 1)}) {
    auto v = testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                           "-untrusted", (out / "chain.pem").string(), (out / (id + ".pem")).string()});
    EXPECT_EQ(v.exit_code, 0) << id << ": " << v.out << v.err;
  }
}

}  // namespace
}  // namespace keyline
