#include "pkcs11_store.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>

#include "keyline/core/log.hpp"
#include "keyline/hsm/credentials.hpp"

namespace keyline::hsm {

namespace pkcs11 {

// One dlopen + C_Initialize per module path, shared by every store using it.
struct Module {
  std::string path;
  void* lib = nullptr;
  CK_FUNCTION_LIST* fn = nullptr;
  bool initialised_here = false;
};

namespace {

std::shared_ptr<spdlog::logger> logger() { return log::get("hsm.pkcs11"); }

struct Registry {
  struct Entry {
    std::unique_ptr<Module> module;
    int users = 0;
  };
  std::mutex mu;
  std::map<std::string, Entry> entries;
};

// Never destroyed: stores may outlive static destruction order.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

void release_module(const std::string& path) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.entries.find(path);
  if (it == r.entries.end() || --it->second.users > 0) return;
  std::unique_ptr<Module> m = std::move(it->second.module);
  r.entries.erase(it);
  if (m->initialised_here) {
    CK_RV rv = m->fn->C_Finalize(nullptr);
    if (rv != CKR_OK)
      logger()->warn("C_Finalize of {} returned {}", path, ckr_name(rv));
    else
      logger()->debug("finalised PKCS#11 module {}", path);
  }
  ::dlclose(m->lib);
}

Result<std::shared_ptr<Module>> acquire_module(const std::string& path) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.entries.find(path);
  if (it == r.entries.end()) {
    auto m = std::make_unique<Module>();
    m->path = path;
    m->lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!m->lib)
      return fail(Domain::keystore, "cannot load PKCS#11 module " + path + " (" + ::dlerror() +
                                        "); check module-path in the key store URI");
    auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(m->lib, "C_GetFunctionList"));
    CK_RV rv = get ? get(&m->fn) : CKR_FUNCTION_NOT_SUPPORTED;
    if (rv != CKR_OK || !m->fn) {
      ::dlclose(m->lib);
      return fail(Domain::keystore,
                  path + " is not a usable PKCS#11 module (C_GetFunctionList: " + ckr_name(rv) + ")",
                  static_cast<std::int64_t>(rv));
    }
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    rv = m->fn->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      ::dlclose(m->lib);
      return std::unexpected(ck_error(rv, "C_Initialize of PKCS#11 module " + path));
    }
    m->initialised_here = rv == CKR_OK;
    it = r.entries.emplace(path, Registry::Entry{std::move(m), 0}).first;
  }
  ++it->second.users;
  return std::shared_ptr<Module>(it->second.module.get(), [path](Module*) { release_module(path); });
}

std::string padded_field(const CK_UTF8CHAR* field, std::size_t size) {
  std::string s(reinterpret_cast<const char*>(field), size);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

std::string token_name(const Pkcs11Uri& uri) {
  if (!uri.token().empty()) return "PKCS#11 token '" + uri.token() + "'";
  if (!uri.serial().empty()) return "PKCS#11 token with serial '" + uri.serial() + "'";
  return "PKCS#11 token in slot " + std::to_string(uri.slot_id().value_or(0));
}

Result<CK_SLOT_ID> find_slot(const Module& m, const Pkcs11Uri& uri) {
  std::vector<CK_SLOT_ID> slots;
  CK_RV rv = CKR_OK;
  for (int tries = 0; tries < 3; ++tries) {
    CK_ULONG n = 0;
    rv = m.fn->C_GetSlotList(CK_TRUE, nullptr, &n);
    if (rv != CKR_OK) break;
    slots.resize(n);
    rv = m.fn->C_GetSlotList(CK_TRUE, slots.data(), &n);
    if (rv == CKR_OK) {
      slots.resize(n);
      break;
    }
  }
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, "C_GetSlotList of " + m.path));
  std::string present;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (m.fn->C_GetTokenInfo(slot, &info) != CKR_OK || !(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    std::string label = padded_field(info.label, sizeof info.label);
    present += (present.empty() ? "'" : ", '") + label + "'";
    if (!uri.token().empty() && label != uri.token()) continue;
    if (!uri.serial().empty() && padded_field(info.serialNumber, sizeof info.serialNumber) != uri.serial())
      continue;
    if (!uri.model().empty() && padded_field(info.model, sizeof info.model) != uri.model()) continue;
    if (!uri.manufacturer().empty() &&
        padded_field(info.manufacturerID, sizeof info.manufacturerID) != uri.manufacturer())
      continue;
    if (uri.slot_id() && *uri.slot_id() != slot) continue;
    return slot;
  }
  return fail(Domain::keystore,
              token_name(uri) + " not found in PKCS#11 module " + m.path +
                  " (tokens present: " + (present.empty() ? "none" : present) +
                  "); check token= in the key store URI, or initialise the token "
                  "(softhsm2-util --init-token --free --label LABEL)",
              static_cast<std::int64_t>(CKR_TOKEN_NOT_PRESENT));
}

}  // namespace

