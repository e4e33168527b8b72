// keyline CLI integration tests: ca init, issue, profiles, ceremony, reissue, revoke/CRL, show.
#include "cli_support.hpp"

namespace {

using namespace keyline::cli_test;
namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using keyline::Bytes;
using keyline::EvpPkeyPtr;
using keyline::X509Ptr;
using nlohmann::json;

// ================================================================ 1. ca init

TEST(CaInit, CreatesPrivateStateDirWithCertificatesConfigAndLedger) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);

  for (const char* f : {"root.pem", "intermediate.pem", "chain.pem", "keyline.toml", "ledger.db"})
    EXPECT_TRUE(fs::is_regular_file(state / f)) << f << " missing";
  EXPECT_EQ(mode_of(state), 0700u) << "state dir";
  EXPECT_EQ(mode_of(state / "ledger.db"), 0600u) << "ledger.db";
  EXPECT_EQ(mode_of(state / "keyline.toml"), 0600u) << "keyline.toml";
  ASSERT_TRUE(fs::is_directory(state / "keys"));
  EXPECT_EQ(mode_of(state / "keys"), 0700u) << "development key store dir";
  int keys = 0;
  for (auto& e : fs::directory_iterator(state / "keys")) {
    EXPECT_EQ(mode_of(e.path()), 0600u) << e.path();
    ++keys;
  }
  EXPECT_EQ(keys, 3) << "root, intermediate and audit key";
  EXPECT_TRUE(fs::is_regular_file(state / "audit.pem")) << "the audit key's certificate";

  // chain.pem is the intermediate, then the root.
  X509Ptr root = parse_cert(state / "root.pem");
  X509Ptr inter = parse_cert(state / "intermediate.pem");
  auto chain = parse_certs(state / "chain.pem");
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(X509_cmp(chain[0].get(), inter.get()), 0) << "chain.pem must start with the intermediate";
  EXPECT_EQ(X509_cmp(chain[1].get(), root.get()), 0) << "chain.pem must end with the root";
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(inter.get()), X509_get_subject_name(root.get())), 0);
  tk::RunResult v = openssl({"verify", "-x509_strict", "-CAfile", (state / "root.pem").string(),
                             (state / "intermediate.pem").string()});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

