#include "keyline/hsm/key_store.hpp"

#include "file_store.hpp"
#include "pkcs11_store.hpp"
#include "tpm2_store.hpp"

namespace keyline::hsm {

Status validate_label(std::string_view label) {
  if (label.empty() || label.size() > 64)
    return fail(Domain::input, "key label '" + std::string(label) + "' must be 1 to 64 characters");
  for (std::size_t i = 0; i < label.size(); ++i) {
    char c = label[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok)
      return fail(Domain::input, "key label '" + std::string(label) + "' has character '" +
                                     std::string(1, c) + "' at position " + std::to_string(i + 1) +
                                     "; use letters, digits, '.', '_' and '-'");
  }
  return {};
}

Result<std::unique_ptr<KeyStore>> open(std::string_view uri, const std::filesystem::path& base_dir) {
  if (uri.starts_with("file:")) {
    std::filesystem::path dir(uri.substr(5));
    if (dir.empty())
      return fail(Domain::usage, "key store URI 'file:' needs a directory, for example file:/var/lib/keyline/keys");
    if (dir.is_relative() && !base_dir.empty()) dir = base_dir / dir;
    return make_file_store(std::move(dir));
  }
  if (uri.starts_with("pkcs11:")) {
    KL_TRY(Pkcs11Uri parsed, Pkcs11Uri::parse(uri));
    return make_pkcs11_store(parsed);
  }
  if (uri.starts_with("tpm2:")) {
    KL_TRY(Tpm2Uri parsed, Tpm2Uri::parse(uri));
    return make_tpm2_store(parsed);
  }
  auto colon = uri.find(':');
  std::string scheme(colon == std::string_view::npos ? uri : uri.substr(0, colon));
  return fail(Domain::usage, "key store URI scheme '" + scheme +
                                 "' is not supported; use pkcs11:token=...?pin-source=file:... (RFC 7512), "
                                 "tpm2:handle=0x81000100?tcti=..., or file:DIR (development)");
}

}  // namespace keyline::hsm
