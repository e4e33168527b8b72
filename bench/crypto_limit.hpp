#pragma once
// The crypto limit of CSR-based issuance, measured with OpenSSL on one core:
// per certificate, a P-256 signature verified (the CSR's) and one made (the
// certificate's), each over a SHA-256 of a certificate-sized message, with
// contexts set up once and keys already loaded (as `openssl speed` measures).
// Shared by batch_bench and hsm_bench.

#include <chrono>
#include <cstdlib>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

namespace bench {

// Operations per second of `op`, run for about `seconds`.
template <typename F>
double rate(F&& op, double seconds = 1.5) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  std::size_t n = 0;
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    for (int i = 0; i < 50; ++i) op();
    n += 50;
  }
  return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
}

inline EVP_PKEY* ec_key() { return EVP_EC_gen("P-256"); }

inline double csr_crypto_limit(double seconds = 1.5) {
  EVP_PKEY* ca = ec_key();
  EVP_PKEY* dev = ec_key();
  unsigned char msg[400] = {1, 2, 3};
  unsigned char digest[32];
  unsigned char sig[80];
  size_t siglen = sizeof sig;
  EVP_PKEY_CTX* sctx = EVP_PKEY_CTX_new(ca, nullptr);
  EVP_PKEY_sign_init(sctx);
  EVP_PKEY_CTX* dctx = EVP_PKEY_CTX_new(dev, nullptr);
  EVP_PKEY_sign_init(dctx);
  SHA256(msg, sizeof msg, digest);
  EVP_PKEY_sign(dctx, sig, &siglen, digest, sizeof digest);
  EVP_PKEY_CTX* vctx = EVP_PKEY_CTX_new(dev, nullptr);
  EVP_PKEY_verify_init(vctx);
  double r = rate(
      [&] {
        unsigned char d[32];
        SHA256(msg, sizeof msg, d);
        if (EVP_PKEY_verify(vctx, sig, siglen, digest, sizeof digest) != 1) std::abort();
        unsigned char out[80];
        size_t outlen = sizeof out;
        SHA256(msg, sizeof msg, d);
        EVP_PKEY_sign(sctx, out, &outlen, d, sizeof d);
      },
      seconds);
  EVP_PKEY_CTX_free(vctx);
  EVP_PKEY_CTX_free(dctx);
  EVP_PKEY_CTX_free(sctx);
  EVP_PKEY_free(ca);
  EVP_PKEY_free(dev);
  return r;
}

}  // namespace bench
