#pragma once
// Shared helpers of the keyline CLI integration tests.
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

namespace keyline::cli_test {

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using keyline::Bytes;
using keyline::EvpPkeyPtr;
using keyline::X509Ptr;
using nlohmann::json;
using Env = std::map<std::string, std::string>;

inline const Env kQuiet{{"KEYLINE_LOG", "error"}};
constexpr const char* kOpenssl = "/usr/bin/openssl";
constexpr int kNobody = 65534;

// ================================================================ running programs

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline std::string join(const std::vector<std::string>& args) {
  std::string out;
  for (auto& a : args) out += (out.empty() ? "" : " ") + a;
  return out;
}

inline std::string describe(const tk::RunResult& r) {
  return "exit code " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out + "--- stderr:\n" + r.err;
}

inline tk::RunResult kl(const fs::path& state, const std::vector<std::string>& args) {
  return tk::keyline(state, args, kQuiet);
}

// Runs keyline; a non-zero exit throws, which fails the test with the output.
inline tk::RunResult kl_ok(const fs::path& state, const std::vector<std::string>& args) {
  tk::RunResult r = kl(state, args);
  if (r.exit_code != 0) throw std::runtime_error("keyline " + join(args) + ": " + describe(r));
  return r;
}

// `keyline --state S --json ARGS...`, which must succeed; the parsed document.
inline json kl_json(const fs::path& state, std::vector<std::string> args) {
  args.insert(args.begin(), "--json");
  tk::RunResult r = kl_ok(state, args);
  return json::parse(r.out);
}

inline tk::RunResult openssl(std::vector<std::string> args) {
  args.insert(args.begin(), kOpenssl);
  return tk::run(args);
}

inline tk::RunResult openssl_ok(const std::vector<std::string>& args) {
  tk::RunResult r = openssl(args);
  if (r.exit_code != 0) throw std::runtime_error("openssl " + join(args) + ": " + describe(r));
  return r;
}

// `openssl verify -x509_strict` of `leaf` up to `root` through `intermediate`.
inline tk::RunResult verify_strict(const fs::path& root, const fs::path& intermediate, const fs::path& leaf) {
  return openssl({"verify", "-x509_strict", "-CAfile", root.string(), "-untrusted", intermediate.string(),
                  leaf.string()});
}

// ================================================================ CA and CSR set-up

// `keyline ca init EXTRA...` into TMP/state; returns the state dir.
inline fs::path init_ca(const tk::TempDir& tmp, const std::vector<std::string>& extra = {}) {
  fs::path state = tmp / "state";
  std::vector<std::string> args{"ca", "init"};
  args.insert(args.end(), extra.begin(), extra.end());
  kl_ok(state, args);
  return state;
}

// A CSR (fresh EC P-256 key, subject CN=cn) written to `path`.
inline fs::path write_csr(const fs::path& path, const std::string& cn) {
  EvpPkeyPtr key = tk::ec_key("P-256");
  tk::write_file(path, tk::csr_pem(key.get(), cn));
  return path;
}

// `keyline --json ca issue --csr CSR --out OUT EXTRA...`, which must succeed.
inline json issue(const fs::path& state, const fs::path& csr, const fs::path& out,
           const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"ca", "issue", "--csr", csr.string(), "--out", out.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return kl_json(state, args);
}

// Appends a profile table to the state dir's keyline.toml.
inline void add_profile(const fs::path& state, const std::string& toml) {
  std::string text = tk::read_file(state / "keyline.toml");
  tk::write_file(state / "keyline.toml", text + "\n" + toml);
}

// ================================================================ reading certificates

inline std::vector<X509Ptr> parse_certs(const fs::path& path) {
  std::string pem = tk::read_file(path);
  keyline::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the end of the input is reported as an error
  return out;
}

inline X509Ptr parse_cert(const fs::path& path) {
  auto certs = parse_certs(path);
  if (certs.size() != 1)
    throw std::runtime_error(path.string() + ": expected one certificate, found " +
                             std::to_string(certs.size()));
  return std::move(certs.front());
}

inline std::optional<std::string> name_entry(const X509_NAME* name, int nid) {
  int idx = X509_NAME_get_index_by_NID(name, nid, -1);
  if (idx < 0) return std::nullopt;
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

inline std::string subject_entry(X509* cert, int nid) {
  return name_entry(X509_get_subject_name(cert), nid).value_or("<absent>");
}

// -1 when the extension is absent, else 0 / 1.
inline int criticality(X509* cert, int nid) {
  int idx = X509_get_ext_by_NID(cert, nid, -1);
  return idx < 0 ? -1 : X509_EXTENSION_get_critical(X509_get_ext(cert, idx));
}

struct BasicConstraints {
  bool present = false;
  bool ca = false;
  std::optional<long> pathlen;
};

inline BasicConstraints basic_constraints(X509* cert) {
  BasicConstraints out;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr));
  if (!bc) return out;
  out.present = true;
  out.ca = bc->ca != 0;
  if (bc->pathlen) out.pathlen = ASN1_INTEGER_get(bc->pathlen);
  BASIC_CONSTRAINTS_free(bc);
  return out;
}

