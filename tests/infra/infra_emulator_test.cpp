// keyline-dps-emulator --from-template: the ARM template `keyline dps infra`
// writes configures the emulator's linked hubs, weights, allocation policy and
// verified CA. Devices with certificates from `keyline ca issue` register over
// TLS (keyline-dps-register) through a group that references the verified CA
// by name; a device from another station's CA is refused.

#include <gtest/gtest.h>

#include <fstream>
#include <future>
#include <map>

#include <nlohmann/json.hpp>
#include <openssl/pem.h>

#include "keyline/core/clock.hpp"
#include "keyline/station/dps/client.hpp"
#include "keyline/station/dps/sas.hpp"
#include "keyline/testkit/dps_emulator.hpp"
#include "keyline/testkit/testkit.hpp"

namespace {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
namespace sd = keyline::station::dps;
using nlohmann::json;

const std::map<std::string, std::string> kEnv = {{"KEYLINE_LOG", "error"}};

const char* kInstance = R"(
[dps.instance]
name = "line-dps"
location = "westeurope"
allocation-policy = "Hashed"
ca-certificates = ["intermediate"]

[[dps.instance.hubs]]
host-name = "hub-light.azure-devices.net"
location = "westeurope"
allocation-weight = 1
apply-allocation-policy = true
connection-string-parameter = "hubLightConnectionString"

[[dps.instance.hubs]]
host-name = "hub-heavy.azure-devices.net"
location = "westeurope"
allocation-weight = 3
apply-allocation-policy = true
connection-string-parameter = "hubHeavyConnectionString"
)";

std::string describe(const tk::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// The first two PEM certificates of a chain file (leaf + intermediate).
std::string leaf_and_intermediate(const std::string& chain) {
  const std::string begin = "-----BEGIN CERTIFICATE-----";
  auto second = chain.find(begin, 1);
  auto third = second == std::string::npos ? std::string::npos : chain.find(begin, second + 1);
  return chain.substr(0, third);
}

class EmulatorFromTemplate : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = tk::keyline(station(), {"ca", "init"}, kEnv);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    tk::write_file(station() / "keyline.toml", tk::read_file(station() / "keyline.toml") + kInstance);
    r = tk::keyline(station(), {"dps", "infra", "--format", "arm", "--out", (dir_ / "infra").string()}, kEnv);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
  }
  fs::path station() const { return dir_ / "station"; }
  fs::path arm() const { return dir_ / "infra" / "arm" / "azuredeploy.json"; }

  // Issues a certificate for `id` from `state`'s CA; writes DIR/id.chain.pem and DIR/id.key.pem.
  void issue(const fs::path& state, const std::string& id) {
    auto key = tk::ec_key();
    fs::path csr = dir_ / (id + ".csr");
    tk::write_file(csr, tk::csr_pem(key.get(), id));
    fs::path full = dir_ / (id + ".full.pem");
    auto r = tk::keyline(state, {"ca", "issue", "--csr", csr.string(), "--chain", "--out", full.string()}, kEnv);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    tk::write_file(dir_ / (id + ".chain.pem"), leaf_and_intermediate(tk::read_file(full)));
    keyline::BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* p = nullptr;
    long n = BIO_get_mem_data(bio.get(), &p);
    tk::write_file(dir_ / (id + ".key.pem"), std::string(p, static_cast<std::size_t>(n)));
  }

  tk::RunResult register_device(const tk::DpsEmulator& emu, const std::string& id) {
    return tk::run({tk::bin("keyline-dps-register").string(), "--endpoint", emu.endpoint(), "--id-scope",
                    emu.id_scope(), "--registration-id", id, "--cert-chain", (dir_ / (id + ".chain.pem")).string(),
                    "--key", (dir_ / (id + ".key.pem")).string(), "--ca-cert", emu.ca_cert()});
  }

  tk::TempDir dir_;
};

