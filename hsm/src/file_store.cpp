#include <cerrno>
#include "file_store.hpp"

#include <unistd.h>

#include <atomic>
#include <unordered_map>

#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"

namespace keyline::hsm {

namespace {

std::atomic<std::uint64_t> g_next_signer_id{1};

class SoftwareSigner final : public Signer {
 public:
  SoftwareSigner(EvpPkeyPtr key, Algorithm algorithm, Bytes spki, std::string description)
      : key_(std::move(key)), algorithm_(algorithm), spki_(std::move(spki)),
        description_(std::move(description)), id_(g_next_signer_id++) {}

  Algorithm algorithm() const noexcept override { return algorithm_; }
  const Bytes& public_key() const noexcept override { return spki_; }
  std::string describe() const override { return description_; }

  Result<Bytes> sign(ByteView digest) const override {
    Digest d = digest_for(algorithm_);
    if (digest.size() != digest_size(d))
      return fail(Domain::internal, "signer " + description_ + " was given a digest of " +
                                        std::to_string(digest.size()) + " bytes");
    // One initialised context per thread and signer: setting up a context
    // costs an algorithm fetch under a global lock, signing with it does not.
    thread_local std::unordered_map<std::uint64_t, EvpPkeyCtxPtr> contexts;
    EvpPkeyCtxPtr& ctx = contexts[id_];
    if (!ctx) {
      ctx.reset(EVP_PKEY_CTX_new(key_.get(), nullptr));
      if (!ctx || EVP_PKEY_sign_init(ctx.get()) <= 0) {
        ctx.reset();
        return std::unexpected(openssl_error(Domain::keystore, "cannot start signing with " + description_));
      }
      if (EVP_PKEY_is_a(key_.get(), "RSA") &&
          (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) <= 0 ||
           EVP_PKEY_CTX_set_signature_md(ctx.get(), evp_md(d)) <= 0)) {
        ctx.reset();
        return std::unexpected(openssl_error(Domain::keystore, "cannot set RSA padding for " + description_));
      }
    }
    std::size_t len = 0;
    if (EVP_PKEY_sign(ctx.get(), nullptr, &len, digest.data(), digest.size()) <= 0)
      return std::unexpected(openssl_error(Domain::keystore, "signing with " + description_ + " failed"));
    Bytes sig(len);
    if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, digest.data(), digest.size()) <= 0)
      return std::unexpected(openssl_error(Domain::keystore, "signing with " + description_ + " failed"));
    sig.resize(len);
    return sig;
  }

 private:
  EvpPkeyPtr key_;
  Algorithm algorithm_;
  Bytes spki_;
  std::string description_;
  std::uint64_t id_;
};

class FileSecret final : public SecretKey {
 public:
  explicit FileSecret(SecretBytes key) : key_(std::move(key)) {}
  Result<Bytes> hmac_sha256(ByteView message) const override {
    Bytes out(32);
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key_.reveal().data(), static_cast<int>(key_.reveal().size()),
              message.data(), message.size(), out.data(), &len))
      return std::unexpected(openssl_error(Domain::keystore, "HMAC-SHA256 failed"));
    return out;
  }

 private:
  SecretBytes key_;
};

Result<EvpPkeyPtr> generate_key(Algorithm algorithm) {
  EvpPkeyPtr key;
  switch (algorithm) {
    case Algorithm::ec_p256: key.reset(EVP_EC_gen("P-256")); break;
    case Algorithm::ec_p384: key.reset(EVP_EC_gen("P-384")); break;
    case Algorithm::rsa_2048: key.reset(EVP_RSA_gen(2048)); break;
    case Algorithm::rsa_3072: key.reset(EVP_RSA_gen(3072)); break;
  }
  if (!key) return std::unexpected(openssl_error(Domain::keystore, "key generation failed"));
  return key;
}

class FileStore final : public KeyStore {
 public:
  explicit FileStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  std::string uri() const override { return "file:" + dir_.string(); }
  bool is_development() const noexcept override { return true; }

