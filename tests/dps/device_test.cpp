// Device registration against the emulator: symmetric keys (individual and
// group-derived), X.509 (individual and via a group's signing certificate),
// allocation, reprovisioning, and the refusals.

#include <gtest/gtest.h>

#include <httplib.h>
#include <openssl/pem.h>

#include <thread>
#include <openssl/rand.h>

#include "keyline/dps_device/register.hpp"
#include "keyline/station/dps/client.hpp"
#include "keyline/testkit/dps_emulator.hpp"

using namespace keyline;
using namespace keyline::station::dps;
using nlohmann::json;

namespace {

struct Cert {
  EvpPkeyPtr key;
  X509Ptr cert;
};

Cert make_cert(const std::string& cn, const Cert* issuer, bool ca) {
  Cert c{testkit::ec_key(), X509Ptr(X509_new())};
  X509* x = c.cert.get();
  X509_set_version(x, 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BignumPtr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x));
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert.get()) : X509_get_subject_name(x));
  X509_set_pubkey(x, c.key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer->cert.get() : x, x, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ca) {
    ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_ext_key_usage, "clientAuth");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(x, issuer ? issuer->key.get() : c.key.get(), EVP_sha256());
  return c;
}

std::string key_pem(EVP_PKEY* k) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  long n = BIO_get_mem_data(bio.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

class DeviceRegistration : public ::testing::Test {
 protected:
  void SetUp() override {
    emu_ = std::make_unique<testkit::DpsEmulator>(dir_ / "emu", std::vector<std::string>{"--hubs", "hub-a.example,hub-b.example"});
    ClientOptions o;
    o.http.ca_file = emu_->ca_cert();
    client_ = std::make_unique<DpsClient>(*parse_connection_string(emu_->connection_string()), clock_, o);
  }
  dps_device::RegistrationRequest request(const std::string& id) {
    dps_device::RegistrationRequest r;
    r.endpoint = emu_->endpoint();
    r.id_scope = emu_->id_scope();
    r.registration_id = id;
    r.ca_file = emu_->ca_cert();
    return r;
  }
  dps_device::RegistrationRequest with_key(const std::string& id, const std::string& key) {
    auto r = request(id);
    r.symmetric_key = SecretString(key);
    return r;
  }
  dps_device::RegistrationRequest with_cert(const std::string& id, const Cert& leaf, const std::vector<const Cert*>& chain) {
    auto r = request(id);
    std::string pem = to_pem(leaf.cert.get());
    for (auto* c : chain) pem += to_pem(c->cert.get());
    r.cert_chain_file = (dir_ / (id + ".chain.pem")).string();
    r.key_file = (dir_ / (id + ".key.pem")).string();
    testkit::write_file(r.cert_chain_file, pem);
    testkit::write_file(r.key_file, key_pem(leaf.key.get()));
    return r;
  }
  testkit::TempDir dir_;
  SystemClock clock_;
  std::unique_ptr<testkit::DpsEmulator> emu_;
  std::unique_ptr<DpsClient> client_;
};

const char* kKey1 = "c3ltbWV0cmljLWtleS1vbmUtMzItYnl0ZXMtbG9uZyE=";
const char* kKey2 = "c3ltbWV0cmljLWtleS10d28tMzItYnl0ZXMtbG9uZyE=";

}  // namespace

TEST_F(DeviceRegistration, SymmetricIndividualThenReprovision) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("sym-1").symmetric_key(kKey1, kKey2).device_id("dev-sym-1")
                                         .initial_twin({{"tags", {{"line", "L1"}}}}))));
  auto s = dps_device::register_device(with_key("sym-1", kKey2));  // the secondary key works too
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)["status"], "assigned");
  auto& st = (*s)["registrationState"];
  EXPECT_EQ(st["deviceId"], "dev-sym-1");
  EXPECT_TRUE(st["assignedHub"] == "hub-a.example" || st["assignedHub"] == "hub-b.example");
  EXPECT_EQ(st["substatus"], "initialAssignment");
  EXPECT_EQ(st["initialTwin"]["tags"]["line"], "L1");
  auto again = dps_device::register_device(with_key("sym-1", kKey1));
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)["registrationState"]["substatus"], "reprovisionedToInitialAssignment");
  auto rs = client_->registration_state("sym-1");
  ASSERT_TRUE(rs);
  EXPECT_EQ((*rs)["status"], "assigned");
  auto wrong = dps_device::register_device(with_key("sym-1", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ=="));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().native_code(), 401002);
  EXPECT_NE(wrong.error().message().find("wrong key"), std::string::npos);
}

TEST_F(DeviceRegistration, SymmetricGroupNeedsTheDerivedKey) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::group("sym-group").symmetric_key(kKey1, kKey2))));
  auto derived = derive_device_key(std::string_view(kKey1), "line-dev-7");
  ASSERT_TRUE(derived);
  auto s = dps_device::register_device(with_key("line-dev-7", *derived));
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)["status"], "assigned");
  EXPECT_EQ((*s)["registrationState"]["symmetricKey"]["enrollmentGroupId"], "sym-group");
  EXPECT_EQ((*s)["registrationState"]["deviceId"], "line-dev-7");
  auto group_key = dps_device::register_device(with_key("line-dev-8", kKey1));
  ASSERT_FALSE(group_key);
  EXPECT_NE(group_key.error().message().find("derived"), std::string::npos);
  auto q = client_->query_registration_states("sym-group");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->items.size(), 1u);
}