TEST(CaInit, RefusesAnInitialisedStateDirAndChangesNothing) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  DirState before = capture(state);

  tk::RunResult r = kl(state, {"ca", "init"});
  EXPECT_EQ(r.exit_code, 5) << describe(r);
  EXPECT_TRUE(contains(r.err, "keyline: error: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "already initialised")) << r.err;
  EXPECT_EQ(changes_since(before, state), "");

  // Not even with another algorithm or subject.
  r = kl(state, {"ca", "init", "--algorithm", "ec-p384", "--root-subject", "CN=Other Root"});
  EXPECT_EQ(r.exit_code, 5) << describe(r);
  EXPECT_EQ(changes_since(before, state), "");
}

TEST(CaInit, RefusesANonEmptyDirectoryWithoutALedger) {
  tk::TempDir tmp;
  fs::path state = tmp / "state";
  fs::create_directory(state);
  tk::write_file(state / "notes.txt", "something else lives here\n");
  DirState before = capture(state);
  tk::RunResult r = kl(state, {"ca", "init"});
  EXPECT_EQ(r.exit_code, 5) << describe(r);
  EXPECT_TRUE(contains(r.err, "not empty")) << r.err;
  EXPECT_EQ(changes_since(before, state), "");
  EXPECT_EQ(tree(state), std::set<std::string>{"notes.txt"});
}

// The station ID names the station in keyline.toml and in the audit
// certificate: one that would break either is refused before any key exists.
TEST(CaInit, StationIdIsCheckedBeforeAnyKeyIsMade) {
  tk::TempDir tmp;
  for (const std::string& bad : std::vector<std::string>{"Plant 3, Line 1", "line \"A\"", " padded", "", std::string(65, 'x'), "caf\xe9"}) {
    fs::path state = tmp / "bad";
    tk::RunResult r = kl(state, {"ca", "init", "--station-id", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << describe(r);
    EXPECT_TRUE(contains(r.err, "--station-id")) << r.err;
    EXPECT_FALSE(fs::exists(state)) << bad;
  }
  tk::RunResult comma = kl(tmp / "bad", {"ca", "init", "--station-id", "Plant 3, Line 1"});
  EXPECT_TRUE(contains(comma.err, "character ',' at position 8")) << comma.err;
  // Allowed characters, and the state works afterwards (its keyline.toml parses).
  fs::path state = tmp / "good";
  tk::RunResult ok = kl(state, {"ca", "init", "--station-id", "Plant 3 Line-1:a_b.c"});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  tk::RunResult status = kl(state, {"--json", "ca", "show"});
  ASSERT_EQ(status.exit_code, 0) << describe(status);
  EXPECT_TRUE(contains(tk::read_file(state / "keyline.toml"), "id = \"Plant 3 Line-1:a_b.c\"\n"));
}

// ================================================================ 2. the leaf profile

TEST(CaIssue, P256LeafVerifiesAndHasTheDocumentedExtensions) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path csr = write_csr(tmp / "sensor.csr", "Sensor-0001");
  fs::path leaf_pem = tmp / "leaf.pem";
  std::time_t t0 = std::time(nullptr);
  json doc = issue(state, csr, leaf_pem);
  std::time_t t1 = std::time(nullptr);

  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf_pem);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_TRUE(contains(v.out, ": OK")) << v.out;

  X509Ptr leaf = parse_cert(leaf_pem);
  X509Ptr inter = parse_cert(state / "intermediate.pem");
  X509Ptr root = parse_cert(state / "root.pem");

  // basicConstraints critical CA:FALSE
  BasicConstraints bc = basic_constraints(leaf.get());
  EXPECT_TRUE(bc.present);
  EXPECT_FALSE(bc.ca);
  EXPECT_EQ(criticality(leaf.get(), NID_basic_constraints), 1);
  // keyUsage critical, digitalSignature only (no keyAgreement by default)
  EXPECT_EQ(X509_get_key_usage(leaf.get()), static_cast<std::uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(criticality(leaf.get(), NID_key_usage), 1);
  // extendedKeyUsage exactly clientAuth
  EXPECT_EQ(extended_key_usage(leaf.get()), std::vector<int>{NID_client_auth});
  // SKI present; AKI keyid is the intermediate's SKI
  const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(leaf.get());
  ASSERT_NE(ski, nullptr);
  EXPECT_GT(ASN1_STRING_length(ski), 0);
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(leaf.get());
  const ASN1_OCTET_STRING* inter_ski = X509_get0_subject_key_id(inter.get());
  ASSERT_NE(aki, nullptr);
  ASSERT_NE(inter_ski, nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(aki, inter_ski), 0);
  // serial: 16 bytes, positive
  const ASN1_INTEGER* serial = X509_get0_serialNumber(leaf.get());
  EXPECT_EQ(ASN1_STRING_type(serial), V_ASN1_INTEGER) << "serial must be positive";
  EXPECT_EQ(ASN1_STRING_length(serial), 16);
  EXPECT_EQ(ASN1_STRING_get0_data(serial)[0] & 0x80, 0);
  EXPECT_EQ(doc["serial"].get<std::string>().size(), 32u);
  // subject CN is the lower-cased registration ID
  EXPECT_EQ(subject_entry(leaf.get(), NID_commonName), "sensor-0001");
  EXPECT_EQ(doc["registration_id"], "sensor-0001");
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(leaf.get()), X509_get_subject_name(inter.get())), 0);
  // signature algorithm
  EXPECT_EQ(X509_get_signature_nid(leaf.get()), NID_ecdsa_with_SHA256);
  // notBefore = now - 5 minutes; notAfter = now + 365 days
  std::time_t nb = to_time_t(X509_get0_notBefore(leaf.get()));
  EXPECT_GE(nb, t0 - 300 - 2);
  EXPECT_LE(nb, t1 - 300 + 2);
  std::time_t na = to_time_t(X509_get0_notAfter(leaf.get()));
  EXPECT_GE(na, t0 + 365 * 86400 - 2);
  EXPECT_LE(na, t1 + 365 * 86400 + 2);

  // Intermediate: CA:TRUE pathlen 0, keyCertSign|cRLSign|digitalSignature, both critical.
  BasicConstraints ibc = basic_constraints(inter.get());
  EXPECT_TRUE(ibc.ca);
  EXPECT_EQ(ibc.pathlen, std::optional<long>(0));
  EXPECT_EQ(criticality(inter.get(), NID_basic_constraints), 1);
  EXPECT_EQ(X509_get_key_usage(inter.get()),
            static_cast<std::uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(criticality(inter.get(), NID_key_usage), 1);
  EXPECT_NE(X509_get0_authority_key_id(inter.get()), nullptr);

  // Root: CA:TRUE critical, keyCertSign|cRLSign critical.
  BasicConstraints rbc = basic_constraints(root.get());
  EXPECT_TRUE(rbc.ca);
  EXPECT_EQ(criticality(root.get(), NID_basic_constraints), 1);
  EXPECT_EQ(X509_get_key_usage(root.get()), static_cast<std::uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(criticality(root.get(), NID_key_usage), 1);
  EXPECT_NE(X509_get0_subject_key_id(root.get()), nullptr);
}

TEST(CaIssue, ChainOptionAppendsIntermediateAndRoot) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path csr = write_csr(tmp / "d.csr", "dev-chain");
  tk::RunResult r = kl_ok(state, {"ca", "issue", "--csr", csr.string(), "--chain"});  // PEM on stdout
  tk::write_file(tmp / "bundle.pem", r.out);
  auto certs = parse_certs(tmp / "bundle.pem");
  ASSERT_EQ(certs.size(), 3u) << r.out;
  EXPECT_EQ(subject_entry(certs[0].get(), NID_commonName), "dev-chain");
  EXPECT_EQ(X509_cmp(certs[1].get(), parse_cert(state / "intermediate.pem").get()), 0);
  EXPECT_EQ(X509_cmp(certs[2].get(), parse_cert(state / "root.pem").get()), 0);
}

TEST(CaIssue, ReadsTheCsrFromStandardInput) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  EvpPkeyPtr key = tk::ec_key("P-256");
  tk::RunResult r =
      tk::keyline(state, {"ca", "issue", "--csr", "-"}, kQuiet, tk::csr_pem(key.get(), "dev-stdin"));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  tk::write_file(tmp / "leaf.pem", r.out);
  X509Ptr leaf = parse_cert(tmp / "leaf.pem");
  EXPECT_EQ(subject_entry(leaf.get(), NID_commonName), "dev-stdin");
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(leaf.get()), key.get()), 1);
}

