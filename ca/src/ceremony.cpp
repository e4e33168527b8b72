#include "keyline/ca/ceremony.hpp"

#include <ctime>

#include "signing.hpp"

namespace keyline::ca {

namespace {

enum class Kind { root, intermediate, signing };

Result<X509Ptr> make_ca_cert(const hsm::Signer& signing_key, const X509* issuer,
                             ByteView subject_key, const X509_NAME& subject, int days,
                             const Clock& clock, Rng& rng, Kind kind) {
  if (days < 1 || days > 36500) return fail(Domain::usage, "CA validity must be 1 to 36500 days");
  KL_TRY(EvpPkeyPtr pub, hsm::public_key_from_der(subject_key));
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  Bytes serial(16);
  rng.fill(serial);
  serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x40);
  BignumPtr bn(BN_bin2bn(serial.data(), 16, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_set_subject_name(cert.get(), const_cast<X509_NAME*>(&subject));
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : const_cast<X509_NAME*>(&subject));
  auto now = static_cast<std::time_t>(clock.now().time_since_epoch().count());
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), now - 300);
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), now + static_cast<std::time_t>(days) * 86400);
  if (kind == Kind::signing && ASN1_TIME_compare(X509_get0_notAfter(issuer), X509_get0_notAfter(cert.get())) < 0)
    X509_set1_notAfter(cert.get(), X509_get0_notAfter(issuer));  // never outlives its issuer
  X509_set_pubkey(cert.get(), pub.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? const_cast<X509*>(issuer) : cert.get(), cert.get(), nullptr, nullptr, 0);
  if (kind == Kind::signing) {
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature,nonRepudiation"));
  } else if (kind == Kind::intermediate) {
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
  } else {
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
    KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  }
  KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  if (issuer) KL_CHECK(detail::add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  KL_TRY(X509Ptr signed_cert, detail::sign_certificate(cert.get(), signing_key));
  // A certificate made here is checked against its issuer key before it is used:
  // a faulty signer must not produce a CA nobody can verify.
  KL_TRY(EvpPkeyPtr issuer_pub, hsm::public_key_from_der(signing_key.public_key()));
  if (X509_verify(signed_cert.get(), issuer_pub.get()) != 1)
    return std::unexpected(openssl_error(Domain::keystore, "the new certificate's signature does not verify; the key store " +
                                                               signing_key.describe() + " signed incorrectly"));
  return signed_cert;
}

}  // namespace

Result<X509Ptr> make_root(const hsm::Signer& root_key, const X509_NAME& subject, int days,
                          const Clock& clock, Rng& rng) {
  return make_ca_cert(root_key, nullptr, root_key.public_key(), subject, days, clock, rng, Kind::root);
}

Result<X509Ptr> make_intermediate(const hsm::Signer& root_key, const X509& root,
                                  ByteView intermediate_public_key, const X509_NAME& subject,
                                  int days, const Clock& clock, Rng& rng) {
  return make_ca_cert(root_key, &root, intermediate_public_key, subject, days, clock, rng, Kind::intermediate);
}

Result<X509Ptr> make_signing_certificate(const hsm::Signer& issuer_key, const X509& issuer,
                                         ByteView public_key, const X509_NAME& subject, int days,
                                         const Clock& clock, Rng& rng) {
  return make_ca_cert(issuer_key, &issuer, public_key, subject, days, clock, rng, Kind::signing);
}

Result<X509ReqPtr> make_request(const hsm::Signer& key, const X509_NAME& subject) {
  KL_TRY(EvpPkeyPtr pub, hsm::public_key_from_der(key.public_key()));
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_REQ_set_subject_name(req.get(), const_cast<X509_NAME*>(&subject));
  X509_REQ_set_pubkey(req.get(), pub.get());
  X509ExtStackPtr exts(sk_X509_EXTENSION_new_null());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"}}) {
    X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
    if (!ext) return std::unexpected(openssl_error(Domain::openssl, "building CSR extensions"));
    sk_X509_EXTENSION_push(exts.get(), ext);
  }
  X509_REQ_add_extensions(req.get(), exts.get());
  return detail::sign_request(req.get(), key);
}

Status verify_chain(const X509& leaf, const X509& intermediate, const X509& root,
                    const Clock& clock) {
  X509StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), const_cast<X509*>(&root));
  X509StackPtr untrusted(sk_X509_new_null());
  X509_up_ref(const_cast<X509*>(&intermediate));
  sk_X509_push(untrusted.get(), const_cast<X509*>(&intermediate));
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), const_cast<X509*>(&leaf), untrusted.get());
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_X509_STRICT);
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<std::time_t>(clock.now().time_since_epoch().count()));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    drain_openssl_errors();
    return fail(Domain::input, std::string("certificate chain does not verify: ") +
                                   X509_verify_cert_error_string(err), err);
  }
  return {};
}

Status check_import(const X509& intermediate, const X509& root, const hsm::Signer& key,
                    const Clock& clock) {
  X509* inter = const_cast<X509*>(&intermediate);
  X509* r = const_cast<X509*>(&root);
  if (X509_check_ca(r) == 0 || !(X509_get_extension_flags(r) & EXFLAG_SS))
    return fail(Domain::input, "the root certificate " + name_to_string(X509_get_subject_name(r)) +
                                   " is not a self-signed CA certificate");
  if (X509_check_ca(inter) == 0)
    return fail(Domain::input, "the certificate to import, " + name_to_string(X509_get_subject_name(inter)) +
                                   ", is not a CA certificate (basicConstraints CA:TRUE is missing)");
  KL_TRY(Bytes spki, hsm::public_key_der(X509_get0_pubkey(inter)));
  if (spki != key.public_key())
    return fail(Domain::keystore, "the certificate to import is for another key than " + key.describe() +
                                      "; import the certificate issued for this key store's CSR");
  // The intermediate is its own "leaf" here: it must chain to the root.
  X509StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), r);
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), inter, nullptr);
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_X509_STRICT);
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<std::time_t>(clock.now().time_since_epoch().count()));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    drain_openssl_errors();
    return fail(Domain::input, std::string("the intermediate does not verify against the root: ") +
                                   X509_verify_cert_error_string(err), err);
  }
  return {};
}

}  // namespace keyline::ca
