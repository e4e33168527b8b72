// Device protocol v1 typed messages: round trips and bounds checks.
#include <gtest/gtest.h>

#include "keyline/protocol/messages.hpp"

using namespace keyline;
using namespace keyline::station::protocol;

TEST(Messages, InfoRoundTrip) {
  Info i;
  i.capabilities = capability::keygen | capability::tpm;
  i.serial_number = "SN-0001";
  i.model = "widget";
  i.firmware_version = "2.1.0";
  i.hardware_id = {0xDE, 0xAD, 0x00, 0x01};
  auto back = decode_info(encode_info(i));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->protocol_version, 1);
  EXPECT_EQ(back->capabilities, i.capabilities);
  EXPECT_EQ(back->serial_number, i.serial_number);
  EXPECT_EQ(back->model, i.model);
  EXPECT_EQ(back->firmware_version, i.firmware_version);
  EXPECT_EQ(back->hardware_id, i.hardware_id);
  // Every truncation is an input error, never a crash or over-read.
  Bytes full = encode_info(i);
  for (std::size_t n = 0; n < full.size(); ++n) {
    auto r = decode_info(ByteView(full).first(n));
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.error().domain(), Domain::input);
  }
  full.push_back(0);
  EXPECT_FALSE(decode_info(full));  // trailing byte
  Info bad = i;
  bad.serial_number = "";
  EXPECT_FALSE(decode_info(encode_info(bad)));
  bad.serial_number = "tab\there";
  auto r = decode_info(encode_info(bad));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("serial_number"), std::string::npos);
}

TEST(Messages, KeygenWriteSlotChallenge) {
  auto cn = decode_keygen_request(encode_keygen_request("widget-0001"));
  ASSERT_TRUE(cn);
  EXPECT_EQ(*cn, "widget-0001");
  EXPECT_FALSE(decode_keygen_request(Bytes{}));
  EXPECT_FALSE(decode_keygen_request(Bytes{5, 'a', 'b'}));

  Bytes data = {1, 2, 3, 0, 4};
  auto w = decode_write_request(encode_write_request(Slot::cert_chain, data));
  ASSERT_TRUE(w);
  EXPECT_EQ(w->slot, 1);
  EXPECT_EQ(w->data, data);
  EXPECT_FALSE(decode_write_request(Bytes{}));

  auto s = decode_slot_request(encode_slot_request(Slot::dps_settings));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, 4);
  EXPECT_FALSE(decode_slot_request(Bytes{4, 4}));

  Bytes nonce(32, 7);
  auto n = decode_challenge_request(encode_challenge_request(nonce));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, nonce);
  EXPECT_FALSE(decode_challenge_request(Bytes(15, 1)));
  EXPECT_FALSE(decode_challenge_request(Bytes(65, 1)));
  Bytes m = challenge_message(nonce);
  EXPECT_EQ(std::string(m.begin(), m.begin() + 20), "KEYLINE-CHALLENGE-V1");
  EXPECT_EQ(m.size(), 52u);
}

TEST(Messages, StatusDigestError) {
  DeviceStatus st;
  st.locked = true;
  st.slots_present = (1 << 1) | (1 << 4);
  auto back = decode_status(encode_status(st));
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->locked);
  EXPECT_FALSE(back->has_device_key);
  EXPECT_TRUE(back->has(Slot::cert_chain));
  EXPECT_FALSE(back->has(Slot::private_key));
  EXPECT_FALSE(decode_status(Bytes{2, 0, 0}));
  EXPECT_FALSE(decode_status(Bytes{1, 0}));

  Digest d{};
  d[0] = 0xAB;
  d[31] = 0xCD;
  auto dd = decode_digest(encode_digest(d));
  ASSERT_TRUE(dd);
  EXPECT_EQ(*dd, d);
  EXPECT_FALSE(decode_digest(Bytes(31, 0)));

  auto e = decode_error(encode_error({DeviceError::locked, "closed\nnow"}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, DeviceError::locked);
  EXPECT_EQ(e->text, "closed?now");  // control characters never reach logs
  EXPECT_FALSE(decode_error(Bytes{0, 4, 9, 'x'}));
}

TEST(Messages, DpsSettings) {
  DpsSettings s{"0ne00000001", "global.azure-devices-provisioning.net", "widget-0001"};
  auto back = decode_dps_settings(encode_dps_settings(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->id_scope, s.id_scope);
  EXPECT_EQ(back->global_endpoint, s.global_endpoint);
  EXPECT_EQ(back->registration_id, s.registration_id);
  Bytes enc = encode_dps_settings(s);
  for (std::size_t n = 0; n < enc.size(); ++n) EXPECT_FALSE(decode_dps_settings(ByteView(enc).first(n))) << n;
}

TEST(Messages, Names) {
  EXPECT_EQ(to_string(MsgType::read_hash), "READ_HASH");
  EXPECT_EQ(response_type(MsgType::info), 0x81);
  EXPECT_TRUE(is_request_type(0x08));
  EXPECT_FALSE(is_request_type(0x7F));
  EXPECT_EQ(slot_from_name("dps-settings"), Slot::dps_settings);
  EXPECT_FALSE(slot_from_byte(0));
  EXPECT_FALSE(slot_from_byte(5));
}
