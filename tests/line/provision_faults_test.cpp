// The provisioning fault table: each fault's exit code, message and ledger
// state (devices, provisioning_steps, certificates), and resumption.
#include <gtest/gtest.h>
#include <openssl/x509.h>

#include "keyline/core/hex.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/testkit/devsim.hpp"
#include "provision_support.hpp"

using namespace prov_test;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;

namespace {

struct Station {
  TempDir dir;
  fs::path state = dir / "state";
  Station() { init_station(state); }
};

TEST(ProvisionFaults, CorruptedFramesAndGarbageAreRetriedAndTheDeviceIsDone) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-C", "--model", "M", "--corrupt-rate", "0.0005",
                                             "--seed", "3"});
  auto r = provision(st.state, sim.port());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT state FROM devices"), "done");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates"), "1");
}

TEST(ProvisionFaults, DisconnectDuringChainWriteResumesWithoutReissuing) {
  Station st;
  {
    auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-D", "--model", "M", "--disconnect-after", "700"});
    auto r = provision(st.state, sim.port());
    EXPECT_EQ(r.exit_code, 10) << r.err;
    EXPECT_NE(r.err.find("disconnected"), std::string::npos) << r.err;
  }
  EXPECT_EQ(scalar(st.state, "SELECT state FROM devices"), "failed");
  EXPECT_EQ(scalar(st.state, "SELECT step FROM provisioning_steps WHERE outcome = 'failed'"), "write_chain");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates"), "1");
  std::string serial = scalar(st.state, "SELECT serial FROM certificates");
  // Plugged in again (the same flash): the certificate is re-sent, not re-issued.
  auto sim = Devsim::pty(st.dir / "d.json");
  auto r = provision(st.state, sim.port());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["certificate_serial"], serial);
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates"), "1");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM provisioning_steps WHERE step = 'resume'"), "1");
  EXPECT_EQ(scalar(st.state, "SELECT state || locked FROM devices"), "done1");
}

TEST(ProvisionFaults, ADeviceWhoseKeyChangedGetsANewCertificateAndTheOldIsSuperseded) {
  Station st;
  {
    auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-K", "--model", "M", "--disconnect-after", "700"});
    EXPECT_EQ(provision(st.state, sim.port()).exit_code, 10);
  }
  std::string old_serial = scalar(st.state, "SELECT serial FROM certificates");
  // Replace the device's key in its flash, as a board swap or a factory reset would.
  auto flash = nlohmann::json::parse(keyline::testkit::read_file(st.dir / "d.json"));
  auto key = keyline::testkit::ec_key();
  PKCS8_PRIV_KEY_INFO* info = EVP_PKEY2PKCS8(key.get());
  unsigned char* der = nullptr;
  int n = i2d_PKCS8_PRIV_KEY_INFO(info, &der);
  PKCS8_PRIV_KEY_INFO_free(info);
  flash["device_key_pkcs8"] = keyline::base64_encode(std::span<const unsigned char>(der, static_cast<std::size_t>(n)));
  OPENSSL_free(der);
  keyline::testkit::write_file(st.dir / "d.json", flash.dump());
  auto sim = Devsim::pty(st.dir / "d.json");
  auto r = provision(st.state, sim.port());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_NE(doc["certificate_serial"], old_serial);
  EXPECT_TRUE(doc["reissued"].get<bool>());
  EXPECT_EQ(scalar(st.state, "SELECT status FROM certificates WHERE serial = '" + old_serial + "'"), "superseded");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates WHERE status = 'active'"), "1");
}