TEST_F(DeviceRegistration, X509IndividualAndGroupSigningCertificate) {
  Cert root = make_cert("Test Root", nullptr, true);
  Cert inter = make_cert("Test Intermediate", &root, true);
  Cert solo = make_cert("x509-solo", &inter, false);
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("x509-solo").x509_client_certificates(to_pem(solo.cert.get())))));
  auto s = dps_device::register_device(with_cert("x509-solo", solo, {&inter}));
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)["status"], "assigned");
  EXPECT_TRUE((*s)["registrationState"].contains("x509"));

  ASSERT_TRUE(client_->put(std::move(Enrollment::group("x509-group").x509_signing_certificates(to_pem(inter.cert.get())))));
  Cert member = make_cert("x509-member-1", &inter, false);
  auto g = dps_device::register_device(with_cert("x509-member-1", member, {&inter}));
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ((*g)["status"], "assigned");
  EXPECT_EQ((*g)["registrationState"]["x509"]["enrollmentGroupId"], "x509-group");

  // A certificate whose CN is not the registration ID.
  auto cn = dps_device::register_device(with_cert("someone-else", member, {&inter}));
  ASSERT_FALSE(cn);
  EXPECT_NE(cn.error().message().find("is not the registration ID"), std::string::npos);
  // A chain to nothing enrolled.
  Cert other_root = make_cert("Other Root", nullptr, true);
  Cert stranger = make_cert("stranger-1", &other_root, false);
  auto r = dps_device::register_device(with_cert("stranger-1", stranger, {&other_root}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().native_code(), 401002);
  EXPECT_NE(r.error().message().find("no enrollment group"), std::string::npos);
}

TEST_F(DeviceRegistration, DisabledEnrollmentIsRefusedWithStatusDisabled) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("off-1").symmetric_key(kKey1, kKey2).provisioning_status(false))));
  auto s = dps_device::register_device(with_key("off-1", kKey1));
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)["status"], "disabled");
  EXPECT_EQ((*s)["registrationState"]["status"], "disabled");
  // An individual "disabled" entry also blocks a device that a group would admit.
  ASSERT_TRUE(client_->put(std::move(Enrollment::group("open-group").symmetric_key(kKey1, kKey2))));
  auto derived = derive_device_key(std::string_view(kKey1), "off-2");
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("off-2").symmetric_key(*derived, kKey2).provisioning_status(false))));
  auto s2 = dps_device::register_device(with_key("off-2", *derived));
  ASSERT_TRUE(s2);
  EXPECT_EQ((*s2)["status"], "disabled");
}

TEST_F(DeviceRegistration, HashedAllocationIsDeterministicAndUsesBothHubs) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::group("hash-group").symmetric_key(kKey1, kKey2))));
  std::map<std::string, int> per_hub;
  std::map<std::string, std::string> first;
  for (int i = 0; i < 8; ++i) {
    std::string id = "hash-dev-" + std::to_string(i);
    auto s = dps_device::register_device(with_key(id, *derive_device_key(std::string_view(kKey1), id)));
    ASSERT_TRUE(s) << s.error().message();
    std::string hub = (*s)["registrationState"]["assignedHub"];
    per_hub[hub]++;
    first[id] = hub;
    if (i == 0) {
      auto again = dps_device::register_device(with_key(id, *derive_device_key(std::string_view(kKey1), id)));
      ASSERT_TRUE(again);
      EXPECT_EQ((*again)["registrationState"]["assignedHub"], hub);
    }
  }
  EXPECT_EQ(per_hub.size(), 2u);
}

