// DeviceSession over a real pty against keyline-devsim: every message.
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <openssl/pem.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/testkit.hpp"
#include "line_support.hpp"

using namespace keyline;
using namespace keyline::station;
using namespace keyline::station::provision;
using keyline::testkit::Devsim;
using keyline::testkit::TempDir;
namespace proto = keyline::station::protocol;

// RTS/CTS is set on the port only when asked for; the port's termios are
// the tty's, so a second descriptor on the same pty sees them.
TEST(SerialLinkPty, RtsCtsIsSetOnlyWhenAsked) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "dev.json", {"--serial-number", "SN-0043", "--model", "widget"});
  for (bool rtscts : {true, false}) {
    auto l = link::SerialLink::open(sim.port(), {115200, rtscts});
    ASSERT_TRUE(l) << l.error().message();
    int fd = ::open(sim.port().c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    termios tio{};
    ASSERT_EQ(::tcgetattr(fd, &tio), 0);
    ::close(fd);
    EXPECT_EQ((tio.c_cflag & CRTSCTS) != 0, rtscts);
    EXPECT_EQ((*l)->description().find("rts/cts") != std::string::npos, rtscts) << (*l)->description();
  }
}

TEST(DeviceSessionPty, EveryMessage) {
  TempDir dir;
  auto state = dir / "dev.json";
  auto sim = Devsim::pty(state, {"--serial-number", "SN-0042", "--model", "widget"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link) << link.error().message();
  DeviceSession s(**link, line_test::clean_options());  // a clean link: no retries expected

  auto info = s.info();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->serial_number, "SN-0042");
  EXPECT_EQ(info->model, "widget");
  EXPECT_EQ(info->protocol_version, 1);
  EXPECT_TRUE(info->capabilities & proto::capability::keygen);
  EXPECT_FALSE(info->capabilities & proto::capability::tpm);
  EXPECT_EQ(info->hardware_id.size(), 16u);

  auto st = s.status();
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->locked);
  EXPECT_FALSE(st->has_device_key);
  EXPECT_EQ(st->slots_present, 0);

  // CHALLENGE before any key: typed error.
  Bytes nonce(32);
  RAND_bytes(nonce.data(), 32);
  auto early = s.challenge(nonce);
  ASSERT_FALSE(early);
  EXPECT_EQ(device_error(early.error()), proto::DeviceError::no_key);

  auto csr = s.keygen("widget-sn-0042");
  ASSERT_TRUE(csr) << csr.error().message();
  EXPECT_EQ(line_test::csr_cn(*csr), "widget-sn-0042");
  line_test::expect_openssl_req_verifies(dir, *csr);

  // The certificate chain, a symmetric key and DPS settings.
  const std::string chain = line_test::fake_chain_pem(3);
  auto d = s.write(proto::Slot::cert_chain, line_test::view(chain));
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(to_hex(*d), sha256_hex(line_test::view(chain)));
  auto again = s.write(proto::Slot::cert_chain, line_test::view(chain));  // idempotent
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *d);
  auto rh = s.read_hash(proto::Slot::cert_chain);
  ASSERT_TRUE(rh);
  EXPECT_EQ(*rh, *d);
  Bytes sym(32, 0x5A);
  ASSERT_TRUE(s.write(proto::Slot::symmetric_key, sym));
  proto::DpsSettings dps{"0ne0000ABCD", "global.azure-devices-provisioning.net", "widget-sn-0042"};
  ASSERT_TRUE(s.write(proto::Slot::dps_settings, proto::encode_dps_settings(dps)));
  auto empty = s.read_hash(proto::Slot::private_key);
  ASSERT_FALSE(empty);
  EXPECT_EQ(device_error(empty.error()), proto::DeviceError::slot_empty);
  EXPECT_NE(empty.error().message().find("slot is empty"), std::string::npos);
  // The device validates DPS settings.
  auto bad_dps = s.write(proto::Slot::dps_settings, Bytes{0, 9, 'x'});
  ASSERT_FALSE(bad_dps);
  EXPECT_EQ(device_error(bad_dps.error()), proto::DeviceError::malformed);

  // CHALLENGE verifies with the CSR's key.
  auto pub = line_test::csr_key(*csr);
  auto sig = s.challenge(nonce);
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(verify_challenge(pub.get(), nonce, *sig));
  Bytes other_nonce(32, 1);
  EXPECT_FALSE(verify_challenge(pub.get(), other_nonce, *sig));

  auto ek = s.get_ek();
  ASSERT_FALSE(ek);
  EXPECT_EQ(device_error(ek.error()), proto::DeviceError::no_tpm);

  ASSERT_TRUE(s.lock());
  ASSERT_TRUE(s.lock());  // LOCK is idempotent
  st = s.status();
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->locked);
  EXPECT_TRUE(st->has_device_key);
  EXPECT_TRUE(st->has(proto::Slot::cert_chain));
  EXPECT_TRUE(st->has(proto::Slot::symmetric_key));
  EXPECT_TRUE(st->has(proto::Slot::dps_settings));
  auto refused = s.write(proto::Slot::cert_chain, line_test::view(chain));
  ASSERT_FALSE(refused);
  EXPECT_EQ(device_error(refused.error()), proto::DeviceError::locked);
  EXPECT_NE(refused.error().message().find("device is locked"), std::string::npos);
  auto kg = s.keygen("again");
  ASSERT_FALSE(kg);
  EXPECT_EQ(device_error(kg.error()), proto::DeviceError::locked);
  EXPECT_EQ(s.stats().retries, 0u);
  EXPECT_GT(link->get()->bytes_sent(), chain.size());
  EXPECT_GT(link->get()->bytes_received(), csr->size());

  // --show: the flash as JSON, without the private key.
  link->get()->close();
  EXPECT_EQ(sim.stop(), 0);  // SIGTERM exits cleanly
  auto shown = testkit::run({testkit::bin("keyline-devsim").string(), "--state", state.string(), "--show"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  auto j = nlohmann::json::parse(shown.out);
  EXPECT_EQ(j["serial_number"], "SN-0042");
  EXPECT_EQ(j["model"], "widget");
  EXPECT_EQ(j["locked"], true);
  EXPECT_EQ(j["slots"]["cert-chain"], chain);
  EXPECT_EQ(j["slots"]["symmetric-key"], base64_encode(sym));
  EXPECT_EQ(j["slots"]["dps-settings"]["id_scope"], "0ne0000ABCD");
  EXPECT_EQ(j["slots"]["dps-settings"]["registration_id"], "widget-sn-0042");
  EXPECT_EQ(shown.out.find("PRIVATE"), std::string::npos);

  // The flash persists: a restarted device is still locked and keeps its key.
  auto sim2 = Devsim::pty(state);
  auto link2 = link::SerialLink::open(sim2.port());
  ASSERT_TRUE(link2);
  DeviceSession s2(**link2, line_test::fast_options());
  auto st2 = s2.status();
  ASSERT_TRUE(st2);
  EXPECT_TRUE(st2->locked);
  auto sig2 = s2.challenge(nonce);
  ASSERT_TRUE(sig2);
  EXPECT_TRUE(verify_challenge(pub.get(), nonce, *sig2));
}

TEST(DeviceSessionPty, StationKeyWrittenToTheDeviceSignsChallenges) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "dev.json");
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  auto key = testkit::ec_key();
  unsigned char* der = nullptr;
  int n = i2d_PrivateKey(key.get(), &der);
  ASSERT_GT(n, 0);
  Bytes pkcs8(der, der + n);
  OPENSSL_clear_free(der, static_cast<std::size_t>(n));
  ASSERT_TRUE(s.write(proto::Slot::private_key, pkcs8));
  Bytes nonce(16, 3);
  auto sig = s.challenge(nonce);
  ASSERT_TRUE(sig);
  EXPECT_TRUE(verify_challenge(key.get(), nonce, *sig));
}
