// GET_EK from a devsim with its own swtpm.
#include <gtest/gtest.h>

#include "keyline/link/serial_link.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/devsim.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "line_support.hpp"

using namespace keyline;
using namespace keyline::station;
using namespace keyline::station::provision;
namespace proto = keyline::station::protocol;

TEST(DeviceTpm, GetEkReturnsTheEndorsementKeyPublicArea) {
  testkit::Swtpm tpm;
  testkit::TempDir dir;
  auto sim = testkit::Devsim::pty(dir / "d.json", {"--tpm", tpm.tcti()});
  auto link = link::SerialLink::open(sim.port());
  ASSERT_TRUE(link);
  DeviceSession s(**link, line_test::fast_options());
  auto info = s.info();
  ASSERT_TRUE(info);
  EXPECT_TRUE(info->capabilities & proto::capability::tpm);
  auto ek = s.get_ek();
  ASSERT_TRUE(ek) << ek.error().message();
  // TPM2B_PUBLIC: size:u16, then TPMT_PUBLIC: type (ECC 0x0023), nameAlg (SHA-256 0x000B), ...
  ASSERT_GT(ek->size(), 64u);
  EXPECT_EQ(((*ek)[0] << 8) | (*ek)[1], static_cast<int>(ek->size() - 2));
  EXPECT_EQ(((*ek)[2] << 8) | (*ek)[3], 0x0023);
  EXPECT_EQ(((*ek)[4] << 8) | (*ek)[5], 0x000B);
  // The EK is a primary key: derived from the TPM's seed, the same every time.
  auto again = s.get_ek();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *ek);
}
