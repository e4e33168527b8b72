// [station] id in keyline.toml is the station `ca init` recorded (in the
// ledger and in the audit certificate's name). Edited afterwards, every
// command that uses the configuration refuses up front, says which ids
// differ and where, and changes nothing; restored, everything works again.
#include "cli_support.hpp"

namespace keyline::station_id_test {
namespace {

using namespace keyline::cli_test;

void set_station_id(const fs::path& state, const std::string& from, const std::string& to) {
  std::string cfg = tk::read_file(state / "keyline.toml");
  std::string line = "id = \"" + from + "\"";
  auto at = cfg.find(line);
  if (at == std::string::npos) throw std::runtime_error("no '" + line + "' in keyline.toml");
  cfg.replace(at, line.size(), "id = \"" + to + "\"");
  tk::write_file(state / "keyline.toml", cfg);
}

TEST(StationId, AnEditedIdIsRefusedUpFrontAndChangesNothing) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp, {"--station-id", "line-1"});
  std::string serial = issue(state, write_csr(tmp / "a.csr", "sid-dev-1"), tmp / "a.pem")["serial"];
  fs::path work = tmp / "work";
  fs::create_directory(work);
  write_csr(work / "b.csr", "sid-dev-2");
  set_station_id(state, "line-1", "line-2");

  // One command of each kind that reads keyline.toml (they all load it
  // through one function, which checks the id).
  const std::vector<std::vector<std::string>> commands = {
      {"ca", "issue", "--csr", (work / "b.csr").string(), "--out", (work / "b.pem").string()},
      {"ca", "revoke", "--serial", serial},
      {"ca", "batch", "--generate", "--count", "1", "--id-template", "sid-{seq}", "--plain-keys", "--out",
       (work / "batch").string()},
      {"audit", "export", "--out", (work / "audit.jsonl").string()},
      {"audit", "verify", "--ledger"},
      {"hsm", "secret", "generate", "--label", "sid-group"},
      {"dps", "enrollment", "create", "sid-dev-3", "--symmetric-key-source", "file:" + (work / "k").string()},
      {"dps", "infra", "--out", (work / "infra").string()},
      {"device", "provision", "--port", (work / "no-such-port").string()},
  };

  DirState before = capture(tmp.path());
  std::string audit_before = audit_types(state);
  for (const auto& args : commands) {
    SCOPED_TRACE(join(args));
    tk::RunResult r = kl(state, args);
    EXPECT_EQ(r.exit_code, 5) << describe(r);
    // What differs, where, and what to do.
    for (const std::string& m :
         {std::string("\"line-2\""), std::string("\"line-1\""), (state / "keyline.toml").string(),
          std::string("ledger"), std::string("restore"), std::string("ca init")})
      EXPECT_TRUE(contains(r.err, m)) << "expected '" << m << "' in: " << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(changes_since(before, tmp.path()), "") << "a refused command must change nothing";
    EXPECT_EQ(audit_types(state), audit_before);
  }

  // Restored, the station works again and its exports verify.
  set_station_id(state, "line-2", "line-1");
  kl_ok(state, {"audit", "export", "--out", (work / "audit.jsonl").string()});
  tk::RunResult v = kl(state, {"audit", "verify", (work / "audit.jsonl").string()});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_TRUE(contains(v.out, "line-1")) << v.out;
}

TEST(StationId, CommandsThatDoNotUseTheConfigurationStillRead) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp, {"--station-id", "line-1"});
  std::string serial = issue(state, write_csr(tmp / "a.csr", "sid-dev-1"), tmp / "a.pem")["serial"];
  set_station_id(state, "line-1", "line-2");
  // The ledger alone answers these; the station in a report is the ledger's.
  tk::RunResult list = kl(state, {"ledger", "certificates"});
  EXPECT_EQ(list.exit_code, 0) << describe(list);
  EXPECT_TRUE(contains(list.out, serial)) << list.out;
  tk::RunResult report = kl(state, {"report", "devices", "--format", "jsonl"});
  EXPECT_EQ(report.exit_code, 0) << describe(report);
  EXPECT_TRUE(contains(report.out, "\"station\":\"line-1\"")) << report.out;
}

}  // namespace
}  // namespace keyline::station_id_test
