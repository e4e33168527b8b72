// The audit trail through the keyline binary: the records each state-changing
// command leaves, operator identity, fail-closed behaviour, secrets, and a
// tamper table over exports and the ledger itself.
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/testkit/softhsm.hpp"
#include "audit_test_db.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline {
namespace {

namespace fs = std::filesystem;
namespace tk = testkit;
using nlohmann::json;
const std::map<std::string, std::string> kQuiet{{"KEYLINE_LOG", "error"}};

// --------------------------------------------------------------- helpers

using audit_test::Db;

std::vector<std::string> types(const fs::path& state, long long after = 0) {
  Db db(state / "ledger.db");
  std::vector<std::string> out;
  for (auto& r : db.rows("SELECT type FROM audit_events WHERE seq > " + std::to_string(after) + " ORDER BY seq"))
    out.push_back(r[0]);
  return out;
}

long long head(const fs::path& state) {
  Db db(state / "ledger.db");
  return std::stoll(db.rows("SELECT COALESCE(MAX(seq),0) FROM audit_events")[0][0]);
}

tk::RunResult kl(const fs::path& state, const std::vector<std::string>& args,
                 std::map<std::string, std::string> env = kQuiet) {
  env.try_emplace("KEYLINE_LOG", "error");
  return tk::keyline(state, args, env);
}

fs::path make_ca(const tk::TempDir& tmp) {
  fs::path state = tmp / "state";
  auto r = kl(state, {"ca", "init", "--station-id", "audit-station"});
  if (r.exit_code != 0) throw std::runtime_error("ca init failed: " + r.err);
  return state;
}

fs::path csr(const fs::path& path, const std::string& cn) {
  auto key = tk::ec_key();
  tk::write_file(path, tk::csr_pem(key.get(), cn));
  return path;
}

std::string issue(const fs::path& state, const fs::path& dir, const std::string& cn) {
  auto r = kl(state, {"--json", "ca", "issue", "--csr", csr(dir / (cn + ".csr"), cn).string(), "--out",
                      (dir / (cn + ".pem")).string()});
  if (r.exit_code != 0) throw std::runtime_error("issue failed: " + r.err);
  return json::parse(r.out)["serial"].get<std::string>();
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::string text;
  for (auto& l : lines) text += l + "\n";
  tk::write_file(p, text);
}

using Types = std::vector<std::string>;

// --------------------------------------------------------------- records per command

TEST(AuditRecords, EachStateChangingCommandLeavesExactlyItsRecords) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  EXPECT_EQ(types(state),
            (Types{"keystore.opened", "ca.created", "audit.key_created", "config.written", "audit.checkpoint"}));
  {
    Db db(state / "ledger.db");
    EXPECT_EQ(db.rows("SELECT seq FROM audit_checkpoints")[0][0], "5")
        << "ca init signs the new trail, its checkpoint record included";
    for (auto& r : db.rows("SELECT operator, station FROM audit_events"))
      EXPECT_EQ(r, (std::vector<std::string>{"test-operator", "audit-station"}));
  }

  long long h = head(state);
  std::string serial = issue(state, tmp.path(), "dev-1");
  EXPECT_EQ(types(state, h), (Types{"keystore.opened", "certificate.issued"}));
  {
    Db db(state / "ledger.db");
    auto body = json::parse(db.rows("SELECT body FROM audit_events WHERE type='certificate.issued'")[0][0]);
    EXPECT_EQ(body["serial"], serial);
    EXPECT_EQ(body["registration_id"], "dev-1");
    EXPECT_EQ(body["profile"], "device");
    EXPECT_EQ(db.rows("SELECT operator FROM certificates WHERE serial='" + serial + "'")[0][0], "test-operator");
  }

  h = head(state);
  auto bad = kl(state, {"ca", "issue", "--csr", csr(tmp / "bad.csr", "bad id!").string()});
  EXPECT_EQ(bad.exit_code, 3);
  EXPECT_EQ(types(state, h), (Types{"request.rejected"}));

  h = head(state);
  ASSERT_EQ(kl(state, {"--operator", "alice", "ca", "revoke", "--serial", serial}).exit_code, 0);
  EXPECT_EQ(types(state, h), (Types{"certificate.revoked"}));
  {
    Db db(state / "ledger.db");
    EXPECT_EQ(db.rows("SELECT operator FROM audit_events WHERE type='certificate.revoked'")[0][0], "alice");
  }

