#include "worker.hpp"

#include <openssl/cms.h>

#include "device_keys.hpp"
#include "keyline/ca/csr_policy.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"

namespace keyline::station::batch::detail {

Outcome issue_failure(const std::string& input, const Error& e) {
  if (e.domain() == Domain::input || e.domain() == Domain::policy) return Rejected{input, e.message()};
  return Fatal{e};
}

Result<KeyWrapper> KeyWrapper::create(const Options& o) {
  KeyWrapper w;
  if (o.mode != Mode::generate) return w;
  if (o.plain_keys == !o.encrypt_keys_to.empty())
    return fail(Domain::usage, "--generate needs exactly one of --encrypt-keys-to CERT or --plain-keys");
  if (!o.plain_keys) {
    KL_TRY(std::string pem, files::read(o.encrypt_keys_to, 1 << 20));
    auto cert = x509_from_pem(pem, o.encrypt_keys_to.string());
    if (!cert) return std::unexpected(cert.error().with_context("--encrypt-keys-to"));
    w.recipient_ = std::shared_ptr<X509>(cert->release(), X509_free);
  }
  return w;
}

Result<std::string> KeyWrapper::wrap(const SecretString& pem) const {
  if (!encrypted()) return std::string(pem.reveal());
  BioPtr in(BIO_new_mem_buf(pem.reveal().data(), static_cast<int>(pem.reveal().size())));
  X509StackPtr recips(sk_X509_new_null());
  X509_up_ref(recipient_.get());
  sk_X509_push(recips.get(), recipient_.get());
  std::unique_ptr<CMS_ContentInfo, Free<CMS_ContentInfo_free>> cms(
      CMS_encrypt(recips.get(), in.get(), EVP_aes_256_gcm(), CMS_BINARY));
  if (!cms) return std::unexpected(openssl_error(Domain::openssl, "encrypting a generated key to the recipient"));
  unsigned char* der = nullptr;
  int len = i2d_CMS_ContentInfo(cms.get(), &der);
  if (len <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding CMS"));
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::optional<Outcome> Worker::prior(const std::string& input, const std::string& id, const Bytes* key) {
  if (!resuming) return std::nullopt;
  auto ref = reader->active_ref(id, profile.name);
  if (!ref) return Fatal{ref.error().with_context("looking up " + id + " in the ledger")};
  if (!*ref) return std::nullopt;
  if ((*ref)->batch_id == batch_id) {
    if (!key || (*ref)->pubkey_sha256 == sha256_hex(*key)) return AlreadyDone{};
    return Rejected{input, "registration ID '" + id + "' appears more than once in this batch; certificate " +
                               (*ref)->serial + " was issued for another input's key"};
  }
  return Rejected{input, "registration ID '" + id + "' already has an active certificate (serial " +
                             (*ref)->serial + ") outside this batch"};
}

Outcome Worker::process(const Item& item) {
  if (item.generate_id) return generate(item);
  auto payload = read_input(input_dir_fd, o, item.input);
  if (!payload) return issue_failure(item.input, payload.error());
  std::optional<ca::AcceptedCsr> accepted = ca::accept_simple_csr(*payload, profile);
  if (!accepted) {  // not the simple case: the full parser decides and explains
    auto csr = ca::parse_csr(*payload, item.input);
    if (!csr) return Rejected{item.input, csr.error().message()};
    auto checked = ca::check_csr(**csr, profile, std::nullopt, item.input);
    if (!checked) return Rejected{item.input, checked.error().message()};
    accepted = std::move(*checked);
  }
  if (auto p = prior(item.input, accepted->registration_id.str(), &accepted->public_key)) return *p;
  auto cert = authority.issue({accepted->registration_id, accepted->public_key, std::nullopt}, profile);
  if (!cert) return issue_failure(item.input, cert.error());
  return Issued{item.input, std::move(*cert), {}};
}

Outcome Worker::generate(const Item& item) {
  auto id = ca::RegistrationId::for_certificate(*item.generate_id);
  if (!id) return Rejected{item.input, id.error().message()};
  if (auto p = prior(item.input, id->str())) return *p;
  auto key = generate_device_key(o.key_algorithm);
  if (!key) return issue_failure(item.input, key.error());
  auto cert = authority.issue({*id, key->spki, std::nullopt}, profile);
  if (!cert) return issue_failure(item.input, cert.error());
  auto wrapped = keys.wrap(key->pkcs8_pem);
  if (!wrapped) return issue_failure(item.input, wrapped.error());
  return Issued{item.input, std::move(*cert), std::move(*wrapped)};
}

}  // namespace keyline::station::batch::detail
