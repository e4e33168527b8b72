// Integration tests of the keyline binary. Every test makes its own state dir
// in a testkit::TempDir, runs build/bin/keyline, and checks what it wrote with
// OpenSSL: the openssl CLI (verify, crl, x509, req) and, for the certificate
// contents, the library in-process.
//
// Exit codes (the documented contract): 0 ok, 1 internal, 2 usage, 3 bad
// input, 4 refused by policy, 5 state/ledger/file system, 6 key store.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <nlohmann/json.hpp>

#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/testkit/testkit.hpp"

namespace {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using keyline::Bytes;
using keyline::EvpPkeyPtr;
using keyline::X509Ptr;
using nlohmann::json;
using Env = std::map<std::string, std::string>;

const Env kQuiet{{"KEYLINE_LOG", "error"}};
constexpr const char* kOpenssl = "/usr/bin/openssl";
constexpr int kNobody = 65534;

// ================================================================ running programs

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string join(const std::vector<std::string>& args) {
  std::string out;
  for (auto& a : args) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string describe(const tk::RunResult& r) {
  return "exit code " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out + "--- stderr:\n" + r.err;
}

tk::RunResult kl(const fs::path& state, const std::vector<std::string>& args) {
  return tk::keyline(state, args, kQuiet);
}

// Runs keyline; a non-zero exit throws, which fails the test with the output.
tk::RunResult kl_ok(const fs::path& state, const std::vector<std::string>& args) {
  tk::RunResult r = kl(state, args);
  if (r.exit_code != 0) throw std::runtime_error("keyline " + join(args) + ": " + describe(r));
  return r;
}

// `keyline --state S --json ARGS...`, which must succeed; the parsed document.
json kl_json(const fs::path& state, std::vector<std::string> args) {
  args.insert(args.begin(), "--json");
  tk::RunResult r = kl_ok(state, args);
  return json::parse(r.out);
}

tk::RunResult openssl(std::vector<std::string> args) {
  args.insert(args.begin(), kOpenssl);
  return tk::run(args);
}

tk::RunResult openssl_ok(const std::vector<std::string>& args) {
  tk::RunResult r = openssl(args);
  if (r.exit_code != 0) throw std::runtime_error("openssl " + join(args) + ": " + describe(r));
  return r;
}

// `openssl verify -x509_strict` of `leaf` up to `root` through `intermediate`.
tk::RunResult verify_strict(const fs::path& root, const fs::path& intermediate, const fs::path& leaf) {
  return openssl({"verify", "-x509_strict", "-CAfile", root.string(), "-untrusted", intermediate.string(),
                  leaf.string()});
}

// ================================================================ CA and CSR set-up

// `keyline ca init EXTRA...` into TMP/state; returns the state dir.
fs::path init_ca(const tk::TempDir& tmp, const std::vector<std::string>& extra = {}) {
  fs::path state = tmp / "state";
  std::vector<std::string> args{"ca", "init"};
  args.insert(args.end(), extra.begin(), extra.end());
  kl_ok(state, args);
  return state;
}

// A CSR (fresh EC P-256 key, subject CN=cn) written to `path`.
fs::path write_csr(const fs::path& path, const std::string& cn) {
  EvpPkeyPtr key = tk::ec_key("P-256");
  tk::write_file(path, tk::csr_pem(key.get(), cn));
  return path;
}

// `keyline --json ca issue --csr CSR --out OUT EXTRA...`, which must succeed.
json issue(const fs::path& state, const fs::path& csr, const fs::path& out,
           const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"ca", "issue", "--csr", csr.string(), "--out", out.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return kl_json(state, args);
}

// Appends a profile table to the state dir's keyline.toml.
void add_profile(const fs::path& state, const std::string& toml) {
  std::string text = tk::read_file(state / "keyline.toml");
  tk::write_file(state / "keyline.toml", text + "\n" + toml);
}

// ================================================================ reading certificates

std::vector<X509Ptr> parse_certs(const fs::path& path) {
  std::string pem = tk::read_file(path);
  keyline::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the end of the input is reported as an error
  return out;
}

X509Ptr parse_cert(const fs::path& path) {
  auto certs = parse_certs(path);
  if (certs.size() != 1)
    throw std::runtime_error(path.string() + ": expected one certificate, found " +
                             std::to_string(certs.size()));
  return std::move(certs.front());
}

std::optional<std::string> name_entry(const X509_NAME* name, int nid) {
  int idx = X509_NAME_get_index_by_NID(name, nid, -1);
  if (idx < 0) return std::nullopt;
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string subject_entry(X509* cert, int nid) {
  return name_entry(X509_get_subject_name(cert), nid).value_or("<absent>");
}

// -1 when the extension is absent, else 0 / 1.
int criticality(X509* cert, int nid) {
  int idx = X509_get_ext_by_NID(cert, nid, -1);
  return idx < 0 ? -1 : X509_EXTENSION_get_critical(X509_get_ext(cert, idx));
}

struct BasicConstraints {
  bool present = false;
  bool ca = false;
  std::optional<long> pathlen;
};

BasicConstraints basic_constraints(X509* cert) {
  BasicConstraints out;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr));
  if (!bc) return out;
  out.present = true;
  out.ca = bc->ca != 0;
  if (bc->pathlen) out.pathlen = ASN1_INTEGER_get(bc->pathlen);
  BASIC_CONSTRAINTS_free(bc);
  return out;
}

std::vector<int> extended_key_usage(X509* cert) {
  std::vector<int> out;
  auto* eku = static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr));
  if (!eku) return out;
  for (int i = 0; i < sk_ASN1_OBJECT_num(eku); ++i) out.push_back(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)));
  EXTENDED_KEY_USAGE_free(eku);
  return out;
}

