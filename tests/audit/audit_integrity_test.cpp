// What verification must notice beyond an edited record: checkpoints deleted
// from the ledger (with or without rewriting the records after them), exports
// and checkpoints signed by a certificate that is not the station's audit
// certificate, and operator names that are not UTF-8.
#include <sqlite3.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/audit.hpp"
#include "audit_test_db.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::audit_integrity_tests {
namespace {

namespace fs = std::filesystem;
namespace tk = testkit;
namespace audit = station::audit;
using nlohmann::json;

using audit_test::Db;

tk::RunResult kl(const fs::path& state, const std::vector<std::string>& args,
                 std::map<std::string, std::string> env = {}) {
  env.try_emplace("KEYLINE_LOG", "error");
  return tk::keyline(state, args, env);
}

// A station whose audit key signs a checkpoint every `interval` records.
fs::path make_ca(const tk::TempDir& tmp, int interval = 1000) {
  fs::path state = tmp / "state";
  auto r = kl(state, {"ca", "init", "--station-id", "audit-station"});
  if (r.exit_code != 0) throw std::runtime_error("ca init failed: " + r.err);
  std::string cfg = tk::read_file(state / "keyline.toml");
  auto at = cfg.find("checkpoint_interval = 1000");
  if (at == std::string::npos) throw std::runtime_error("no checkpoint_interval in keyline.toml");
  cfg.replace(at, 26, "checkpoint_interval = " + std::to_string(interval));
  tk::write_file(state / "keyline.toml", cfg);
  return state;
}

void issue(const fs::path& state, const fs::path& dir, const std::string& cn) {
  auto key = tk::ec_key();
  fs::path csr = dir / (cn + ".csr");
  tk::write_file(csr, tk::csr_pem(key.get(), cn));
  auto r = kl(state, {"ca", "issue", "--csr", csr.string(), "--out", (dir / (cn + ".pem")).string()});
  if (r.exit_code != 0) throw std::runtime_error("issue failed: " + r.err);
}

long long count(Db& db, const std::string& sql) { return std::stoll(db.rows(sql)[0][0]); }

// Rewrites the trail from record `from` on as someone with write access to
// the database would: `keep` decides which records stay, `edit` may change
// one; the records are renumbered and every hash from `from` on recomputed.
void rewrite(const fs::path& state, long long from, const std::function<bool(const audit::Record&)>& keep,
             const std::function<void(audit::Record&)>& edit) {
  Db db(state / "ledger.db");
  db.unlock();
  std::vector<audit::Record> all;
  for (auto& r : db.rows("SELECT seq, time, station, operator, type, body, hash FROM audit_events ORDER BY seq"))
    all.push_back({std::stoll(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]});
  db.exec("DELETE FROM audit_events WHERE seq >= " + std::to_string(from));
  std::string prev = from > 1 ? all[static_cast<std::size_t>(from - 2)].hash : std::string(audit::kGenesisHash);
  long long seq = from;
  for (auto r : all) {
    if (r.seq < from || !keep(r)) continue;
    edit(r);
    r.seq = seq++;
    r.hash = audit::chain_hash(prev, audit::canonical_record(r));
    prev = r.hash;
    db.run("INSERT INTO audit_events (seq, time, station, operator, type, body, hash) VALUES (?,?,?,?,?,?,?)",
           {std::to_string(r.seq), r.time, r.station, r.operator_name, r.type, r.body, r.hash});
  }
}

bool keep_all(const audit::Record&) { return true; }
void no_edit(audit::Record&) {}

// --------------------------------------------------------------- deleted checkpoints

TEST(AuditCheckpointRecords, EveryCheckpointOfTheHeadIsARecordItSigns) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp, 4);
  for (int i = 0; i < 4; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  Db db(state / "ledger.db");
  auto cps = db.rows("SELECT c.seq, e.type, e.hash = c.hash FROM audit_checkpoints c JOIN audit_events e ON "
                     "e.seq = c.seq ORDER BY c.seq");
  ASSERT_EQ(cps.size(), 3u) << "ca init, then after every second issue (4 records)";
  for (auto& c : cps) {
    EXPECT_EQ(c[1], "audit.checkpoint") << "record " << c[0];
    EXPECT_EQ(c[2], "1");
  }
  auto v = kl(state, {"--json", "audit", "verify", "--ledger"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  auto j = json::parse(v.out);
  EXPECT_EQ(j["unsigned_records"], 0);
  EXPECT_EQ(j["station"], "audit-station");
}

TEST(AuditCheckpointRecords, ADeletedCheckpointWhoseRecordRemainsIsNamed) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp, 4);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  ASSERT_EQ(kl(state, {"audit", "verify", "--ledger"}).exit_code, 0);
  {
    Db db(state / "ledger.db");
    db.unlock();
    db.exec("DELETE FROM audit_checkpoints WHERE seq > 5");
  }
  auto r = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("record 10 (ledger) records a checkpoint signed at it, but that checkpoint is not in the "
                       "ledger (checkpoints were deleted)"),
            std::string::npos)
      << r.err;
}

