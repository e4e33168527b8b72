// The device fault flags, the raw protocol's idempotency, and port errors.
#include <gtest/gtest.h>

#include <chrono>

#include "keyline/link/serial_link.hpp"
#include "keyline/protocol/frame.hpp"
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

namespace {

void many_small_requests(DeviceSession& s, int n) {
  for (int i = 0; i < n; ++i) {
    auto info = s.info();
    ASSERT_TRUE(info) << i << ": " << info.error().message();
    EXPECT_EQ(info->serial_number, "SN-F");
    auto st = s.status();
    ASSERT_TRUE(st) << i << ": " << st.error().message();
  }
}

// Raw request/response on a link, for protocol-level checks.
std::vector<proto::Frame> exchange(link::Link& l, const proto::Frame& f, std::size_t want = 1) {
  Bytes wire;
  EXPECT_TRUE(proto::encode_frame(f, wire));
  EXPECT_TRUE(l.send(wire));
  proto::FrameDecoder d;
  std::vector<proto::Decoded> out;
  std::vector<proto::Frame> frames;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  unsigned char buf[4096];
  while (frames.size() < want) {
    auto n = l.receive(buf, deadline);
    if (!n || *n == 0) break;
    out.clear();
    d.feed(std::span<const unsigned char>(buf, *n), out);
    for (auto& x : out)
      if (x.error == proto::FrameError::none) frames.push_back(x.frame);
  }
  return frames;
}

}  // namespace

TEST(DeviceFaults, CorruptedBytesAreRetried) {
  TempDir dir;
  auto sim =
      Devsim::pty(dir / "d.json", {"--serial-number", "SN-F", "--corrupt-rate", "0.004", "--seed", "11"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  many_small_requests(s, 40);
  EXPECT_GT(s.stats().retries, 0u);
  EXPECT_GT(s.stats().bad_frames + s.stats().retries, 0u);
}

TEST(DeviceFaults, DroppedBytesAreRetried) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-F", "--drop-rate", "0.004", "--seed", "5"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  many_small_requests(s, 40);
  EXPECT_GT(s.stats().retries, 0u);
}

TEST(DeviceFaults, GarbageBeforeAFrameIsSkipped) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--serial-number", "SN-F"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  Bytes noise = {0x13, 0x37, 0x00, 0xFF, 0x42, 0x99, 0x01};
  ASSERT_TRUE(link->get()->send(noise));
  DeviceSession s(**link, line_test::clean_options());
  auto info = s.info();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(s.stats().retries, 0u);
}

TEST(DeviceFaults, DisconnectDuringChainWrite) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--disconnect-after", "700"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  ASSERT_TRUE(s.info());
  const std::string chain = line_test::fake_chain_pem(3);
  ASSERT_GT(chain.size(), 1000u);
  auto w = s.write(proto::Slot::cert_chain, line_test::view(chain));
  ASSERT_FALSE(w);
  EXPECT_TRUE(link::is_disconnected(w.error())) << w.error().message();
  EXPECT_NE(w.error().message().find("device disconnected"), std::string::npos) << w.error().message();
  EXPECT_EQ(w.error().domain(), Domain::device);
  EXPECT_EQ(sim.wait(), 0);
}

TEST(DeviceFaults, SlowKeygenTimesOut) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--keygen-delay-ms", "1500"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  auto o = line_test::fast_options();
  o.keygen_timeout = std::chrono::milliseconds(250);
  o.max_attempts = 2;
  DeviceSession s(**link, o);
  // The device answers only after 1500 ms: had the 250 ms timeout not fired,
  // KEYGEN would have succeeded. The error and the one retry prove it, with no
  // wall-clock bound that a loaded machine could miss.
  auto csr = s.keygen("slow-device");
  ASSERT_FALSE(csr);
  EXPECT_TRUE(has_code(csr.error(), SessionErrc::timeout)) << csr.error().message();
  EXPECT_NE(csr.error().message().find("did not answer KEYGEN"), std::string::npos);
  EXPECT_EQ(s.stats().retries, 1u);
}

TEST(DeviceFaults, WrongCnIsVisibleToTheCaller) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--wrong-cn"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  auto csr = s.keygen("widget-1");
  ASSERT_TRUE(csr);
  EXPECT_NE(line_test::csr_cn(*csr), "widget-1");
  EXPECT_NE(line_test::csr_cn(*csr), "(unparsable CSR)");
}

TEST(DeviceFaults, BadChallengeDoesNotVerify) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--bad-challenge"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  auto csr = s.keygen("widget-1");
  ASSERT_TRUE(csr);
  Bytes nonce(32, 0x11);
  auto sig = s.challenge(nonce);
  ASSERT_TRUE(sig);
  auto v = verify_challenge(line_test::csr_key(*csr).get(), nonce, *sig);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().domain(), Domain::policy);
  EXPECT_NE(v.error().message().find("does not verify"), std::string::npos);
}

