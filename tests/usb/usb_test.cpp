// DeviceSession over UsbLink (libusb) against keyline-devsim emulated as a USB
// device by umockdev in the devsim process. This binary runs under
// LD_PRELOAD=libumockdev-preload.so.0 (ctest ENVIRONMENT); UMOCKDEV_DIR is
// set to the testbed dir devsim announces, before libusb starts.
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "../line/line_support.hpp"
#include "keyline/link/usb_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
using namespace keyline::station;
using namespace keyline::station::provision;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;
namespace proto = keyline::station::protocol;

namespace {

// Starts devsim on emulated USB and points this process's umockdev preload at it.
Devsim start_usb(const TempDir& dir, const std::vector<std::string>& args = {}) {
  ::unsetenv("UMOCKDEV_DIR");
  auto sim = Devsim::usb(dir / "usb.json", "1209:0001", args);
  ::setenv("UMOCKDEV_DIR", sim.umockdev_dir().c_str(), 1);
  return sim;
}

class UsbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* pre = std::getenv("LD_PRELOAD");
    ASSERT_TRUE(pre && std::string(pre).find("libumockdev-preload") != std::string::npos)
        << "run this binary under LD_PRELOAD=libumockdev-preload.so.0 (ctest does)";
  }
  void TearDown() override { ::unsetenv("UMOCKDEV_DIR"); }
};

}  // namespace

TEST_F(UsbTest, SelectorParsing) {
  auto s = link::UsbSelector::parse("1209:00aF:SN-1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->vid, 0x1209);
  EXPECT_EQ(s->pid, 0x00AF);
  EXPECT_EQ(s->serial, "SN-1");
  EXPECT_EQ(s->to_string(), "1209:00af:SN-1");
  for (const char* bad : {"1209", "12:0001", "1209:zzzz", "1209:0001:", ""}) {
    auto r = link::UsbSelector::parse(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().domain(), Domain::usage);
  }
}

TEST_F(UsbTest, FullSessionOverUsb) {
  TempDir dir;
  auto sim = start_usb(dir, {"--serial-number", "USB-0007", "--model", "usbwidget"});
  auto found = link::list_usb_devices({0x1209, 0x0001, std::nullopt});
  ASSERT_TRUE(found) << found.error().message();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(found->at(0).serial, "USB-0007");
  EXPECT_EQ(found->at(0).id(), "001/002");

  auto link = link::UsbLink::open({0x1209, 0x0001, std::string("USB-0007")});
  ASSERT_TRUE(link) << link.error().message();
  EXPECT_NE(link->get()->description().find("USB-0007"), std::string::npos);
  DeviceSession s(**link, line_test::clean_options());  // a clean link: no retries expected
  auto info = s.info();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->serial_number, "USB-0007");
  EXPECT_EQ(info->model, "usbwidget");
  auto csr = s.keygen("usbwidget-usb-0007");
  ASSERT_TRUE(csr) << csr.error().message();
  EXPECT_EQ(line_test::csr_cn(*csr), "usbwidget-usb-0007");
  const std::string chain = line_test::fake_chain_pem(4);  // several KiB: many packets
  auto d = s.write(proto::Slot::cert_chain, line_test::view(chain));
  ASSERT_TRUE(d) << d.error().message();
  auto rh = s.read_hash(proto::Slot::cert_chain);
  ASSERT_TRUE(rh);
  EXPECT_EQ(*rh, *d);
  Bytes nonce(32, 9);
  auto sig = s.challenge(nonce);
  ASSERT_TRUE(sig);
  EXPECT_TRUE(verify_challenge(line_test::csr_key(*csr).get(), nonce, *sig));
  ASSERT_TRUE(s.lock());
  auto st = s.status();
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->locked);
  EXPECT_EQ(s.stats().retries, 0u);
  EXPECT_GT(link->get()->bytes_sent(), chain.size());
}

TEST_F(UsbTest, NoMatchingDevice) {
  TempDir dir;
  auto sim = start_usb(dir, {"--serial-number", "USB-1"});
  auto wrong_serial = link::UsbLink::open({0x1209, 0x0001, std::string("OTHER")});
  ASSERT_FALSE(wrong_serial);
  EXPECT_TRUE(link::has_code(wrong_serial.error(), link::LinkErrc::not_found));
  EXPECT_NE(wrong_serial.error().message().find("1209:0001:OTHER"), std::string::npos);
  auto wrong_pid = link::UsbLink::open({0x1209, 0x0002, std::nullopt});
  ASSERT_FALSE(wrong_pid);
  EXPECT_TRUE(link::has_code(wrong_pid.error(), link::LinkErrc::not_found));
}

TEST_F(UsbTest, UnplugIsDeviceDisconnected) {
  TempDir dir;
  auto sim = start_usb(dir, {"--serial-number", "USB-2"});
  auto link = link::UsbLink::open({0x1209, 0x0001, std::nullopt});
  ASSERT_TRUE(link) << link.error().message();
  // Long timeouts: a reply that is merely slow must not pass for the unplug.
  DeviceSession s(**link, line_test::clean_options());
  ASSERT_TRUE(s.info());
  ::kill(sim.pid(), SIGUSR1);  // devsim: unplug now
  // devsim acts on the signal at its next poll; until then STATUS still works.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto r = s.status();
  while (r && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    r = s.status();
  }
  ASSERT_FALSE(r) << "STATUS still answered 10 s after the unplug";
  EXPECT_TRUE(link::is_disconnected(r.error())) << r.error().message();
  EXPECT_NE(r.error().message().find("device disconnected"), std::string::npos);
}

TEST_F(UsbTest, DisconnectDuringChainWrite) {
  TempDir dir;
  auto sim = start_usb(dir, {"--disconnect-after", "600"});
  auto link = link::UsbLink::open({0x1209, 0x0001, std::nullopt});
  ASSERT_TRUE(link) << link.error().message();
  DeviceSession s(**link, line_test::fast_options());
  ASSERT_TRUE(s.info());
  const std::string chain = line_test::fake_chain_pem(3);
  auto w = s.write(proto::Slot::cert_chain, line_test::view(chain));
  ASSERT_FALSE(w);
  EXPECT_TRUE(link::is_disconnected(w.error())) << w.error().message();
}

TEST_F(UsbTest, WatcherReportsArrivalAndRemoval) {
  TempDir dir;
  auto sim = start_usb(dir, {"--serial-number", "USB-3"});
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> events;
  auto w = link::UsbWatcher::start(
      {0x1209, 0x0001, std::nullopt},
      [&](const link::UsbDeviceInfo& d, bool arrived) {
        std::lock_guard lock(mu);
        events.emplace_back(d.serial, arrived);
      },
      std::chrono::milliseconds(50));
  ASSERT_TRUE(w) << w.error().message();
  for (int i = 0; i < 100; ++i) {
    {
      std::lock_guard lock(mu);
      if (!events.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    std::lock_guard lock(mu);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events[0].first, "USB-3");
    EXPECT_TRUE(events[0].second);
  }
  RecordProperty("hotplug", (*w)->uses_hotplug() ? "libusb" : "polling");
  ::kill(sim.pid(), SIGUSR1);  // unplug: the device leaves the (emulated) bus
  for (int i = 0; i < 150; ++i) {
    {
      std::lock_guard lock(mu);
      if (events.size() >= 2) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::lock_guard lock(mu);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].first, "USB-3");
  EXPECT_FALSE(events[1].second);
}