TEST_F(DeviceRegistration, StaticAllocationAndUnlinkedHub) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("static-1").symmetric_key(kKey1, kKey2)
                                         .allocation_policy("static").iot_hubs({"hub-b.example"}))));
  auto s = dps_device::register_device(with_key("static-1", kKey1));
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["registrationState"]["assignedHub"], "hub-b.example");
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("static-2").symmetric_key(kKey1, kKey2)
                                         .allocation_policy("static").iot_hubs({"nowhere.example"}))));
  auto f = dps_device::register_device(with_key("static-2", kKey1));
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)["status"], "failed");
  EXPECT_EQ((*f)["registrationState"]["errorCode"], 400208);
  EXPECT_TRUE((*f)["registrationState"].contains("lastUpdatedDateTimeUtc"));
}

TEST_F(DeviceRegistration, CommandLineClientPrintsTheFinalStatus) {
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("cli-dev").symmetric_key(kKey1, kKey2))));
  testkit::write_file(dir_ / "key", std::string(kKey1) + "\n");
  auto r = testkit::run({testkit::bin("keyline-dps-register").string(), "--endpoint", emu_->endpoint(), "--id-scope",
                         emu_->id_scope(), "--registration-id", "cli-dev", "--symmetric-key-file", (dir_ / "key").string(),
                         "--ca-cert", emu_->ca_cert()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto doc = json::parse(r.out);
  EXPECT_EQ(doc["status"], "assigned");
  auto bad = testkit::run({testkit::bin("keyline-dps-register").string(), "--endpoint", emu_->endpoint(), "--id-scope",
                           emu_->id_scope(), "--registration-id", "unknown-dev", "--symmetric-key-file",
                           (dir_ / "key").string(), "--ca-cert", emu_->ca_cert()});
  EXPECT_EQ(bad.exit_code, 4);
  EXPECT_NE(bad.err.find("no enrollment"), std::string::npos);
}

TEST_F(DeviceRegistration, CustomAllocationThroughALocalWebhook) {
  httplib::Server hook;
  json seen;
  hook.Post("/allocate", [&](const httplib::Request& req, httplib::Response& res) {
    seen = json::parse(req.body);
    json answer = {{"iotHubHostName", "hub-b.example"},
                   {"initialTwin", {{"tags", {{"from", "webhook"}}}}},
                   {"payload", {{"greeting", "hello"}}}};
    res.set_content(answer.dump(), "application/json");
  });
  hook.Post("/fail", [](const httplib::Request&, httplib::Response& res) { res.status = 400; });
  int port = hook.bind_to_any_port("127.0.0.1");
  std::thread t([&] { hook.listen_after_bind(); });
  struct Stop {
    httplib::Server& s;
    std::thread& t;
    ~Stop() { s.stop(); t.join(); }
  } stop{hook, t};
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("custom-1").symmetric_key(kKey1, kKey2)
                                         .allocation_policy("custom", base + "/allocate"))));
  auto req = with_key("custom-1", kKey1);
  req.payload = {{"model", "m1"}};
  auto s = dps_device::register_device(req);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ((*s)["status"], "assigned");
  EXPECT_EQ((*s)["registrationState"]["assignedHub"], "hub-b.example");
  EXPECT_EQ((*s)["registrationState"]["payload"]["greeting"], "hello");
  EXPECT_EQ((*s)["registrationState"]["initialTwin"]["tags"]["from"], "webhook");
  EXPECT_EQ(seen["deviceRuntimeContext"]["payload"]["model"], "m1");
  EXPECT_EQ(seen["individualEnrollment"]["registrationId"], "custom-1");
  EXPECT_EQ(seen["linkedHubs"].size(), 2u);
  ASSERT_TRUE(client_->put(std::move(Enrollment::individual("custom-2").symmetric_key(kKey1, kKey2)
                                         .allocation_policy("custom", base + "/fail"))));
  auto f = dps_device::register_device(with_key("custom-2", kKey1));
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)["status"], "failed");
  EXPECT_EQ((*f)["registrationState"]["errorCode"], 400207);
  EXPECT_EQ((*f)["registrationState"]["errorMessage"], "Custom allocation failed with status code: 400");
}
