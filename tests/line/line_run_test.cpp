// keyline line run --once: several devices on several ptys at once.
#include <gtest/gtest.h>

#include "keyline/testkit/devsim.hpp"
#include "provision_support.hpp"

using namespace prov_test;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;

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
}

TEST(LineRun, NoPortIsAUsageError) {
  TempDir dir;
  auto state = dir / "state";
  init_station(state);
  auto r = keyline::testkit::keyline(state, {"line", "run", "--once"}, kEnv);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--port"), std::string::npos) << r.err;
}