TEST(DeviceFaults, RefusedLockIsATypedError) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json", {"--refuse-lock"});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  auto r = s.lock();
  ASSERT_FALSE(r);
  EXPECT_EQ(device_error(r.error()), proto::DeviceError::refused);
  EXPECT_NE(r.error().message().find("device refused LOCK"), std::string::npos) << r.error().message();
  EXPECT_EQ(exit_code_for(r.error()), ExitCode::device);
  auto st = s.status();
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->locked);
}

TEST(DeviceProtocol, RepeatedFrameIsAnsweredFromTheCache) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  proto::Frame f;
  f.type = static_cast<std::uint8_t>(proto::MsgType::keygen);
  f.seq = 77;
  f.payload = proto::encode_keygen_request("cached-1");
  auto a = exchange(**link, f);
  auto b = exchange(**link, f);  // a retry: same seq, type, payload
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].seq, 77);
  EXPECT_EQ(a[0].payload, b[0].payload);  // the same CSR: no second key
  f.seq = 78;                             // a new request: a new key
  auto c = exchange(**link, f);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_NE(c[0].payload, a[0].payload);
}

TEST(DeviceProtocol, OtherVersionsAndUnknownTypesAreRefused) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  proto::Frame f;
  f.version = 2;
  f.type = 0x01;
  f.seq = 1;
  auto r = exchange(**link, f);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].type, 0x7F);
  auto e = proto::decode_error(r[0].payload);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, proto::DeviceError::unsupported_version);
  f.version = 1;
  f.type = 0x33;
  f.seq = 2;
  r = exchange(**link, f);
  ASSERT_EQ(r.size(), 1u);
  e = proto::decode_error(r[0].payload);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, proto::DeviceError::unknown_message);
}

TEST(SerialLinkErrors, PortAlreadyInUse) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  auto first = link::SerialLink::open(sim.port());
  ASSERT_TRUE(first);
  auto second = link::SerialLink::open(sim.port());
  ASSERT_FALSE(second);
  EXPECT_TRUE(link::has_code(second.error(), link::LinkErrc::busy));
  EXPECT_NE(second.error().message().find("already in use"), std::string::npos) << second.error().message();
  EXPECT_NE(second.error().message().find(sim.port()), std::string::npos);
  // Closing the first frees the port.
  first->get()->close();
  EXPECT_TRUE(link::SerialLink::open(sim.port()));
}

TEST(SerialLinkErrors, MissingPortAndBadBaud) {
  auto none = link::SerialLink::open("/dev/keyline-no-such-port");
  ASSERT_FALSE(none);
  EXPECT_TRUE(link::has_code(none.error(), link::LinkErrc::not_found));
  EXPECT_NE(none.error().message().find("plugged in"), std::string::npos);
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  link::SerialOptions o;
  o.baud = 12345;
  auto odd = link::SerialLink::open(sim.port(), o);
  ASSERT_FALSE(odd);
  EXPECT_NE(odd.error().message().find("unsupported baud rate 12345"), std::string::npos);
  auto plain = link::SerialLink::open((dir / "d.json").string());
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message().find("not a terminal"), std::string::npos) << plain.error().message();
}

TEST(SerialLinkErrors, DeviceGoneWhileWaiting) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  sim.stop();
  unsigned char buf[16];
  auto r = link->get()->receive(buf, std::chrono::steady_clock::now() + std::chrono::seconds(2));
  ASSERT_FALSE(r);
  EXPECT_TRUE(link::is_disconnected(r.error())) << r.error().message();
}

TEST(SerialDiscovery, GlobFindsPtys) {
  TempDir dir;
  auto sim = Devsim::pty(dir / "d.json");
  auto ports = link::discover_serial_ports({"/dev/pts/[0-9]*"});
  EXPECT_NE(std::find(ports.begin(), ports.end(), sim.port()), ports.end());
  EXPECT_TRUE(link::discover_serial_ports({"/dev/keyline-none-*"}).empty());
}

TEST(DevsimCli, ClearErrorsForBadArguments) {
  TempDir dir;
  const std::string devsim = testkit::bin("keyline-devsim").string();
  auto missing = testkit::run({devsim, "--state", (dir / "none.json").string(), "--show"});
  EXPECT_EQ(missing.exit_code, 3);
  EXPECT_NE(missing.err.find("no device state at"), std::string::npos) << missing.err;
  auto no_mode = testkit::run({devsim, "--state", (dir / "d.json").string()});
  EXPECT_EQ(no_mode.exit_code, 2);
  EXPECT_NE(no_mode.err.find("choose exactly one of --pty"), std::string::npos) << no_mode.err;
  auto bad_tpm = testkit::run({devsim, "--state", (dir / "d.json").string(), "--pty", "--tpm", "nonsense"});
  EXPECT_EQ(bad_tpm.exit_code, 2);
  EXPECT_NE(bad_tpm.err.find("--tpm wants a TCTI"), std::string::npos) << bad_tpm.err;
  testkit::write_file(dir / "broken.json", "{not json");
  auto broken = testkit::run({devsim, "--state", (dir / "broken.json").string(), "--show"});
  EXPECT_EQ(broken.exit_code, 3);
  EXPECT_NE(broken.err.find("is not JSON"), std::string::npos) << broken.err;
}