  h = head(state);
  ASSERT_EQ(kl(state, {"ca", "crl", "--out", (tmp / "crl.pem").string()}).exit_code, 0);
  EXPECT_EQ(types(state, h), (Types{"keystore.opened", "crl.issued"}));

  h = head(state);
  ASSERT_EQ(kl(state, {"ca", "verification-cert", "--code", "ABC", "--out", (tmp / "v.pem").string()}).exit_code, 0);
  EXPECT_EQ(types(state, h), (Types{"keystore.opened", "verification_certificate.issued"}));

  h = head(state);
  fs::create_directories(tmp / "csrs");
  csr(tmp / "csrs" / "b1.csr", "b1");
  csr(tmp / "csrs" / "b2.csr", "b2");
  tk::write_file(tmp / "csrs" / "junk.csr", "not a csr");
  auto batch = kl(state, {"ca", "batch", "--csr-dir", (tmp / "csrs").string(), "--out", (tmp / "out").string()});
  EXPECT_EQ(batch.exit_code, 7) << batch.err;
  Types t = types(state, h);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t.front(), "keystore.opened");
  EXPECT_EQ(t[1], "batch.started");
  EXPECT_EQ(std::count(t.begin(), t.end(), "certificate.issued"), 2);
  EXPECT_EQ(std::count(t.begin(), t.end(), "request.rejected"), 1);
  EXPECT_EQ(t.back(), "batch.finished");

  h = head(state);
  ASSERT_EQ(kl(state, {"hsm", "secret", "generate", "--label", "group-a"}).exit_code, 0);
  EXPECT_EQ(types(state, h), (Types{"secret.created"}));

  h = head(state);
  ASSERT_EQ(kl(state, {"audit", "export", "--out", (tmp / "a.jsonl").string()}).exit_code, 0);
  EXPECT_EQ(types(state, h), (Types{"audit.exported"}));

  // Read-only commands leave nothing.
  h = head(state);
  for (auto args : {std::vector<std::string>{"ca", "show"}, {"ledger", "certificates"}, {"audit", "verify", "--ledger"},
                    {"audit", "verify", (tmp / "a.jsonl").string()}, {"report", "devices"}})
    EXPECT_EQ(kl(state, args).exit_code, 0) << args[0] << " " << args[1];
  EXPECT_EQ(head(state), h);
}

TEST(AuditRecords, OperatorIsRequiredUnlessConfiguredOtherwise) {
  tk::TempDir tmp;
  auto no_op = kl(tmp / "s", {"ca", "init"}, {{"KEYLINE_OPERATOR", ""}});
  EXPECT_EQ(no_op.exit_code, 2);
  EXPECT_NE(no_op.err.find("--operator NAME"), std::string::npos) << no_op.err;
  EXPECT_FALSE(fs::exists(tmp / "s"));

  fs::path state = make_ca(tmp);
  long long h = head(state);
  auto r = kl(state, {"ca", "issue", "--csr", csr(tmp / "x.csr", "x").string()}, {{"KEYLINE_OPERATOR", ""}});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(head(state), h) << "a refused command records nothing";
  {
    Db db(state / "ledger.db");
    EXPECT_EQ(db.rows("SELECT COUNT(*) FROM certificates")[0][0], "0");
  }
  auto ctrl = kl(state, {"--operator", "bad\x01name", "ca", "revoke", "--serial", "01"});
  EXPECT_EQ(ctrl.exit_code, 2) << ctrl.err;

  // The configured default operator, then not required at all.
  std::string cfg = tk::read_file(state / "keyline.toml");
  auto at = cfg.find("# operator = ");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, 2, "");
  tk::write_file(state / "keyline.toml", cfg);
  ASSERT_EQ(kl(state, {"ca", "issue", "--csr", (tmp / "x.csr").string(), "--out", (tmp / "x.pem").string()},
               {{"KEYLINE_OPERATOR", ""}}).exit_code, 0);
  {
    Db db(state / "ledger.db");
    EXPECT_EQ(db.rows("SELECT operator FROM audit_events ORDER BY seq DESC LIMIT 1")[0][0], "line-1-shift-a");
  }
}

