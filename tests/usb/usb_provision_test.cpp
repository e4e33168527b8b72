// keyline device provision over USB: keyline-devsim as an emulated USB
// device (umockdev), the keyline program run with the same UMOCKDEV_DIR.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/testkit.hpp"

using keyline::testkit::Devsim;
using keyline::testkit::TempDir;

TEST(UsbProvision, ADeviceOnUsbIsProvisionedAndLocked) {
  TempDir dir;
  auto state = dir / "state";
  std::map<std::string, std::string> env{{"KEYLINE_LOG", "error"}, {"KEYLINE_OPERATOR", "usb-tester"}};
  auto init = keyline::testkit::keyline(state, {"ca", "init"}, env);
  ASSERT_EQ(init.exit_code, 0) << init.err;
  ::unsetenv("UMOCKDEV_DIR");
  auto sim = Devsim::usb(dir / "usb.json", "1209:0001", {"--serial-number", "USB-1", "--model", "Hub"});
  env["UMOCKDEV_DIR"] = sim.umockdev_dir();
  auto r = keyline::testkit::keyline(state, {"--json", "device", "provision", "--usb", "1209:0001"}, env);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["state"], "done");
  EXPECT_EQ(doc["registration_id"], "hub-usb-1");
  EXPECT_EQ(doc["certificate_serial"].get<std::string>().size(), 32u);
  auto shown = keyline::testkit::run(
      {keyline::testkit::bin("keyline-devsim").string(), "--state", (dir / "usb.json").string(), "--show"});
  auto device = nlohmann::json::parse(shown.out);
  EXPECT_TRUE(device["locked"].get<bool>()) << shown.out;

  // Independent check: the chain the device received verifies with openssl
  // against the station's root (leaf first, then the intermediate).
  ASSERT_TRUE(device["slots"].contains("cert-chain")) << shown.out;
  std::string chain = device["slots"]["cert-chain"];
  const std::string end_marker = "-----END CERTIFICATE-----";
  auto end = chain.find(end_marker);
  ASSERT_NE(end, std::string::npos) << chain;
  keyline::testkit::write_file(dir / "leaf.pem", chain.substr(0, end + end_marker.size()) + "\n");
  keyline::testkit::write_file(dir / "chain.pem", chain);
  auto v = keyline::testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                                  "-untrusted", (dir / "chain.pem").string(), (dir / "leaf.pem").string()});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find(": OK"), std::string::npos) << v.out;
}