Error ck_error(CK_RV rv, const std::string& what) {
  std::string msg = what + " failed: " + ckr_name(rv);
  if (const char* advice = ckr_advice(rv); *advice) msg += std::string(" (") + advice + ")";
  return Error(Domain::keystore, std::move(msg), static_cast<std::int64_t>(rv));
}

// ---- Token (pkcs11_store.hpp) ----

Token::Token(std::shared_ptr<Module> module, Pkcs11Uri uri, CK_SLOT_ID slot, SecretString pin,
             std::string pin_origin)
    : module_(std::move(module)),
      fn_(module_->fn),
      uri_(std::move(uri)),
      name_(token_name(uri_)),
      slot_(slot),
      pin_(std::move(pin)),
      pin_origin_(std::move(pin_origin)) {}

Token::~Token() {
  std::lock_guard lock(mu_);
  for (CK_SESSION_HANDLE h : idle_) f().C_CloseSession(h);
}

std::string Token::object_uri(const std::string& label) const {
  return "pkcs11:token=" + percent_encode(uri_.token(), "-._~") + ";object=" + label;
}

Result<Token::Lease> Token::borrow() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (refused_) return std::unexpected(*refused_);
    if (!idle_.empty()) {
      CK_SESSION_HANDLE h = idle_.back();
      idle_.pop_back();
      return Lease(this, h, generation_);
    }
    if (open_ < kMaxPkcs11Sessions) break;
    cv_.wait(lock);
  }
  CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
  CK_RV rv = f().C_OpenSession(slot_, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &h);
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, "opening a session on " + name_));
  ++open_;
  if (!logged_in_) {
    if (auto st = login_locked(h); !st) {
      f().C_CloseSession(h);
      --open_;
      cv_.notify_one();
      return std::unexpected(st.error());
    }
  }
  logger()->debug("opened session {} of at most {} on {}", open_, kMaxPkcs11Sessions, name_);
  return Lease(this, h, generation_);
}

Status Token::relogin(CK_SESSION_HANDLE h, bool known_logged_out) {
  if (!known_logged_out) {
    CK_SESSION_INFO info{};
    if (f().C_GetSessionInfo(h, &info) == CKR_OK &&
        (info.state == CKS_RO_USER_FUNCTIONS || info.state == CKS_RW_USER_FUNCTIONS))
      return {};
  }
  logger()->warn("{} reports the session is not logged in; logging in again", name_);
  std::lock_guard lock(mu_);
  logged_in_ = false;
  return login_locked(h);
}

Result<std::optional<CK_OBJECT_HANDLE>> Token::find_object(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                                           const std::string& label, const Bytes& id) {
  CK_BBOOL on_token = CK_TRUE;  // not a session copy made by key()
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},
                         {CKA_TOKEN, &on_token, sizeof on_token},
                         {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                         {CKA_ID, const_cast<unsigned char*>(id.data()), id.size()}};
  KL_TRY(auto found, find_all(s, std::span(tmpl, id.empty() ? 3 : 4), "searching " + name_ + " for '" + label + "'"));
  if (found.empty()) return std::nullopt;
  if (found.size() > 1)
    return fail(Domain::keystore,
                name_ + " holds more than one " + class_word(cls) + " labelled '" + label +
                    "'; Keyline will not guess which one to use: relabel or remove the extra one");
  return found[0];
}

Result<std::vector<CK_OBJECT_HANDLE>> Token::find_all(CK_SESSION_HANDLE s, std::span<CK_ATTRIBUTE> tmpl,
                                                      const std::string& what) {
  CK_RV rv = f().C_FindObjectsInit(s, tmpl.data(), tmpl.size());
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, what));
  std::vector<CK_OBJECT_HANDLE> out;
  for (;;) {
    CK_OBJECT_HANDLE batch[32];
    CK_ULONG n = 0;
    rv = f().C_FindObjects(s, batch, 32, &n);
    if (rv != CKR_OK || n == 0) break;
    out.insert(out.end(), batch, batch + n);
  }
  f().C_FindObjectsFinal(s);
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, what));
  return out;
}