TEST(AuditRecords, FailsClosedWhenTheRecordCannotBeWritten) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  std::string serial = issue(state, tmp.path(), "keep");
  {
    Db db(state / "ledger.db");
    db.exec("CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit disk full'); END");
  }
  auto r = kl(state, {"ca", "issue", "--csr", csr(tmp / "n.csr", "new-dev").string(), "--out", (tmp / "n.pem").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("audit"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "n.pem")) << "no certificate is delivered without its record";
  auto rv = kl(state, {"ca", "revoke", "--serial", serial});
  EXPECT_NE(rv.exit_code, 0);
  Db db(state / "ledger.db");
  EXPECT_EQ(db.rows("SELECT COUNT(*) FROM certificates WHERE registration_id='new-dev'")[0][0], "0");
  EXPECT_EQ(db.rows("SELECT status FROM certificates WHERE serial='" + serial + "'")[0][0], "active");
}

TEST(AuditRecords, TheTrailIsAppendOnlyInTheDatabase) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  Db db(state / "ledger.db");
  EXPECT_THROW(db.exec("UPDATE audit_events SET operator='mallory' WHERE seq=1"), std::runtime_error);
  EXPECT_THROW(db.exec("DELETE FROM audit_events WHERE seq=1"), std::runtime_error);
}

// Something that must never appear in the trail or an export.
struct Needle {
  std::string what;  // for the failure message (the secret itself is not printed)
  std::string text;
};

// A private key file (PEM) as needles: its secret number as raw bytes and as
// hex, and every run of at least 16 base64 characters, within one PEM line,
// that encodes nothing but bytes of that number. (The PKCS#8 header in front
// of the number is the same in every key of the kind and proves nothing.)
std::vector<Needle> private_key_needles(const fs::path& file) {
  const std::string pem = tk::read_file(file);
  const std::string name = file.filename().string();
  std::vector<Needle> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ADD_FAILURE() << name << " is not a readable private key";
    return out;
  }
  Bytes secret;
  std::size_t raw_len = 0;
  if (EVP_PKEY_get_raw_private_key(key.get(), nullptr, &raw_len) == 1 && raw_len > 0) {
    secret.resize(raw_len);  // Ed25519 and the like
    EVP_PKEY_get_raw_private_key(key.get(), secret.data(), &raw_len);
  } else {
    BIGNUM* bn = nullptr;
    if (EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &bn) != 1 &&
        EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_D, &bn) != 1) {
      ADD_FAILURE() << name << ": no private number found";
      return out;
    }
    BignumPtr owned(bn);
    secret.resize(static_cast<std::size_t>(BN_num_bytes(bn)));
    BN_bn2bin(bn, secret.data());
  }
  ERR_clear_error();
  std::string hex = to_hex(secret);
  std::string lower = hex;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  out.push_back({name + " (raw)", std::string(secret.begin(), secret.end())});
  out.push_back({name + " (hex)", hex});
  out.push_back({name + " (lower-case hex)", lower});

  // Where the number sits in the DER, and which base64 characters of the
  // body encode only bytes of it (4 characters per 3 bytes).
  std::vector<std::string> lines;
  {
    std::istringstream in(pem);
    for (std::string l; std::getline(in, l);)
      if (!l.empty() && !l.starts_with("-----")) lines.push_back(l);
  }
  std::string body;
  for (auto& l : lines) body += l;
  auto der = base64_decode(body);
  if (!der) {
    ADD_FAILURE() << name << ": the PEM body is not base64";
    return out;
  }
  auto at = std::search(der->begin(), der->end(), secret.begin(), secret.end());
  if (at == der->end()) {
    ADD_FAILURE() << name << ": the private number is not in the DER";
    return out;
  }
  const auto off = static_cast<std::size_t>(at - der->begin());
  const std::size_t first_char = (off + 2) / 3 * 4;
  const std::size_t end_char = (off + secret.size()) / 3 * 4;
  std::size_t line_start = 0, chunks = 0;
  for (auto& l : lines) {
    const std::size_t lo = std::max(first_char, line_start), hi = std::min(end_char, line_start + l.size());
    if (hi >= lo + 16) {
      out.push_back({name + " (PEM base64)", l.substr(lo - line_start, hi - lo)});
      ++chunks;
    }
    line_start += l.size();
  }
  EXPECT_GT(chunks, 0u) << name;
  return out;
}

