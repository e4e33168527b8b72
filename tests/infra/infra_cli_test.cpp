// `keyline dps infra` end to end: a real state dir made by `keyline ca init`,
// the ARM output checked against Microsoft's schemas (tests/infra/validate_arm.py
// with Debian's python3-jsonschema), the az script run through bash, and no
// secret in any output.
//
// The az CLI cannot run here (no Azure): a stand-in named `az` records the
// arguments the script passes, after the shell has parsed them.

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "infra_support.hpp"

namespace keyline::infra_test {
namespace {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using Env = std::map<std::string, std::string>;

const Env kEnv = {{"KEYLINE_LOG", "error"},
                  {"KEYLINE_DPS_CONNECTION_STRING", kFakeConnectionString},
                  {"hubAConnectionString", kFakeConnectionString},
                  {"hubBConnectionString", kFakeConnectionString}};

std::string describe(const tk::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

class InfraCli : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = tk::keyline(state(), {"ca", "init"}, kEnv);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    config_ = tk::read_file(state() / "keyline.toml");
    write_config(dps_config());
  }
  fs::path state() const { return dir_ / "state"; }
  fs::path out() const { return dir_ / "out"; }
  void write_config(const std::string& dps) { tk::write_file(state() / "keyline.toml", config_ + dps); }
  tk::RunResult infra(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"dps", "infra", "--out", out().string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return tk::keyline(state(), args, kEnv);
  }
  tk::RunResult validate(const fs::path& arm) {
    return tk::run({"/usr/bin/python3", KEYLINE_VALIDATE_ARM, KEYLINE_ARM_SCHEMAS, arm.string()});
  }