// Calls fn(GENERAL_NAME*) for each subjectAltName entry.
void for_each_san(X509* cert, const std::function<void(GENERAL_NAME*)>& fn) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) fn(sk_GENERAL_NAME_value(names, i));
  GENERAL_NAMES_free(names);
}

std::string asn1_text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

std::time_t to_time_t(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) throw std::runtime_error("unreadable ASN1_TIME");
  return timegm(&tm);
}

std::string oid_text(const ASN1_OBJECT* obj) {
  char buf[128];
  OBJ_obj2txt(buf, sizeof buf, obj, 1);
  return buf;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("stat " + p.string() + " failed");
  return st.st_mode & 07777;
}

// Every path (files and directories) under `dir`, relative.
std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    out.insert(fs::relative(it->path(), dir).string());
  return out;
}

// What a directory holds: every file's SHA-256 (testkit::snapshot) and every path.
struct DirState {
  std::map<std::string, std::string> files;
  std::set<std::string> paths;
};

DirState capture(const fs::path& dir) { return {tk::snapshot(dir), tree(dir)}; }

// "" when nothing changed, else one line per added, removed or changed path.
std::string changes(const DirState& before, const DirState& after) {
  std::string out;
  for (auto& p : after.paths)
    if (!before.paths.contains(p)) out += "added " + p + "\n";
  for (auto& p : before.paths)
    if (!after.paths.contains(p)) out += "removed " + p + "\n";
  for (auto& [p, hash] : after.files) {
    auto it = before.files.find(p);
    if (it != before.files.end() && it->second != hash) out += "changed " + p + "\n";
  }
  return out;
}

std::string changes_since(const DirState& before, const fs::path& dir) {
  return changes(before, capture(dir));
}

// ================================================================ PEM / DER surgery

// The base64 body of the first PEM block in `pem` (newlines removed).
std::string pem_body(const std::string& pem) {
  auto begin = pem.find("-----\n");
  auto end = pem.find("-----END");
  if (begin == std::string::npos || end == std::string::npos) throw std::runtime_error("not PEM");
  std::string body;
  for (char c : pem.substr(begin + 6, end - begin - 6))
    if (c != '\n' && c != '\r') body.push_back(c);
  return body;
}

std::string pem_block(const std::string& label, const Bytes& der) {
  std::string b64 = keyline::base64_encode(der);
  std::string out = "-----BEGIN " + label + "-----\n";
  for (std::size_t i = 0; i < b64.size(); i += 64) out += b64.substr(i, 64) + "\n";
  return out + "-----END " + label + "-----\n";
}

