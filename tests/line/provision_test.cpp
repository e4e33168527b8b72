// keyline device provision over ptys against keyline-devsim: every mode, the
// certificate the device ends up with, and what the ledger and audit trail say.
#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include "keyline/core/hex.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "provision_support.hpp"

using namespace prov_test;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;

namespace {

std::string hmac_b64(const std::string& key_b64, const std::string& msg) {
  auto key = keyline::base64_decode(key_b64);
  unsigned char out[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key->data(), static_cast<int>(key->size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), out, &n);
  return keyline::base64_encode(std::span<const unsigned char>(out, n));
}

// The chain the device holds verifies against the station's root, and its CN is `regid`.
void expect_device_certificate(const TempDir& dir, const fs::path& state, const nlohmann::json& shown,
                               const std::string& regid) {
  ASSERT_TRUE(shown["slots"].contains("cert-chain")) << shown.dump();
  std::string chain = shown["slots"]["cert-chain"];
  auto end = chain.find("-----END CERTIFICATE-----");
  ASSERT_NE(end, std::string::npos);
  std::string leaf = chain.substr(0, end + 26);
  keyline::testkit::write_file(dir / "leaf.pem", leaf);
  keyline::testkit::write_file(dir / "untrusted.pem", chain.substr(end + 26));
  auto v = keyline::testkit::run({"/usr/bin/openssl", "verify", "-CAfile", (state / "root.pem").string(), "-untrusted",
                                  (dir / "untrusted.pem").string(), (dir / "leaf.pem").string()});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  auto s = keyline::testkit::run({"/usr/bin/openssl", "x509", "-in", (dir / "leaf.pem").string(), "-noout", "-subject",
                                  "-nameopt", "sep_multiline"});
  EXPECT_NE(s.out.find("CN=" + regid), std::string::npos) << s.out;
}

struct ModeCase {
  const char* mode;
  bool x509;
};

class EveryMode : public ::testing::TestWithParam<ModeCase> {};

TEST_P(EveryMode, ProvisionsRecordsAndLocks) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-M1", "--model", "Gauge"});
  auto r = provision(state, sim.port(), {"--mode", GetParam().mode});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["state"], "done");
  EXPECT_EQ(doc["registration_id"], "gauge-sn-m1");
  EXPECT_EQ(doc["mode"], GetParam().mode);
  auto shown = show(dir / "d.json");
  EXPECT_TRUE(shown["locked"].get<bool>());
  EXPECT_EQ(shown["slots"]["dps-settings"]["registration_id"], "gauge-sn-m1");
  EXPECT_EQ(scalar(state, "SELECT state || ',' || locked || ',' || mode FROM devices"),
            std::string("done,1,") + GetParam().mode);
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM provisioning_steps WHERE outcome = 'ok'"),
            std::to_string(doc["steps"].size()));
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM audit_events WHERE type LIKE 'device.%' AND operator = 'line-tester'"),
            std::to_string(doc["steps"].size()));
  std::string mode = GetParam().mode;
  if (GetParam().x509) {
    EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates WHERE status = 'active' AND device_serial = 'SN-M1' "
                            "AND operator = 'line-tester'"),
              "1");
    EXPECT_EQ(scalar(state, "SELECT serial FROM certificates"), doc["certificate_serial"]);
    expect_device_certificate(dir, state, shown, "gauge-sn-m1");
    EXPECT_EQ(scalar(state, "SELECT count(*) FROM audit_events WHERE type = 'certificate.issued'"), "1");
  } else {
    EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates"), "0");
    std::string expected = hmac_b64(mode == "symmetric-group" ? kGroupKeyB64 : kMasterB64, "gauge-sn-m1");
    EXPECT_EQ(shown["slots"]["symmetric-key"], expected);
    // The derived key is never recorded: not in the ledger, not in the output.
    EXPECT_EQ(scalar(state, "SELECT count(*) FROM audit_events WHERE body LIKE '%" + expected.substr(0, 16) + "%'"), "0");
    EXPECT_EQ(r.out.find(expected.substr(0, 16)), std::string::npos);
  }

  // The DPS enrollment the device needs is queued (no key in it).
  std::string payload = scalar(state, "SELECT payload FROM enrollment_outbox WHERE registration_id = 'gauge-sn-m1'");
  if (mode == "symmetric-group") {
    EXPECT_EQ(scalar(state, "SELECT count(*) FROM enrollment_outbox"), "0");
  } else {
    EXPECT_EQ(scalar(state, "SELECT kind || ',' || operation || ',' || state FROM enrollment_outbox"),
              "individual,create,pending");
    auto e = nlohmann::json::parse(payload);
    if (GetParam().x509)
      EXPECT_TRUE(e["attestation"]["x509"]["clientCertificates"].contains("primary")) << payload;
    else
      EXPECT_EQ(e["attestation"]["symmetricKey"]["keySource"], "hsm:master-1") << payload;
  }

  // Plugged in again: already done, nothing issued twice.
  auto again = provision(state, sim.port(), {"--mode", GetParam().mode});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["state"], "already done");
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates"), GetParam().x509 ? "1" : "0");
}

INSTANTIATE_TEST_SUITE_P(Line, EveryMode,
                         ::testing::Values(ModeCase{"x509-device-key", true}, ModeCase{"x509-station-key", true},
                                           ModeCase{"symmetric-individual", false},
                                           ModeCase{"symmetric-group", false}),
                         [](const auto& info) {
                           std::string n = info.param.mode;
                           std::erase(n, '-');
                           return n;
                         });

TEST(Provision, TpmDeviceRecordsItsEndorsementKey) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  keyline::testkit::Swtpm tpm;
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-T", "--model", "Meter", "--tpm", tpm.tcti()});
  auto r = provision(state, sim.port(), {"--mode", "tpm"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["state"], "done");
  EXPECT_GT(scalar(state, "SELECT length(endorsement_key) FROM devices WHERE registration_id = 'meter-sn-t'").size(), 0u);
  EXPECT_NE(scalar(state, "SELECT endorsement_key FROM devices"), "");
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM provisioning_steps WHERE step = 'get_ek' AND outcome = 'ok'"), "1");
  EXPECT_TRUE(show(dir / "d.json")["locked"].get<bool>());
  auto e = nlohmann::json::parse(scalar(state, "SELECT payload FROM enrollment_outbox"));
  EXPECT_EQ(e["attestation"]["type"], "tpm");
  EXPECT_EQ(e["attestation"]["tpm"]["endorsementKey"], scalar(state, "SELECT endorsement_key FROM devices"));
}

TEST(Provision, AGroupEnrollmentCoversX509DevicesSoNoneIsQueued) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  keyline::testkit::write_file(state / "keyline.toml",
                               keyline::testkit::read_file(state / "keyline.toml") + "enrollment = \"group\"\n");
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-G", "--model", "M"});
  auto r = provision(state, sim.port());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM enrollment_outbox"), "0");
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates"), "1");
}

TEST(Provision, TpmModeOnADeviceWithoutTpmFailsAndIsRecorded) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-NT", "--model", "Meter"});
  auto r = provision(state, sim.port(), {"--mode", "tpm"});
  EXPECT_EQ(r.exit_code, 10) << r.err;
  EXPECT_NE(r.err.find("TPM"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(state, "SELECT state FROM devices"), "failed");
  EXPECT_NE(scalar(state, "SELECT last_error FROM devices").find("TPM"), std::string::npos);
}

}  // namespace
