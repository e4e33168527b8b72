// keyline ca batch: output, rejections, generated keys, and exactly-once
// completion after SIGKILL / SIGINT at random points.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/cms.h>
#include <openssl/pem.h>

#include "keyline/testkit/testkit.hpp"

namespace keyline {
namespace {

using nlohmann::json;
using testkit::TempDir;
namespace fs = std::filesystem;

const std::map<std::string, std::string> kQuiet{{"KEYLINE_LOG", "error"}};

void init_ca(const fs::path& state) {
  auto r = testkit::keyline(state, {"ca", "init"}, kQuiet);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void write_csrs(const fs::path& dir, int n, const std::string& prefix = "dev-") {
  fs::create_directories(dir);
  for (int i = 0; i < n; ++i) {
    auto key = testkit::ec_key();
    std::string id = prefix + std::to_string(i);
    testkit::write_file(dir / (id + ".csr"), testkit::csr_pem(key.get(), id));
  }
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

// Whole lines in a file (0 when it does not exist yet).
std::size_t manifest_lines(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::size_t n = 0;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) n += static_cast<std::size_t>(std::count(buf, buf + in.gcount(), '\n'));
  return n;
}

long long sql_count(const fs::path& ledger, const std::string& where) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(ledger.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  std::string sql = "SELECT COUNT(*) FROM certificates WHERE " + where;
  sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr);
  long long n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n;
}

X509Ptr read_cert(const fs::path& p) {
  auto x = x509_from_pem(testkit::read_file(p), p.string());
  return x ? std::move(*x) : X509Ptr();
}

std::string serial_of(const X509* x) {
  BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string s = hex;
  OPENSSL_free(hex);
  return s;
}

// Exactly once: every expected ID has one certificate file, one manifest
// line and one active ledger row, all naming the same serial; no pending files.
void expect_exactly_once(const fs::path& state, const fs::path& out, const std::set<std::string>& ids) {
  auto manifest = read_jsonl(out / "manifest.jsonl");
  std::map<std::string, std::string> serial_by_id;
  for (auto& m : manifest) {
    std::string id = m["registration_id"];
    EXPECT_TRUE(serial_by_id.emplace(id, m["serial"]).second) << "duplicate manifest line for " << id;
  }
  EXPECT_EQ(serial_by_id.size(), ids.size());
  std::size_t files = 0;
  for (auto& e : fs::directory_iterator(out)) {
    std::string name = e.path().filename().string();
    EXPECT_FALSE(name.ends_with(".pending")) << name;
    if (name.ends_with(".pem") && name != "chain.pem" && !name.ends_with(".key.pem")) ++files;
  }
  EXPECT_EQ(files, ids.size());
  for (auto& id : ids) {
    auto it = serial_by_id.find(id);
    ASSERT_NE(it, serial_by_id.end()) << id;
    X509Ptr cert = read_cert(out / (id + ".pem"));
    ASSERT_TRUE(cert) << id;
    EXPECT_EQ(serial_of(cert.get()), it->second) << id;
    EXPECT_EQ(sql_count(state / "ledger.db", "registration_id='" + id + "' AND status='active' AND serial='" +
                                                 it->second + "'"),
              1)
        << id;
  }
  EXPECT_EQ(sql_count(state / "ledger.db", "status='active'"), static_cast<long long>(ids.size()));
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), static_cast<long long>(ids.size()));
}