TEST(AuditCheckpointRecords, DeletingEveryCheckpointIsNoticed) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  issue(state, tmp.path(), "d0");
  {
    Db db(state / "ledger.db");
    db.unlock();
    db.exec("DELETE FROM audit_checkpoints");
  }
  auto r = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("record 5 (ledger) records a checkpoint signed at it"), std::string::npos) << r.err;

  // The checkpoint records taken out as well (the chain rebuilt without
  // them): ca init's signature is still missed.
  rewrite(state, 5, [](const audit::Record& r) { return r.type != "audit.checkpoint"; }, no_edit);
  auto again = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(again.exit_code, 9) << again.out << again.err;
  EXPECT_NE(again.err.find("no signed checkpoint covers the trail, yet 'ca init' signed one"), std::string::npos)
      << again.err;
}

TEST(AuditCheckpointRecords, ARewriteBehindDeletedCheckpointsBreaksTheCadence) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp, 4);
  for (int i = 0; i < 6; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  ASSERT_EQ(kl(state, {"audit", "verify", "--ledger"}).exit_code, 0);
  // Record 7 is d0's certificate.issued. Everything signed after it goes:
  // the checkpoints, their records; the chain is rebuilt from 7.
  {
    Db db(state / "ledger.db");
    ASSERT_EQ(db.rows("SELECT type FROM audit_events WHERE seq = 7")[0][0], "certificate.issued");
    db.unlock();
    db.exec("DELETE FROM audit_checkpoints WHERE seq >= 7");
  }
  rewrite(state, 7, [](const audit::Record& r) { return r.type != "audit.checkpoint"; },
          [](audit::Record& r) {
            if (r.seq == 7) r.operator_name = "mallory";
          });
  auto r = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("records 6 to 17 are covered by no signed checkpoint, though [audit] checkpoint_interval 4 "
                       "required one"),
            std::string::npos)
      << r.err;
}

