#pragma once
// tpm2: key store -- signing keys inside a TPM 2.0, through tpm2-tss ESAPI
// (TCG TSS 2.0 Enhanced System API; commands per TPM 2.0 Library Part 3).
//
//   tpm2:handle=0x81000100?tcti=device:/dev/tpmrm0
//   tpm2:handle=0x81000100?tcti=swtpm:path=/run/swtpm/sock&auth-source=file:/etc/keyline/tpm-auth
//
// URI: path attribute `handle` = the BASE persistent handle, 0x81000000 to
// 0x817FFF00 and a multiple of 0x100 (owner persistent range, TCG "Registry
// of Reserved TPM 2.0 Handles"). Query attributes (percent-decoded):
//   tcti         a tss2-tctildr configuration string; default device:/dev/tpmrm0
//   auth-source  file:PATH holding the keys' authorization value (userAuth,
//                at most 32 bytes). Without it, $KEYLINE_TPM_AUTH when set,
//                else an empty authorization value. Never a prompt, never
//                the value itself in the URI.
//
// Labels: nothing is recorded on disk. A label maps to the persistent handle
// base + (FNV-1a-32(label) mod 0x100); a label written "0xHHHHHHHH" that lies
// in [base, base+0xFF] names that handle directly (list() reports handles in
// this form, as the TPM keeps no labels). Two labels can map to one handle:
// generate_signing_key refuses an occupied handle (never overwrites), so
// choose another label then; signer(label) cannot tell which label created
// the key at its handle.
//
// Keys: generate_signing_key creates the key under an owner-hierarchy storage
// primary (ECC P-256, AES-128-CFB, restricted decrypt; re-created for each
// generation and flushed), then TPM2_EvictControl makes it persistent at the
// label's handle. EC P-256 / P-384 (TPM2_ALG_ECDSA with SHA-256 / SHA-384)
// and RSA-2048 / RSA-3072 (TPM2_ALG_RSASSA with SHA-256) when the TPM
// supports them. The owner hierarchy's authorization must be empty (the
// usual state of a Linux machine's TPM); owner-auth is not supported yet.
// sign() is TPM2_Sign over the digest with a NULL hashcheck ticket; the r/s
// pair is returned as a DER ECDSA-Sig-Value. destroy_signing_key evicts the
// label's persistent handle (TPM2_EvictControl), whichever key is there.
//
// Secrets (generate_secret, import_secret, secret, destroy_secret) are not
// supported by this backend: keep DPS group keys in a PKCS#11 token.
//
// Concurrency: one owner thread per store runs every ESAPI call (an ESYS
// context is not thread-safe); Signer::sign from any thread queues a job and
// waits for it. TPM_RC_RETRY / YIELDED / TESTING are retried a few times.
// A transport failure drops the ESYS context; the next call (and one
// immediate retry) reconnects, so signing resumes once the TPM is back. When
// it is not, the error says "TPM not reachable via TCTI '...'".
//
// Errors: Domain::keystore with the TSS2_RC as native code, decoded with
// Tss2_RC_Decode. Log module: "hsm.tpm2"; the authorization value is never logged.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "keyline/hsm/key_store.hpp"

namespace keyline::hsm {

inline constexpr std::string_view kDefaultTcti = "device:/dev/tpmrm0";

class Tpm2Uri {
 public:
  static Result<Tpm2Uri> parse(std::string_view text);

  std::uint32_t base_handle() const noexcept { return base_handle_; }
  const std::string& tcti() const noexcept { return tcti_; }
  const std::string& auth_source() const noexcept { return auth_source_; }
  // Canonical form; never holds a secret.
  std::string to_string() const;

 private:
  std::uint32_t base_handle_ = 0;
  std::string tcti_{kDefaultTcti};
  std::string auth_source_;
};

// The persistent handle a label maps to (see above).
std::uint32_t tpm2_handle_for(std::uint32_t base_handle, std::string_view label);

Result<std::unique_ptr<KeyStore>> make_tpm2_store(const Tpm2Uri& uri);

}  // namespace keyline::hsm
