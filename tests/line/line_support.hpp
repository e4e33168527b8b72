#pragma once
// Helpers shared by the line tests (header-only, test code).
#include <gtest/gtest.h>

#include <openssl/pem.h>
#include <openssl/rand.h>

#include <chrono>
#include <string>

#include "keyline/core/openssl.hpp"
#include "keyline/provision/device_session.hpp"
#include "keyline/testkit/testkit.hpp"

namespace line_test {

using keyline::Bytes;
using keyline::ByteView;

// Short timeouts and generous retries: fault tests finish quickly.
inline keyline::station::provision::SessionOptions fast_options() {
  keyline::station::provision::SessionOptions o;
  o.timeout = std::chrono::milliseconds(300);
  o.keygen_timeout = std::chrono::milliseconds(3000);
  o.max_attempts = 8;
  return o;
}

// Timeouts far beyond any reply time, even under the sanitizers on a loaded
// machine: for tests on a clean link that assert no request was retried
// (with fast_options() a slow reply there would count as a retry).
inline keyline::station::provision::SessionOptions clean_options() {
  keyline::station::provision::SessionOptions o;
  o.timeout = std::chrono::seconds(10);
  o.keygen_timeout = std::chrono::seconds(10);
  o.max_attempts = 4;
  return o;
}

inline ByteView view(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

inline keyline::X509ReqPtr parse_csr(const Bytes& der) {
  const unsigned char* p = der.data();
  return keyline::X509ReqPtr(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
}

inline std::string csr_cn(const Bytes& der) {
  auto req = parse_csr(der);
  if (!req) return "(unparsable CSR)";
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req.get()), NID_commonName, buf, sizeof buf);
  return buf;
}

inline keyline::EvpPkeyPtr csr_key(const Bytes& der) {
  auto req = parse_csr(der);
  return keyline::EvpPkeyPtr(req ? X509_REQ_get_pubkey(req.get()) : nullptr);
}

// `openssl req -verify` accepts the CSR's self-signature.
inline void expect_openssl_req_verifies(const keyline::testkit::TempDir& dir, const Bytes& der) {
  auto path = dir / "device.csr.der";
  keyline::testkit::write_file(path, std::string(der.begin(), der.end()));
  auto r = keyline::testkit::run(
      {"/usr/bin/openssl", "req", "-inform", "DER", "-in", path.string(), "-verify", "-noout"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE((r.out + r.err).find("verify OK"), std::string::npos) << r.out << r.err;
}

// n self-signed certificates as one PEM text (stand-in for a chain: the
// device stores the slot as opaque bytes).
inline std::string fake_chain_pem(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    auto key = keyline::testkit::ec_key();
    keyline::X509Ptr x(X509_new());
    X509_set_version(x.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x.get()), i + 1);
    X509_NAME* name = X509_get_subject_name(x.get());
    std::string cn = "chain-" + std::to_string(i);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                               static_cast<int>(cn.size()), -1, 0);
    X509_set_issuer_name(x.get(), name);
    X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
    X509_set_pubkey(x.get(), key.get());
    X509_sign(x.get(), key.get(), EVP_sha256());
    out += keyline::to_pem(x.get());
  }
  return out;
}

}  // namespace line_test