TEST(AuditCheckpointRecords, TheUnsignedTailIsReportedAndRecordsWithoutACheckpointStepMayFollow) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp, 4);
  issue(state, tmp.path(), "d0");
  // Rejected requests do not make checkpoints (nor do revocations or DPS
  // changes): more of them than the interval is a legitimate tail.
  for (int i = 0; i < 6; ++i) {
    auto key = tk::ec_key();
    tk::write_file(tmp / "bad.csr", tk::csr_pem(key.get(), "bad id!"));
    ASSERT_EQ(kl(state, {"ca", "issue", "--csr", (tmp / "bad.csr").string()}).exit_code, 3);
  }
  auto v = kl(state, {"--json", "audit", "verify", "--ledger"});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  auto j = json::parse(v.out);
  EXPECT_EQ(j["last_signed_seq"], 5);
  EXPECT_EQ(j["unsigned_records"], 8);
  EXPECT_EQ(j["checkpoint_interval"], 4);
  auto text = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_NE(text.out.find("8 record(s) after the last signed checkpoint (record 5) are covered by no signature yet"),
            std::string::npos)
      << text.out;
  // The next issue is due a checkpoint and covers them all.
  issue(state, tmp.path(), "d1");
  auto after = kl(state, {"--json", "audit", "verify", "--ledger"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(json::parse(after.out)["unsigned_records"], 0);
}

TEST(AuditCheckpointRecords, AnExportOfATrailMissingACheckpointFailsVerification) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp, 4);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  {
    Db db(state / "ledger.db");
    db.unlock();
    db.exec("DELETE FROM audit_checkpoints WHERE seq = 10");
  }
  ASSERT_EQ(kl(state, {"audit", "export", "--out", (tmp / "t.jsonl").string()}).exit_code, 0);
  auto r = kl(state, {"audit", "verify", (tmp / "t.jsonl").string()});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("record 10 (t.jsonl line 10) records a checkpoint signed at it, but that checkpoint is not "
                       "in the manifest"),
            std::string::npos)
      << r.err;
  // An export's own checkpoint is named by its audit.exported record.
  tk::TempDir tmp2;
  fs::path s2 = make_ca(tmp2);
  issue(s2, tmp2.path(), "e0");
  ASSERT_EQ(kl(s2, {"audit", "export", "--until", "6", "--out", (tmp2 / "a.jsonl").string()}).exit_code, 0);
  ASSERT_EQ(kl(s2, {"audit", "verify", "--ledger"}).exit_code, 0);
  {
    Db db(s2 / "ledger.db");
    db.unlock();
    db.exec("DELETE FROM audit_checkpoints WHERE seq = 6");
  }
  auto l = kl(s2, {"audit", "verify", "--ledger"});
  EXPECT_EQ(l.exit_code, 9) << l.out << l.err;
  EXPECT_NE(l.err.find("record 8 (ledger) records an export signed at record 6, but that checkpoint is not in the "
                       "ledger"),
            std::string::npos)
      << l.err;
}

TEST(AuditCheckpointRecords, AuditKeyCreateSignsTheTrailAtOnce) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  // A station from before the audit trail had a key: the key is created later.
  fs::remove(state / "keys" / "keyline-audit.key.pem");
  fs::remove(state / "audit.pem");
  issue(state, tmp.path(), "old");
  auto c = kl(state, {"audit", "key", "create"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  Db db(state / "ledger.db");
  auto last = db.rows("SELECT e.type, c.seq FROM audit_events e LEFT JOIN audit_checkpoints c ON c.seq = e.seq "
                      "ORDER BY e.seq DESC LIMIT 2");
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0][0], "audit.checkpoint");
  EXPECT_FALSE(last[0][1].empty()) << "the record is signed";
  EXPECT_EQ(last[1][0], "audit.key_created");
}

// --------------------------------------------------------------- the signer's identity

struct Forger {
  fs::path key, cert;
};

std::string openssl_ok(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = tk::run(argv);
  if (r.exit_code != 0) throw std::runtime_error("openssl " + args[0] + ": " + r.err);
  return r.out;
}

// A certificate issued by the station's intermediate (the development key
// store keeps its key in a file) with the given subject and extensions.
Forger forge_cert(const fs::path& state, const fs::path& dir, const std::string& name, const std::string& cn,
                  const std::string& extensions) {
  Forger f{dir / (name + ".key.pem"), dir / (name + ".pem")};
  openssl_ok({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f.key.string()});
  fs::path csr = dir / (name + ".csr"), ext = dir / (name + ".ext");
  openssl_ok({"req", "-new", "-key", f.key.string(), "-subj", "/CN=" + cn, "-out", csr.string()});
  tk::write_file(ext, extensions);
  openssl_ok({"x509", "-req", "-in", csr.string(), "-CA", (state / "intermediate.pem").string(), "-CAkey",
              (state / "keys" / "keyline-intermediate.key.pem").string(), "-days", "30", "-extfile", ext.string(),
              "-out", f.cert.string()});
  return f;
}

const std::string kAuditLikeExt =
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n";
const std::string kDeviceExt =
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";

Bytes sign_with(const Forger& f, const fs::path& dir, const std::string& message) {
  tk::write_file(dir / "msg", message);
  openssl_ok({"dgst", "-sha256", "-sign", f.key.string(), "-out", (dir / "msg.sig").string(), (dir / "msg").string()});
  std::string sig = tk::read_file(dir / "msg.sig");
  return Bytes(sig.begin(), sig.end());
}

std::string lower_hex_sha256(const std::string& text) {
  std::string h = sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(text.data()), text.size()));
  for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return h;
}