TEST_F(EmulatorFromTemplate, HubsWeightsAndVerifiedCaComeFromTheTemplate) {
  // The certificate resource's name is what a group's caReferences names.
  json doc = json::parse(tk::read_file(arm()));
  std::string ca_name;
  for (auto& res : doc["resources"])
    if (res.value("type", "") == "Microsoft.Devices/provisioningServices/certificates") {
      std::string n = res.value("name", "");
      ca_name = n.substr(n.find('/') + 1);
    }
  ASSERT_FALSE(ca_name.empty()) << "the template uploads no CA certificate";

  tk::DpsEmulator emu(dir_ / "emu", {"--from-template", arm().string()});
  EXPECT_EQ(emu.info()["hubs"], json({"hub-light.azure-devices.net", "hub-heavy.azure-devices.net"}));

  // A group that relies on the template's verified CA (no certificate uploaded here).
  keyline::SystemClock clock;
  sd::ClientOptions o;
  o.http.ca_file = emu.ca_cert();
  auto cs = sd::parse_connection_string(emu.connection_string());
  ASSERT_TRUE(cs) << cs.error().message();
  sd::DpsClient client(std::move(*cs), clock, o);
  auto put = client.put(sd::Enrollment::group("line-devices").x509_ca_references(ca_name));
  ASSERT_TRUE(put) << put.error().message();

  constexpr int kDevices = 40;
  for (int i = 0; i < kDevices; ++i) issue(station(), "tpl-device-" + std::to_string(i));
  // Registrations wait for DPS's poll interval: run them ten at a time.
  std::map<std::string, int> per_hub;
  for (int base = 0; base < kDevices; base += 10) {
    std::vector<std::future<tk::RunResult>> running;
    for (int i = base; i < base + 10; ++i)
      running.push_back(std::async(std::launch::async, [&, i] {
        return register_device(emu, "tpl-device-" + std::to_string(i));
      }));
    for (auto& f : running) {
      auto r = f.get();
      ASSERT_EQ(r.exit_code, 0) << describe(r);
      json status = json::parse(r.out);
      ASSERT_EQ(status.value("status", ""), "assigned") << r.out;
      per_hub[status["registrationState"].value("assignedHub", "")]++;
    }
  }
  // (a) only the template's hubs; (b) both used, the weight-3 hub more often.
  ASSERT_EQ(per_hub.size(), 2u) << "hubs used: " << json(per_hub).dump();
  EXPECT_EQ(per_hub["hub-light.azure-devices.net"] + per_hub["hub-heavy.azure-devices.net"], kDevices);
  EXPECT_GT(per_hub["hub-heavy.azure-devices.net"], per_hub["hub-light.azure-devices.net"]) << json(per_hub).dump();
  EXPECT_GT(per_hub["hub-light.azure-devices.net"], 0);

  // (c) a certificate from another station's CA chains to nothing enrolled.
  fs::path other = dir_ / "other-station";
  auto r = tk::keyline(other, {"ca", "init"}, kEnv);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  issue(other, "stranger-1");
  r = register_device(emu, "stranger-1");
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("no enrollment group and no verified CA"), std::string::npos) << describe(r);
}

TEST_F(EmulatorFromTemplate, BadTemplatesAreRefusedClearly) {
  auto start = [&](const fs::path& tpl) {
    return tk::run({tk::bin("keyline-dps-emulator").string(), "--state", (dir_ / "emu").string(), "--from-template",
                    tpl.string()});
  };
  fs::path malformed = dir_ / "malformed.json";
  tk::write_file(malformed, "{\"resources\": [");
  auto r = start(malformed);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("malformed.json"), std::string::npos) << describe(r);
  EXPECT_TRUE(r.out.empty()) << "no contract line on failure: " << r.out;

  fs::path no_dps = dir_ / "no-dps.json";
  json doc = json::parse(tk::read_file(arm()));
  json kept = json::array();
  for (auto& res : doc["resources"])
    if (res.value("type", "") != "Microsoft.Devices/provisioningServices") kept.push_back(res);
  doc["resources"] = kept;
  tk::write_file(no_dps, doc.dump(2));
  r = start(no_dps);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("provisioningServices"), std::string::npos) << describe(r);

  r = start(dir_ / "missing.json");
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("missing.json"), std::string::npos) << describe(r);
}

}  // namespace
