// Every payload in data/dps-examples round-trips: enrollments through the
// Enrollment model (unknown members kept), the rest as JSON documents.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "keyline/station/dps/models.hpp"
#include "keyline/testkit/testkit.hpp"

using namespace keyline;
using namespace keyline::station::dps;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Checks one enrollment document: parse, add an unknown member, serialise, compare.
void round_trip(json doc, EnrollmentKind kind, const std::string& where) {
  doc["x-future-member"] = {{"nested", {1, 2, 3}}};
  auto e = Enrollment::from_json(doc, kind);
  ASSERT_TRUE(e) << where << ": " << e.error().message();
  auto again = Enrollment::parse(e->json().dump(), kind);
  ASSERT_TRUE(again) << where;
  EXPECT_EQ(again->json(), doc) << where;
}
}  // namespace

TEST(Models, EveryExamplePayloadRoundTrips) {
  int enrollments = 0, documents = 0;
  for (auto& entry : fs::directory_iterator(KEYLINE_DPS_EXAMPLES)) {
    std::string name = entry.path().filename().string();
    if (!name.ends_with(".json") && !name.ends_with(".json.txt")) continue;
    std::string text = testkit::read_file(entry.path());
    json doc = json::parse(text, nullptr, false, true);
    if (doc.is_discarded()) continue;  // prose-wrapped extracts (e.g. *.json.txt) are checked below
    ++documents;
    EXPECT_EQ(json::parse(doc.dump()), doc) << name;
    bool individual = name.find("IndividualEnrollment") != std::string::npos;
    bool group = name.find("EnrollmentGroup") != std::string::npos;
    if (!individual && !group) continue;
    EnrollmentKind kind = individual ? EnrollmentKind::individual : EnrollmentKind::group;
    const char* idm = individual ? "registrationId" : "enrollmentGroupId";
    auto visit = [&](const json& j) {
      if (j.is_object() && j.contains(idm) && j.contains("attestation")) {
        round_trip(j, kind, name);
        ++enrollments;
      }
    };
    if (doc.contains("parameters") && doc["parameters"].contains("body")) {
      auto& b = doc["parameters"]["body"];
      visit(b);
      for (const char* list : {"enrollments", "enrollmentGroups"})
        if (b.contains(list))
          for (auto& i : b[list]) visit(i);
    }
    if (doc.contains("responses"))
      for (auto& [code, resp] : doc["responses"].items()) {
        if (!resp.contains("body")) continue;
        visit(resp["body"]);
        if (resp["body"].is_array())
          for (auto& i : resp["body"]) visit(i);
      }
  }
  EXPECT_GE(documents, 25);
  EXPECT_GE(enrollments, 4);  // the create/update and bulk examples that carry full enrollments
}

TEST(Models, BuildersSetWhatTheStationNeeds) {
  auto e = Enrollment::individual("dev-1");
  e.symmetric_key("AAAAAAAAAAAAAAAAAAAAAA==", "BBBBBBBBBBBBBBBBBBBBBB==")
      .device_id("device-1")
      .iot_hubs({"hub1.example"})
      .allocation_policy("custom", "http://127.0.0.1:1/alloc")
      .initial_twin({{"tags", {{"line", 1}}}})
      .iot_edge(true)
      .provisioning_status(false)
      .reprovision_policy(true, false)
      .optional_device_information({{"model", "x"}});
  const json& j = e.json();
  EXPECT_EQ(j["registrationId"], "dev-1");
  EXPECT_EQ(j["attestation"]["type"], "symmetricKey");
  EXPECT_EQ(j["customAllocationDefinition"]["webhookUrl"], "http://127.0.0.1:1/alloc");
  EXPECT_EQ(j["capabilities"]["iotEdge"], true);
  EXPECT_EQ(j["provisioningStatus"], "disabled");
  EXPECT_FALSE(e.enabled());
  EXPECT_EQ(j["reprovisionPolicy"]["migrateDeviceData"], false);
  // redacted(): no key material.
  EXPECT_EQ(e.redacted()["attestation"]["symmetricKey"], json::object());
  auto g = Enrollment::group("grp").x509_ca_references("root-ca");
  EXPECT_EQ(g.json()["attestation"]["x509"]["caReferences"]["primary"], "root-ca");
  EXPECT_EQ(Enrollment::individual("t").tpm("ek", "srk").json()["attestation"]["tpm"]["storageRootKey"], "srk");
}

TEST(Models, MissingRequiredMembersAreNamed) {
  auto a = Enrollment::parse(R"({"attestation":{"type":"none"}})", EnrollmentKind::individual);
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().message().find("registrationId"), std::string::npos);
  auto b = Enrollment::parse(R"({"enrollmentGroupId":"g"})", EnrollmentKind::group);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message().find("attestation.type"), std::string::npos);
  EXPECT_FALSE(Enrollment::parse("{not json", EnrollmentKind::group));
}

TEST(Models, SameEnrollmentIgnoresServiceAddedMembers) {
  json desired = {{"registrationId", "a"}, {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", "k1"}}}}}};
  json service = desired;
  service["etag"] = "\"x\"";
  service["createdDateTimeUtc"] = "2026-01-01T00:00:00Z";
  service["provisioningStatus"] = "enabled";
  service["attestation"]["symmetricKey"] = json::object();  // keys hidden by GET
  EXPECT_TRUE(same_enrollment(desired, service));
  service["attestation"]["symmetricKey"]["primaryKey"] = "other";
  EXPECT_FALSE(same_enrollment(desired, service));
  json d2 = {{"registrationId", "a"}, {"attestation", {{"type", "none"}}}, {"deviceId", "x"}};
  json s2 = {{"registrationId", "a"}, {"attestation", {{"type", "none"}}}, {"deviceId", "y"}};
  EXPECT_FALSE(same_enrollment(d2, s2));
}
