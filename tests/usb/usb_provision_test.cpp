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
  EXPECT_TRUE(nlohmann::json::parse(shown.out)["locked"].get<bool>()) << shown.out;
}