Result<CK_OBJECT_HANDLE> Token::key(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const std::string& label) {
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = handles_.find({cls, label}); it != handles_.end()) return it->second;
  }
  KL_TRY(auto found, find_object(s, cls, label));
  if (!found) return fail(Domain::keystore, class_word(cls) + " '" + label + "' not found in " + uri());
  CK_OBJECT_HANDLE use = *found;
  if (cls == CKO_PRIVATE_KEY && uri_.session_copy()) {
    // A session copy: the token keeps CKA_SENSITIVE and non-extractability
    // (they cannot be weakened by a copy); the copy lives until the session
    // that made it closes, after which its handle goes stale and run()
    // finds the key again.
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE session_only[] = {{CKA_TOKEN, &no, sizeof no}};
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
    CK_RV rv = f().C_CopyObject(s, *found, session_only, 1, &copy);
    if (rv == CKR_OK) use = copy;
    else logger()->debug("{} does not copy '{}' into the session ({}); signing with the token object", name_, label,
                         ckr_name(rv));
  }
  std::lock_guard lock(cache_mu_);
  handles_[{cls, label}] = use;
  return use;
}

Result<Bytes> Token::attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                               const std::string& what) {
  CK_ATTRIBUTE a{type, nullptr, 0};
  CK_RV rv = f().C_GetAttributeValue(s, o, &a, 1);
  if (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION) rv = CKR_ATTRIBUTE_TYPE_INVALID;
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, "reading " + what + " in " + name_));
  Bytes out(a.ulValueLen);
  a.pValue = out.data();
  rv = f().C_GetAttributeValue(s, o, &a, 1);
  if (rv != CKR_OK) return std::unexpected(ck_error(rv, "reading " + what + " in " + name_));
  out.resize(a.ulValueLen);
  return out;
}

Result<CK_ULONG> Token::ulong_attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                                        const std::string& what) {
  KL_TRY(Bytes raw, attribute(s, o, type, what));
  if (raw.size() != sizeof(CK_ULONG)) return fail(Domain::keystore, name_ + " returned a malformed " + what);
  CK_ULONG v = 0;
  std::memcpy(&v, raw.data(), sizeof v);
  return v;
}

void Token::forget_handles() {
  std::lock_guard lock(cache_mu_);
  handles_.clear();
}

std::string Token::class_word(CK_OBJECT_CLASS cls) {
  return cls == CKO_SECRET_KEY ? "secret" : cls == CKO_PUBLIC_KEY ? "public key" : "key";
}

void Token::give_back(CK_SESSION_HANDLE h, std::uint64_t generation, bool broken) noexcept {
  std::lock_guard lock(mu_);
  // A session from before a reopen is forgotten, not closed: its handle
  // number may already belong to a new session.
  if (generation != generation_) return;
  if (broken) {
    --open_;
  } else {
    idle_.push_back(h);
  }
  cv_.notify_one();
}

Status Token::login_locked(CK_SESSION_HANDLE h) {
  if (refused_) return std::unexpected(*refused_);
  const std::string& pin = pin_.reveal();
  CK_RV rv =
      f().C_Login(h, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.data())), pin.size());
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
    logged_in_ = true;
    logger()->debug("logged in to {} (PIN from {})", name_, pin_origin_);
    return {};
  }
  std::string msg;
  if (rv == CKR_PIN_INCORRECT) {
    msg = name_ + " refused the PIN (CKR_PIN_INCORRECT); check " + pin_origin_ +
          ". Keyline does not retry, to avoid locking the token";
  } else if (rv == CKR_PIN_LOCKED) {
    msg = name_ +
          " has locked its user PIN (CKR_PIN_LOCKED) after too many wrong attempts; the security "
          "officer must unlock it (for SoftHSM: softhsm2-util --init-pin or re-initialise the token)";
  } else if (rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID) {
    msg = ck_error(rv, "logging in to " + name_ + " with the PIN from " + pin_origin_).message() +
          "; Keyline does not retry";
  } else {
    return std::unexpected(ck_error(rv, "logging in to " + name_));
  }
  refused_ = Error(Domain::keystore, msg, static_cast<std::int64_t>(rv));
  return std::unexpected(*refused_);
}