// Where the contents of the DER TLV at `off` start, and how long they are.
std::pair<std::size_t, std::size_t> der_contents(const Bytes& der, std::size_t off) {
  std::size_t len = der.at(off + 1);
  std::size_t header = 2;
  if (len & 0x80) {
    std::size_t n = len & 0x7f;
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | der.at(off + 2 + i);
    header += n;
  }
  return {off + header, len};
}

// A PEM CSR for `cn` whose signature BIT STRING has one byte flipped.
std::string csr_with_broken_signature(const std::string& cn) {
  EvpPkeyPtr key = tk::ec_key("P-256");
  auto der = keyline::base64_decode(pem_body(tk::csr_pem(key.get(), cn)));
  if (!der) throw std::runtime_error("bad base64 from csr_pem");
  // CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }
  auto [body, body_len] = der_contents(*der, 0);
  auto [info, info_len] = der_contents(*der, body);
  auto [alg, alg_len] = der_contents(*der, info + info_len);
  std::size_t bits_at = alg + alg_len;
  if (der->at(bits_at) != 0x03) throw std::runtime_error("no BIT STRING where the CSR signature should be");
  auto [bits, bits_len] = der_contents(*der, bits_at);
  if (bits + bits_len != der->size() || body + body_len != der->size())
    throw std::runtime_error("unexpected CSR layout");
  (*der)[bits + bits_len - 2] ^= 0x01;  // inside the ECDSA 's' INTEGER
  return pem_block("CERTIFICATE REQUEST", *der);
}

// A PEM CSR with subject CN=cn, bypassing OpenSSL's 64-character upper bound
// for commonName (testkit::csr_pem cannot make a longer CN).
std::string csr_with_long_cn(EVP_PKEY* key, const std::string& cn) {
  keyline::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (!X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                  reinterpret_cast<const unsigned char*>(cn.data()),
                                  static_cast<int>(cn.size()), -1, 0) ||
      !X509_REQ_set_pubkey(req.get(), key) || X509_REQ_sign(req.get(), key, EVP_sha256()) <= 0)
    throw std::runtime_error("cannot build a CSR with CN of " + std::to_string(cn.size()) + " characters");
  return keyline::to_pem_req(req.get());
}