// An export of `state` with record 6's operator changed, re-chained, its
// checkpoints and manifest signed by `f` with f's certificate in the chain.
fs::path forge_export(const fs::path& state, const fs::path& dir, const Forger& f) {
  fs::path file = dir / "forged.jsonl";
  auto r = kl(state, {"audit", "export", "--out", file.string()});
  if (r.exit_code != 0) throw std::runtime_error(r.err);
  std::vector<std::string> lines;
  {
    std::ifstream in(file);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  std::string prev(audit::kGenesisHash), text;
  std::map<long long, std::string> hashes;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string canonical = lines[i].substr(0, lines[i].size() - 75) + "}";
    if (i == 5) canonical.replace(canonical.find("test-operator"), 13, "mallory-opera");
    prev = audit::chain_hash(prev, canonical);
    hashes[static_cast<long long>(i + 1)] = prev;
    lines[i] = canonical.substr(0, canonical.size() - 1) + ",\"hash\":\"" + prev + "\"}";
    text += lines[i] + "\n";
  }
  tk::write_file(file, text);
  fs::path manifest = file.string() + ".manifest.json";
  auto m = json::parse(tk::read_file(manifest));
  for (auto& c : m["checkpoints"]) {
    long long seq = c["seq"].get<long long>();
    c["hash"] = hashes[seq];
    c["signature"] = base64_encode(sign_with(
        f, dir, audit::checkpoint_message("audit-station", seq, hashes[seq], c["time"].get<std::string>())));
  }
  m["last_hash"] = prev;
  m["first_hash"] = hashes[1];
  m["records_sha256"] = lower_hex_sha256(text);
  m["audit_key"]["certificate_chain"][0] = tk::read_file(f.cert);
  std::string mtext = m.dump(2) + "\n";
  tk::write_file(manifest, mtext);
  Bytes sig = sign_with(f, dir, mtext);
  tk::write_file(file.string() + ".manifest.json.sig", std::string(sig.begin(), sig.end()));
  return file;
}

TEST(AuditSignerIdentity, ADeviceCertificateCannotSignAnExport) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  Forger device = forge_cert(state, tmp.path(), "device", "dev-x", kDeviceExt);
  fs::path file = forge_export(state, tmp.path(), device);
  auto r = kl(state, {"audit", "verify", file.string()});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("is a TLS client or server certificate (extendedKeyUsage), not the station's audit key"),
            std::string::npos)
      << r.err;
}

TEST(AuditSignerIdentity, AnotherStationsAuditCertificateCannotSignThisStationsExport) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  for (int i = 0; i < 3; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  Forger sibling = forge_cert(state, tmp.path(), "sibling", "Keyline audit sibling-station", kAuditLikeExt);
  fs::path file = forge_export(state, tmp.path(), sibling);
  auto r = kl(state, {"audit", "verify", file.string()});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("subject CN is 'Keyline audit sibling-station', expected 'Keyline audit audit-station'"),
            std::string::npos)
      << r.err;
  // The genuine audit key still verifies.
  ASSERT_EQ(kl(state, {"audit", "export", "--out", (tmp / "ok.jsonl").string()}).exit_code, 0);
  auto ok = kl(state, {"audit", "verify", (tmp / "ok.jsonl").string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("signed by the audit key of station audit-station"), std::string::npos) << ok.out;
}

