#pragma once
// ca::Ceremony -- how a station gets its CA:
//  * development / single-station: make_root() then make_intermediate(),
//    both keys in the chosen key store;
//  * production: make_request() for an intermediate key generated in the
//    HSM/TPM, the CSR signed by an offline root elsewhere, then
//    check_import() before the signed intermediate is accepted.
//
// Root:         basicConstraints critical CA:TRUE; keyUsage critical
//               keyCertSign, cRLSign; SKI.
// Intermediate: basicConstraints critical CA:TRUE, pathlen:0; keyUsage
//               critical keyCertSign, cRLSign, digitalSignature; SKI; AKI.

#include "keyline/core/clock.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/hsm/signer.hpp"

namespace keyline::ca {

Result<X509Ptr> make_root(const hsm::Signer& root_key, const X509_NAME& subject, int days,
                          const Clock& clock, Rng& rng);

Result<X509Ptr> make_intermediate(const hsm::Signer& root_key, const X509& root,
                                  ByteView intermediate_public_key, const X509_NAME& subject,
                                  int days, const Clock& clock, Rng& rng);

// A station's own signing certificate (the audit key): basicConstraints
// critical CA:FALSE; keyUsage critical digitalSignature, nonRepudiation; SKI;
// AKI; notAfter clamped to the issuer's.
Result<X509Ptr> make_signing_certificate(const hsm::Signer& issuer_key, const X509& issuer,
                                         ByteView public_key, const X509_NAME& subject, int days,
                                         const Clock& clock, Rng& rng);

// PKCS#10 request for `key` with `subject`, asking for the CA extensions above.
Result<X509ReqPtr> make_request(const hsm::Signer& key, const X509_NAME& subject);

// Accepts an intermediate signed elsewhere only if: `root` is a self-signed
// CA; `intermediate` is a CA certificate whose chain to `root` verifies now;
// and its public key is the key store's key.
Status check_import(const X509& intermediate, const X509& root, const hsm::Signer& key,
                    const Clock& clock);

// Verifies `leaf` up to `root` through `intermediate` (X509_verify_cert with
// X509_V_FLAG_X509_STRICT) at the clock's time; the error says why not.
Status verify_chain(const X509& leaf, const X509& intermediate, const X509& root,
                    const Clock& clock);

}  // namespace keyline::ca