std::string private_key_pem(EVP_PKEY* key) {
  keyline::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

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
  EXPECT_EQ(keys, 2) << "root and intermediate key";

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

std::uint64_t crl_number(const fs::path& crl) {
  tk::RunResult r = openssl_ok({"crl", "-in", crl.string(), "-noout", "-crlnumber"});
  auto eq = r.out.find('=');
  if (eq == std::string::npos) throw std::runtime_error("no crlNumber in: " + r.out);
  std::string hex = r.out.substr(eq + 1);
  if (hex.starts_with("0x")) hex = hex.substr(2);
  return std::stoull(hex, nullptr, 16);
}

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

// ================================================================ 10. the bad-input table

// One initialised state dir with one issued certificate, "dup-0001"; inputs
// for the bad command go in `work`.
struct BadEnv {
  fs::path root;       // the TempDir: snapshotted as a whole
  fs::path state;      // initialised
  fs::path work;       // input files
  fs::path run_state;  // what --state points at (default: state)
  std::string dup_serial;
  std::vector<std::string> prefix;       // argv before the keyline binary (privilege drop)
  std::vector<std::string> also_expect;  // further stderr substrings: the "where" of the message
  std::string skip_reason;

  std::string input(const std::string& name, const std::string& content) {
    tk::write_file(work / name, content);
    return (work / name).string();
  }
  // A valid P-256 CSR for `cn`; its path is expected in the message when `named`.
  std::string csr(const std::string& name, const std::string& cn, bool named = true) {
    std::string path = write_csr(work / name, cn).string();
    if (named) also_expect.push_back(path);
    return path;
  }
  std::string named_input(const std::string& name, const std::string& content) {
    std::string path = input(name, content);
    also_expect.push_back(path);
    return path;
  }
};

struct BadCase {
  using Prepare = std::function<std::vector<std::string>(BadEnv&)>;
  using After = std::function<void(const BadEnv&)>;
  BadCase(std::string n, int code, std::vector<std::string> m, Prepare p, After a = {})
      : name(std::move(n)),
        exit_code(code),
        messages(std::move(m)),
        prepare(std::move(p)),
        after(std::move(a)) {}

  std::string name;
  int exit_code;
  std::vector<std::string> messages;  // each must appear in stderr
  Prepare prepare;                    // writes the inputs; returns the args after --state
  After after;                        // optional extra checks
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

std::vector<std::string> issue_args(const std::string& csr, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"ca", "issue", "--csr", csr};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Makes the state dir read-only: for this user with chmod, for root by also
// dropping to an unprivileged uid (root ignores permission bits).
void make_state_read_only(BadEnv& e) {
  fs::path ledger = e.state / "ledger.db";
  if (::geteuid() == 0) {
    tk::RunResult probe = tk::run({"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                                   "--regid=" + std::to_string(kNobody), "--clear-groups", "--",
                                   tk::bin("keyline").string(), "--version"});
    if (probe.exit_code != 0) {
      e.skip_reason = "running as root, which ignores permission bits, and cannot drop to uid " +
                      std::to_string(kNobody) + " with setpriv to run keyline: " + describe(probe);
      return;
    }
    for (auto& p : fs::recursive_directory_iterator(e.root)) ::lchown(p.path().c_str(), kNobody, kNobody);
    ::lchown(e.root.c_str(), kNobody, kNobody);
    e.prefix = {"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                "--regid=" + std::to_string(kNobody), "--clear-groups", "--"};
  }
  fs::permissions(ledger, fs::perms::owner_read);
  fs::permissions(e.state, fs::perms::owner_read | fs::perms::owner_exec);
  if (::geteuid() != 0 && ::access(ledger.c_str(), W_OK) == 0)
    e.skip_reason =
        "this user can write a 0400 file (CAP_DAC_OVERRIDE?); cannot make the state dir read-only";
}

// One row per case reads better than one argument per line.
// clang-format off
std::vector<BadCase> bad_cases() {
  return {
      {"GarbageText", 3, {"neither a PEM nor a DER"},
       [](BadEnv& e) { return issue_args(e.named_input("garbage.csr", "this is not a CSR, just text\n")); }},
      {"DerWherePemExpected", 3, {"DER", "openssl req -inform DER"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         Bytes der = tk::csr_der(key.get(), "dev-0002");
         return issue_args(e.named_input("device.der", std::string(der.begin(), der.end())));
       }},
      {"BrokenSignature", 3, {"signature does not verify"},
       [](BadEnv& e) {
         return issue_args(e.named_input("broken.csr", csr_with_broken_signature("dev-0002")));
       }},
      {"UnsupportedCurve", 4, {"secp256k1", "not supported"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("secp256k1");
         return issue_args(e.named_input("k1.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"Rsa1024", 4, {"1024 bits"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::rsa_key(1024);
         return issue_args(e.named_input("rsa1024.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"Ed25519Key", 4, {"ED25519", "not supported"},
       [](BadEnv& e) {
         EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
         return issue_args(e.named_input("ed.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"CnDoesNotMatchRegistrationId", 4, {"does not match", "'dev-0002'", "'other-0002'"},
       [](BadEnv& e) {
         return issue_args(e.csr("mismatch.csr", "dev-0002"), {"--registration-id", "other-0002"});
       }},
      {"InvalidRegistrationIdOption", 3, {"--registration-id", "'!' at position 4"},
       [](BadEnv& e) {
         return issue_args(e.csr("x.csr", "dev-0002", false), {"--registration-id", "dev!2"});
       }},
      {"CnWithSlash", 3, {"'/' at position 4"},
       [](BadEnv& e) { return issue_args(e.csr("slash.csr", "dev/1")); }},
      {"CnEndsWithDot", 3, {"ends with '.'"},
       [](BadEnv& e) { return issue_args(e.csr("dot.csr", "dev-1.")); }},
      {"Cn65Characters", 3, {"65 characters"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         return issue_args(e.named_input("long.csr", csr_with_long_cn(key.get(), std::string(65, 'a'))));
       }},
      {"OversizeCsrFile", 3, {"16384"},  // a valid CSR followed by ~20 KB of comment lines
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         std::string pem = tk::csr_pem(key.get(), "dev-0002");
         for (int i = 0; i < 350; ++i) pem += "# padding padding padding padding padding padding padding\n";
         return issue_args(e.named_input("big.csr", pem));
       }},
      {"EmptyCsrFile", 3, {"empty"}, [](BadEnv& e) { return issue_args(e.named_input("empty.csr", "")); }},
      {"MissingCsrFile", 3, {"cannot read", "No such file"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.work / "nope.csr").string());
         return issue_args((e.work / "nope.csr").string());
       }},
      {"PrivateKeyAsCsr", 3, {"private key"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         return issue_args(e.named_input("device.key", private_key_pem(key.get())));
       }},
      {"CertificateAsCsr", 3, {"not a certificate signing request"},
       [](BadEnv& e) {
         return issue_args(e.named_input("cert.pem", tk::read_file(e.state / "intermediate.pem")));
       }},
      {"CaTrueExtensionRequested", 4, {"basicConstraints", "does not allow"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         std::string csr = tk::csr_pem(key.get(), "dev-0002", {"basicConstraints=critical,CA:TRUE"});
         return issue_args(e.named_input("ca.csr", csr));
       }},
      {"DuplicateRegistrationId", 4, {"already has an active certificate", "--reissue"},
       [](BadEnv& e) {
         e.also_expect.push_back(e.dup_serial);
         return issue_args(e.csr("dup.csr", "dup-0001", false));
       }},
      {"UnknownProfile", 2, {"no profile 'nope'", "device", "idevid"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.state / "keyline.toml").string());
         return issue_args(e.csr("p.csr", "dev-0002", false), {"--profile", "nope"});
       }},
      {"MisspelledProfileKeyInConfig", 3, {"unknown key 'validty_days'", "[profiles.typo]"},
       [](BadEnv& e) {
         add_profile(e.state, "[profiles.typo]\nvalidty_days = 30\n");
         e.also_expect.push_back((e.state / "keyline.toml").string());
         return issue_args(e.csr("p.csr", "dev-0002", false));
       }},
      {"RevokeUnknownSerial", 3, {"no certificate with serial 123456789ABCDEF0123456789ABCDEF"},
       [](BadEnv&) {
         return std::vector<std::string>{"ca", "revoke", "--serial", "0123456789ABCDEF0123456789ABCDEF"};
       }},
      {"RevokeNonHexSerial", 3, {"'xyz-1' is not a hexadecimal serial number"},
       [](BadEnv&) { return std::vector<std::string>{"ca", "revoke", "--serial", "xyz-1"}; }},
      {"RevokeBadReason", 2, {"unknown revocation reason 'bogus'"},
       [](BadEnv& e) {
         return std::vector<std::string>{"ca", "revoke", "--serial", e.dup_serial, "--reason", "bogus"};
       }},
      {"CrlDaysOutOfRange", 2, {"--days"},
       [](BadEnv& e) {
         return std::vector<std::string>{"ca", "crl", "--days", "0", "--out", (e.work / "crl.pem").string()};
       }},
      {"LedgerBadStatus", 2, {"--status must be active, revoked or superseded"},
       [](BadEnv&) { return std::vector<std::string>{"ledger", "certificates", "--status", "expired"}; }},
      {"DeviceSerialNotAPrintableString", 3, {"'SN_1'", "position 3"},
       [](BadEnv& e) {
         return issue_args(e.csr("i.csr", "board-0002", false),
                           {"--profile", "idevid", "--device-serial", "SN_1"});
       }},
      // The certificate must not be recorded when it cannot be delivered.
      {"OutIsADirectory", 5, {"it is a directory"},
       [](BadEnv& e) {
         fs::create_directory(e.work / "outdir");
         e.also_expect.push_back((e.work / "outdir").string());
         return issue_args(e.csr("o.csr", "dev-0002", false), {"--out", (e.work / "outdir").string()});
       },
       [](const BadEnv& e) {
         json list = kl_json(e.state, {"ledger", "certificates"});
         std::string ids;
         for (auto& c : list["certificates"]) ids += " " + c["registration_id"].get<std::string>();
         EXPECT_EQ(list["certificates"].size(), 1u) << "ledger records a certificate nobody received:" << ids;
       }},
      {"OutDirectoryMissing", 5, {"No such file or directory"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.work / "missing" / "leaf.pem").string());
         return issue_args(e.csr("o.csr", "dev-0002", false),
                           {"--out", (e.work / "missing" / "leaf.pem").string()});
       }},
      // A CRL number must not be used up by a CRL that was never written.
      {"CrlOutIsADirectory", 5, {"it is a directory"},
       [](BadEnv& e) {
         fs::create_directory(e.work / "outdir");
         e.also_expect.push_back((e.work / "outdir").string());
         return std::vector<std::string>{"ca", "crl", "--out", (e.work / "outdir").string()};
       },
       [](const BadEnv& e) {
         kl_ok(e.state, {"ca", "crl", "--out", (e.work / "crl.pem").string()});
         EXPECT_EQ(crl_number(e.work / "crl.pem"), 1u) << "the first CRL written must be number 1";
       }},
      {"MissingCaKey", 6, {"key 'keyline-intermediate' not found"},
       [](BadEnv& e) {
         fs::remove(e.state / "keys" / "keyline-intermediate.key.pem");
         return issue_args(e.csr("k.csr", "dev-0002", false));
       }},
      {"IntermediateCertificateForAnotherKey", 6, {"does not belong to the issuer certificate"},
       [](BadEnv& e) {
         tk::write_file(e.state / "intermediate.pem", tk::read_file(e.state / "root.pem"));
         return issue_args(e.csr("k.csr", "dev-0002", false));
       }},
      {"InitWithBadRootSubject", 3, {"'Keyline Root' is not of the form ATTR=value"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-subject", "Keyline Root"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")); }},
      {"InitWithZeroRootDays", 2, {"--root-days must be 1 to 36500"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-days", "0"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")); }},
      // The same usage error with the key store outside the state dir: no CA
      // key may be left in it, or the retry fails with "key already exists".
      {"InitWithZeroRootDaysExternalKeyStore", 2, {"--root-days must be 1 to 36500"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-days", "0", "--key-store",
                                         "file:" + (e.root / "hsm").string()};
       },
       [](const BadEnv& e) {
         EXPECT_FALSE(fs::exists(e.root / "fresh"));
         EXPECT_FALSE(fs::exists(e.root / "hsm" / "keyline-root.key.pem")) << "CA key left behind";
       }},
      {"UninitialisedStateDir", 5, {"keyline ca init"},
       [](BadEnv& e) {
         e.run_state = e.root / "empty";
         fs::create_directory(e.run_state);
         e.also_expect.push_back(e.run_state.string());
         return issue_args(e.csr("u.csr", "dev-0002", false));
       }},
      {"ReadOnlyStateDir", 5, {"writable"},
       [](BadEnv& e) {
         std::string csr = e.csr("ro.csr", "dev-0002", false);
         make_state_read_only(e);
         e.also_expect.push_back((e.state / "ledger.db").string());
         return issue_args(csr);
       }},
      {"CorruptLedger", 5, {"corrupt"},
       [](BadEnv& e) {
         fs::remove(e.state / "ledger.db-wal");
         fs::remove(e.state / "ledger.db-shm");
         std::mt19937 gen(20240611);
         std::string noise(4096, '\0');
         for (auto& c : noise) c = static_cast<char>(gen() & 0xff);
         tk::write_file(e.state / "ledger.db", noise);
         e.also_expect.push_back((e.state / "ledger.db").string());
         return issue_args(e.csr("c.csr", "dev-0002", false));
       }},
      {"UnsupportedKeyStoreScheme", 2, {"'foo'", "not supported"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--key-store", "foo:bar"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")) << "the new state dir was left"; }},
  };
}
// clang-format on

