// The device side with what Keyline writes: keyline-devsim is provisioned over
// a pty with the station's DeviceSession (KEYGEN -> CSR -> `keyline ca issue`
// -> chain; DPS settings; a symmetric key from `keyline dps
// compute-device-key`), the enrollments go to the emulator through `keyline
// dps ... create` and `keyline dps sync --once`, and then the stopped device
// registers on its own with `keyline-devsim --register-with`.

#include <gtest/gtest.h>

#include <openssl/rand.h>

#include <map>

#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/dps_emulator.hpp"
#include "keyline/testkit/testkit.hpp"

namespace {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
namespace proto = keyline::station::protocol;
using keyline::Bytes;
using keyline::ByteView;
using nlohmann::json;

std::string describe(const tk::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

ByteView view(const std::string& s) { return ByteView(reinterpret_cast<const unsigned char*>(s.data()), s.size()); }

class DevsimRegisters : public ::testing::Test {
 protected:
  void SetUp() override {
    emu_ = std::make_unique<tk::DpsEmulator>(dir_ / "emu", std::vector<std::string>{"--hubs", "hub-a.example,hub-b.example"});
    env_ = {{"KEYLINE_LOG", "error"}, {"KEYLINE_TEST_DPS_CS", emu_->connection_string()}};
    auto r = tk::keyline(station(), {"ca", "init"}, env_);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    tk::write_file(station() / "keyline.toml", tk::read_file(station() / "keyline.toml") +
                                                   "\n[dps]\nconnection-string-source = \"env:KEYLINE_TEST_DPS_CS\"\n"
                                                   "id-scope = \"" + emu_->id_scope() + "\"\nca-file = \"" +
                                                   emu_->ca_cert() + "\"\n");
  }
  fs::path station() const { return dir_ / "station"; }
  fs::path device(const std::string& id) const { return dir_ / (id + ".json"); }
  tk::RunResult keyline(const std::vector<std::string>& args) { return tk::keyline(station(), args, env_); }

  // Provisions a simulated device over a pty as the station does, then stops it.
  // X.509: keygen + issued chain; otherwise the given symmetric key.
  void provision(const std::string& id, const Bytes* symmetric_key) {
    auto sim = tk::Devsim::pty(device(id));
    auto link = keyline::station::link::SerialLink::open(sim.port());
    ASSERT_TRUE(link) << link.error().message();
    keyline::station::provision::SessionOptions o;
    o.timeout = std::chrono::milliseconds(500);
    o.keygen_timeout = std::chrono::milliseconds(5000);
    keyline::station::provision::DeviceSession s(**link, o);
    if (symmetric_key) {
      auto w = s.write(proto::Slot::symmetric_key, *symmetric_key);
      ASSERT_TRUE(w) << w.error().message();
    } else {
      auto csr = s.keygen(id);
      ASSERT_TRUE(csr) << csr.error().message();
      fs::path csr_file = dir_ / (id + ".csr");
      tk::write_file(csr_file, keyline::pem_encode("CERTIFICATE REQUEST", *csr));
      fs::path chain = dir_ / (id + ".chain.pem");
      auto r = keyline({"ca", "issue", "--csr", csr_file.string(), "--chain", "--out", chain.string()});
      ASSERT_EQ(r.exit_code, 0) << describe(r);
      expect_chain_verifies(chain);
      auto w = s.write(proto::Slot::cert_chain, view(tk::read_file(chain)));
      ASSERT_TRUE(w) << w.error().message();
    }
    proto::DpsSettings dps{emu_->id_scope(), "global.azure-devices-provisioning.net", id};
    auto w = s.write(proto::Slot::dps_settings, proto::encode_dps_settings(dps));
    ASSERT_TRUE(w) << w.error().message();
    EXPECT_EQ(sim.stop(), 0) << sim.stderr_text();
  }

  // Independent check with openssl: the issued chain (leaf first) verifies
  // against the station's root.
  void expect_chain_verifies(const fs::path& chain) {
    std::string pem = tk::read_file(chain);
    const std::string end_marker = "-----END CERTIFICATE-----";
    auto end = pem.find(end_marker);
    ASSERT_NE(end, std::string::npos) << pem;
    fs::path leaf = chain;
    leaf.replace_extension(".leaf.pem");
    tk::write_file(leaf, pem.substr(0, end + end_marker.size()) + "\n");
    auto v = tk::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (station() / "root.pem").string(),
                      "-untrusted", chain.string(), leaf.string()});
    EXPECT_EQ(v.exit_code, 0) << describe(v);
    EXPECT_NE(v.out.find(": OK"), std::string::npos) << describe(v);
  }

  tk::RunResult register_device(const std::string& id) {
    return tk::run({tk::bin("keyline-devsim").string(), "--state", device(id).string(), "--register-with",
                    emu_->endpoint(), "--ca-cert", emu_->ca_cert()});
  }

  tk::TempDir dir_;
  std::unique_ptr<tk::DpsEmulator> emu_;
  std::map<std::string, std::string> env_;
};

TEST_F(DevsimRegisters, WithOnlyWhatTheStationWrote) {
  // X.509 individual enrollments from the ledger, one of them disabled.
  provision("sim-x509-1", nullptr);
  provision("sim-x509-off", nullptr);
  // A symmetric-key group; the device holds the key derived for its ID.
  unsigned char group_key[32];
  RAND_bytes(group_key, sizeof group_key);
  fs::path group_key_file = dir_ / "group.key";
  tk::write_file(group_key_file, keyline::base64_encode(group_key) + "\n");
  auto r = keyline({"dps", "compute-device-key", "--group-key-source", "file:" + group_key_file.string(),
                    "--registration-id", "sim-sym-1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto derived = keyline::base64_decode(r.out.substr(0, r.out.find_first_of("\r\n")));
  ASSERT_TRUE(derived && derived->size() == 32) << r.out;
  provision("sim-sym-1", &*derived);

  r = keyline({"dps", "enrollment", "create", "sim-x509-1"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = keyline({"dps", "enrollment", "create", "sim-x509-off", "--provisioning-status", "disabled"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = keyline({"dps", "group", "create", "sim-sym-group", "--symmetric-key-source", "file:" + group_key_file.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = keyline({"dps", "sync", "--once"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  for (std::string id : {"sim-x509-1", "sim-sym-1"}) {
    auto reg = register_device(id);
    ASSERT_EQ(reg.exit_code, 0) << id << ": " << describe(reg);
    json status = json::parse(reg.out);
    EXPECT_EQ(status.value("status", ""), "assigned") << reg.out;
    std::string hub = status["registrationState"].value("assignedHub", "");
    EXPECT_TRUE(hub == "hub-a.example" || hub == "hub-b.example") << reg.out;
    EXPECT_EQ(status["registrationState"].value("registrationId", ""), id) << reg.out;
  }
  // The group key itself is not what the device holds, and never shows up.
  EXPECT_EQ(tk::read_file(device("sim-sym-1")).find(keyline::base64_encode(group_key)), std::string::npos);

  auto off = register_device("sim-x509-off");
  EXPECT_EQ(off.exit_code, 4) << describe(off);
  EXPECT_NE(off.err.find("disabled"), std::string::npos) << describe(off);

  // A device whose flash has no DPS settings is told so, before any network call.
  auto bare = tk::Devsim::pty(device("sim-bare"));
  EXPECT_EQ(bare.stop(), 0);
  auto none = register_device("sim-bare");
  EXPECT_EQ(none.exit_code, 3) << describe(none);
  EXPECT_NE(none.err.find("no DPS settings"), std::string::npos) << describe(none);
}

}  // namespace