TEST(CaIssue, LeafNeverOutlivesItsIssuer) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp, {"--intermediate-days", "30"});
  fs::path leaf = tmp / "leaf.pem";
  issue(state, write_csr(tmp / "d.csr", "dev-short"), leaf);  // the device profile asks for 365 days
  X509Ptr cert = parse_cert(leaf);
  X509Ptr inter = parse_cert(state / "intermediate.pem");
  EXPECT_EQ(to_time_t(X509_get0_notAfter(cert.get())), to_time_t(X509_get0_notAfter(inter.get())));
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

// An (empty) CRL from the state dir's CA verifies against chain.pem.
void expect_crl_verifies(const fs::path& state, const fs::path& crl) {
  kl_ok(state, {"ca", "crl", "--out", crl.string()});
  tk::RunResult c =
      openssl({"crl", "-in", crl.string(), "-CAfile", (state / "chain.pem").string(), "-noout", "-verify"});
  EXPECT_EQ(c.exit_code, 0) << describe(c);
  EXPECT_TRUE(contains(c.out + c.err, "verify OK")) << describe(c);
}

// ================================================================ 3. CA algorithms

TEST(CaAlgorithms, EcP384CaSignsWithEcdsaSha384) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp, {"--algorithm", "ec-p384"});
  fs::path leaf = tmp / "leaf.pem";
  issue(state, write_csr(tmp / "d.csr", "dev-p384"), leaf);
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_EQ(X509_get_signature_nid(parse_cert(leaf).get()), NID_ecdsa_with_SHA384);
  EXPECT_EQ(X509_get_signature_nid(parse_cert(state / "intermediate.pem").get()), NID_ecdsa_with_SHA384);
  EXPECT_EQ(X509_get_signature_nid(parse_cert(state / "root.pem").get()), NID_ecdsa_with_SHA384);
  expect_crl_verifies(state, tmp / "crl.pem");
}

TEST(CaAlgorithms, Rsa3072CaSignsWithSha256WithRsa) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp, {"--algorithm", "rsa-3072"});
  fs::path leaf = tmp / "leaf.pem";
  issue(state, write_csr(tmp / "d.csr", "dev-rsa"), leaf);
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  EXPECT_EQ(X509_get_signature_nid(parse_cert(leaf).get()), NID_sha256WithRSAEncryption);
  X509Ptr inter = parse_cert(state / "intermediate.pem");
  EXPECT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(inter.get())), 3072);
  EXPECT_TRUE(EVP_PKEY_is_a(X509_get0_pubkey(inter.get()), "RSA"));
  expect_crl_verifies(state, tmp / "crl.pem");
}