class BadInput : public testing::TestWithParam<BadCase> {};

TEST_P(BadInput, FailsWithExactExitCodeAndMessageAndWritesNothing) {
  const BadCase& c = GetParam();
  tk::TempDir tmp;
  BadEnv e;
  e.root = tmp.path();
  e.state = init_ca(tmp);
  e.work = tmp / "in";
  e.run_state = e.state;
  fs::create_directory(e.work);
  e.dup_serial =
      issue(e.state, write_csr(e.work / "dup-0001.csr", "dup-0001"), e.work / "dup-0001.pem")["serial"]
          .get<std::string>();

  std::vector<std::string> args = c.prepare(e);
  if (!e.skip_reason.empty()) GTEST_SKIP() << e.skip_reason;
  DirState before = capture(e.root);

  std::vector<std::string> argv = e.prefix;
  argv.insert(argv.end(), {tk::bin("keyline").string(), "--state", e.run_state.string()});
  argv.insert(argv.end(), args.begin(), args.end());
  tk::RunResult r = tk::run(argv, kQuiet);

  EXPECT_EQ(r.exit_code, c.exit_code) << join(args) << "\n" << describe(r);
  EXPECT_TRUE(r.err.starts_with("keyline: error: ")) << r.err;
  for (auto& m : c.messages) EXPECT_TRUE(contains(r.err, m)) << "expected '" << m << "' in: " << r.err;
  for (auto& m : e.also_expect) EXPECT_TRUE(contains(r.err, m)) << "expected '" << m << "' in: " << r.err;
  EXPECT_EQ(r.out, "") << "a refused command prints nothing on stdout";
  EXPECT_EQ(changes_since(before, e.root), "")
      << "a refused command must not create, change or remove anything";
  if (c.after) c.after(e);
}

