// keyline dps ... end to end: a CA in a temp state dir, the emulator, the
// outbox, sync (including a crash between the HTTP call and the commit).

#include <gtest/gtest.h>

#include <httplib.h>

#include <set>
#include <thread>

#include "keyline/station/dps/client.hpp"
#include "dps_station.hpp"
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
  void point_at(const std::string& cs) { dps_test::point_station_at(state, dir.path(), *emu, cs); }
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

TEST(DpsCli, ListNeverPrintsSymmetricKeys) {
  Station s;
  const std::string device_key = "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=";
  tk::write_file(s.dir / "device.key", device_key + "\n");
  tk::write_file(s.dir / "group.key", std::string(kGroupKey) + "\n");
  ASSERT_EQ(s.kl({"dps", "enrollment", "create", "listed-dev", "--symmetric-key-source",
                  "file:" + (s.dir / "device.key").string()}).exit_code, 0);
  ASSERT_EQ(s.kl({"dps", "group", "create", "listed-group", "--symmetric-key-source",
                  "file:" + (s.dir / "group.key").string()}).exit_code, 0);
  auto sync = s.kl({"dps", "sync", "--once"});
  ASSERT_EQ(sync.exit_code, 0) << sync.err << sync.out;
  auto mech = s.client()->attestation_mechanism(sd::EnrollmentKind::group, "listed-group");
  ASSERT_TRUE(mech);
  ASSERT_EQ((*mech)["symmetricKey"]["primaryKey"], kGroupKey);  // DPS holds the key; the CLI must not show it

  auto enrollments = s.kl({"--json", "dps", "enrollment", "list"});
  ASSERT_EQ(enrollments.exit_code, 0) << enrollments.err;
  EXPECT_NE(enrollments.out.find("listed-dev"), std::string::npos) << enrollments.out;
  EXPECT_EQ(enrollments.out.find(device_key), std::string::npos) << enrollments.out;
  auto edoc = json::parse(enrollments.out);
  ASSERT_EQ(edoc["enrollments"].size(), 1u);
  EXPECT_EQ(edoc["enrollments"][0]["attestation"]["type"], "symmetricKey");
  EXPECT_EQ(edoc["enrollments"][0]["attestation"]["symmetricKey"], json::object());

  auto groups = s.kl({"--json", "dps", "group", "list"});
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  EXPECT_NE(groups.out.find("listed-group"), std::string::npos) << groups.out;
  EXPECT_EQ(groups.out.find(kGroupKey), std::string::npos) << groups.out;
  EXPECT_EQ(json::parse(groups.out)["enrollment_groups"][0]["attestation"]["symmetricKey"], json::object());

  for (const char* kind : {"enrollment", "group"}) {
    auto text = s.kl({"dps", kind, "list"});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find("symmetricKey"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find(device_key), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find(kGroupKey), std::string::npos) << text.out;
  }
}

TEST(DpsCli, MalformedGroupsFileIsRefusedNamingTheField) {
  Station s;
  struct Case {
    json doc;
    std::string field;
  };
  const std::vector<Case> cases = {
      {json{{"enrollmentGroupId", "bad-1"}, {"attestation", "x509"}}, "attestation must be a JSON object"},
      {json{{"enrollmentGroupId", "bad-2"}, {"attestation", json::array({1, 2})}}, "attestation must be a JSON object"},
      {json{{"enrollmentGroupId", "bad-3"}, {"attestation", {{"type", 7}}}}, "attestation.type must be a string"},
      {json{{"enrollmentGroupId", "bad-4"}, {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", "abc"}}}},
       "attestation.symmetricKey must be a JSON object"},
      {json{{"enrollmentGroupId", "bad-5"},
            {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"keySource", 5}}}}}},
       "attestation.symmetricKey.keySource"},
      {json{{"enrollmentGroupId", 12}, {"attestation", {{"type", "none"}}}}, "enrollmentGroupId must be a string"},
      {json::array({"not an object"}), "item 0 is not a JSON object"},
      {json{{"enrollmentGroupId", "bad-6"}, {"attestation", {{"type", "none"}}}, {"customAllocationDefinition", 3}},
       "customAllocationDefinition must be a JSON object"},
      {json{{"enrollmentGroupId", "bad-7"},
            {"attestation", {{"type", "none"}}},
            {"customAllocationDefinition", {{"webhookUrl", "https://f.example/api/a?code=s3cr3tFunctionKey"}}}},
       "customAllocationDefinition.webhookUrl carries a query string"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    fs::path file = s.dir / ("bad-" + std::to_string(i) + ".json");
    tk::write_file(file, cases[i].doc.dump());
    auto r = s.kl({"dps", "group", "create", "--from", file.string()});
    EXPECT_EQ(r.exit_code, 3) << i << ": " << r.err;
    EXPECT_NE(r.err.find(file.string()), std::string::npos) << i << ": " << r.err;
    EXPECT_NE(r.err.find(cases[i].field), std::string::npos) << i << ": " << r.err;
    EXPECT_EQ(r.err.find("s3cr3tFunctionKey"), std::string::npos) << r.err;
  }
  auto st = json::parse(s.kl({"--json", "dps", "status"}).out);
  EXPECT_EQ(st["outbox"]["pending"], 0);
}

