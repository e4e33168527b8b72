// keyline line run --once: several devices on several ptys at once.
#include <gtest/gtest.h>

#include <csignal>
#include <sstream>
#include <thread>

#include "keyline/testkit/devsim.hpp"
#include "provision_support.hpp"

using namespace prov_test;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;

namespace {

// The certificate chain a device holds verifies with openssl against the
// station's root, with strict X.509 checks.
void expect_line_device_chain_verifies(const fs::path& work, const fs::path& state, const fs::path& device_state) {
  auto shown = show(device_state);
  ASSERT_TRUE(shown["slots"].contains("cert-chain")) << shown.dump();
  std::string chain = shown["slots"]["cert-chain"];
  const std::string end_marker = "-----END CERTIFICATE-----";
  auto end = chain.find(end_marker);
  ASSERT_NE(end, std::string::npos) << chain;
  fs::path leaf = work / (device_state.stem().string() + "-leaf.pem");
  fs::path rest = work / (device_state.stem().string() + "-chain.pem");
  keyline::testkit::write_file(leaf, chain.substr(0, end + end_marker.size()) + "\n");
  keyline::testkit::write_file(rest, chain);
  auto v = keyline::testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                                  "-untrusted", rest.string(), leaf.string()});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find(": OK"), std::string::npos) << v.out;
}

}  // namespace

TEST(LineRun, ThreeDevicesOnThreePortsInMixedModes) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto a = Devsim::pty(dir / "a.json", {"--serial-number", "A1", "--model", "M"});
  auto b = Devsim::pty(dir / "b.json", {"--serial-number", "B1", "--model", "M"});
  auto c = Devsim::pty(dir / "c.json", {"--serial-number", "C1", "--model", "M", "--refuse-lock"});
  auto r = keyline::testkit::keyline(state,
                                     {"--json", "line", "run", "--once", "--port", a.port(),
                                      "--port", b.port() + ",mode=symmetric-group", "--port", c.port()},
                                     kEnv);
  EXPECT_EQ(r.exit_code, 10) << r.err << r.out;  // one device failed; the others were done
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["done"], 2);
  EXPECT_EQ(doc["failed"], 1);
  EXPECT_EQ(scalar(state, "SELECT group_concat(registration_id || ':' || mode || ':' || state, ' ') FROM "
                          "(SELECT * FROM devices ORDER BY registration_id)"),
            "m-a1:x509-device-key:done m-b1:symmetric-group:done m-c1:x509-device-key:failed");
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates"), "2");
  EXPECT_TRUE(show(dir / "a.json")["locked"].get<bool>());
  EXPECT_TRUE(show(dir / "b.json")["locked"].get<bool>());
  // Independent check of an issued certificate: the X.509 device's chain.
  expect_line_device_chain_verifies(dir.path(), state, dir / "a.json");
  // The device report shows each certificate's DPS enrollment, queued by the line.
  auto rep = keyline::testkit::keyline(state, {"report", "devices", "--format", "jsonl"}, kEnv);
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  std::istringstream lines(rep.out);
  int seen = 0;
  for (std::string l; std::getline(lines, l);) {
    auto d = nlohmann::json::parse(l);
    if (d["registration_id"] != "m-a1") continue;
    ++seen;
    EXPECT_EQ(d["device_serial"], "A1");
    EXPECT_EQ(d["enrollment"], "individual create pending");
  }
  EXPECT_EQ(seen, 1);
}

TEST(LineRun, NoPortIsAUsageError) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto r = keyline::testkit::keyline(state, {"line", "run", "--once"}, kEnv);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--port"), std::string::npos) << r.err;
}

// Ctrl-C while a device is in KEYGEN: the step in flight finishes and is
// recorded, the line stops before the next one (exit 8), the device row says
// interrupted, nothing was issued; plugged in again, the device completes.
TEST(LineRun, CtrlCFinishesTheStepInFlightAndTheDeviceResumes) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "INT1", "--model", "M", "--keygen-delay-ms", "1500"});
  std::vector<std::string> argv{keyline::testkit::bin("keyline").string(), "--state", state.string(), "line", "run",
                                "--port", sim.port()};
  keyline::testkit::Child line(argv, kEnv);
  // Wait until KEYGEN is in flight: the line has recorded INFO and the
  // device has received KEYGEN and is in its 1.5 s key generation. A signal
  // before KEYGEN was sent would stop the job before it, and there would be
  // no KEYGEN step to finish.
  bool info_done = false;
  bool in_keygen = false;
  for (int i = 0; i < 1500 && !in_keygen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!info_done)
      info_done =
          scalar(state, "SELECT count(*) FROM provisioning_steps WHERE step = 'info' AND outcome = 'ok'") == "1";
    in_keygen = info_done && sim.stderr_text().find("KEYGEN received") != std::string::npos;
  }
  ASSERT_TRUE(info_done) << "the line never recorded the device's INFO step";
  ASSERT_TRUE(in_keygen) << "the device never started its KEYGEN";
  line.signal(SIGINT);
  EXPECT_EQ(line.wait(), 8);
  EXPECT_EQ(scalar(state, "SELECT outcome FROM provisioning_steps WHERE step = 'keygen'"), "ok");
  EXPECT_EQ(scalar(state, "SELECT state FROM devices"), "failed");
  EXPECT_NE(scalar(state, "SELECT last_error FROM devices").find("interrupted"), std::string::npos);
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates"), "0");
  EXPECT_FALSE(show(dir / "d.json")["locked"].get<bool>());

  auto again = keyline::testkit::keyline(state, {"--json", "line", "run", "--once", "--port", sim.port()}, kEnv);
  EXPECT_EQ(again.exit_code, 0) << again.err << again.out;
  EXPECT_EQ(scalar(state, "SELECT state FROM devices"), "done");
  EXPECT_EQ(scalar(state, "SELECT count(*) FROM certificates WHERE status = 'active'"), "1");
  EXPECT_TRUE(show(dir / "d.json")["locked"].get<bool>());
}