  tk::TempDir dir_;
  std::string config_;
};

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(InfraCli, AllFormatsValidateAndCarryNoSecret) {
  auto r = infra({"--format", "all"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<std::string> rel;
  for (auto& p : files_under(out())) rel.push_back(fs::relative(p, out()).string());
  EXPECT_EQ(rel, (std::vector<std::string>{
                     "README.md", "arm/README.md", "arm/azuredeploy.json", "bicep/README.md", "bicep/main.bicep",
                     "enrollment-groups/README.md", "enrollment-groups/enrollment-groups.json",
                     "enrollment-groups/enrollment-groups.sh", "enrollment-groups/intermediate.pem",
                     "enrollment-groups/root.pem", "terraform/README.md", "terraform/main.tf"}));

  auto v = validate(out() / "arm/azuredeploy.json");
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_NE(v.out.find("valid: 3 resources"), std::string::npos) << v.out;

  for (auto& p : files_under(out())) {
    std::string text = tk::read_file(p);
    EXPECT_EQ(text.find(kFakeSecret), std::string::npos) << p;
    EXPECT_EQ(text.find("SharedAccessKey="), std::string::npos) << p;
    EXPECT_EQ(text.find("PRIVATE" " KEY"), std::string::npos) << p;
  }
  EXPECT_EQ(r.out.find(kFakeSecret), std::string::npos);
  EXPECT_EQ(r.err.find(kFakeSecret), std::string::npos);

  // The uploaded certificates are the state dir's, byte for byte.
  EXPECT_EQ(tk::read_file(out() / "enrollment-groups/root.pem"), tk::read_file(state() / "root.pem"));
  struct stat st{};
  ASSERT_EQ(::stat((out() / "enrollment-groups/enrollment-groups.sh").c_str(), &st), 0);
  EXPECT_TRUE(st.st_mode & S_IXUSR);
  std::string readme = tk::read_file(out() / "arm/README.md");
  EXPECT_NE(readme.find("az deployment group create -g RG --template-file azuredeploy.json"), std::string::npos);
  EXPECT_NE(tk::read_file(out() / "terraform/README.md").find("terraform init && terraform apply -var"), std::string::npos);

  // Same inputs, same bytes.
  std::map<std::string, std::string> first;
  for (auto& p : files_under(out())) first[p.string()] = tk::read_file(p);
  ASSERT_EQ(infra({"--format", "all"}).exit_code, 0);
  for (auto& p : files_under(out())) EXPECT_EQ(tk::read_file(p), first[p.string()]) << p;
}

TEST_F(InfraCli, TheSchemaCheckCatchesAnInvalidTemplate) {
  ASSERT_EQ(infra({"--format", "arm"}).exit_code, 0);
  auto t = nlohmann::json::parse(tk::read_file(out() / "arm/azuredeploy.json"));
  t["resources"][0]["properties"]["allocationPolicy"] = "Nearest";
  tk::write_file(dir_ / "bad1.json", t.dump());
  EXPECT_EQ(validate(dir_ / "bad1.json").exit_code, 1);
  t = nlohmann::json::parse(tk::read_file(out() / "arm/azuredeploy.json"));
  t["resources"][0]["properties"]["iotHubs"][0].erase("location");
  tk::write_file(dir_ / "bad2.json", t.dump());
  EXPECT_EQ(validate(dir_ / "bad2.json").exit_code, 1);
  t = nlohmann::json::parse(tk::read_file(out() / "arm/azuredeploy.json"));
  t["contentVersion"] = "1.0";
  tk::write_file(dir_ / "bad3.json", t.dump());
  auto r = validate(dir_ / "bad3.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("envelope"), std::string::npos) << r.err;
}

TEST_F(InfraCli, OneFormatAndAnOlderApiVersion) {
  std::string text = dps_config();
  text.replace(text.find("data-residency = true"), 21, "data-residency = false");
  write_config(text);
  auto r = infra({"--format", "bicep", "--api-version", "2021-07-01"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(fs::exists(out() / "bicep/main.bicep"));
  EXPECT_FALSE(fs::exists(out() / "arm"));
  EXPECT_FALSE(fs::exists(out() / "terraform"));
  EXPECT_TRUE(fs::exists(out() / "enrollment-groups/enrollment-groups.sh"));
  EXPECT_NE(tk::read_file(out() / "bicep/main.bicep").find("provisioningServices@2021-07-01"), std::string::npos);

  r = infra({"--format", "arm", "--api-version", "2021-07-01"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto t = nlohmann::json::parse(tk::read_file(out() / "arm/azuredeploy.json"));
  EXPECT_EQ(t["resources"][0]["apiVersion"], "2021-07-01");
  EXPECT_FALSE(t["resources"][0]["properties"].contains("enableDataResidency"));

  r = infra({"--format", "arm", "--api-version", "2020-03-01"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("--api-version must be 2022-12-12 or 2021-07-01"), std::string::npos) << r.err;
}

TEST_F(InfraCli, TheEnrollmentScriptPassesBashAndItsArguments) {
  ASSERT_EQ(infra({"--format", "arm"}).exit_code, 0);
  fs::path script = out() / "enrollment-groups/enrollment-groups.sh";
  auto syntax = tk::run({"/bin/bash", "-n", script.string()});
  EXPECT_EQ(syntax.exit_code, 0) << describe(syntax);

  // Stand-in for the Azure CLI: one argument per line, '---' after each call.
  fs::path bin = dir_ / "bin";
  fs::create_directories(bin);
  tk::write_file(bin / "az", "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\necho ---\n");
  fs::permissions(bin / "az", fs::perms::owner_all);
  auto r = tk::run({"/bin/bash", script.string()},
                   {{"PATH", bin.string() + ":/usr/bin:/bin"}, {"RESOURCE_GROUP", "rg-factory"}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<std::vector<std::string>> calls(1);
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line == "---") calls.emplace_back();
    else if (!line.starts_with("creating enrollment group")) calls.back().push_back(line);
  }
  calls.pop_back();
  ASSERT_EQ(calls.size(), 3u) << r.out;
  auto value = [](const std::vector<std::string>& call, const std::string& flag) -> std::string {
    for (std::size_t i = 0; i + 1 < call.size(); ++i)
      if (call[i] == flag) return call[i + 1];
    return "<missing " + flag + ">";
  };
  const auto& first = calls[0];
  EXPECT_EQ(std::vector<std::string>(first.begin(), first.begin() + 4),
            (std::vector<std::string>{"iot", "dps", "enrollment-group", "create"}));
  EXPECT_EQ(value(first, "--dps-name"), "factory-dps-1");
  EXPECT_EQ(value(first, "--resource-group"), "rg-factory");
  EXPECT_EQ(value(first, "--enrollment-id"), "line1-x509");
  EXPECT_EQ(tk::read_file(value(first, "--certificate-path")), tk::read_file(state() / "intermediate.pem"));
  EXPECT_EQ(nlohmann::json::parse(value(first, "--initial-twin-tags")), nlohmann::json({{"site", "O'Hare \"plant\""}}));
  EXPECT_EQ(nlohmann::json::parse(value(first, "--initial-twin-properties"))["telemetry"]["interval"], 30);
  EXPECT_EQ(value(first, "--allocation-policy"), "static");
  EXPECT_EQ(value(first, "--iot-hubs"), "hub-a.azure-devices.net");
  EXPECT_EQ(value(first, "--edge-enabled"), "false");
  EXPECT_EQ(value(calls[1], "--ca-name"), "station-1-root");
  EXPECT_EQ(value(calls[1], "--edge-enabled"), "true");
  EXPECT_EQ(value(calls[2], "--provisioning-status"), "disabled");
  EXPECT_EQ(value(calls[2], "--certificate-path"), "<missing --certificate-path>");

  auto no_rg = tk::run({"/bin/bash", script.string()}, {{"PATH", bin.string() + ":/usr/bin:/bin"}, {"RESOURCE_GROUP", ""}});
  EXPECT_NE(no_rg.exit_code, 0);
  EXPECT_NE(no_rg.err.find("set RESOURCE_GROUP"), std::string::npos) << no_rg.err;
}

TEST_F(InfraCli, BadConfigurationIsExitCodeThreeAndWritesNothing) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"allocation-weight = 1\n", "allocation-weight = 1001\n"},
      {"ip-mask = \"10.1.0.0/16\"", "ip-mask = \"10.1.0\""},
      {"attestation = \"symmetric-key\"", "attestation = \"tpm\""},
      {"connection-string-parameter = \"hubAConnectionString\"",
       "connection-string-parameter = \"" + kFakeConnectionString + "\""},
  };
  const std::vector<std::string> messages = {
      "keyline.toml: dps.instance.hubs[1].allocation-weight must be 0..1000",
      "keyline.toml: dps.instance.ip-filter-rules[0].ip-mask must be an IPv4 address",
      "keyline.toml: dps.groups[2].attestation must be one of x509-ca, symmetric-key",
      "keyline.toml: dps.instance.hubs[0].connection-string-parameter must be the NAME of a secure parameter",
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::string text = dps_config();
    text.replace(text.find(cases[i].first), cases[i].first.size(), cases[i].second);
    write_config(text);
    auto r = infra({"--format", "all"});
    EXPECT_EQ(r.exit_code, 3) << describe(r);
    EXPECT_NE(r.err.find(messages[i]), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(kFakeSecret), std::string::npos) << r.err;
    EXPECT_TRUE(files_under(out()).empty()) << cases[i].second;
  }
}

TEST_F(InfraCli, WithoutAnInstanceOrAStateItSaysWhatToDo) {
  write_config("");
  auto r = infra();
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_NE(r.err.find("no [dps.instance] section"), std::string::npos) << r.err;

  auto none = tk::keyline(dir_ / "nowhere", {"dps", "infra", "--out", out().string()}, kEnv);
  EXPECT_EQ(none.exit_code, 5) << describe(none);
  EXPECT_NE(none.err.find("keyline ca init"), std::string::npos) << none.err;

  auto usage = tk::keyline(state(), {"dps", "infra", "--format", "pulumi", "--out", out().string()}, kEnv);
  EXPECT_EQ(usage.exit_code, 2) << describe(usage);
  EXPECT_TRUE(files_under(out()).empty());
}

}  // namespace
}  // namespace keyline::infra_test