  Result<std::shared_ptr<Signer>> generate_signing_key(const std::string& label,
                                                       Algorithm algorithm) override {
    KL_CHECK(validate_label(label));
    KL_CHECK(files::ensure_dir(dir_, 0700));
    auto path = key_path(label);
    std::error_code ec;
    if (std::filesystem::exists(path, ec))
      return fail(Domain::keystore, "key '" + label + "' already exists in " + uri() +
                                        "; choose another label or remove the old key deliberately");
    KL_TRY(EvpPkeyPtr key, generate_key(algorithm));
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr))
      return std::unexpected(openssl_error(Domain::keystore, "encoding key '" + label + "'"));
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    SecretString pem(std::string(data, static_cast<std::size_t>(n)));
    OPENSSL_cleanse(data, static_cast<std::size_t>(n));
    // The exists() check above words the usual refusal; write_new keeps a
    // key another process created meanwhile from being replaced.
    auto written = files::write_new(path, pem.reveal(), 0600);
    if (!written) {
      if (written.error().native_code() == EEXIST)
        return fail(Domain::keystore, "key '" + label + "' already exists in " + uri() +
                                          "; choose another label or remove the old key deliberately");
      return std::unexpected(written.error());
    }
    log::get("hsm.file")->warn("generated {} key '{}' as a plain file in {} (development key store)",
                               to_string(algorithm), label, dir_.string());
    return wrap(std::move(key), label);
  }

  Result<std::shared_ptr<Signer>> signer(const std::string& label) override {
    KL_CHECK(validate_label(label));
    auto path = key_path(label);
    auto text = files::read(path, 1 << 20);
    if (!text)
      return fail(Domain::keystore, "key '" + label + "' not found in " + uri() + " (" +
                                        text.error().message() + ")");
    SecretString pem(std::move(*text));
    BioPtr bio(BIO_new_mem_buf(pem.reveal().data(), static_cast<int>(pem.reveal().size())));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key)
      return std::unexpected(openssl_error(Domain::keystore, "key file " + path.string() + " is not a readable private key"));
    return wrap(std::move(key), label);
  }

  Status generate_secret(const std::string& label) override {
    Bytes raw(64);
    RAND_bytes(raw.data(), static_cast<int>(raw.size()));
    SecretBytes key(std::move(raw));
    return import_secret(label, key);
  }

  Status import_secret(const std::string& label, const SecretBytes& key) override {
    KL_CHECK(validate_label(label));
    KL_CHECK(files::ensure_dir(dir_, 0700));
    auto path = secret_path(label);
    std::error_code ec;
    if (std::filesystem::exists(path, ec))
      return fail(Domain::keystore, "secret '" + label + "' already exists in " + uri());
    SecretString text(base64_encode(key.reveal()) + "\n");
    auto written = files::write_new(path, text.reveal(), 0600);
    if (!written && written.error().native_code() == EEXIST)
      return fail(Domain::keystore, "secret '" + label + "' already exists in " + uri());
    return written;
  }

  Result<std::shared_ptr<SecretKey>> secret(const std::string& label) override {
    KL_CHECK(validate_label(label));
    auto text = files::read(secret_path(label), 1 << 16);
    if (!text) return fail(Domain::keystore, "secret '" + label + "' not found in " + uri());
    SecretString b64(std::move(*text));
    auto raw = base64_decode(b64.reveal());
    if (!raw) return fail(Domain::keystore, "secret file for '" + label + "' is not base64");
    return std::make_shared<FileSecret>(SecretBytes(std::move(*raw)));
  }

  Result<std::vector<KeyInfo>> list() override {
    std::vector<KeyInfo> out;
    std::error_code ec;
    for (auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
      std::string name = entry.path().filename().string();
      if (name.ends_with(".key.pem")) {
        std::string label = name.substr(0, name.size() - 8);
        auto s = signer(label);
        out.push_back({label, s ? "signing " + std::string(to_string((*s)->algorithm()))
                                : "unreadable"});
      } else if (name.ends_with(".secret")) {
        out.push_back({name.substr(0, name.size() - 7), "secret"});
      }
    }
    if (ec) return fail(Domain::keystore, "cannot list " + uri() + ": " + ec.message());
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.label < b.label; });
    return out;
  }

  Status destroy_signing_key(const std::string& label) override {
    KL_CHECK(validate_label(label));
    return remove_file(key_path(label), "key '" + label + "'");
  }

  Status destroy_secret(const std::string& label) override {
    KL_CHECK(validate_label(label));
    return remove_file(secret_path(label), "secret '" + label + "'");
  }

 private:
  Status remove_file(const std::filesystem::path& path, const std::string& what) {
    if (::unlink(path.c_str()) != 0) {
      int err = errno;
      if (err == ENOENT) return fail(Domain::keystore, what + " not found in " + uri());
      return fail(Domain::keystore, "cannot remove " + what + ": " + files::errno_text(path, err), err);
    }
    return files::sync_dir(dir_);
  }

  std::filesystem::path key_path(const std::string& label) const { return dir_ / (label + ".key.pem"); }
  std::filesystem::path secret_path(const std::string& label) const { return dir_ / (label + ".secret"); }

  Result<std::shared_ptr<Signer>> wrap(EvpPkeyPtr key, const std::string& label) {
    KL_TRY(Algorithm algorithm, algorithm_of(key.get()));
    KL_TRY(Bytes spki, public_key_der(key.get()));
    return make_software_signer(std::move(key), algorithm, std::move(spki), uri() + "#" + label);
  }

  std::filesystem::path dir_;
};

}  // namespace

std::shared_ptr<Signer> make_software_signer(EvpPkeyPtr key, Algorithm algorithm, Bytes spki,
                                             std::string description) {
  return std::make_shared<SoftwareSigner>(std::move(key), algorithm, std::move(spki),
                                          std::move(description));
}

std::unique_ptr<KeyStore> make_file_store(std::filesystem::path dir) {
  return std::make_unique<FileStore>(std::move(dir));
}

}  // namespace keyline::hsm
