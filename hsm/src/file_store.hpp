#pragma once
#include <filesystem>
#include <memory>

#include "keyline/hsm/key_store.hpp"

namespace keyline::hsm {

// file:DIR -- development key store. Private keys are unencrypted PKCS#8 PEM
// files (mode 0600) named LABEL.key.pem; secrets are LABEL.secret (base64).
std::unique_ptr<KeyStore> make_file_store(std::filesystem::path dir);

// A signer over an in-memory OpenSSL key (used by the file store and by
// batch key generation). Thread-safe: a fresh EVP_PKEY_CTX per signature.
std::shared_ptr<Signer> make_software_signer(EvpPkeyPtr key, Algorithm algorithm,
                                             Bytes spki, std::string description);

}  // namespace keyline::hsm