TEST(DpsCli, WebhookUrlWithAQueryIsNeverTakenFromTheCommandLine) {
  Station s;
  const std::string code = "s3cr3tFunctionKey==";
  const std::string secret_url = "http://127.0.0.1:9/api/allocate?code=" + code;
  auto literal = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy", "custom",
                       "--webhook-url", secret_url});
  EXPECT_EQ(literal.exit_code, 2) << literal.err;
  EXPECT_NE(literal.err.find("env:VAR"), std::string::npos) << literal.err;
  EXPECT_NE(literal.err.find("file:PATH"), std::string::npos) << literal.err;
  EXPECT_EQ(literal.err.find(code), std::string::npos) << literal.err;
  auto any_query = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy",
                         "custom", "--webhook-url", "https://f.example/api/a?x=1"});
  EXPECT_EQ(any_query.exit_code, 2) << any_query.err;
  auto user_info = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy",
                         "custom", "--webhook-url", "https://user:pw@f.example/api/a"});
  EXPECT_EQ(user_info.exit_code, 2) << user_info.err;
  EXPECT_EQ(user_info.err.find("user:pw"), std::string::npos) << user_info.err;
  auto not_url = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy",
                       "custom", "--webhook-url", "ftp://f.example/a"});
  EXPECT_EQ(not_url.exit_code, 2) << not_url.err;
  auto unset = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy", "custom",
                     "--webhook-url", "env:KEYLINE_TEST_UNSET_WEBHOOK"});
  EXPECT_EQ(unset.exit_code, 3) << unset.err;
  EXPECT_NE(unset.err.find("KEYLINE_TEST_UNSET_WEBHOOK"), std::string::npos) << unset.err;
  auto without_policy = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--webhook-url",
                              "https://f.example/api/a"});
  EXPECT_EQ(without_policy.exit_code, 2) << without_policy.err;
  tk::write_file(s.dir / "not-a-url", "just words\n");
  auto bad_file = s.kl({"dps", "group", "create", "hooked", "--x509-ca", "intermediate", "--allocation-policy",
                        "custom", "--webhook-url", "file:" + (s.dir / "not-a-url").string()});
  EXPECT_EQ(bad_file.exit_code, 3) << bad_file.err;
  EXPECT_EQ(bad_file.err.find("just words"), std::string::npos) << bad_file.err;
  EXPECT_EQ(json::parse(s.kl({"--json", "dps", "status"}).out)["outbox"]["pending"], 0);

  // From the environment and from a file: the URL is resolved and reaches DPS.
  auto from_env = s.kl({"dps", "group", "create", "hooked-env", "--x509-ca", "intermediate", "--allocation-policy",
                        "custom", "--webhook-url", "env:KEYLINE_TEST_WEBHOOK"},
                       {{"KEYLINE_TEST_WEBHOOK", secret_url}});
  ASSERT_EQ(from_env.exit_code, 0) << from_env.err;
  tk::write_file(s.dir / "webhook", secret_url + "\n");
  tk::write_file(s.dir / "ek", "AAAAAAAAAAAAAAAA\n");
  auto from_file = s.kl({"dps", "enrollment", "create", "hooked-file", "--tpm-ek", (s.dir / "ek").string(),
                    "--allocation-policy", "custom", "--webhook-url", "file:" + (s.dir / "webhook").string()});
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  auto plain = s.kl({"dps", "group", "create", "hooked-plain", "--x509-ca", "intermediate", "--allocation-policy",
                     "custom", "--webhook-url", "http://127.0.0.1:9/api/allocate"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  // The ledger keeps the sources, never the URL: the sync resolves them
  // when it sends (env: must be set for the sync too).
  for (auto& e : fs::directory_iterator(s.state)) {
    if (e.path().filename().string().starts_with("ledger.db")) {
      EXPECT_EQ(tk::read_file(e.path()).find(code), std::string::npos) << e.path();
    }
  }
  // Without the variable the change waits (not dead-lettered), naming the
  // source, never the URL.
  auto waiting = s.kl({"dps", "sync", "--once"});
  EXPECT_NE(waiting.exit_code, 0) << waiting.out << waiting.err;
  auto held = json::parse(s.kl({"--json", "dps", "status"}).out)["outbox"];
  EXPECT_EQ(held["dead"], 0) << held.dump();
  EXPECT_GE(held["pending"].get<int>(), 1) << held.dump();
  EXPECT_EQ(waiting.err.find(code), std::string::npos);
  auto sync = s.kl({"dps", "sync", "--once"}, {{"KEYLINE_TEST_WEBHOOK", secret_url}});
  ASSERT_EQ(sync.exit_code, 0) << sync.err << sync.out;
  EXPECT_EQ(sync.out.find(code), std::string::npos);
  EXPECT_EQ(sync.err.find(code), std::string::npos);
  auto group = s.client()->find(sd::EnrollmentKind::group, "hooked-env");
  ASSERT_TRUE(group && *group);
  EXPECT_EQ((**group).json()["customAllocationDefinition"]["webhookUrl"], secret_url);
  auto individual = s.client()->find(sd::EnrollmentKind::individual, "hooked-file");
  ASSERT_TRUE(individual && *individual);
  EXPECT_EQ((**individual).json()["customAllocationDefinition"]["webhookUrl"], secret_url);
  auto plain_group = s.client()->find(sd::EnrollmentKind::group, "hooked-plain");
  ASSERT_TRUE(plain_group && *plain_group);
  EXPECT_EQ((**plain_group).json()["customAllocationDefinition"]["webhookUrl"], "http://127.0.0.1:9/api/allocate");

  // show and list print the webhook without its query string.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"dps", "group", "show", "hooked-env"}, {"dps", "enrollment", "show", "hooked-file"},
           {"--json", "dps", "group", "list"}, {"--json", "dps", "enrollment", "list"}}) {
    auto r = s.kl(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("http://127.0.0.1:9/api/allocate"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find(code), std::string::npos) << r.out;
  }
}