TEST(ProvisionFaults, TimeoutDuringKeygenIsRecorded) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-T", "--model", "M", "--keygen-delay-ms", "2500"});
  auto r = provision(st.state, sim.port(), {"--keygen-timeout-ms", "200", "--baud", "4000000"});
  EXPECT_EQ(r.exit_code, 10) << r.err;
  EXPECT_NE(r.err.find("KEYGEN"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT state FROM devices"), "failed");
  EXPECT_EQ(scalar(st.state, "SELECT step FROM provisioning_steps WHERE outcome = 'failed'"), "keygen");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates"), "0");
}

// [provision] rtscts = true turns RTS/CTS on for every command; --no-rtscts
// turns it off for one. The timeout's error names the port as it was opened.
TEST(ProvisionFaults, NoRtsctsOverridesTheConfigForOneCommand) {
  Station st;
  // init_station's keyline.toml ends inside [provision].
  keyline::testkit::write_file(st.state / "keyline.toml",
                               keyline::testkit::read_file(st.state / "keyline.toml") + "rtscts = true\n");
  for (bool off : {false, true}) {
    std::string serial = off ? "SN-OFF" : "SN-ON";
    auto sim = Devsim::pty(st.dir / (serial + ".json"),
                           {"--serial-number", serial, "--model", "M", "--keygen-delay-ms", "2500"});
    std::vector<std::string> extra{"--keygen-timeout-ms", "200", "--baud", "4000000"};
    if (off) extra.push_back("--no-rtscts");
    auto r = provision(st.state, sim.port(), extra);
    EXPECT_EQ(r.exit_code, 10) << r.err;
    EXPECT_NE(r.err.find("did not answer KEYGEN"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("rts/cts") != std::string::npos, !off) << r.err;
  }
  auto both = provision(st.state, "/dev/null", {"--rtscts", "--no-rtscts"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
}

TEST(ProvisionFaults, AWrongCnCsrIsRefusedAndRecorded) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-W", "--model", "M", "--wrong-cn"});
  auto r = provision(st.state, sim.port());
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("wrong-m-sn-w"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT state FROM devices"), "failed");
  EXPECT_EQ(scalar(st.state, "SELECT step FROM provisioning_steps WHERE outcome = 'failed'"), "csr");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM certificates"), "0");
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM audit_events WHERE type = 'device.csr'"), "1");
  EXPECT_FALSE(show(st.dir / "d.json")["locked"].get<bool>());
}

TEST(ProvisionFaults, ABadChallengeSignatureIsRefusedAndTheDeviceIsNotLocked) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-B", "--model", "M", "--bad-challenge"});
  auto r = provision(st.state, sim.port());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("CHALLENGE"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT state || locked FROM devices"), "failed0");
  EXPECT_EQ(scalar(st.state, "SELECT step FROM provisioning_steps WHERE outcome = 'failed'"), "challenge");
  EXPECT_FALSE(show(st.dir / "d.json")["locked"].get<bool>());
}

TEST(ProvisionFaults, ADeviceThatRefusesLockIsFailed) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-L", "--model", "M", "--refuse-lock"});
  auto r = provision(st.state, sim.port());
  EXPECT_EQ(r.exit_code, 10) << r.err;
  EXPECT_NE(r.err.find("refused"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT state || locked FROM devices"), "failed0");
  EXPECT_EQ(scalar(st.state, "SELECT step FROM provisioning_steps WHERE outcome = 'failed'"), "lock");
}

TEST(ProvisionFaults, APortAlreadyInUseIsADeviceProblem) {
  Station st;
  auto sim = Devsim::pty(st.dir / "d.json", {"--serial-number", "SN-U", "--model", "M"});
  auto held = keyline::station::link::SerialLink::open(sim.port());
  ASSERT_TRUE(held);
  auto r = provision(st.state, sim.port());
  EXPECT_EQ(r.exit_code, 10) << r.err;
  EXPECT_NE(r.err.find("in use"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(st.state, "SELECT count(*) FROM devices"), "0");
}

TEST(ProvisionFaults, BadModeAndMissingPortAreUsageErrors) {
  Station st;
  auto r = keyline::testkit::keyline(st.state, {"device", "provision", "--port", "/dev/null", "--mode", "x"}, kEnv);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("known: x509-device-key"), std::string::npos) << r.err;
  auto r2 = keyline::testkit::keyline(st.state, {"device", "provision"}, kEnv);
  EXPECT_EQ(r2.exit_code, 2) << r2.err;
  EXPECT_NE(r2.err.find("--port"), std::string::npos) << r2.err;
}

}  // namespace