Status Token::reopen(std::optional<std::uint64_t> seen) {
  std::lock_guard lock(mu_);
  if (seen && *seen != generation_) return {};
  ++generation_;
  for (CK_SESSION_HANDLE h : idle_) f().C_CloseSession(h);
  idle_.clear();
  open_ = 0;
  logged_in_ = false;
  forget_handles();
  cv_.notify_all();
  KL_TRY(slot_, find_slot(*module_, uri_));
  return {};
}

}  // namespace pkcs11

namespace {

using pkcs11::ck_error;
using pkcs11::Token;

std::shared_ptr<spdlog::logger> logger() { return log::get("hsm.pkcs11"); }

// ---- Key material helpers. ----

constexpr unsigned char kP256Oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr unsigned char kP384Oid[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
// DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
constexpr unsigned char kSha256DigestInfo[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                               0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

bool is_ec(Algorithm a) { return a == Algorithm::ec_p256 || a == Algorithm::ec_p384; }

template <std::size_t N>
bool equals(const Bytes& b, const unsigned char (&oid)[N]) {
  return b.size() == N && std::equal(b.begin(), b.end(), oid);
}

// CKA_ID of a key: the first 16 bytes of SHA-256(label); lets other tools
// (pkcs11-tool, p11tool) pair the private and the public object.
Bytes label_id(const std::string& label) {
  Bytes digest = sha256(ByteView(reinterpret_cast<const unsigned char*>(label.data()), label.size()));
  digest.resize(16);
  return digest;
}

std::string kind_of(CK_KEY_TYPE type, const Bytes& ec_params, std::size_t modulus_bytes) {
  if (type == CKK_EC) {
    if (equals(ec_params, kP256Oid)) return "signing ec-p256";
    if (equals(ec_params, kP384Oid)) return "signing ec-p384";
    return "signing ec (unsupported curve)";
  }
  if (type == CKK_RSA) return "signing rsa-" + std::to_string(modulus_bytes * 8);
  char buf[32];
  std::snprintf(buf, sizeof buf, "key type 0x%lx", static_cast<unsigned long>(type));
  return buf;
}

class Pkcs11Signer final : public Signer {
 public:
  Pkcs11Signer(std::shared_ptr<Token> token, std::string label, Algorithm algorithm, Bytes spki,
               std::size_t signature_size)
      : token_(std::move(token)),
        label_(std::move(label)),
        algorithm_(algorithm),
        spki_(std::move(spki)),
        signature_size_(signature_size) {}

  Algorithm algorithm() const noexcept override { return algorithm_; }
  const Bytes& public_key() const noexcept override { return spki_; }
  std::string describe() const override { return token_->object_uri(label_); }

  Result<Bytes> sign(ByteView digest) const override {
    Digest d = digest_for(algorithm_);
    if (digest.size() != digest_size(d))
      return fail(Domain::internal, "signer " + describe() + " was given a digest of " +
                                        std::to_string(digest.size()) + " bytes");
    bool ec = is_ec(algorithm_);
    std::size_t prefix = ec ? 0 : sizeof kSha256DigestInfo;
    Bytes input(prefix + digest.size());
    if (prefix) std::memcpy(input.data(), kSha256DigestInfo, prefix);
    std::memcpy(input.data() + prefix, digest.data(), digest.size());
    KL_TRY(Bytes raw, token_->run<Bytes>([&](CK_SESSION_HANDLE s) -> Result<Bytes> {
      KL_TRY(CK_OBJECT_HANDLE key, token_->key(s, CKO_PRIVATE_KEY, label_));
      CK_MECHANISM mech{ec ? CKM_ECDSA : CKM_RSA_PKCS, nullptr, 0};
      CK_RV rv = token_->f().C_SignInit(s, &mech, key);
      if (rv != CKR_OK) return std::unexpected(ck_error(rv, "starting a signature with " + describe()));
      Bytes out(signature_size_);
      CK_ULONG len = out.size();
      rv = token_->f().C_Sign(s, input.data(), input.size(), out.data(), &len);
      if (rv != CKR_OK) return std::unexpected(ck_error(rv, "signing with " + describe()));
      out.resize(len);
      return out;
    }));
    if (!ec) return raw;
    if (raw.size() != signature_size_)
      return fail(Domain::keystore, describe() + " returned an ECDSA signature of " +
                                        std::to_string(raw.size()) + " bytes, expected r||s of " +
                                        std::to_string(signature_size_));
    std::size_t half = raw.size() / 2;
    return detail::ecdsa_signature_der(ByteView(raw).first(half), ByteView(raw).subspan(half));
  }

 private:
  std::shared_ptr<Token> token_;
  std::string label_;
  Algorithm algorithm_;
  Bytes spki_;
  std::size_t signature_size_;
};

class Pkcs11Secret final : public SecretKey {
 public:
  Pkcs11Secret(std::shared_ptr<Token> token, std::string label)
      : token_(std::move(token)), label_(std::move(label)) {}

  Result<Bytes> hmac_sha256(ByteView message) const override {
    return token_->run<Bytes>([&](CK_SESSION_HANDLE s) -> Result<Bytes> {
      KL_TRY(CK_OBJECT_HANDLE key, token_->key(s, CKO_SECRET_KEY, label_));
      CK_MECHANISM mech{CKM_SHA256_HMAC, nullptr, 0};
      CK_RV rv = token_->f().C_SignInit(s, &mech, key);
      if (rv != CKR_OK)
        return std::unexpected(ck_error(rv, "starting HMAC-SHA256 with " + token_->object_uri(label_)));
      Bytes out(32);
      CK_ULONG len = out.size();
      rv =
          token_->f().C_Sign(s, const_cast<unsigned char*>(message.data()), message.size(), out.data(), &len);
      if (rv != CKR_OK)
        return std::unexpected(ck_error(rv, "HMAC-SHA256 with " + token_->object_uri(label_)));
      out.resize(len);
      return out;
    });
  }

 private:
  std::shared_ptr<Token> token_;
  std::string label_;
};

struct KeyTemplate {
  CK_BBOOL yes = CK_TRUE;
  CK_BBOOL no = CK_FALSE;
  Bytes id;
  std::string label;
  // Token object, private, sensitive, never extractable; it signs and does
  // nothing else (no decrypt, unwrap or derive).
  std::vector<CK_ATTRIBUTE> protected_key() {
    return {{CKA_TOKEN, &yes, sizeof yes},
            {CKA_PRIVATE, &yes, sizeof yes},
            {CKA_SENSITIVE, &yes, sizeof yes},
            {CKA_EXTRACTABLE, &no, sizeof no},
            {CKA_SIGN, &yes, sizeof yes},
            {CKA_DECRYPT, &no, sizeof no},
            {CKA_UNWRAP, &no, sizeof no},
            {CKA_DERIVE, &no, sizeof no},
            {CKA_LABEL, label.data(), label.size()},
            {CKA_ID, id.data(), id.size()}};
  }
};

class Pkcs11Store final : public KeyStore {
 public:
  explicit Pkcs11Store(std::shared_ptr<Token> token) : token_(std::move(token)) {}

  std::string uri() const override { return token_->uri(); }
  bool is_development() const noexcept override { return false; }

  Result<std::shared_ptr<Signer>> generate_signing_key(const std::string& label,
                                                       Algorithm algorithm) override {
    KL_CHECK(validate_label(label));
    KL_CHECK(generate_key_pair(label, algorithm));
    logger()->info("generated {} key '{}' in {} (sensitive, not extractable)", to_string(algorithm), label,
                   token_->name());
    auto made = signer(label);
    if (made) return made;
    // The pair exists but cannot be used (e.g. a stale public key under the
    // same label): it goes again, so that no key is left that nobody chose.
    auto undone = destroy(label, {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY});
    return std::unexpected(made.error().with_context(
        undone ? "the new key '" + label + "' was made and removed again"
               : "the new key '" + label + "' was made and could not be removed (" + undone.error().message() +
                     "); remove it with the token's tools"));
  }

 private:
  Status generate_key_pair(const std::string& label, Algorithm algorithm) {
    std::lock_guard lock(create_mu_);
    KeyTemplate t{.id = label_id(label), .label = label};
    bool ec = is_ec(algorithm);
    CK_ULONG bits = algorithm == Algorithm::rsa_3072 ? 3072 : 2048;
    CK_BYTE exponent[] = {0x01, 0x00, 0x01};
    Bytes curve = algorithm == Algorithm::ec_p384 ? Bytes(std::begin(kP384Oid), std::end(kP384Oid))
                                                  : Bytes(std::begin(kP256Oid), std::end(kP256Oid));
    std::vector<CK_ATTRIBUTE> pub = {
        {CKA_TOKEN, &t.yes, sizeof t.yes},  {CKA_PRIVATE, &t.no, sizeof t.no},
        {CKA_VERIFY, &t.yes, sizeof t.yes}, {CKA_ENCRYPT, &t.no, sizeof t.no},
        {CKA_WRAP, &t.no, sizeof t.no},     {CKA_LABEL, t.label.data(), t.label.size()},
        {CKA_ID, t.id.data(), t.id.size()}};
    if (ec) {
      pub.push_back({CKA_EC_PARAMS, curve.data(), curve.size()});
    } else {
      pub.push_back({CKA_MODULUS_BITS, &bits, sizeof bits});
      pub.push_back({CKA_PUBLIC_EXPONENT, exponent, sizeof exponent});
    }
    std::vector<CK_ATTRIBUTE> priv = t.protected_key();
    KL_CHECK(token_->run<bool>([&](CK_SESSION_HANDLE s) -> Result<bool> {
      KL_TRY(auto existing, token_->find_object(s, CKO_PRIVATE_KEY, label));
      if (existing)
        return fail(Domain::keystore, "key '" + label + "' already exists in " + uri() +
                                          "; choose another label or remove the old key deliberately");
      CK_MECHANISM mech{ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
      CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
      CK_RV rv = token_->f().C_GenerateKeyPair(s, &mech, pub.data(), pub.size(), priv.data(), priv.size(),
                                               &hpub, &hpriv);
      if (rv != CKR_OK)
        return std::unexpected(ck_error(rv, "generating " + std::string(to_string(algorithm)) + " key '" +
                                                label + "' in " + token_->name()));
      return true;
    }));
    return {};
  }

 public:
  Result<std::shared_ptr<Signer>> signer(const std::string& label) override {
    KL_CHECK(validate_label(label));
    struct Loaded {
      Algorithm algorithm;
      Bytes spki;
      std::size_t signature_size;
    };
    KL_TRY(Loaded loaded, token_->run<Loaded>([&](CK_SESSION_HANDLE s) -> Result<Loaded> {
      KL_TRY(CK_OBJECT_HANDLE priv, token_->key(s, CKO_PRIVATE_KEY, label));
      KL_TRY(CK_ULONG type,
             token_->ulong_attribute(s, priv, CKA_KEY_TYPE, "the key type of '" + label + "'"));
      KL_TRY(Bytes id, token_->attribute(s, priv, CKA_ID, "the CKA_ID of '" + label + "'"));
      KL_TRY(auto pub, token_->find_object(s, CKO_PUBLIC_KEY, label, id));
      EvpPkeyPtr key;
      if (type == CKK_EC) {
        if (!pub)
          return fail(Domain::keystore, "EC key '" + label + "' in " + token_->name() +
                                            " has no public key object with the same label and CKA_ID; "
                                            "Keyline reads the public key from it");
        KL_TRY(Bytes params, token_->attribute(s, *pub, CKA_EC_PARAMS, "the curve of '" + label + "'"));
        KL_TRY(Bytes point, token_->attribute(s, *pub, CKA_EC_POINT, "the public point of '" + label + "'"));
        std::string_view group = equals(params, kP256Oid) ? "P-256" : equals(params, kP384Oid) ? "P-384" : "";
        if (group.empty())
          return fail(Domain::keystore,
                      "EC key '" + label + "' is on a curve Keyline does not support (use P-256 or P-384)");
        KL_TRY(key, detail::ec_public_key(group, point));
      } else if (type == CKK_RSA) {
        // A private RSA object carries n and e too, so a missing public object is fine.
        CK_OBJECT_HANDLE from = pub ? *pub : priv;
        KL_TRY(Bytes n, token_->attribute(s, from, CKA_MODULUS, "the modulus of '" + label + "'"));
        KL_TRY(Bytes e, token_->attribute(s, from, CKA_PUBLIC_EXPONENT, "the exponent of '" + label + "'"));
        KL_TRY(key, detail::rsa_public_key(n, e));
      } else {
        return fail(Domain::keystore, "key '" + label + "' in " + token_->name() + " is a " +
                                          kind_of(type, {}, 0) + "; Keyline signs with EC and RSA keys only");
      }
      KL_TRY(Algorithm algorithm, algorithm_of(key.get()));
      KL_TRY(Bytes spki, public_key_der(key.get()));
      std::size_t size = algorithm == Algorithm::ec_p256 ? 64
                         : algorithm == Algorithm::ec_p384
                             ? 96
                             : static_cast<std::size_t>(EVP_PKEY_get_size(key.get()));
      return Loaded{algorithm, std::move(spki), size};
    }));
    return std::make_shared<Pkcs11Signer>(token_, label, loaded.algorithm, std::move(loaded.spki),
                                          loaded.signature_size);
  }

  Status generate_secret(const std::string& label) override { return store_secret(label, nullptr); }

  Status import_secret(const std::string& label, const SecretBytes& key) override {
    if (key.empty()) return fail(Domain::input, "secret '" + label + "' is empty");
    // HMAC pads keys shorter than the SHA-256 block (64 bytes) with zeros
    // (RFC 2104 §2), so zero-padding a short key to 32 bytes gives the same
    // MACs and satisfies tokens that refuse shorter HMAC keys (SoftHSM:
    // CKR_KEY_SIZE_RANGE below 32 bytes).
    Bytes raw(key.reveal());
    if (raw.size() < 32) raw.resize(32, 0);
    SecretBytes value(std::move(raw));
    return store_secret(label, &value);
  }

  Result<std::shared_ptr<SecretKey>> secret(const std::string& label) override {
    KL_CHECK(validate_label(label));
    KL_CHECK(token_->run<CK_OBJECT_HANDLE>(
        [&](CK_SESSION_HANDLE s) { return token_->key(s, CKO_SECRET_KEY, label); }));
    return std::make_shared<Pkcs11Secret>(token_, label);
  }

  Result<std::vector<KeyInfo>> list() override {
    return token_->run<std::vector<KeyInfo>>([&](CK_SESSION_HANDLE s) -> Result<std::vector<KeyInfo>> {
      std::vector<KeyInfo> out;
      for (CK_OBJECT_CLASS cls : {CKO_PRIVATE_KEY, CKO_SECRET_KEY}) {
        KL_TRY(auto handles, all_objects(s, cls));
        for (CK_OBJECT_HANDLE h : handles) {
          KL_TRY(Bytes raw_label, token_->attribute(s, h, CKA_LABEL, "a key label"));
          std::string label(raw_label.begin(), raw_label.end());
          if (cls == CKO_SECRET_KEY) {
            out.push_back({label, "secret"});
            continue;
          }
          KL_TRY(CK_ULONG type,
                 token_->ulong_attribute(s, h, CKA_KEY_TYPE, "the key type of '" + label + "'"));
          Bytes params, modulus;
          if (type == CKK_EC) {
            KL_TRY(params, token_->attribute(s, h, CKA_EC_PARAMS, "the curve of '" + label + "'"));
          } else if (type == CKK_RSA) {
            KL_TRY(modulus, token_->attribute(s, h, CKA_MODULUS, "the modulus of '" + label + "'"));
          }
          out.push_back({label, kind_of(type, params, modulus.size())});
        }
      }
      std::sort(out.begin(), out.end(), [](const KeyInfo& a, const KeyInfo& b) { return a.label < b.label; });
      return out;
    });
  }

  Status destroy_signing_key(const std::string& label) override {
    KL_CHECK(validate_label(label));
    return destroy(label, {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY});
  }

  Status destroy_secret(const std::string& label) override {
    KL_CHECK(validate_label(label));
    return destroy(label, {CKO_SECRET_KEY});
  }

 private:
  // Destroys the objects labelled `label` of the given classes (the first
  // names the key) that carry the CKA_ID Keyline gives that label: the token
  // objects and Keyline's session copies of them. An object another
  // application left under the same label, with another CKA_ID, stays.
  // run() may repeat the operation after a lost session: the count of what
  // was destroyed spans the attempts. Cached handles are forgotten.
  Status destroy(const std::string& label, std::initializer_list<CK_OBJECT_CLASS> classes) {
    std::lock_guard lock(create_mu_);
    const Bytes id = label_id(label);
    const std::string what = Token::class_word(*classes.begin()) + " '" + label + "'";
    int destroyed = 0;
    auto done = token_->run<bool>([&](CK_SESSION_HANDLE s) -> Result<bool> {
      for (CK_OBJECT_CLASS cls : classes) {
        KL_TRY(auto handles, labelled_objects(s, cls, label, id));
        for (CK_OBJECT_HANDLE h : handles) {
          CK_RV rv = token_->f().C_DestroyObject(s, h);
          if (rv != CKR_OK)
            return std::unexpected(ck_error(
                rv, "destroying " + Token::class_word(cls) + " '" + label + "' in " + token_->name()));
          ++destroyed;
        }
      }
      return true;
    });
    token_->forget_handles();
    if (!done) return std::unexpected(done.error());
    if (destroyed == 0) return fail(Domain::keystore, what + " not found in " + uri());
    logger()->info("destroyed {} in {}", what, token_->name());
    return {};
  }

  // Every object of class `cls` labelled `label` with CKA_ID `id`, on the
  // token or in a session.
  Result<std::vector<CK_OBJECT_HANDLE>> labelled_objects(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                                         const std::string& label, const Bytes& id) {
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},
                           {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                           {CKA_ID, const_cast<unsigned char*>(id.data()), id.size()}};
    return token_->find_all(s, tmpl, "searching " + token_->name() + " for '" + label + "'");
  }

  // A CKK_GENERIC_SECRET token object: generated (32 bytes) when `value` is null, else imported.
  Status store_secret(const std::string& label, const SecretBytes* value) {
    KL_CHECK(validate_label(label));
    std::lock_guard lock(create_mu_);
    KeyTemplate t{.id = label_id(label), .label = label};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_ULONG length = 32;
    std::vector<CK_ATTRIBUTE> tmpl = t.protected_key();
    tmpl.push_back({CKA_CLASS, &cls, sizeof cls});
    tmpl.push_back({CKA_KEY_TYPE, &type, sizeof type});
    tmpl.push_back({CKA_VERIFY, &t.yes, sizeof t.yes});
    tmpl.push_back({CKA_ENCRYPT, &t.no, sizeof t.no});
    tmpl.push_back({CKA_WRAP, &t.no, sizeof t.no});
    if (value)
      tmpl.push_back({CKA_VALUE, const_cast<unsigned char*>(value->reveal().data()), value->reveal().size()});
    else
      tmpl.push_back({CKA_VALUE_LEN, &length, sizeof length});
    KL_CHECK(token_->run<bool>([&](CK_SESSION_HANDLE s) -> Result<bool> {
      KL_TRY(auto existing, token_->find_object(s, CKO_SECRET_KEY, label));
      if (existing)
        return fail(Domain::keystore, "secret '" + label + "' already exists in " + uri() +
                                          "; choose another label or remove the old secret deliberately");
      CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
      CK_MECHANISM mech{CKM_GENERIC_SECRET_KEY_GEN, nullptr, 0};
      CK_RV rv = value ? token_->f().C_CreateObject(s, tmpl.data(), tmpl.size(), &h)
                       : token_->f().C_GenerateKey(s, &mech, tmpl.data(), tmpl.size(), &h);
      if (rv != CKR_OK)
        return std::unexpected(ck_error(rv, "storing secret '" + label + "' in " + token_->name()));
      return true;
    }));
    logger()->info("stored secret '{}' in {} (sensitive, not extractable)", label, token_->name());
    return {};
  }

  Result<std::vector<CK_OBJECT_HANDLE>> all_objects(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls) {
    CK_BBOOL on_token = CK_TRUE;  // not Keyline's own session copies
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_TOKEN, &on_token, sizeof on_token}};
    return token_->find_all(s, tmpl, "listing the keys of " + token_->name());
  }

  std::shared_ptr<Token> token_;
  std::mutex create_mu_;  // check-then-create of one store is not interleaved
};

}  // namespace