TEST(Batch, MixedCsrFolderIssuesGoodOnesAndRejectsBadOnesWithReasons) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto csrs = dir / "csrs";
  write_csrs(csrs, 30);
  // Other key types and encodings that must also be accepted.
  auto p384 = testkit::ec_key("P-384");
  testkit::write_file(csrs / "p384.csr", testkit::csr_pem(p384.get(), "p384-dev"));
  auto rsa = testkit::rsa_key(2048);
  testkit::write_file(csrs / "rsa.csr", testkit::csr_pem(rsa.get(), "rsa-dev"));
  auto k = testkit::ec_key();
  Bytes der = testkit::csr_der(k.get(), "der-dev");
  testkit::write_file(csrs / "der.der", std::string(der.begin(), der.end()));
  // Bad ones.
  testkit::write_file(csrs / "garbage.csr", "not a csr at all\n");
  Bytes broken = testkit::csr_der(k.get(), "broken-dev");
  broken[broken.size() - 4] ^= 0x10;
  testkit::write_file(csrs / "broken.der", std::string(broken.begin(), broken.end()));
  testkit::write_file(csrs / "dup.csr", testkit::csr_pem(testkit::ec_key().get(), "dev-3"));
  testkit::write_file(csrs / "badcn.csr", testkit::csr_pem(testkit::ec_key().get(), "bad/cn"));
  testkit::write_file(csrs / "weak.csr", testkit::csr_pem(testkit::rsa_key(1024).get(), "weak"));

  auto r = testkit::keyline(state, {"--json", "ca", "batch", "--csr-dir", csrs.string(), "--out", (dir / "out").string(),
                                    "--jobs", "2"},
                            kQuiet);
  EXPECT_EQ(r.exit_code, 7) << r.err;  // partially done
  json summary = json::parse(r.out);
  EXPECT_EQ(summary["issued"], 33);
  EXPECT_EQ(summary["rejected"], 5);

  std::map<std::string, std::string> reasons;
  for (auto& j : read_jsonl(dir / "out" / "rejected.jsonl")) reasons[j["input"]] = j["reason"];
  ASSERT_EQ(reasons.size(), 5u);
  EXPECT_NE(reasons["garbage.csr"].find("neither a PEM nor a DER"), std::string::npos);
  EXPECT_NE(reasons["broken.der"].find("signature does not verify"), std::string::npos);
  EXPECT_NE(reasons["badcn.csr"].find("position 4"), std::string::npos);
  EXPECT_NE(reasons["weak.csr"].find("1024 bits"), std::string::npos);
  EXPECT_NE(reasons.count("dup.csr") + reasons.count("dev-3.csr"), 0u);  // one of the two dev-3 CSRs

  std::set<std::string> ids;
  for (int i = 0; i < 30; ++i) ids.insert("dev-" + std::to_string(i));
  ids.insert({"p384-dev", "rsa-dev", "der-dev"});
  expect_exactly_once(state, dir / "out", ids);

  // Independent check of a sample with openssl, against the batch's own chain.pem.
  for (std::string id : {"dev-0", "p384-dev", "rsa-dev", "der-dev"}) {
    auto v = testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                           "-untrusted", (dir / "out" / "chain.pem").string(), (dir / "out" / (id + ".pem")).string()});
    EXPECT_EQ(v.exit_code, 0) << id << ": " << v.out << v.err;
  }

  // A re-run finds everything done and issues nothing new.
  auto again = testkit::keyline(state, {"--json", "ca", "batch", "--csr-dir", csrs.string(), "--out",
                                        (dir / "out").string()},
                                kQuiet);
  EXPECT_EQ(again.exit_code, 7);
  json s2 = json::parse(again.out);
  EXPECT_EQ(s2["issued"], 0);
  EXPECT_EQ(s2["already_done"], 33);
  expect_exactly_once(state, dir / "out", ids);
}