// ================================================================ 4. profiles

TEST(Profiles, ConfiguredSubjectUriSanAndKeyAgreement) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  add_profile(state,
              "[profiles.line]\n"
              "subject = { O = \"Example Corp\", OU = \"Line 1\", C = \"DE\" }\n"
              "uri_san = \"urn:example:{registration_id}\"\n"
              "key_agreement = true\n");
  fs::path leaf_pem = tmp / "leaf.pem";
  json doc = issue(state, write_csr(tmp / "d.csr", "Meter-42"), leaf_pem, {"--profile", "line"});
  EXPECT_EQ(doc["profile"], "line");

  X509Ptr leaf = parse_cert(leaf_pem);
  EXPECT_EQ(subject_entry(leaf.get(), NID_organizationName), "Example Corp");
  EXPECT_EQ(subject_entry(leaf.get(), NID_organizationalUnitName), "Line 1");
  EXPECT_EQ(subject_entry(leaf.get(), NID_countryName), "DE");
  EXPECT_EQ(subject_entry(leaf.get(), NID_commonName), "meter-42");
  std::vector<std::string> uris;
  for_each_san(leaf.get(), [&](GENERAL_NAME* g) {
    if (g->type == GEN_URI) uris.push_back(asn1_text(g->d.uniformResourceIdentifier));
  });
  EXPECT_EQ(uris, std::vector<std::string>{"urn:example:meter-42"});
  EXPECT_EQ(X509_get_key_usage(leaf.get()),
            static_cast<std::uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT));
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf_pem);
  EXPECT_EQ(v.exit_code, 0) << describe(v);

  // keyAgreement is for EC keys only: an RSA key under the same profile gets digitalSignature.
  EvpPkeyPtr rsa = tk::rsa_key(2048);
  tk::write_file(tmp / "rsa.csr", tk::csr_pem(rsa.get(), "meter-43"));
  issue(state, tmp / "rsa.csr", tmp / "rsa.pem", {"--profile", "line"});
  EXPECT_EQ(X509_get_key_usage(parse_cert(tmp / "rsa.pem").get()),
            static_cast<std::uint32_t>(KU_DIGITAL_SIGNATURE));
}

TEST(Profiles, IdevidNeverExpiresAndCarriesTheDeviceSerial) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path leaf_pem = tmp / "idev.pem";
  issue(state, write_csr(tmp / "d.csr", "board-7731"), leaf_pem,
        {"--profile", "idevid", "--device-serial", "SN-1"});

  X509Ptr leaf = parse_cert(leaf_pem);
  const ASN1_TIME* not_after = X509_get0_notAfter(leaf.get());
  EXPECT_EQ(ASN1_STRING_type(not_after), V_ASN1_GENERALIZEDTIME);
  EXPECT_EQ(asn1_text(not_after), "99991231235959Z");
  EXPECT_EQ(subject_entry(leaf.get(), NID_serialNumber), "SN-1");
  EXPECT_EQ(subject_entry(leaf.get(), NID_commonName), "board-7731");
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf_pem);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

TEST(Profiles, IdevidWithoutDeviceSerialIsRefused) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path csr = write_csr(tmp / "d.csr", "board-7732");
  DirState before = capture(tmp.path());
  tk::RunResult r = kl(state, {"ca", "issue", "--csr", csr.string(), "--profile", "idevid", "--out",
                               (tmp / "idev.pem").string()});
  EXPECT_EQ(r.exit_code, 4) << describe(r);
  EXPECT_TRUE(contains(r.err, "--device-serial")) << r.err;
  EXPECT_EQ(changes_since(before, tmp.path()), "");
}