Result<std::unique_ptr<KeyStore>> make_pkcs11_store(const Pkcs11Uri& uri) {
  KL_TRY(std::shared_ptr<pkcs11::Module> module, pkcs11::acquire_module(uri.module_path()));
  KL_TRY(CK_SLOT_ID slot, pkcs11::find_slot(*module, uri));
  std::string who = pkcs11::token_name(uri);
  std::string origin;
  if (!uri.pin_source().empty())
    origin = "pin-source=" + uri.pin_source() + " in the key store URI";
  else if (const char* env = std::getenv("KEYLINE_PKCS11_PIN"); env && *env)
    origin = "KEYLINE_PKCS11_PIN";
  else
    origin = "the PIN typed at the prompt";
  KL_TRY(SecretString pin, resolve_secret(uri.pin_source(), "KEYLINE_PKCS11_PIN", "PIN for " + who + ": "));
  auto token = std::make_shared<Token>(std::move(module), uri, slot, std::move(pin), std::move(origin));
  {
    // The first session logs in: a wrong PIN is reported here, once.
    KL_TRY(auto lease, token->borrow());
  }
  logger()->info("opened {} (slot {}, module {})", who, slot, uri.module_path());
  return std::make_unique<Pkcs11Store>(std::move(token));
}

}  // namespace keyline::hsm
