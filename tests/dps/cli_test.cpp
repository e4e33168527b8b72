// keyline dps ... end to end: a CA in a temp state dir, the emulator, the
// outbox, sync (including a crash between the HTTP call and the commit).

#include <gtest/gtest.h>

#include <set>

#include "keyline/station/dps/client.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using nlohmann::json;
namespace tk = keyline::testkit;
namespace sd = keyline::station::dps;
namespace fs = std::filesystem;

namespace {
const char* kGroupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
const std::map<std::string, std::string> kQuiet{{"KEYLINE_LOG", "off"}};

struct Station {
  tk::TempDir dir;
  fs::path state = dir / "state";
  std::unique_ptr<tk::DpsEmulator> emu;
  explicit Station(std::vector<std::string> emu_args = {}) {
    auto r = tk::keyline(state, {"ca", "init"}, kQuiet);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    emu = std::make_unique<tk::DpsEmulator>(dir / "emu", emu_args);
    point_at(emu->connection_string());
  }
  void point_at(const std::string& cs) {
    tk::write_file(dir / "dps-cs", cs + "\n");
    std::string toml = tk::read_file(state / "keyline.toml");
    toml = toml.substr(0, toml.find("\n[dps]"));
    toml += "\n[dps]\nconnection-string-source = \"file:" + (dir / "dps-cs").string() + "\"\nid-scope = \"" +
            emu->id_scope() + "\"\nca-file = \"" + emu->ca_cert() + "\"\nquota-per-minute = 6000\n";
    tk::write_file(state / "keyline.toml", toml);
  }
  tk::RunResult kl(const std::vector<std::string>& args, std::map<std::string, std::string> env = {}) {
    env.insert(kQuiet.begin(), kQuiet.end());
    return tk::keyline(state, args, env);
  }
  std::unique_ptr<sd::DpsClient> client() {
    sd::ClientOptions o;
    o.http.ca_file = emu->ca_cert();
    static SystemClock shared;
    return std::make_unique<sd::DpsClient>(*sd::parse_connection_string(emu->connection_string()), shared, o);
  }
};
}  // namespace

TEST(DpsCli, ComputeDeviceKeyMatchesPublishedVector) {
  tk::TempDir dir;
  tk::write_file(dir / "group.key", std::string(kGroupKey) + "\n");
  auto r = tk::keyline(dir / "state", {"dps", "compute-device-key", "--group-key-source", "file:" + (dir / "group.key").string(),
                                       "--registration-id", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"}, kQuiet);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=\n");
  auto stdin_r = tk::keyline(dir / "state", {"dps", "compute-device-key", "--group-key-source", "-", "--registration-id",
                                             "breakroom499-contoso-tstrsd-007"}, kQuiet,
                             "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==\n");
  ASSERT_EQ(stdin_r.exit_code, 0) << stdin_r.err;
  EXPECT_EQ(stdin_r.out, "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs=\n");
  auto bad = tk::keyline(dir / "state", {"dps", "compute-device-key", "--group-key-source", kGroupKey, "--registration-id", "x"}, kQuiet);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.err.find(kGroupKey), std::string::npos);
}