INSTANTIATE_TEST_SUITE_P(Table, BadInput, testing::ValuesIn(bad_cases()),
                         [](const testing::TestParamInfo<BadCase>& info) { return info.param.name; });

// ================================================================ 11. secrets

// What must never leave the key store: the key file's base64 body, its DER,
// and the private scalar (raw, hex, and base64 at each of the three byte
// alignments it can have inside a larger base64 text). Parts of the file that
// only hold the public key are public and legitimately appear in certificates.
struct KeyNeedles {
  std::string label;
  std::vector<std::string> needles;
};

std::vector<KeyNeedles> key_needles(const fs::path& keys_dir) {
  std::vector<KeyNeedles> out;
  for (auto& entry : fs::directory_iterator(keys_dir)) {
    if (!entry.path().string().ends_with(".key.pem")) continue;
    std::string pem = tk::read_file(entry.path());
    KeyNeedles k{entry.path().filename().string(), {}};
    std::string body = pem_body(pem);
    k.needles.push_back(body);
    auto der = keyline::base64_decode(body);
    if (!der) throw std::runtime_error("key file is not PEM: " + entry.path().string());
    k.needles.emplace_back(der->begin(), der->end());
    keyline::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) throw std::runtime_error("unreadable key " + entry.path().string());
    BIGNUM* priv = nullptr;
    if (!EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &priv))
      EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_D, &priv);
    if (!priv) throw std::runtime_error("no private scalar in " + entry.path().string());
    Bytes raw(static_cast<std::size_t>(BN_num_bytes(priv)));
    BN_bn2bin(priv, raw.data());
    BN_clear_free(priv);
    k.needles.emplace_back(raw.begin(), raw.end());
    std::string hex = keyline::to_hex(raw);
    k.needles.push_back(hex);
    for (auto& ch : hex) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    k.needles.push_back(hex);
    for (std::size_t shift = 0; shift < 3; ++shift) {
      std::size_t n = (raw.size() - shift) / 3 * 3;
      k.needles.push_back(keyline::base64_encode(Bytes(raw.begin() + shift, raw.begin() + shift + n)));
    }
    out.push_back(std::move(k));
  }
  return out;
}

