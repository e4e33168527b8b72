#include "keyline/core/openssl.hpp"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "keyline/core/hex.hpp"

namespace keyline {

std::string drain_openssl_errors() {
  std::string out;
  unsigned long code;
  char buf[256];
  while ((code = ERR_get_error()) != 0) {
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

Error openssl_error(Domain d, std::string_view what) {
  unsigned long first = ERR_peek_error();
  std::string detail = drain_openssl_errors();
  std::string msg(what);
  if (!detail.empty()) msg += " (" + detail + ")";
  return Error(d, std::move(msg), static_cast<std::int64_t>(first));
}

Result<Bytes> to_der(const X509* x) {
  unsigned char* out = nullptr;
  int n = i2d_X509(x, &out);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a certificate to DER"));
  Bytes der(out, out + n);
  OPENSSL_free(out);
  return der;
}

Result<Bytes> to_der_req(const X509_REQ* r) {
  unsigned char* out = nullptr;
  int n = i2d_X509_REQ(r, &out);
  if (n <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding a CSR to DER"));
  Bytes der(out, out + n);
  OPENSSL_free(out);
  return der;
}

Result<X509Ptr> x509_from_der(ByteView der) {
  const unsigned char* p = der.data();
  X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!x || p != der.data() + der.size())
    return std::unexpected(openssl_error(Domain::input, "not a DER certificate"));
  return x;
}

namespace {
template <typename F>
std::string bio_string(F&& write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  write(bio.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}
}  // namespace

std::string to_pem(const X509* x) {
  return bio_string([&](BIO* b) { PEM_write_bio_X509(b, const_cast<X509*>(x)); });
}
std::string to_pem_req(const X509_REQ* r) {
  return bio_string([&](BIO* b) { PEM_write_bio_X509_REQ(b, const_cast<X509_REQ*>(r)); });
}
std::string to_pem_crl(const X509_CRL* c) {
  return bio_string([&](BIO* b) { PEM_write_bio_X509_CRL(b, const_cast<X509_CRL*>(c)); });
}

Result<X509Ptr> x509_from_pem(std::string_view pem, std::string_view source) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!x) {
    drain_openssl_errors();
    return fail(Domain::input, std::string(source) +
                                   ": no PEM certificate found (expected a '-----BEGIN "
                                   "CERTIFICATE-----' block)");
  }
  return x;
}

std::string pem_encode(std::string_view label, ByteView der) {
  std::string b64 = base64_encode(der);
  std::string out;
  out.reserve(b64.size() + b64.size() / 64 + 2 * label.size() + 40);
  out.append("-----BEGIN ").append(label).append("-----\n");
  for (std::size_t i = 0; i < b64.size(); i += 64) {
    out.append(b64, i, 64);
    out.push_back('\n');
  }
  out.append("-----END ").append(label).append("-----\n");
  OPENSSL_cleanse(b64.data(), b64.size());
  return out;
}

namespace {

// OpenSSL 3's one-shot SHA256() fetches the algorithm (under a global lock)
// on every call; here it is fetched once and each thread keeps a context.
void digest_into(const char* name, ByteView data, unsigned char* out) {
  struct Md {
    EVP_MD* md;
    explicit Md(const char* n) : md(EVP_MD_fetch(nullptr, n, nullptr)) {}
    ~Md() { EVP_MD_free(md); }
  };
  static const Md sha1("SHA1"), sha256("SHA256"), sha384("SHA384");
  std::string_view n(name);
  const EVP_MD* md = n == "SHA384" ? sha384.md : n == "SHA1" ? sha1.md : sha256.md;
  thread_local std::unique_ptr<EVP_MD_CTX, Free<EVP_MD_CTX_free>> ctx(EVP_MD_CTX_new());
  if (!md || !ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out, nullptr) != 1) {
    std::fputs("keyline: SHA-2 is not available from OpenSSL; refusing to continue\n", stderr);
    std::abort();
  }
}

}  // namespace

void sha1_into(ByteView data, unsigned char* out) { digest_into("SHA1", data, out); }
void sha256_into(ByteView data, unsigned char* out) { digest_into("SHA256", data, out); }
void sha384_into(ByteView data, unsigned char* out) { digest_into("SHA384", data, out); }

Bytes sha256(ByteView data) {
  Bytes out(SHA256_DIGEST_LENGTH);
  sha256_into(data, out.data());
  return out;
}

std::string sha256_hex(ByteView data) { return to_hex(sha256(data)); }

std::string name_to_string(const X509_NAME* n) {
  return bio_string([&](BIO* b) {
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  });
}

Result<X509NamePtr> parse_dn(std::string_view dn) {
  // Accepts "/CN=a/O=b" (OpenSSL style) or "CN=a, O=b" (RFC 4514 order as written).
  X509NamePtr name(X509_NAME_new());
  std::vector<std::string> parts;
  std::string cur;
  bool slash = !dn.empty() && dn.front() == '/';
  char sep = slash ? '/' : ',';
  for (std::size_t i = slash ? 1 : 0; i < dn.size(); ++i) {
    char c = dn[i];
    if (c == '\\' && i + 1 < dn.size()) {
      cur.push_back(dn[++i]);
    } else if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  parts.push_back(cur);
  for (auto& part : parts) {
    auto trim = [](std::string s) {
      auto a = s.find_first_not_of(" \t");
      auto b = s.find_last_not_of(" \t");
      return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
    };
    part = trim(part);
    if (part.empty()) return fail(Domain::input, "distinguished name '" + std::string(dn) + "' has an empty component; write it as 'CN=Name,O=Org' or '/CN=Name/O=Org'");
    auto eq = part.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == part.size())
      return fail(Domain::input, "distinguished name component '" + part + "' is not of the form ATTR=value (for example CN=Keyline Root)");
    std::string attr = trim(part.substr(0, eq));
    std::string value = trim(part.substr(eq + 1));
    if (OBJ_txt2nid(attr.c_str()) == NID_undef)
      return fail(Domain::input, "distinguished name attribute '" + attr + "' is unknown (use CN, O, OU, C, L, ST, serialNumber...)");
    if (!X509_NAME_add_entry_by_txt(name.get(), attr.c_str(), MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.c_str()),
                                    static_cast<int>(value.size()), -1, 0))
      return std::unexpected(openssl_error(Domain::input, "distinguished name component '" + part + "' is invalid"));
  }
  return name;
}

}  // namespace keyline