TEST(Batch, GeneratedKeysAreEncryptedToTheRecipientAndMatchTheirCertificates) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  // The programming system's recipient certificate (self-signed for the test).
  auto rk = testkit::ec_key();
  X509Ptr rc(X509_new());
  X509_set_version(rc.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(rc.get()), 7);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(rc.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Programmer"), -1, -1, 0);
  X509_set_issuer_name(rc.get(), X509_get_subject_name(rc.get()));
  X509_gmtime_adj(X509_getm_notBefore(rc.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(rc.get()), 86400);
  X509_set_pubkey(rc.get(), rk.get());
  X509_sign(rc.get(), rk.get(), EVP_sha256());
  testkit::write_file(dir / "recipient.pem", to_pem(rc.get()));
  {
    BioPtr b(BIO_new_file((dir / "recipient.key").c_str(), "w"));
    PEM_write_bio_PrivateKey(b.get(), rk.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }

  auto out = dir / "out";
  auto r = testkit::keyline(state, {"ca", "batch", "--generate", "--count", "12", "--id-template", "sn-{seq:04}",
                                    "--start", "100", "--out", out.string(), "--encrypt-keys-to",
                                    (dir / "recipient.pem").string()},
                            kQuiet);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> ids;
  for (int i = 100; i < 112; ++i) ids.insert("sn-0" + std::to_string(i));
  expect_exactly_once(state, out, ids);

  for (auto& id : ids) {
    std::string p7m = testkit::read_file(out / (id + ".key.p7m"));
    EXPECT_EQ(p7m.find("PRIVATE KEY"), std::string::npos);  // nothing in the clear
    const unsigned char* p = reinterpret_cast<const unsigned char*>(p7m.data());
    std::unique_ptr<CMS_ContentInfo, Free<CMS_ContentInfo_free>> cms(
        d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(p7m.size())));
    ASSERT_TRUE(cms) << id;
    BioPtr plain(BIO_new(BIO_s_mem()));
    ASSERT_EQ(CMS_decrypt(cms.get(), rk.get(), rc.get(), nullptr, plain.get(), 0), 1) << id;
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(plain.get(), nullptr, nullptr, nullptr));
    ASSERT_TRUE(key) << id;
    X509Ptr cert = read_cert(out / (id + ".pem"));
    EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1) << id;
  }
  // And the same with the openssl command line, as a programming system would.
  auto dec = testkit::run({"/usr/bin/openssl", "cms", "-decrypt", "-inform", "DER", "-in",
                           (out / "sn-0100.key.p7m").string(), "-recip", (dir / "recipient.pem").string(), "-inkey",
                           (dir / "recipient.key").string()});
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_NE(dec.out.find(std::string("BEGIN ") + "PRIVATE KEY"), std::string::npos);  // PKCS#8 PEM

  // Plain keys: owner-only files that match their certificates.
  auto plain_out = dir / "plain";
  testkit::write_file(dir / "ids.txt", "# line 1 devices\nplain-a\n\nplain-b\n");
  auto r2 = testkit::keyline(state, {"ca", "batch", "--generate", "--ids", (dir / "ids.txt").string(), "--out",
                                     plain_out.string(), "--plain-keys"},
                             kQuiet);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  for (std::string id : {"plain-a", "plain-b"}) {
    struct stat st{};
    ASSERT_EQ(::stat((plain_out / (id + ".key.pem")).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0077, 0u);
    BioPtr b(BIO_new_file((plain_out / (id + ".key.pem")).c_str(), "r"));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
    X509Ptr cert = read_cert(plain_out / (id + ".pem"));
    EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  }
}

TEST(Batch, UsageErrorsAreClearAndWriteNothing) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto out = dir / "out";
  auto no_key_mode = testkit::keyline(state, {"ca", "batch", "--generate", "--count", "3", "--id-template", "x-{seq}",
                                              "--out", out.string()},
                                      kQuiet);
  EXPECT_EQ(no_key_mode.exit_code, 2);
  EXPECT_NE(no_key_mode.err.find("--encrypt-keys-to"), std::string::npos);
  auto bad_template = testkit::keyline(state, {"ca", "batch", "--generate", "--count", "3", "--id-template", "x",
                                               "--plain-keys", "--out", out.string()},
                                       kQuiet);
  EXPECT_EQ(bad_template.exit_code, 2);
  EXPECT_NE(bad_template.err.find("{seq"), std::string::npos);
  auto neither = testkit::keyline(state, {"ca", "batch", "--out", out.string()}, kQuiet);
  EXPECT_EQ(neither.exit_code, 2);
  EXPECT_FALSE(fs::exists(out / "manifest.jsonl"));
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), 0);

  // An out dir belongs to one batch: other options are refused, not mixed in.
  ASSERT_EQ(testkit::keyline(state, {"ca", "batch", "--generate", "--count", "2", "--id-template", "a-{seq}",
                                     "--plain-keys", "--out", out.string()},
                             kQuiet)
                .exit_code,
            0);
  write_csrs(dir / "csrs", 2, "other-");
  auto mixed = testkit::keyline(state, {"ca", "batch", "--csr-dir", (dir / "csrs").string(), "--out", out.string()},
                                kQuiet);
  EXPECT_EQ(mixed.exit_code, 2);
  EXPECT_NE(mixed.err.find("another --out"), std::string::npos);

  // A batch.json whose batch ID is not one Keyline makes is refused (the ID
  // goes into audit records and is never trusted as text).
  auto rows_before = sql_count(state / "ledger.db", "1=1");
  for (std::string bad : {R"({"batch_id":"b-1\",\"serial\":\"FAKE","profile":"device","mode":"generate"})",
                          R"({"batch_id":7})", R"([1,2])"}) {
    testkit::write_file(out / "batch.json", bad);
    auto damaged = testkit::keyline(state, {"ca", "batch", "--generate", "--count", "2", "--id-template", "a-{seq}",
                                            "--plain-keys", "--out", out.string()},
                                    kQuiet);
    EXPECT_NE(damaged.exit_code, 0) << bad;
    EXPECT_NE(damaged.err.find("batch.json is damaged"), std::string::npos) << damaged.err;
  }
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), rows_before);
}