TEST(Profiles, HardwareModuleOidAddsHardwareModuleNameOtherName) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  add_profile(state, "[profiles.hw]\nhardware_module_oid = \"1.3.6.1.4.1.99999.1\"\n");
  fs::path leaf_pem = tmp / "hw.pem";
  issue(state, write_csr(tmp / "d.csr", "board-9"), leaf_pem, {"--profile", "hw", "--device-serial", "SN-1"});

  // hardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING } (RFC 4108 §5)
  ASN1_OBJECT* hw_type = OBJ_txt2obj("1.3.6.1.4.1.99999.1", 1);
  unsigned char* oid_der = nullptr;
  int oid_len = i2d_ASN1_OBJECT(hw_type, &oid_der);
  ASN1_OBJECT_free(hw_type);
  ASSERT_GT(oid_len, 0);
  Bytes expected;
  expected.push_back(0x30);
  expected.push_back(static_cast<unsigned char>(oid_len + 2 + 4));
  for (int i = 0; i < oid_len; ++i) expected.push_back(oid_der[i]);
  OPENSSL_free(oid_der);
  for (char b : std::string("\x04\x04SN-1")) expected.push_back(static_cast<unsigned char>(b));

  X509Ptr leaf = parse_cert(leaf_pem);
  int other_names = 0;
  for_each_san(leaf.get(), [&](GENERAL_NAME* g) {
    ASN1_OBJECT* type_id = nullptr;
    ASN1_TYPE* value = nullptr;
    if (!GENERAL_NAME_get0_otherName(g, &type_id, &value)) return;
    ++other_names;
    EXPECT_EQ(oid_text(type_id), "1.3.6.1.5.5.7.8.4") << "id-on-hardwareModuleName";
    ASSERT_EQ(value->type, V_ASN1_SEQUENCE);
    const ASN1_STRING* seq = value->value.sequence;
    Bytes got(ASN1_STRING_get0_data(seq), ASN1_STRING_get0_data(seq) + ASN1_STRING_length(seq));
    EXPECT_EQ(got, expected);
  });
  EXPECT_EQ(other_names, 1);

  // openssl agrees: the SAN is an otherName of that type.
  tk::RunResult text = openssl_ok({"x509", "-in", leaf_pem.string(), "-noout", "-ext", "subjectAltName"});
  EXPECT_TRUE(contains(text.out, "othername")) << text.out;
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", leaf_pem);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

// ================================================================ 5. production ceremony

// An "offline root" made with the openssl CLI: TMP/NAME.key, TMP/NAME.pem.
fs::path openssl_root(const tk::TempDir& tmp, const std::string& name) {
  fs::path cnf = tmp / (name + ".cnf");
  tk::write_file(cnf,
                 "[req]\n"
                 "distinguished_name = dn\n"
                 "x509_extensions = v3_root\n"
                 "prompt = no\n"
                 "[dn]\n"
                 "CN = " +
                     name +
                     " Offline Root\n"
                     "O = Keyline Tests\n"
                     "[v3_root]\n"
                     "basicConstraints = critical,CA:TRUE\n"
                     "keyUsage = critical,keyCertSign,cRLSign\n"
                     "subjectKeyIdentifier = hash\n");
  fs::path pem = tmp / (name + ".pem");
  openssl_ok({"req", "-x509", "-new", "-config", cnf.string(), "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", (tmp / (name + ".key")).string(), "-out",
              pem.string(), "-days", "3650", "-sha256"});
  return pem;
}

// The offline root signs a `ca request` CSR as an intermediate.
fs::path openssl_sign_intermediate(const tk::TempDir& tmp, const std::string& root, const fs::path& csr,
                                   const fs::path& out) {
  fs::path ext = tmp / "intermediate.ext";
  tk::write_file(ext,
                 "basicConstraints = critical,CA:TRUE,pathlen:0\n"
                 "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
                 "subjectKeyIdentifier = hash\n"
                 "authorityKeyIdentifier = keyid\n");
  openssl_ok({"x509", "-req", "-in", csr.string(), "-CA", (tmp / (root + ".pem")).string(), "-CAkey",
              (tmp / (root + ".key")).string(), "-set_serial", "0x4b1e0a5d3c2f1e0d9c8b7a6958473625", "-days",
              "1825", "-sha256", "-extfile", ext.string(), "-out", out.string()});
  return out;
}