inline std::vector<int> extended_key_usage(X509* cert) {
  std::vector<int> out;
  auto* eku = static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr));
  if (!eku) return out;
  for (int i = 0; i < sk_ASN1_OBJECT_num(eku); ++i) out.push_back(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)));
  EXTENDED_KEY_USAGE_free(eku);
  return out;
}

// Calls fn(GENERAL_NAME*) for each subjectAltName entry.
inline void for_each_san(X509* cert, const std::function<void(GENERAL_NAME*)>& fn) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) fn(sk_GENERAL_NAME_value(names, i));
  GENERAL_NAMES_free(names);
}

inline std::string asn1_text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

inline std::time_t to_time_t(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) throw std::runtime_error("unreadable ASN1_TIME");
  return timegm(&tm);
}

inline std::string oid_text(const ASN1_OBJECT* obj) {
  char buf[128];
  OBJ_obj2txt(buf, sizeof buf, obj, 1);
  return buf;
}

inline unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("stat " + p.string() + " failed");
  return st.st_mode & 07777;
}

// Every path (files and directories) under `dir`, relative.
inline std::set<std::string> tree(const fs::path& dir) {
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

// The audit trail's record types in order, one per line ("" without a ledger).
inline std::string audit_types(const fs::path& state) {
  if (!fs::exists(state / "ledger.db")) return "";
  tk::RunResult r = tk::run({"/usr/bin/sqlite3", (state / "ledger.db").string(),
                             "SELECT type FROM audit_events ORDER BY seq"});
  return r.out;
}

inline DirState capture(const fs::path& dir) { return {tk::snapshot(dir), tree(dir)}; }

// "" when nothing changed, else one line per added, removed or changed path.
inline std::string changes(const DirState& before, const DirState& after) {
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

inline std::string changes_since(const DirState& before, const fs::path& dir) {
  return changes(before, capture(dir));
}

// ================================================================ PEM / DER surgery

// The base64 body of the first PEM block in `pem` (newlines removed).
inline std::string pem_body(const std::string& pem) {
  auto begin = pem.find("-----\n");
  auto end = pem.find("-----END");
  if (begin == std::string::npos || end == std::string::npos) throw std::runtime_error("not PEM");
  std::string body;
  for (char c : pem.substr(begin + 6, end - begin - 6))
    if (c != '\n' && c != '\r') body.push_back(c);
  return body;
}

inline std::string pem_block(const std::string& label, const Bytes& der) {
  std::string b64 = keyline::base64_encode(der);
  std::string out = "-----BEGIN " + label + "-----\n";
  for (std::size_t i = 0; i < b64.size(); i += 64) out += b64.substr(i, 64) + "\n";
  return out + "-----END " + label + "-----\n";
}

// Where the contents of the DER TLV at `off` start, and how long they are.
inline std::pair<std::size_t, std::size_t> der_contents(const Bytes& der, std::size_t off) {
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
inline std::string csr_with_broken_signature(const std::string& cn) {
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
inline std::string csr_with_long_cn(EVP_PKEY* key, const std::string& cn) {
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

inline std::string private_key_pem(EVP_PKEY* key) {
  keyline::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}


inline std::uint64_t crl_number(const fs::path& crl) {
  tk::RunResult r = openssl_ok({"crl", "-in", crl.string(), "-noout", "-crlnumber"});
  auto eq = r.out.find('=');
  if (eq == std::string::npos) throw std::runtime_error("no crlNumber in: " + r.out);
  std::string hex = r.out.substr(eq + 1);
  if (hex.starts_with("0x")) hex = hex.substr(2);
  return std::stoull(hex, nullptr, 16);
}

}  // namespace keyline::cli_test