TEST(DpsCli, EnrollFromLedgerGroupsSyncStatusAndShow) {
  Station s;
  tk::write_file(s.dir / "group.key", std::string(kGroupKey) + "\n");
  auto key = tk::ec_key();
  tk::write_file(s.dir / "dev.csr", tk::csr_pem(key.get(), "ledger-dev-1"));
  ASSERT_EQ(s.kl({"ca", "issue", "--csr", (s.dir / "dev.csr").string(), "--out", (s.dir / "dev.pem").string()}).exit_code, 0);
  auto r = s.kl({"dps", "enrollment", "create", "ledger-dev-1", "--device-id", "dev-one"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("queued"), std::string::npos);
  auto none = s.kl({"dps", "enrollment", "create", "not-issued"});
  EXPECT_EQ(none.exit_code, 3);
  EXPECT_NE(none.err.find("no active"), std::string::npos);
  ASSERT_EQ(s.kl({"dps", "group", "create", "line-x509", "--x509-ca", "intermediate", "--iot-hub", "hub1.example"}).exit_code, 0);
  ASSERT_EQ(s.kl({"dps", "group", "create", "line-sym", "--symmetric-key-source", "file:" + (s.dir / "group.key").string(),
                  "--edge", "--provisioning-status", "disabled"}).exit_code, 0);
  EXPECT_EQ(tk::read_file(s.state / "ledger.db").find(kGroupKey), std::string::npos);
  auto st = s.kl({"--json", "dps", "status"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  EXPECT_EQ(json::parse(st.out)["outbox"]["pending"], 3);
  auto sync = s.kl({"dps", "sync", "--once"});
  ASSERT_EQ(sync.exit_code, 0) << sync.err << sync.out;
  st = s.kl({"--json", "dps", "status"});
  EXPECT_EQ(json::parse(st.out)["outbox"]["synced"], 3);
  auto show = s.kl({"dps", "enrollment", "show", "ledger-dev-1"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  auto doc = json::parse(show.out);
  EXPECT_EQ(doc["deviceId"], "dev-one");
  EXPECT_EQ(doc["attestation"]["type"], "x509");
  auto g = json::parse(s.kl({"dps", "group", "show", "line-sym"}).out);
  EXPECT_EQ(g["capabilities"]["iotEdge"], true);
  EXPECT_EQ(g["provisioningStatus"], "disabled");
  auto mech = s.client()->attestation_mechanism(sd::EnrollmentKind::group, "line-sym");
  ASSERT_TRUE(mech);
  EXPECT_EQ((*mech)["symmetricKey"]["primaryKey"], kGroupKey);
  auto list = s.kl({"dps", "group", "list"});
  EXPECT_NE(list.out.find("2 enrollment group(s)"), std::string::npos) << list.out;
  ASSERT_EQ(s.kl({"dps", "group", "delete", "line-x509"}).exit_code, 0);
  ASSERT_EQ(s.kl({"dps", "sync", "--once"}).exit_code, 0);
  EXPECT_FALSE(*s.client()->find(sd::EnrollmentKind::group, "line-x509"));
  auto missing = s.kl({"dps", "registration", "show", "ledger-dev-1"});
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_NE(missing.err.find("404"), std::string::npos);
}

TEST(DpsCli, CrashBetweenHttpAndCommitNeitherDuplicatesNorLoses) {
  Station s;
  tk::write_file(s.dir / "k", "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=\n");
  for (int i = 0; i < 25; ++i)
    ASSERT_EQ(s.kl({"dps", "enrollment", "create", "crash-" + std::to_string(i), "--symmetric-key-source",
                    "file:" + (s.dir / "k").string()}).exit_code, 0);
  // Dies right after DPS answered the second bulk call, before the ledger commit.
  auto crash = s.kl({"dps", "sync", "--once"}, {{"KEYLINE_DPS_SYNC_CRASH_AFTER_HTTP", "2"}});
  EXPECT_EQ(crash.exit_code, 99);
  auto mid = json::parse(s.kl({"--json", "dps", "status"}).out);
  EXPECT_EQ(mid["outbox"]["synced"], 10);
  EXPECT_EQ(mid["outbox"]["pending"], 15);
  // DPS has the second batch; the third was in flight too and may land.
  EXPECT_GE(s.client()->query_all(sd::EnrollmentKind::individual)->size(), 20u);
  auto again = s.kl({"--json", "dps", "sync", "--once"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  auto report = json::parse(again.out);
  // What DPS got without a ledger commit is confirmed by read-back: the
  // second batch, and the third if it landed before the crash.
  const int reconciled = report["reconciled"].get<int>();
  EXPECT_TRUE(reconciled == 10 || reconciled == 15) << again.out;
  EXPECT_EQ(report["outbox"]["synced"], 25);
  auto all = s.client()->query_all(sd::EnrollmentKind::individual);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 25u);
  std::set<std::string> ids;
  for (auto& e : *all) ids.insert(e["registrationId"].get<std::string>());
  EXPECT_EQ(ids.size(), 25u);
}

TEST(DpsCli, GroupsFromTheInfraJson) {
  Station s;
  json groups = json::array({{{"enrollmentGroupId", "from-file"},
                              {"provisioningStatus", "enabled"},
                              {"attestation",
                               {{"type", "x509"},
                                {"x509", {{"signingCertificates",
                                           {{"primary", {{"certificate", tk::read_file(s.state / "intermediate.pem")}}}}}}}}}}});
  tk::write_file(s.dir / "groups.json", groups.dump(2));
  auto r = s.kl({"dps", "group", "create", "--from", (s.dir / "groups.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(s.kl({"dps", "sync", "--once"}).exit_code, 0);
  EXPECT_TRUE(*s.client()->find(sd::EnrollmentKind::group, "from-file"));
  groups[0]["attestation"] = {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", kGroupKey}}}};
  tk::write_file(s.dir / "keyed.json", groups.dump());
  auto keyed = s.kl({"dps", "group", "create", "--from", (s.dir / "keyed.json").string()});
  EXPECT_EQ(keyed.exit_code, 3);
  EXPECT_NE(keyed.err.find("keys never enter the ledger"), std::string::npos) << keyed.err;
  EXPECT_EQ(keyed.err.find(kGroupKey), std::string::npos);
  EXPECT_EQ(s.kl({"dps", "group", "create", "x", "--from", (s.dir / "groups.json").string()}).exit_code, 2);
}

TEST(DpsCli, OfflineThenCatchUpAndDeadLetters) {
  Station s;
  tk::write_file(s.dir / "short", "c2hvcnQ=\n");  // 5 bytes: not a DPS key
  ASSERT_EQ(s.kl({"dps", "enrollment", "create", "off-1", "--tpm-ek", "-"}).exit_code, 3);  // no stdin: empty EK
  tk::write_file(s.dir / "ek", "AAAAAAAAAAAAAAAA\n");
  ASSERT_EQ(s.kl({"dps", "enrollment", "create", "off-1", "--tpm-ek", (s.dir / "ek").string()}).exit_code, 0);
  ASSERT_EQ(s.kl({"dps", "enrollment", "create", "off-2", "--symmetric-key-source", "file:" + (s.dir / "short").string()}).exit_code, 0);
  std::string cs = s.emu->connection_string();
  std::string dead_cs = "HostName=localhost:1" + cs.substr(cs.find(';'));
  s.point_at(dead_cs);
  auto offline = s.kl({"dps", "sync", "--once"});
  EXPECT_NE(offline.exit_code, 0);
  auto st = json::parse(s.kl({"--json", "dps", "status"}).out);
  EXPECT_EQ(st["outbox"]["pending"], 1);  // off-1 waits; off-2 is dead (bad key), not retried forever
  EXPECT_EQ(st["outbox"]["dead"], 1);
  EXPECT_NE(st["dead"][0]["reason"].get<std::string>().find("16 to 64 bytes"), std::string::npos);
  s.point_at(cs);
  ASSERT_EQ(s.kl({"dps", "sync", "--once"}).exit_code, 0);
  auto text = s.kl({"dps", "status"});
  EXPECT_NE(text.out.find("0 pending, 1 synced, 1 dead"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("dead: individual create 'off-2'"), std::string::npos) << text.out;
  // Each outbox change is on the audit trail.
  auto audit = tk::run({"/usr/bin/sqlite3", (s.state / "ledger.db").string(),
                        "SELECT type || ' ' || json_extract(body, '$.registration_id') FROM audit_events "
                        "WHERE type LIKE 'enrollment.%' ORDER BY seq"});
  EXPECT_EQ(audit.out, "enrollment.queued off-1\nenrollment.queued off-2\nenrollment.failed off-2\n"
                       "enrollment.synced off-1\n");
}
