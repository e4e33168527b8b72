// TPM attestation end to end: a keyline-devsim with its own swtpm is
// provisioned in `tpm` mode by `keyline device provision` (GET_EK, DPS
// settings, a queued TPM individual enrollment), `keyline dps sync --once`
// creates the enrollment in the emulator, and the stopped device registers on
// its own with `keyline-devsim --register-with --tpm` (challenge, identity key
// loaded into its TPM, SAS signed there). Refusals: a disabled enrollment,
// another TPM than the enrolled one, an unknown registration ID.

#include <gtest/gtest.h>

#include <openssl/hmac.h>
#include <sqlite3.h>

#include <ctime>
#include <map>

#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/station/dps/http.hpp"
#include "keyline/station/dps/sas.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/dps_emulator.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "keyline/testkit/testkit.hpp"

namespace {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
namespace proto = keyline::station::protocol;
namespace sd = keyline::station::dps;
using nlohmann::json;

std::string describe(const tk::RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// The emulator's stored TPM identity of a registration ID (test-side read of its SQLite state).
json stored_identity(const fs::path& emu_state, const std::string& regid) {
  sqlite3* db = nullptr;
  json out;
  if (sqlite3_open_v2((emu_state / "emulator.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);  // the running emulator may hold a lock
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT doc FROM tpm_identities WHERE id = ?", -1, &s, nullptr) == SQLITE_OK) {
      sqlite3_bind_text(s, 1, regid.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(s) == SQLITE_ROW)
        out = json::parse(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return out;
}

class TpmRegistration : public ::testing::Test {
 protected:
  void SetUp() override { start_emulator(); }

  void start_emulator() {
    emu_.reset();
    emu_ = std::make_unique<tk::DpsEmulator>(
        dir_ / "emu", std::vector<std::string>{"--hubs", "hub-a.example,hub-b.example"});
    env_ = {{"KEYLINE_LOG", "error"},
            {"KEYLINE_OPERATOR", "line-tester"},
            {"KEYLINE_TEST_DPS_CS", emu_->connection_string()}};
    if (fs::exists(station())) return;
    auto r = tk::keyline(station(), {"ca", "init"}, env_);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    tk::write_file(
        station() / "keyline.toml",
        tk::read_file(station() / "keyline.toml") +
            "\n[provision]\nmode = \"tpm\"\nregistration_id_template = \"{model}-{serial}\"\nid_scope = \"" +
            emu_->id_scope() +
            "\"\ntimeout_ms = 400\n"
            "\n[dps]\nconnection-string-source = \"env:KEYLINE_TEST_DPS_CS\"\nid-scope = \"" +
            emu_->id_scope() + "\"\nca-file = \"" + emu_->ca_cert() + "\"\n");
  }
  fs::path station() const { return dir_ / "station"; }
  fs::path device(const std::string& serial) const { return dir_ / (serial + ".json"); }
  tk::RunResult keyline(const std::vector<std::string>& args) { return tk::keyline(station(), args, env_); }

  // `keyline device provision --mode tpm` on a devsim with `tpm`; the device is stopped afterwards.
  void provision(const std::string& serial, tk::Swtpm& tpm) {
    auto sim =
        tk::Devsim::pty(device(serial), {"--serial-number", serial, "--model", "Meter", "--tpm", tpm.tcti()});
    auto r = keyline({"--json", "device", "provision", "--port", sim.port(), "--mode", "tpm"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(json::parse(r.out).value("state", ""), "done") << r.out;
    EXPECT_EQ(sim.stop(), 0) << sim.stderr_text();
  }

  tk::RunResult register_device(const std::string& serial, tk::Swtpm& tpm) {
    return tk::run({tk::bin("keyline-devsim").string(), "--state", device(serial).string(), "--register-with",
                    emu_->endpoint(), "--ca-cert", emu_->ca_cert(), "--tpm", tpm.tcti()});
  }

  tk::TempDir dir_;
  std::unique_ptr<tk::DpsEmulator> emu_;
  std::map<std::string, std::string> env_;
};

TEST_F(TpmRegistration, AProvisionedTpmDeviceRegistersWithItsOwnTpm) {
  tk::Swtpm tpm;
  provision("SN-T1", tpm);
  auto r = keyline({"dps", "sync", "--once"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);

  auto reg = register_device("SN-T1", tpm);
  ASSERT_EQ(reg.exit_code, 0) << describe(reg);
  json status = json::parse(reg.out);
  EXPECT_EQ(status.value("status", ""), "assigned") << reg.out;
  const json& st = status["registrationState"];
  EXPECT_EQ(st.value("registrationId", ""), "meter-sn-t1") << reg.out;
  EXPECT_EQ(st.value("deviceId", ""), "meter-sn-t1") << reg.out;
  std::string hub = st.value("assignedHub", "");
  EXPECT_TRUE(hub == "hub-a.example" || hub == "hub-b.example") << reg.out;
  ASSERT_TRUE(st.contains("tpm")) << reg.out;
  EXPECT_FALSE(st["tpm"].value("authenticationKey", "").empty()) << reg.out;

  // The emulator kept the identity key; it shows up nowhere the device prints.
  json id = stored_identity(dir_ / "emu", "meter-sn-t1");
  std::string key_b64 = id.value("key", "");
  ASSERT_FALSE(key_b64.empty());
  EXPECT_EQ(reg.out.find(key_b64), std::string::npos);
  EXPECT_EQ(reg.err.find(key_b64), std::string::npos);
  EXPECT_EQ(st["tpm"].value("authenticationKey", ""), id.value("blob", ""));

  // After a restart the emulator still knows the key: a status lookup signed with it is answered.
  ASSERT_EQ(emu_->stop(), 0);
  start_emulator();
  auto key = keyline::base64_decode(key_b64);
  ASSERT_TRUE(key);
  auto token = sd::make_sas_token(emu_->id_scope() + "/registrations/meter-sn-t1", *key,
                                  static_cast<std::int64_t>(std::time(nullptr)) + 600, "registration");
  ASSERT_TRUE(token);
  sd::HttpOptions http;
  http.ca_file = emu_->ca_cert();
  sd::HttpTransport t(http);
  auto got = t.request("POST",
                       "https://" + emu_->endpoint() + "/" + emu_->id_scope() +
                           "/registrations/meter-sn-t1?api-version=2021-10-01",
                       {{"Authorization", *token}, {"Content-Type", "application/json"}},
                       R"({"registrationId":"meter-sn-t1"})");
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->status, 200) << got->body;
  EXPECT_EQ(json::parse(got->body).value("status", ""), "assigned") << got->body;

  // Registering again works too (a new challenge, a new key).
  auto again = register_device("SN-T1", tpm);
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(json::parse(again.out)["registrationState"].value("substatus", ""),
            "reprovisionedToInitialAssignment")
      << again.out;
  EXPECT_NE(stored_identity(dir_ / "emu", "meter-sn-t1").value("key", ""), key_b64);
  // The device leaves no session loaded in its TPM (swtpm has no resource
  // manager and holds only a few): registering again and again keeps working.
  for (int i = 0; i < 3; ++i) {
    auto more = register_device("SN-T1", tpm);
    ASSERT_EQ(more.exit_code, 0) << "registration " << i + 3 << ": " << describe(more);
  }
}

TEST_F(TpmRegistration, AnotherTpmThanTheEnrolledOneIsRefused) {
  tk::Swtpm tpm, intruder;
  provision("SN-T2", tpm);
  auto r = keyline({"dps", "sync", "--once"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto reg = register_device("SN-T2", intruder);
  EXPECT_EQ(reg.exit_code, 4) << describe(reg);
  EXPECT_NE(reg.err.find("401002"), std::string::npos) << describe(reg);
  EXPECT_NE(reg.err.find("endorsement key is not the one enrolled"), std::string::npos) << describe(reg);
  EXPECT_TRUE(stored_identity(dir_ / "emu", "meter-sn-t2").is_null());  // no challenge was issued
}

TEST_F(TpmRegistration, DisabledAndUnknownEnrollmentsAreRefused) {
  // Written by hand rather than by `device provision`: DPS settings over the
  // link, the EK read with GET_EK and enrolled disabled with --tpm-ek.
  tk::Swtpm tpm;
  {
    auto sim = tk::Devsim::pty(device("SN-T3"), {"--tpm", tpm.tcti()});
    auto link = keyline::station::link::SerialLink::open(sim.port());
    ASSERT_TRUE(link) << link.error().message();
    keyline::station::provision::SessionOptions o;
    o.timeout = std::chrono::milliseconds(500);
    keyline::station::provision::DeviceSession s(**link, o);
    auto ek = s.get_ek();
    ASSERT_TRUE(ek) << ek.error().message();
    tk::write_file(dir_ / "ek.b64", keyline::base64_encode(*ek) + "\n");
    auto w = s.write(
        proto::Slot::dps_settings,
        proto::encode_dps_settings({emu_->id_scope(), "global.azure-devices-provisioning.net", "meter-off"}));
    ASSERT_TRUE(w) << w.error().message();
    EXPECT_EQ(sim.stop(), 0) << sim.stderr_text();
  }
  auto r = keyline({"dps", "enrollment", "create", "meter-off", "--tpm-ek", (dir_ / "ek.b64").string(),
                    "--provisioning-status", "disabled"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = keyline({"dps", "sync", "--once"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto off = register_device("SN-T3", tpm);
  EXPECT_EQ(off.exit_code, 4) << describe(off);
  EXPECT_NE(off.err.find("disabled"), std::string::npos) << describe(off);
  EXPECT_EQ(json::parse(off.out, nullptr, false).value("status", ""), "disabled") << off.out;

  // No enrollment at all for the ID: 404 404201 on the first request.
  r = keyline({"dps", "enrollment", "delete", "meter-off"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  r = keyline({"dps", "sync", "--once"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto unknown = register_device("SN-T3", tpm);
  EXPECT_EQ(unknown.exit_code, 4) << describe(unknown);
  EXPECT_NE(unknown.err.find("HTTP 404, errorCode 404201"), std::string::npos) << describe(unknown);
}

}  // namespace