// Names and IDs that are not UTF-8 (a Latin-1 file name, an ID file in
// another encoding) are rejected with a readable reason; the batch goes on.
TEST(Batch, InputsThatAreNotUtf8AreRejectedAndTheBatchGoesOn) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  testkit::write_file(dir / "ids.txt", "good-1\ndev-\xe9t\xe9\ngood-2\n");
  auto r = testkit::keyline(state, {"--json", "ca", "batch", "--generate", "--ids", (dir / "ids.txt").string(),
                                    "--out", (dir / "gen").string(), "--plain-keys"},
                            kQuiet);
  EXPECT_EQ(r.exit_code, 7) << r.err;
  auto rejected = read_jsonl(dir / "gen" / "rejected.jsonl");
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0]["input"], "dev-\xef\xbf\xbdt\xef\xbf\xbd");  // U+FFFD for each stray byte
  expect_exactly_once(state, dir / "gen", {"good-1", "good-2"});

  auto csrs = dir / "csrs";
  write_csrs(csrs, 2);
  testkit::write_file(csrs / "caf\xe9.csr", "not a csr\n");
  auto c = testkit::keyline(state, {"ca", "batch", "--csr-dir", csrs.string(), "--out", (dir / "csr-out").string()},
                            kQuiet);
  EXPECT_EQ(c.exit_code, 7) << c.err;
  auto rej = read_jsonl(dir / "csr-out" / "rejected.jsonl");
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["input"], "caf\xef\xbf\xbd.csr");
  EXPECT_NE(rej[0]["reason"].get<std::string>().find("neither a PEM nor a DER"), std::string::npos);
}

// What is wrong with the station (a profile a batch cannot serve, an out
// dir from another ledger, a changed key algorithm) stops the batch before
// anything is signed, instead of rejecting every input.
TEST(Batch, StationFaultsStopTheBatchBeforeItStarts) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto serial_profile = testkit::keyline(state, {"ca", "batch", "--generate", "--count", "3", "--id-template",
                                                 "i-{seq}", "--plain-keys", "--profile", "idevid", "--out",
                                                 (dir / "idevid").string()},
                                         kQuiet);
  EXPECT_EQ(serial_profile.exit_code, 2) << serial_profile.err;
  EXPECT_NE(serial_profile.err.find("device serial number"), std::string::npos) << serial_profile.err;
  EXPECT_FALSE(fs::exists(dir / "idevid" / "manifest.jsonl"));
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), 0);

  // The out dir's batch is pinned to its key algorithm.
  auto out = dir / "out";
  std::vector<std::string> gen{"ca", "batch", "--generate", "--count", "2", "--id-template", "k-{seq}", "--plain-keys",
                               "--out", out.string()};
  ASSERT_EQ(testkit::keyline(state, gen, kQuiet).exit_code, 0);
  auto p384 = gen;
  p384.insert(p384.end(), {"--key-algorithm", "ec-p384"});
  auto changed = testkit::keyline(state, p384, kQuiet);
  EXPECT_EQ(changed.exit_code, 2) << changed.err;
  EXPECT_NE(changed.err.find("(ec-p256)"), std::string::npos) << changed.err;

  // A batch.json member of the wrong type is a refusal, not a crash.
  std::string pinned = testkit::read_file(out / "batch.json");
  json j = json::parse(pinned);
  j["profile"] = 7;
  testkit::write_file(out / "batch.json", j.dump());
  auto typed = testkit::keyline(state, gen, kQuiet);
  EXPECT_EQ(typed.exit_code, 2) << typed.err;
  EXPECT_NE(typed.err.find("resume it with the same options"), std::string::npos) << typed.err;
  testkit::write_file(out / "batch.json", pinned);

  // The same out dir with another station's ledger: its manifest lists
  // certificates that ledger never recorded.
  auto other = dir / "other-state";
  init_ca(other);
  auto foreign = testkit::keyline(other, gen, kQuiet);
  EXPECT_EQ(foreign.exit_code, 5) << foreign.err;
  EXPECT_NE(foreign.err.find("made with another ledger"), std::string::npos) << foreign.err;
  EXPECT_EQ(sql_count(other / "ledger.db", "1=1"), 0);
  EXPECT_EQ(read_jsonl(out / "manifest.jsonl").size(), 2u);
}