TEST(Ceremony, ImportsAnIntermediateSignedByAnOfflineRoot) {
  tk::TempDir tmp;
  fs::path hsm = tmp / "hsm";
  fs::path csr = tmp / "inter.csr";
  kl_ok(tmp / "unused-state", {"ca", "request", "--key-store", "file:" + hsm.string(), "--subject",
                               "CN=Line CA", "--out", csr.string()});
  EXPECT_FALSE(fs::exists(tmp / "unused-state")) << "ca request must not create a state dir";
  EXPECT_TRUE(fs::exists(hsm / "keyline-intermediate.key.pem"));
  tk::RunResult req = openssl({"req", "-in", csr.string(), "-noout", "-verify", "-subject"});
  EXPECT_EQ(req.exit_code, 0) << describe(req);
  EXPECT_TRUE(contains(req.out, "Line CA")) << req.out;

  fs::path root = openssl_root(tmp, "offline");
  fs::path inter = openssl_sign_intermediate(tmp, "offline", csr, tmp / "inter.pem");
  fs::path state = tmp / "state";
  kl_ok(state, {"ca", "init", "--import-intermediate", inter.string(), "--root", root.string(), "--key-store",
                "file:" + hsm.string()});
  EXPECT_EQ(X509_cmp(parse_cert(state / "root.pem").get(), parse_cert(root).get()), 0);
  EXPECT_EQ(X509_cmp(parse_cert(state / "intermediate.pem").get(), parse_cert(inter).get()), 0);
  EXPECT_FALSE(fs::exists(state / "keys")) << "no CA key may be generated in the state dir on import";

  fs::path leaf = tmp / "leaf.pem";
  issue(state, write_csr(tmp / "d.csr", "dev-imported"), leaf);
  tk::RunResult v = verify_strict(root, state / "intermediate.pem", leaf);
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  json show = kl_json(state, {"ca", "show"});
  EXPECT_EQ(show["key_store"], "file:" + hsm.string());
  EXPECT_EQ(show["certificates"]["active"], 1);
}

TEST(Ceremony, ImportForAnotherKeyFailsWithKeyStoreErrorAndLeavesNoStateDir) {
  tk::TempDir tmp;
  fs::path hsm = tmp / "hsm", other_hsm = tmp / "hsm2";
  fs::path csr = tmp / "inter.csr";
  kl_ok(tmp / "unused", {"ca", "request", "--key-store", "file:" + hsm.string(), "--subject", "CN=Line CA",
                         "--out", csr.string()});
  kl_ok(tmp / "unused", {"ca", "request", "--key-store", "file:" + other_hsm.string(), "--subject",
                         "CN=Other CA", "--out", (tmp / "other.csr").string()});
  fs::path root = openssl_root(tmp, "offline");
  fs::path inter = openssl_sign_intermediate(tmp, "offline", csr, tmp / "inter.pem");

  fs::path state = tmp / "state";
  tk::RunResult r = kl(state, {"ca", "init", "--import-intermediate", inter.string(), "--root", root.string(),
                               "--key-store", "file:" + other_hsm.string()});
  EXPECT_EQ(r.exit_code, 6) << describe(r);
  EXPECT_TRUE(contains(r.err, "another key")) << r.err;
  EXPECT_FALSE(fs::exists(state)) << "a failed ca init must not leave a state dir behind";
  EXPECT_TRUE(fs::exists(other_hsm / "keyline-intermediate.key.pem")) << "the key store's key must survive";
}

TEST(Ceremony, ImportWithARootThatDidNotSignItIsBadInput) {
  tk::TempDir tmp;
  fs::path hsm = tmp / "hsm";
  fs::path csr = tmp / "inter.csr";
  kl_ok(tmp / "unused", {"ca", "request", "--key-store", "file:" + hsm.string(), "--subject", "CN=Line CA",
                         "--out", csr.string()});
  openssl_root(tmp, "offline");
  fs::path stranger = openssl_root(tmp, "stranger");
  fs::path inter = openssl_sign_intermediate(tmp, "offline", csr, tmp / "inter.pem");

  fs::path state = tmp / "state";
  tk::RunResult r = kl(state, {"ca", "init", "--import-intermediate", inter.string(), "--root",
                               stranger.string(), "--key-store", "file:" + hsm.string()});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, "does not verify against the root")) << r.err;
  EXPECT_FALSE(fs::exists(state));
  EXPECT_TRUE(fs::exists(hsm / "keyline-intermediate.key.pem"));
}

// ================================================================ 6. reissue