TEST(AuditRecords, SecretsNeverEnterTheTrailOrExports) {
  tk::TempDir tmp;
  // A PIN that cannot turn up by chance in hashes, serials or timestamps.
  tk::SoftHsm hsm("LINE1", "pin-Audit-7Qx2");
  fs::path state = make_ca(tmp);
  issue(state, tmp.path(), "dev-s");
  // A DPS group key imported into the HSM, with the token PIN from a file.
  std::string group_key = "ZmFjdG9yeS1ncm91cC1rZXktZm9yLWF1ZGl0LXRlc3Rz";
  tk::write_file(tmp / "group.b64", group_key);
  auto imp = kl(state, {"hsm", "secret", "import", "--key-store", hsm.uri("unused"), "--label", "grp",
                        "--from", (tmp / "group.b64").string()});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  ASSERT_EQ(kl(state, {"audit", "export", "--out", (tmp / "a.jsonl").string()}).exit_code, 0);
  ASSERT_EQ(kl(state, {"audit", "export", "--format", "csv", "--out", (tmp / "a.csv").string()}).exit_code, 0);

  std::vector<std::string> haystacks;
  {
    Db db(state / "ledger.db");
    for (auto& r : db.rows("SELECT seq, time, station, operator, type, body, hash FROM audit_events"))
      for (auto& f : r) haystacks.push_back(f);
  }
  for (auto f : {"a.jsonl", "a.csv", "a.jsonl.manifest.json", "a.csv.manifest.json"})
    haystacks.push_back(tk::read_file(tmp / f));
  std::vector<Needle> needles = {{"the group key (base64)", group_key},
                                 {"the group key", "factory-group-key-for-audit-tests"},
                                 {"the token PIN", hsm.pin()}};
  std::size_t key_files = 0;
  for (auto& e : fs::directory_iterator(state / "keys")) {
    if (!e.path().filename().string().ends_with(".key.pem")) continue;
    ++key_files;
    for (auto& n : private_key_needles(e.path())) needles.push_back(std::move(n));
  }
  EXPECT_GT(key_files, 0u) << "the CA keys are files in the development key store";
  for (auto& hay : haystacks)
    for (auto& n : needles) EXPECT_EQ(hay.find(n.text), std::string::npos) << n.what << " leaked";
  // Nor does any record mention PIN values at all.
  for (auto& hay : haystacks) EXPECT_EQ(hay.find("pin-value"), std::string::npos);
}

// --------------------------------------------------------------- tamper table

struct Exported {
  tk::TempDir tmp;
  fs::path state, file;
};

std::unique_ptr<Exported> exported(const std::string& format) {
  auto e = std::make_unique<Exported>();
  e->state = make_ca(e->tmp);
  for (int i = 0; i < 4; ++i) issue(e->state, e->tmp.path(), "dev-" + std::to_string(i));
  e->file = e->tmp / ("trail." + format);
  auto r = kl(e->state, {"audit", "export", "--format", format, "--out", e->file.string()});
  if (r.exit_code != 0) throw std::runtime_error(r.err);
  return e;
}

struct Tamper {
  std::string name;
  std::function<void(Exported&, std::vector<std::string>&)> edit;
  std::string message;  // the verifier's message must contain this
};

// Recomputes every hash from line `from` on, so the chain is consistent again.
void rehash_jsonl(std::vector<std::string>& lines, std::size_t from) {
  std::string prev(station::audit::kGenesisHash);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string& l = lines[i];
    std::string canonical = l.substr(0, l.size() - 75) + "}";
    if (i >= from) l = canonical.substr(0, canonical.size() - 1) + ",\"hash\":\"" +
                        station::audit::chain_hash(prev, canonical) + "\"}";
    prev = l.substr(l.size() - 66, 64);
  }
}