// A crash after a group's commit but before its keys got their final names,
// where REGID.key.pem is still an earlier (revoked) certificate's key: the
// re-run gives the committed certificate its own key.
TEST(Batch, RecoveryGivesACommittedCertificateItsOwnKey) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto out = dir / "out";
  testkit::write_file(dir / "ids.txt", "dev-k\n");
  std::vector<std::string> gen{"ca", "batch", "--generate", "--ids", (dir / "ids.txt").string(), "--plain-keys",
                               "--out", out.string()};
  ASSERT_EQ(testkit::keyline(state, gen, kQuiet).exit_code, 0);
  std::string first_key = testkit::read_file(out / "dev-k.key.pem");
  std::string first_serial = read_jsonl(out / "manifest.jsonl").at(0)["serial"];
  ASSERT_EQ(testkit::keyline(state, {"ca", "revoke", "--serial", first_serial}, kQuiet).exit_code, 0);
  ASSERT_EQ(testkit::keyline(state, gen, kQuiet).exit_code, 0);  // dev-k again, a new key
  auto manifest = read_jsonl(out / "manifest.jsonl");
  ASSERT_EQ(manifest.size(), 2u);
  std::string second_serial = manifest[1]["serial"];
  std::string second_key = testkit::read_file(out / "dev-k.key.pem");
  ASSERT_NE(second_key, first_key);

  // Back to the moment after the commit: the new key under its pending
  // name, the old key file in place, the manifest one line short.
  fs::rename(out / "dev-k.key.pem", out / (".dev-k." + second_serial + ".key.pem.pending"));
  testkit::write_file(out / "dev-k.key.pem", first_key);
  testkit::write_file(out / "manifest.jsonl", manifest[0].dump() + "\n");

  auto r = testkit::keyline(state, gen, kQuiet);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testkit::read_file(out / "dev-k.key.pem"), second_key);
  auto repaired = read_jsonl(out / "manifest.jsonl");
  ASSERT_EQ(repaired.size(), 2u);
  EXPECT_EQ(repaired[1]["serial"], second_serial);
  EXPECT_EQ(repaired[1]["key_file_sha256"], sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(second_key.data()),
                                                                second_key.size())));
  for (auto& e : fs::directory_iterator(out)) EXPECT_FALSE(e.path().string().ends_with(".pending")) << e.path();
  BioPtr b(BIO_new_mem_buf(second_key.data(), static_cast<int>(second_key.size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  X509Ptr cert = read_cert(out / "dev-k.pem");
  ASSERT_TRUE(key && cert);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  EXPECT_EQ(serial_of(cert.get()), second_serial);
}

// SIGKILL at random points, then re-runs, until the batch completes: every
// certificate exactly once across ledger, manifest and files.
TEST(BatchSlow, SurvivesSigkillAtRandomPointsExactlyOnce) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto csrs = dir / "csrs";
  const int n = 5000;
  write_csrs(csrs, n);
  std::set<std::string> ids;
  for (int i = 0; i < n; ++i) ids.insert("dev-" + std::to_string(i));
  auto out = dir / "out";
  std::vector<std::string> argv{testkit::bin("keyline").string(), "--state", state.string(), "ca", "batch",
                                "--csr-dir", csrs.string(), "--out", out.string(), "--jobs", "2"};
  // Each kill lands inside the batch: once the out dir is open and a random
  // share of what is left is in the manifest (none: before the first
  // commit), plus a random few milliseconds into the next group.
  int killed_midway = 0;
  for (unsigned seed : {11u, 23u, 37u, 51u}) {
    std::mt19937 rng(seed);
    std::size_t before = manifest_lines(out / "manifest.jsonl");
    std::size_t target = before + std::uniform_int_distribution<std::size_t>(0, (n - before) / 3)(rng);
    int extra_ms = std::uniform_int_distribution<int>(0, 40)(rng);
    testkit::Child child(argv, kQuiet);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline &&
           (!fs::exists(out / "batch.json") || manifest_lines(out / "manifest.jsonl") < target))
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::milliseconds(extra_ms));
    child.signal(SIGKILL);
    int code = child.wait();
    EXPECT_TRUE(code == 128 + SIGKILL || code == 0) << "seed " << seed << " exit " << code;
    if (code == 128 + SIGKILL && manifest_lines(out / "manifest.jsonl") < static_cast<std::size_t>(n)) ++killed_midway;
  }
  // Otherwise this would only test a plain run. (A late kill may find the
  // batch done: the last group can hold all that was left.)
  EXPECT_GE(killed_midway, 2);
  auto final_run = testkit::run(argv, kQuiet);
  ASSERT_EQ(final_run.exit_code, 0) << final_run.err;
  expect_exactly_once(state, out, ids);
}