TEST(Reissue, SecondCertificateNeedsReissueAndSupersedesTheFirst) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  json first = issue(state, write_csr(tmp / "a.csr", "dev-0001"), tmp / "a.pem");
  fs::path csr2 = write_csr(tmp / "b.csr", "DEV-0001");  // same ID, other case, new key

  DirState before = capture(tmp.path());
  tk::RunResult r = kl(state, {"ca", "issue", "--csr", csr2.string(), "--out", (tmp / "b.pem").string()});
  EXPECT_EQ(r.exit_code, 4) << describe(r);
  EXPECT_TRUE(contains(r.err, "--reissue")) << r.err;
  EXPECT_TRUE(contains(r.err, first["serial"].get<std::string>()))
      << "names the active certificate: " << r.err;
  EXPECT_EQ(changes_since(before, tmp.path()), "");

  // With --json the refusal is also one JSON document on stdout.
  tk::RunResult rj =
      kl(state, {"--json", "ca", "issue", "--csr", csr2.string(), "--out", (tmp / "b.pem").string()});
  EXPECT_EQ(rj.exit_code, 4) << describe(rj);
  json err = json::parse(rj.out);
  EXPECT_EQ(err["error"]["exit_code"], 4) << rj.out;
  EXPECT_EQ(err["error"]["domain"], "policy") << rj.out;
  EXPECT_TRUE(contains(err["error"]["message"].get<std::string>(), "--reissue")) << rj.out;
  EXPECT_EQ(changes_since(before, tmp.path()), "");

  json second = issue(state, csr2, tmp / "b.pem", {"--reissue"});
  ASSERT_NE(second["serial"], first["serial"]);
  EXPECT_EQ(second["status"], "active");

  json list = kl_json(state, {"ledger", "certificates"});
  ASSERT_EQ(list["certificates"].size(), 2u) << list.dump(2);
  std::map<std::string, json> by_serial;
  for (auto& c : list["certificates"]) by_serial[c["serial"].get<std::string>()] = c;
  json old_rec = by_serial[first["serial"].get<std::string>()];
  json new_rec = by_serial[second["serial"].get<std::string>()];
  EXPECT_EQ(old_rec["status"], "superseded");
  EXPECT_EQ(old_rec["superseded_by"], second["serial"]);
  EXPECT_EQ(new_rec["status"], "active");
  EXPECT_FALSE(new_rec.contains("superseded_by"));
  EXPECT_NE(old_rec["pubkey_sha256"], new_rec["pubkey_sha256"]);
  tk::RunResult v = verify_strict(state / "root.pem", state / "intermediate.pem", tmp / "b.pem");
  EXPECT_EQ(v.exit_code, 0) << describe(v);
}

// ================================================================ 7. revoke and CRL


TEST(RevokeAndCrl, RevokedLeafFailsCrlCheckAndCrlNumbersIncrease) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path bad = tmp / "bad.pem", good = tmp / "good.pem";
  issue(state, write_csr(tmp / "bad.csr", "dev-bad"), bad);
  issue(state, write_csr(tmp / "good.csr", "dev-good"), good);

  // The serial as openssl prints it (the operator's copy-paste).
  tk::RunResult s = openssl_ok({"x509", "-in", bad.string(), "-noout", "-serial"});
  std::string serial = s.out.substr(s.out.find('=') + 1);
  while (!serial.empty() && (serial.back() == '\n' || serial.back() == '\r')) serial.pop_back();
  kl_ok(state, {"ca", "revoke", "--serial", serial, "--reason", "keyCompromise"});

  json list = kl_json(state, {"ledger", "certificates", "--status", "revoked"});
  ASSERT_EQ(list["certificates"].size(), 1u) << list.dump(2);
  EXPECT_EQ(list["certificates"][0]["registration_id"], "dev-bad");
  EXPECT_EQ(list["certificates"][0]["revocation_reason"], "keyCompromise");

  fs::path crl = tmp / "crl.pem";
  kl_ok(state, {"ca", "crl", "--out", crl.string()});
  tk::RunResult c =
      openssl({"crl", "-in", crl.string(), "-CAfile", (state / "chain.pem").string(), "-noout", "-verify"});
  EXPECT_EQ(c.exit_code, 0) << describe(c);
  EXPECT_TRUE(contains(c.out + c.err, "verify OK")) << describe(c);
  tk::RunResult text = openssl_ok({"crl", "-in", crl.string(), "-noout", "-text"});
  EXPECT_TRUE(contains(text.out, "Key Compromise")) << text.out;

  auto crl_verify = [&](const fs::path& leaf) {
    return openssl({"verify", "-crl_check", "-CRLfile", crl.string(), "-CAfile",
                    (state / "root.pem").string(), "-untrusted", (state / "intermediate.pem").string(),
                    leaf.string()});
  };
  tk::RunResult revoked = crl_verify(bad);
  EXPECT_NE(revoked.exit_code, 0) << describe(revoked);
  EXPECT_TRUE(contains(revoked.out + revoked.err, "certificate revoked")) << describe(revoked);
  tk::RunResult still_good = crl_verify(good);
  EXPECT_EQ(still_good.exit_code, 0) << describe(still_good);

  EXPECT_EQ(crl_number(crl), 1u);
  fs::path crl2 = tmp / "crl2.pem";
  kl_ok(state, {"ca", "crl", "--out", crl2.string()});
  EXPECT_EQ(crl_number(crl2), 2u);
}