TEST(AuditSignerIdentity, TheLedgerIsCheckedAgainstTheAuditKeyItRecorded) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  for (int i = 0; i < 2; ++i) issue(state, tmp.path(), "d" + std::to_string(i));
  // A look-alike audit certificate for this very station, whose key re-signs
  // every checkpoint after the trail was rewritten.
  Forger other = forge_cert(state, tmp.path(), "other", "Keyline audit audit-station", kAuditLikeExt);
  rewrite(state, 6, keep_all, [](audit::Record& r) {
    if (r.seq == 7) r.operator_name = "mallory";
  });
  {
    Db db(state / "ledger.db");
    for (auto& c : db.rows("SELECT c.id, c.seq, e.hash, c.time FROM audit_checkpoints c JOIN audit_events e ON "
                           "e.seq = c.seq")) {
      Bytes sig = sign_with(other, tmp.path(), audit::checkpoint_message("audit-station", std::stoll(c[1]), c[2], c[3]));
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(db.db, "UPDATE audit_checkpoints SET hash=?, signature=? WHERE id=?", -1, &s, nullptr);
      sqlite3_bind_text(s, 1, c[2].c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(s, 2, sig.data(), static_cast<int>(sig.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(s, 3, std::stoll(c[0]));
      ASSERT_EQ(sqlite3_step(s), SQLITE_DONE) << sqlite3_errmsg(db.db);
      sqlite3_finalize(s);
    }
  }
  fs::copy_file(other.cert, state / "audit.pem", fs::copy_options::overwrite_existing);
  auto r = kl(state, {"audit", "verify", "--ledger"});
  EXPECT_EQ(r.exit_code, 9) << r.out << r.err;
  EXPECT_NE(r.err.find("is not an audit key this ledger recorded: no audit.key_created record names it"),
            std::string::npos)
      << r.err;
}

// --------------------------------------------------------------- operator names

TEST(AuditOperatorNames, NamesThatAreNotUtf8AreRefused) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  Db db(state / "ledger.db");
  long long before = count(db, "SELECT COUNT(*) FROM audit_events");
  auto key = tk::ec_key();
  tk::write_file(tmp / "x.csr", tk::csr_pem(key.get(), "x"));
  for (std::string bad : {std::string("caf\xe9"), std::string("\xc0\xaf"), std::string("a\xed\xa0\x80"),
                          std::string("\xf4\x90\x80\x80"), std::string("cut\xe2\x82")}) {
    auto flag = kl(state, {"--operator", bad, "ca", "issue", "--csr", (tmp / "x.csr").string()});
    EXPECT_EQ(flag.exit_code, 2) << flag.err;
    EXPECT_NE(flag.err.find("--operator: the operator name is not valid UTF-8"), std::string::npos) << flag.err;
    auto env = kl(state, {"ca", "issue", "--csr", (tmp / "x.csr").string()}, {{"KEYLINE_OPERATOR", bad}});
    EXPECT_EQ(env.exit_code, 2) << env.err;
    EXPECT_NE(env.err.find("KEYLINE_OPERATOR: the operator name is not valid UTF-8"), std::string::npos) << env.err;
  }
  EXPECT_EQ(count(db, "SELECT COUNT(*) FROM audit_events"), before) << "a refused name records nothing";
  auto ok = kl(state, {"--operator", "Jos\xc3\xa9 \xe5\xb7\xa5", "ca", "issue", "--csr", (tmp / "x.csr").string(),
                       "--out", (tmp / "x.pem").string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// Keyline refuses names that are not UTF-8; older versions recorded them,
// hashed with U+FFFD in place of each stray byte. Such a record verifies
// (the chain cannot tell one stray byte from another), and verify says so.
TEST(AuditOperatorNames, BytesThatHashLikeAReplacementCharacterAreReported) {
  tk::TempDir tmp;
  fs::path state = make_ca(tmp);
  auto key = tk::ec_key();
  tk::write_file(tmp / "x.csr", tk::csr_pem(key.get(), "x"));
  // U+FFFD itself is a valid name; an invalid byte in its place hashes the same.
  ASSERT_EQ(kl(state, {"--operator", "op\xef\xbf\xbd", "ca", "issue", "--csr", (tmp / "x.csr").string(), "--out",
                       (tmp / "x.pem").string()})
                .exit_code,
            0);
  auto clean = kl(state, {"audit", "verify", "--ledger"}, {{"KEYLINE_LOG", "warn"}});
  ASSERT_EQ(clean.exit_code, 0) << clean.err;
  EXPECT_EQ(clean.err.find("not valid UTF-8"), std::string::npos) << clean.err;
  {
    Db db(state / "ledger.db");
    db.unlock();
    db.run("UPDATE audit_events SET operator=? WHERE seq=7", {"op\xff"});
  }
  auto r = kl(state, {"audit", "verify", "--ledger"}, {{"KEYLINE_LOG", "warn"}});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("1 audit record(s) from record 7 on hold a time, station, operator or type that is not "
                       "valid UTF-8"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace keyline::audit_integrity_tests