// `text` as is, and with line breaks removed (PEM wraps base64 at 64 columns).
bool leaks(const std::string& text, const std::string& needle) {
  if (contains(text, needle)) return true;
  std::string joined;
  for (char c : text)
    if (c != '\n' && c != '\r') joined.push_back(c);
  return contains(joined, needle);
}

TEST(Secrets, PrivateKeyBytesNeverReachOutputLogsOrLedger) {
  tk::TempDir tmp;
  fs::path state = tmp / "state";
  std::vector<std::pair<std::string, tk::RunResult>> runs;
  auto trace = [&](std::vector<std::string> args) {
    std::vector<std::string> full{"--log-level", "trace"};
    full.insert(full.end(), args.begin(), args.end());
    runs.emplace_back(join(args), tk::keyline(state, full));
    return runs.back().second;
  };
  ASSERT_EQ(trace({"ca", "init"}).exit_code, 0) << describe(runs.back().second);
  EXPECT_FALSE(runs.back().second.err.empty())
      << "trace logging should say something (the key store warning)";
  fs::path csr = write_csr(tmp / "a.csr", "dev-secret");
  json doc = json::parse(
      trace({"--json", "ca", "issue", "--csr", csr.string(), "--out", (tmp / "a.pem").string()}).out);
  trace({"ca", "issue", "--csr", write_csr(tmp / "b.csr", "dev-secret-b").string()});
  trace({"ca", "issue", "--csr", csr.string()});  // refused: duplicate
  trace({"ca", "issue", "--csr", csr.string(), "--reissue", "--chain"});
  trace({"ca", "show"});
  trace({"--json", "ca", "show"});
  trace({"ca", "revoke", "--serial", doc["serial"].get<std::string>(), "--reason", "keyCompromise"});
  trace({"ca", "crl"});
  trace({"ca", "verification-cert", "--code", "ABC123"});
  trace({"ledger", "certificates"});
  trace({"--json", "ledger", "certificates"});
  trace({"ca", "init"});  // refused: already initialised

  auto keys = key_needles(state / "keys");
  ASSERT_EQ(keys.size(), 2u);
  // The needles do find a key where it is: in its own file.
  for (auto& key : keys) {
    std::string own = tk::read_file(state / "keys" / key.label);
    int found = 0;
    for (auto& needle : key.needles) found += leaks(own, needle) ? 1 : 0;
    EXPECT_GE(found, 2) << "body and one base64 alignment of the scalar must match " << key.label;
  }
  for (auto& key : keys) {
    for (auto& needle : key.needles) {
      for (auto& [what, r] : runs) {
        EXPECT_FALSE(leaks(r.out, needle)) << key.label << " leaked on stdout of: " << what;
        EXPECT_FALSE(leaks(r.err, needle)) << key.label << " leaked on stderr of: " << what;
      }
      for (auto& entry : fs::directory_iterator(state)) {
        if (!entry.is_regular_file()) continue;
        EXPECT_FALSE(leaks(tk::read_file(entry.path()), needle))
            << key.label << " found in " << entry.path().filename();
      }
    }
  }
}