TEST(BatchSlow, CtrlCFinishesInFlightItemsAndTheSameCommandCompletes) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto out = dir / "out";
  std::vector<std::string> argv{testkit::bin("keyline").string(), "--state", state.string(), "ca", "batch",
                                "--generate", "--count", "3000", "--id-template", "sn-{seq:05}", "--plain-keys",
                                "--out", out.string(), "--jobs", "2"};
  testkit::Child child(argv, kQuiet);
  // Interrupt once the batch has committed its first group (start-up is
  // slow under sanitizers): 3,000 keys take several groups.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && manifest_lines(out / "manifest.jsonl") == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  child.signal(SIGINT);
  int code = child.wait();
  EXPECT_TRUE(code == 8 || code == 0) << code;  // 0 only if it finished before the signal
  // What is there is consistent already (no reconcile needed for an orderly stop).
  auto manifest = read_jsonl(out / "manifest.jsonl");
  EXPECT_GT(manifest.size(), 0u);
  if (code == 8) {
    EXPECT_LT(manifest.size(), 3000u);
  }
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), static_cast<long long>(manifest.size()));
  for (auto& e : fs::directory_iterator(out)) EXPECT_FALSE(e.path().string().ends_with(".pending")) << e.path();
  auto done = testkit::run(argv, kQuiet);
  ASSERT_EQ(done.exit_code, 0) << done.err;
  std::set<std::string> ids;
  char buf[16];
  for (int i = 1; i <= 3000; ++i) {
    std::snprintf(buf, sizeof buf, "sn-%05d", i);
    ids.insert(buf);
  }
  expect_exactly_once(state, out, ids);
}

// Ctrl-C is honoured between items, not only between chunks of 64: with
// RSA keys (a good part of a second each) a whole chunk took half a minute.
TEST(BatchSlow, CtrlCDuringSlowKeysStopsAfterTheItemInHand) {
  TempDir dir;
  auto state = dir / "state";
  init_ca(state);
  auto out = dir / "out";
  constexpr int kCount = 24;  // less than one chunk (64); ~0.1 s each
  std::vector<std::string> argv{testkit::bin("keyline").string(), "--state", state.string(), "ca", "batch",
                                "--generate", "--count", std::to_string(kCount), "--id-template", "rsa-{seq:02}",
                                "--key-algorithm", "rsa-2048", "--plain-keys", "--out", out.string(),
                                "--jobs", "1"};
  testkit::Child child(argv, kQuiet);
  // batch.json is written shortly before the worker takes its chunk; a
  // moment later it is busy with the first keys (nothing is observable
  // until the chunk is done, which is the point).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(out / "batch.json"))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  child.signal(SIGINT);
  int code = child.wait();
  // Before, the chunk ran to its end: all 24 issued, exit 0.
  EXPECT_EQ(code, 8);
  auto manifest = read_jsonl(out / "manifest.jsonl");
  EXPECT_LT(manifest.size(), static_cast<std::size_t>(kCount));
  EXPECT_EQ(sql_count(state / "ledger.db", "1=1"), static_cast<long long>(manifest.size()));
  auto done = testkit::run(argv, kQuiet);
  ASSERT_EQ(done.exit_code, 0) << done.err;
  std::set<std::string> ids;
  for (int i = 1; i <= kCount; ++i) ids.insert((i < 10 ? "rsa-0" : "rsa-") + std::to_string(i));
  expect_exactly_once(state, out, ids);
}

}  // namespace
}  // namespace keyline