TEST(RevokeAndCrl, UnknownSerialIsBadInputAndRevokingTwiceIsRefused) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  json doc = issue(state, write_csr(tmp / "a.csr", "dev-rev"), tmp / "a.pem");
  std::string serial = doc["serial"];

  tk::RunResult unknown = kl(state, {"ca", "revoke", "--serial", "7F0000000000000000000000000000AA"});
  EXPECT_EQ(unknown.exit_code, 3) << describe(unknown);
  EXPECT_TRUE(contains(unknown.err, "7F0000000000000000000000000000AA")) << unknown.err;

  kl_ok(state, {"ca", "revoke", "--serial", serial});
  DirState before = capture(state);
  tk::RunResult twice = kl(state, {"ca", "revoke", "--serial", serial, "--reason", "superseded"});
  EXPECT_EQ(twice.exit_code, 4) << describe(twice);
  EXPECT_TRUE(contains(twice.err, "already revoked")) << twice.err;
  EXPECT_EQ(changes_since(before, state), "");
}

// ================================================================ 8. DPS verification certificate

TEST(VerificationCert, HasTheCodeAsCnAndChainsToTheCa) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  fs::path vc = tmp / "vc.pem";
  kl_ok(state, {"ca", "verification-cert", "--code", "ABC123", "--out", vc.string()});

  X509Ptr cert = parse_cert(vc);
  X509Ptr inter = parse_cert(state / "intermediate.pem");
  EXPECT_EQ(subject_entry(cert.get(), NID_commonName), "ABC123");
  EXPECT_EQ(X509_NAME_entry_count(X509_get_subject_name(cert.get())), 1);
  EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(cert.get()), X509_get_subject_name(inter.get())), 0);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), X509_get0_pubkey(inter.get())), 1)
      << "proof of possession is for the CA's own key";
  EXPECT_FALSE(basic_constraints(cert.get()).ca);

  tk::RunResult partial =
      openssl({"verify", "-partial_chain", "-CAfile", (state / "intermediate.pem").string(), vc.string()});
  EXPECT_EQ(partial.exit_code, 0) << describe(partial);
  tk::RunResult full = openssl({"verify", "-CAfile", (state / "root.pem").string(), "-untrusted",
                                (state / "intermediate.pem").string(), vc.string()});
  EXPECT_EQ(full.exit_code, 0) << describe(full);

  tk::RunResult bad = kl(state, {"ca", "verification-cert", "--code", "ABC 123"});
  EXPECT_EQ(bad.exit_code, 3) << describe(bad);
}

// ================================================================ 9. ca show

TEST(CaShow, WarnsAboutTheDevelopmentKeyStoreAndCountsCertificates) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  issue(state, write_csr(tmp / "a.csr", "dev-a"), tmp / "a.pem");
  json b = issue(state, write_csr(tmp / "b.csr", "dev-b"), tmp / "b.pem");
  issue(state, write_csr(tmp / "c.csr", "dev-c"), tmp / "c.pem");
  issue(state, write_csr(tmp / "c2.csr", "dev-c"), tmp / "c2.pem", {"--reissue"});
  kl_ok(state, {"ca", "revoke", "--serial", b["serial"].get<std::string>()});

  DirState before = capture(state);
  tk::RunResult text = kl_ok(state, {"ca", "show"});
  EXPECT_TRUE(contains(text.out, "WARNING")) << text.out;
  EXPECT_TRUE(contains(text.out, "development key store")) << text.out;
  EXPECT_TRUE(contains(text.out, "2 active, 1 revoked, 1 superseded")) << text.out;

  json doc = kl_json(state, {"ca", "show"});
  EXPECT_EQ(doc["certificates"]["active"], 2) << doc.dump(2);
  EXPECT_EQ(doc["certificates"]["revoked"], 1);
  EXPECT_EQ(doc["certificates"]["superseded"], 1);
  EXPECT_EQ(doc["development_key_store"], true);
  EXPECT_EQ(doc["issuer"]["subject"], "CN=Keyline Intermediate CA");
  EXPECT_EQ(doc["root"]["subject"], "CN=Keyline Root CA");
  EXPECT_EQ(changes_since(before, state), "") << "ca show must not write";
}

}  // namespace