// ================================================================ 12. usage

TEST(Usage, HelpListsTheSubcommands) {
  tk::RunResult top = tk::run({tk::bin("keyline").string(), "--help"});
  EXPECT_EQ(top.exit_code, 0) << describe(top);
  for (const char* s : {"ca", "ledger", "--state", "--json", "Exit codes"})
    EXPECT_TRUE(contains(top.out, s)) << s << " missing from:\n" << top.out;

  tk::RunResult ca = tk::run({tk::bin("keyline").string(), "ca", "--help"});
  EXPECT_EQ(ca.exit_code, 0) << describe(ca);
  for (const char* s : {"init", "request", "show", "issue", "revoke", "crl", "verification-cert"})
    EXPECT_TRUE(contains(ca.out, s)) << s << " missing from:\n" << ca.out;
}

TEST(Usage, MissingRequiredOptionOrSubcommandIsExitTwo) {
  tk::TempDir tmp;
  tk::RunResult no_csr = kl(tmp.path(), {"ca", "issue"});
  EXPECT_EQ(no_csr.exit_code, 2) << describe(no_csr);
  EXPECT_TRUE(contains(no_csr.err, "--csr")) << no_csr.err;

  tk::RunResult nothing = tk::run({tk::bin("keyline").string()});
  EXPECT_EQ(nothing.exit_code, 2) << describe(nothing);

  tk::RunResult bad_algorithm = kl(tmp / "state", {"ca", "init", "--algorithm", "dsa-1024"});
  EXPECT_EQ(bad_algorithm.exit_code, 2) << describe(bad_algorithm);
  EXPECT_FALSE(fs::exists(tmp / "state"));
  EXPECT_TRUE(tree(tmp.path()).empty()) << "usage errors write nothing";
}

}  // namespace