std::vector<Tamper> tampers() {
  return {
      {"EditField", [](Exported&, auto& l) { l[5].replace(l[5].find("test-operator"), 13, "mallory-opera"); },
       "record 6 (trail.jsonl line 6) was modified"},
      {"DeleteRow", [](Exported&, auto& l) { l.erase(l.begin() + 4); }, "record 5 is missing or out of place"},
      {"SwapRows", [](Exported&, auto& l) { std::swap(l[3], l[4]); },
       "record 4 is missing or out of place: (trail.jsonl line 4) holds record 5"},
      {"InsertRow", [](Exported&, auto& l) { l.insert(l.begin() + 3, l[2]); },
       "record 3 (trail.jsonl line 4) is out of order"},
      {"TruncateTail", [](Exported&, auto& l) { l.resize(l.size() - 2); }, "are missing (truncated)"},
      {"ConsistentRewrite",
       [](Exported&, auto& l) {
         l[1].replace(l[1].find("test-operator"), 13, "mallory-opera");
         rehash_jsonl(l, 1);
       },
       "differs from the checkpoint signed at record"},
      {"ManifestAltered",
       [](Exported& e, auto&) {
         fs::path m = e.file.string() + ".manifest.json";
         std::string t = tk::read_file(m);
         t.replace(t.find("audit-station"), 13, "other-station");
         tk::write_file(m, t);
       },
       "does not match its signature"},
      {"ManifestRewrittenWithChain",
       [](Exported& e, auto& l) {
         l[7].replace(l[7].find("test-operator"), 13, "mallory-opera");
         rehash_jsonl(l, 7);
         fs::path m = e.file.string() + ".manifest.json";
         auto j = json::parse(tk::read_file(m));
         j["last_hash"] = l.back().substr(l.back().size() - 66, 64);
         tk::write_file(m, j.dump(2) + "\n");
       },
       "does not match its signature"},
  };
}

class AuditTamper : public testing::TestWithParam<Tamper> {};