// DPS answers queries without keys (as the emulator does); a service or a
// proxy that returns them still does not get them printed.
TEST(DpsCli, ListRedactsKeysAndWebhookSecretsInWhatTheServiceReturns) {
  Station s;
  const std::string device_key = "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=";
  const std::string code = "s3cr3tFunctionKey==";
  json group = {{"enrollmentGroupId", "raw-group"},
                {"attestation", {{"type", "symmetricKey"},
                                 {"symmetricKey", {{"primaryKey", kGroupKey}, {"secondaryKey", device_key}}}}},
                {"allocationPolicy", "custom"},
                {"customAllocationDefinition",
                 {{"webhookUrl", "https://f.example/api/allocate?code=" + code}, {"apiVersion", "2021-10-01"}}}};
  json individual = {{"registrationId", "raw-dev"},
                     {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}},
                     {"provisioningStatus", "enabled"}};
  // Items of an unexpected shape are printed as they are, never a crash.
  json odd = {{"registrationId", 5}, {"attestation", "symmetricKey"}, {"provisioningStatus", json::array()}};
  httplib::SSLServer raw((s.dir / "emu" / "tls" / "server.pem").c_str(),
                         (s.dir / "emu" / "tls" / "server-key.pem").c_str());
  ASSERT_TRUE(raw.is_valid());
  raw.Post("/enrollmentGroups/query", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(json::array({group}).dump(), "application/json");
  });
  raw.Post("/enrollments/query", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(json::array({individual, odd, "text"}).dump(), "application/json");
  });
  int port = raw.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread t([&] { raw.listen_after_bind(); });
  struct Stop {
    httplib::SSLServer& s;
    std::thread& t;
    ~Stop() {
      s.stop();
      t.join();
    }
  } stop{raw, t};
  std::string cs = s.emu->connection_string();
  s.point_at("HostName=localhost:" + std::to_string(port) + cs.substr(cs.find(';')));

  auto groups = s.kl({"--json", "dps", "group", "list"});
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  EXPECT_NE(groups.out.find("raw-group"), std::string::npos) << groups.out;
  EXPECT_EQ(groups.out.find(kGroupKey), std::string::npos) << groups.out;
  EXPECT_EQ(groups.out.find(device_key), std::string::npos) << groups.out;
  EXPECT_EQ(groups.out.find(code), std::string::npos) << groups.out;
  auto gdoc = json::parse(groups.out)["enrollment_groups"][0];
  EXPECT_EQ(gdoc["attestation"]["symmetricKey"], json::object());
  EXPECT_TRUE(gdoc["customAllocationDefinition"]["webhookUrl"].get<std::string>().starts_with(
      "https://f.example/api/allocate?"));

  auto enrollments = s.kl({"--json", "dps", "enrollment", "list"});
  ASSERT_EQ(enrollments.exit_code, 0) << enrollments.err;
  EXPECT_NE(enrollments.out.find("raw-dev"), std::string::npos) << enrollments.out;
  EXPECT_EQ(enrollments.out.find(device_key), std::string::npos) << enrollments.out;
  EXPECT_EQ(json::parse(enrollments.out)["enrollments"].size(), 3u);

  for (const char* kind : {"group", "enrollment"}) {
    auto text = s.kl({"dps", kind, "list"});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find(std::string("raw-") + (kind == std::string("group") ? "group" : "dev")), std::string::npos)
        << text.out;
    EXPECT_EQ(text.out.find(kGroupKey), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find(device_key), std::string::npos) << text.out;
  }
  EXPECT_NE(s.kl({"dps", "enrollment", "list"}).out.find("3 enrollment(s)"), std::string::npos);
}
