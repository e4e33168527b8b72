#include "keyline/ca/csr_policy.hpp"

#include <openssl/pem.h>

namespace keyline::ca {

Result<X509ReqPtr> parse_csr(std::string_view bytes, std::string_view source,
                             CsrEncoding encoding) {
  std::string src(source);
  if (bytes.size() > kMaxCsrBytes)
    return fail(Domain::input, src + ": CSR is " + std::to_string(bytes.size()) +
                                   " bytes; the limit is " + std::to_string(kMaxCsrBytes) + " bytes");
  if (bytes.empty()) return fail(Domain::input, src + ": file is empty; expected a CSR");
  bool looks_pem = bytes.find("-----BEGIN") != std::string_view::npos;
  bool looks_der = static_cast<unsigned char>(bytes[0]) == 0x30;
  if (looks_pem) {
    if (encoding == CsrEncoding::der)
      return fail(Domain::input, src + ": is PEM; this input expects DER");
    if (bytes.find("-----BEGIN CERTIFICATE REQUEST-----") == std::string_view::npos &&
        bytes.find("-----BEGIN NEW CERTIFICATE REQUEST-----") == std::string_view::npos) {
      if (bytes.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos)
        return fail(Domain::input, src + ": is a certificate, not a certificate signing request");
      if (bytes.find("PRIVATE KEY-----") != std::string_view::npos)
        return fail(Domain::input, src + ": is a private key, not a certificate signing request; never hand private keys to the CA");
      return fail(Domain::input, src + ": has no '-----BEGIN CERTIFICATE REQUEST-----' block");
    }
    BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
    if (!req) {
      drain_openssl_errors();
      return fail(Domain::input, src + ": the CERTIFICATE REQUEST block is not a valid PKCS#10 CSR (bad base64 or ASN.1)");
    }
    return req;
  }
  if (looks_der) {
    if (encoding == CsrEncoding::pem)
      return fail(Domain::input, src + ": is binary DER; this command expects PEM (convert it with "
                                       "'openssl req -inform DER -in " + src + " -out " + src + ".pem')");
    const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
    X509ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(bytes.size())));
    if (!req || p != reinterpret_cast<const unsigned char*>(bytes.data()) + bytes.size()) {
      drain_openssl_errors();
      return fail(Domain::input, src + ": is not a valid DER PKCS#10 CSR");
    }
    return req;
  }
  return fail(Domain::input, src + ": is neither a PEM nor a DER certificate signing request");
}

Result<hsm::Algorithm> check_key(const EVP_PKEY* key, const Profile& profile,
                                 std::string_view source) {
  std::string src(source);
  auto algorithm = hsm::algorithm_of(key);
  if (!algorithm) return std::unexpected(algorithm.error().with_context(src));
  switch (*algorithm) {
    case hsm::Algorithm::ec_p256:
      if (!profile.allow_ec_p256)
        return fail(Domain::policy, src + ": profile '" + profile.name + "' does not allow EC P-256 keys");
      break;
    case hsm::Algorithm::ec_p384:
      if (!profile.allow_ec_p384)
        return fail(Domain::policy, src + ": profile '" + profile.name + "' does not allow EC P-384 keys");
      break;
    case hsm::Algorithm::rsa_2048:
    case hsm::Algorithm::rsa_3072: {
      if (!profile.allow_rsa)
        return fail(Domain::policy, src + ": profile '" + profile.name + "' does not allow RSA keys");
      int bits = EVP_PKEY_get_bits(key);
      if (bits < profile.min_rsa_bits)
        return fail(Domain::policy, src + ": RSA key of " + std::to_string(bits) + " bits; profile '" +
                                        profile.name + "' requires at least " +
                                        std::to_string(profile.min_rsa_bits));
      break;
    }
  }
  return *algorithm;
}

Result<AcceptedCsr> check_csr(const X509_REQ& csr_ref, const Profile& profile,
                              const std::optional<RegistrationId>& expected_id,
                              std::string_view source) {
  std::string src(source);
  X509_REQ* csr = const_cast<X509_REQ*>(&csr_ref);
  EVP_PKEY* key = X509_REQ_get0_pubkey(csr);
  if (!key) {
    drain_openssl_errors();
    return fail(Domain::input, src + ": the CSR's public key cannot be decoded");
  }
  // The key type is checked first so that an unsupported curve is reported as
  // such rather than as a signature failure.
  KL_TRY(hsm::Algorithm algorithm, check_key(key, profile, src));
  if (X509_REQ_verify(csr, key) != 1) {
    drain_openssl_errors();
    return fail(Domain::input, src + ": the CSR's signature does not verify with its own public key "
                                     "(no proof of possession; the CSR is corrupt or was altered)");
  }

  const X509_NAME* subject = X509_REQ_get_subject_name(csr);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return fail(Domain::input, src + ": the CSR subject has no common name (CN)");
  if (X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0)
    return fail(Domain::input, src + ": the CSR subject has more than one common name (CN)");
  const ASN1_STRING* cn_asn1 = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, cn_asn1);
  if (len < 0) {
    drain_openssl_errors();
    return fail(Domain::input, src + ": the CSR common name is not valid text");
  }
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  auto id = RegistrationId::for_certificate(cn);
  if (!id) return std::unexpected(id.error().with_context(src + ": CSR common name"));
  if (expected_id && *expected_id != *id)
    return fail(Domain::policy, src + ": the CSR common name '" + cn +
                                    "' does not match the registration ID '" + expected_id->str() + "'");

  X509ExtStackPtr exts(X509_REQ_get_extensions(csr));
  if (exts) {
    for (int i = 0; i < sk_X509_EXTENSION_num(exts.get()); ++i) {
      X509_EXTENSION* ext = sk_X509_EXTENSION_value(exts.get(), i);
      int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
      std::string name = nid == NID_undef ? "unknown" : OBJ_nid2sn(nid);
      bool allowed = false;
      for (auto& a : profile.allowed_request_extensions) allowed |= (a == name);
      if (!allowed) {
        char oid[80];
        OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(ext), 1);
        return fail(Domain::policy, src + ": the CSR requests extension " + name + " (" + oid +
                                        ") which profile '" + profile.name +
                                        "' does not allow (allowed_request_extensions)");
      }
    }
  }
  drain_openssl_errors();
  KL_TRY(Bytes spki, hsm::public_key_der(key));
  return AcceptedCsr{std::move(*id), std::move(spki), algorithm};
}

}  // namespace keyline::ca