TEST_P(AuditTamper, ExportVerificationNamesTheBrokenRecord) {
  auto e = exported("jsonl");
  ASSERT_EQ(kl(e->state, {"audit", "verify", e->file.string()}).exit_code, 0) << "untouched export verifies";
  auto lines = read_lines(e->file);
  ASSERT_GE(lines.size(), 10u);
  GetParam().edit(*e, lines);
  if (GetParam().name.rfind("Manifest", 0) != 0 || GetParam().name == "ManifestRewrittenWithChain")
    write_lines(e->file, lines);
  auto r = kl(e->state, {"audit", "verify", e->file.string()});
  EXPECT_EQ(r.exit_code, 9) << r.err;
  EXPECT_NE(r.err.find(GetParam().message), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Table, AuditTamper, testing::ValuesIn(tampers()),
                         [](const testing::TestParamInfo<Tamper>& i) { return i.param.name; });

TEST(AuditTamperCsv, EditedCsvRecordIsNamed) {
  auto e = exported("csv");
  ASSERT_EQ(kl(e->state, {"audit", "verify", e->file.string()}).exit_code, 0);
  auto lines = read_lines(e->file);
  lines[3].replace(lines[3].find("test-operator"), 13, "mallory-opera");  // record 3
  write_lines(e->file, lines);
  auto r = kl(e->state, {"audit", "verify", e->file.string()});
  EXPECT_EQ(r.exit_code, 9);
  EXPECT_NE(r.err.find("record 3 (trail.csv line 4) was modified"), std::string::npos) << r.err;
}

TEST(AuditTamperCsv, ExportFromAnotherStationIsNotTrusted) {
  auto e = exported("jsonl");
  tk::TempDir other;
  fs::path other_state = make_ca(other);
  auto r = kl(other_state, {"audit", "verify", e->file.string()});
  EXPECT_EQ(r.exit_code, 9) << r.err;
  EXPECT_NE(r.err.find("does not chain to the trust anchor"), std::string::npos) << r.err;
  auto ok = kl(other_state, {"audit", "verify", e->file.string(), "--trust-anchor", (e->state / "root.pem").string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST(AuditTamperCsv, ManifestSignatureVerifiesWithOpenssl) {
  auto e = exported("jsonl");
  tk::RunResult pub = tk::run({"/usr/bin/openssl", "x509", "-in", (e->state / "audit.pem").string(), "-noout", "-pubkey"});
  tk::write_file(e->tmp / "pub.pem", pub.out);
  tk::RunResult v = tk::run({"/usr/bin/openssl", "dgst", "-sha256", "-verify", (e->tmp / "pub.pem").string(),
                             "-signature", e->file.string() + ".manifest.json.sig", e->file.string() + ".manifest.json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("Verified OK"), std::string::npos);
  tk::RunResult chain = tk::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (e->state / "root.pem").string(),
                                 "-untrusted", (e->state / "intermediate.pem").string(), (e->state / "audit.pem").string()});
  EXPECT_EQ(chain.exit_code, 0) << chain.out << chain.err;
}

struct LedgerTamper {
  std::string name;
  std::string sql;
  std::string message;
};

class AuditLedgerTamper : public testing::TestWithParam<LedgerTamper> {};

TEST_P(AuditLedgerTamper, LedgerVerificationNamesTheBrokenRecord) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "led-" + std::to_string(i));
  ASSERT_EQ(kl(state, {"audit", "export", "--out", (tmp / "x.jsonl").string()}).exit_code, 0);  // checkpoint at 11
  issue(state, tmp.path(), "led-late");
  ASSERT_EQ(kl(state, {"audit", "verify", "--ledger"}).exit_code, 0);
  {
    Db db(state / "ledger.db");
    db.exec("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;");
    if (GetParam().name == "ConsistentRewrite") {
      db.exec("UPDATE audit_events SET operator='mallory' WHERE seq=2");
      auto rows = db.rows("SELECT seq, time, station, operator, type, body FROM audit_events ORDER BY seq");
      std::string prev(station::audit::kGenesisHash);
      for (auto& r : rows) {
        station::audit::Record rec{std::stoll(r[0]), r[1], r[2], r[3], r[4], r[5], ""};
        prev = station::audit::chain_hash(prev, station::audit::canonical_record(rec));
        db.exec("UPDATE audit_events SET hash='" + prev + "' WHERE seq=" + r[0]);
      }
    } else {
      db.exec(GetParam().sql);
    }
  }
  auto r = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(r.exit_code, 9) << r.err;
  EXPECT_NE(r.err.find(GetParam().message), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Table, AuditLedgerTamper,
    testing::Values(
        LedgerTamper{"EditField", "UPDATE audit_events SET body=replace(body, 'led-1', 'led-9') WHERE seq=9",
                     "record 9 (ledger) was modified"},
        LedgerTamper{"DeleteRow", "DELETE FROM audit_events WHERE seq=6", "record 6 is missing or out of place"},
        LedgerTamper{"SwapRows",
                     "UPDATE audit_events SET body=(SELECT body FROM audit_events WHERE seq=7) WHERE seq=9",
                     "record 9 (ledger) was modified"},
        LedgerTamper{"TruncateTail", "DELETE FROM audit_events WHERE seq >= 9", "records after 8 are missing"},
        LedgerTamper{"ConsistentRewrite", "", "differs from the checkpoint signed at record 5"}),
    [](const testing::TestParamInfo<LedgerTamper>& i) { return i.param.name; });

TEST(AuditExport, RangesAndTheDeviceReport) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "r-" + std::to_string(i));
  auto r = kl(state, {"--json", "audit", "export", "--since", "5", "--until", "8", "--out", (tmp / "p.jsonl").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["first_seq"], 5);
  EXPECT_EQ(j["last_seq"], 8);
  EXPECT_EQ(read_lines(tmp / "p.jsonl").size(), 4u);
  EXPECT_EQ(kl(state, {"audit", "verify", (tmp / "p.jsonl").string()}).exit_code, 0);
  auto empty = kl(state, {"audit", "export", "--since", "2999-01-01", "--out", (tmp / "e.jsonl").string()});
  EXPECT_EQ(empty.exit_code, 2) << empty.err;
  EXPECT_FALSE(fs::exists(tmp / "e.jsonl"));
  auto badtime = kl(state, {"audit", "export", "--since", "yesterday", "--out", (tmp / "e.jsonl").string()});
  EXPECT_EQ(badtime.exit_code, 2);
  EXPECT_NE(badtime.err.find("neither a sequence number nor a UTC time"), std::string::npos);

  auto rep = kl(state, {"report", "devices", "--format", "jsonl"});
  ASSERT_EQ(rep.exit_code, 0);
  std::istringstream in(rep.out);
  int n = 0;
  for (std::string l; std::getline(in, l); ++n) {
    auto d = json::parse(l);
    EXPECT_EQ(d["station"], "audit-station");
    EXPECT_EQ(d["operator"], "test-operator");
    EXPECT_EQ(d["certificate_sha256"].get<std::string>().size(), 64u);
  }
  EXPECT_EQ(n, 3);
}

}  // namespace
}  // namespace keyline
