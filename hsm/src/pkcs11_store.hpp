#pragma once
// pkcs11: key store -- keys inside a PKCS#11 token (PKCS#11 v2.40 base
// specification), reached through the raw Cryptoki C API.
//
// Opening (make_pkcs11_store):
//  * dlopen(module-path) + C_GetFunctionList; C_Initialize(CKF_OS_LOCKING_OK),
//    CKR_CRYPTOKI_ALREADY_INITIALIZED tolerated. One module instance per
//    module path per process, reference-counted: C_Finalize runs when the
//    last store or signer using it is gone (only if Keyline initialised it).
//  * The token is found across C_GetSlotList(CK_TRUE) by its label (and
//    serial / model / manufacturer / slot-id when the URI gives them).
//  * The user PIN comes from resolve_secret(pin-source, KEYLINE_PKCS11_PIN,
//    prompt); C_Login(CKU_USER) happens once, at open. A refused PIN
//    (CKR_PIN_INCORRECT, CKR_PIN_LOCKED, ...) is reported and NEVER retried,
//    so that a wrong PIN file cannot lock the token.
//  * Login state belongs to the application and token (PKCS#11 v2.40 §5.6,
//    C_Login): while one store of this process is logged in to a token, a
//    second store on it gets CKR_USER_ALREADY_LOGGED_IN and its PIN is not
//    checked by the token.
//
// Concurrency: a bounded session pool (kMaxPkcs11Sessions, opened lazily; a
// thread borrows one per operation and blocks while all are busy); key object
// handles are cached per label, so a signature costs C_SignInit + C_Sign.
// Signers and secret keys keep the token alive and are thread-safe.
//
// Recovery: CKR_SESSION_HANDLE_INVALID / SESSION_CLOSED / DEVICE_REMOVED /
// TOKEN_NOT_PRESENT / SLOT_ID_INVALID drop the pool, find the token again
// (its slot id may change), log in again and retry the operation once.
// CKR_USER_NOT_LOGGED_IN, or a stale object handle (some modules drop private
// object handles on logout), logs in again if the session is logged out,
// looks the key up again and retries once.
//
// Keys: EC P-256 / P-384 (CKM_EC_KEY_PAIR_GEN, CKM_ECDSA over the digest),
// RSA-2048 / RSA-3072 (CKM_RSA_PKCS_KEY_PAIR_GEN, e = 65537; CKM_RSA_PKCS
// over the DER DigestInfo, RFC 8017 §9.2). Private keys: CKA_TOKEN,
// CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN true; CKA_EXTRACTABLE, CKA_DECRYPT,
// CKA_UNWRAP, CKA_DERIVE false; CKA_LABEL = label, CKA_ID = first 16 bytes
// of SHA-256(label). Secrets: CKK_GENERIC_SECRET with the same protection,
// used with CKM_SHA256_HMAC; import_secret zero-pads keys shorter than 32
// bytes, which leaves every HMAC unchanged (RFC 2104 §2).
//
// Every error is Domain::keystore (or usage) with the CK_RV as native code
// and its name (ckr_name) in the message. Log module: "hsm.pkcs11"; the PIN
// is never logged.

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <p11-kit-1/p11-kit/pkcs11.h>

#include "keyline/core/log.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/core/secret.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/hsm/pkcs11_uri.hpp"

namespace keyline::hsm {

inline constexpr int kMaxPkcs11Sessions = 4;

Result<std::unique_ptr<KeyStore>> make_pkcs11_store(const Pkcs11Uri& uri);

// "CKR_PIN_INCORRECT" for 0xA0; "CKR_VENDOR_DEFINED+0x..." or "CKR_0x..." otherwise.
std::string ckr_name(unsigned long rv);
// What to do about `rv` ("" when there is nothing specific to say).
const char* ckr_advice(unsigned long rv);

namespace detail {
// Key encodings shared by the hardware backends (pkcs11 and tpm2).

// An EC public key on `group` ("P-256" or "P-384") from its point: the
// uncompressed 04||X||Y, or that point wrapped in a DER OCTET STRING as
// PKCS#11 returns CKA_EC_POINT (PKCS#11 v2.40 §2.3.3).
Result<EvpPkeyPtr> ec_public_key(std::string_view group, ByteView point);
// An RSA public key from the big-endian modulus and public exponent.
Result<EvpPkeyPtr> rsa_public_key(ByteView modulus, ByteView exponent);
// DER ECDSA-Sig-Value (RFC 3279 §2.2.3) from big-endian r and s.
Result<Bytes> ecdsa_signature_der(ByteView r, ByteView s);
}  // namespace detail

namespace pkcs11 {

struct Module;  // the shared dlopen'ed module (pkcs11_store.cpp)

// "WHAT failed: CKR_X (advice)", Domain::keystore, the CK_RV as native code.
Error ck_error(CK_RV rv, const std::string& what);

inline CK_RV rv_of(const Error& e) {
  return e.domain() == Domain::keystore ? static_cast<CK_RV>(e.native_code()) : CKR_OK;
}
inline bool session_lost(CK_RV rv) {
  return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED ||
         rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_SLOT_ID_INVALID;
}
inline bool handle_stale(CK_RV rv) { return rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID; }

// One token as the stores see it: the session pool, the login, the cache of
// key handles. Shared (shared_ptr) by a store and every signer and secret it
// hands out; all members are thread-safe.
class Token {
 public:
  Token(std::shared_ptr<Module> module, Pkcs11Uri uri, CK_SLOT_ID slot, SecretString pin,
        std::string pin_origin);
  ~Token();  // closes the idle sessions; the module is finalised with its last user
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;

  CK_FUNCTION_LIST& f() const { return *fn_; }
  const std::string& name() const { return name_; }  // "PKCS#11 token 'LINE1'"
  std::string uri() const { return uri_.to_string(); }
  std::string object_uri(const std::string& label) const;  // pkcs11:token=LINE1;object=LABEL

  // A borrowed session; goes back to the pool when destroyed.
  class Lease {
   public:
    Lease(Token* t, CK_SESSION_HANDLE h, std::uint64_t generation) : t_(t), h_(h), generation_(generation) {}
    Lease(Lease&& o) noexcept
        : t_(std::exchange(o.t_, nullptr)), h_(o.h_), generation_(o.generation_), broken_(o.broken_) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (t_) t_->give_back(h_, generation_, broken_);
    }
    CK_SESSION_HANDLE handle() const { return h_; }
    std::uint64_t generation() const { return generation_; }
    void mark_broken() { broken_ = true; }

   private:
    Token* t_;
    CK_SESSION_HANDLE h_;
    std::uint64_t generation_;
    bool broken_ = false;
  };

  // An idle session, or a new one while fewer than kMaxPkcs11Sessions are
  // open (the first one logs in), or waits for one to come back. A refused
  // PIN is returned as the same error forever after.
  Result<Lease> borrow();

  // Runs `op(session) -> Result<T>` on a borrowed session with the recovery
  // rules above: a lost session reopens the pool and retries once; not
  // logged in (or a stale handle, which some modules give after a logout)
  // logs in again if needed, forgets cached handles and retries once.
  template <typename T, typename Op>
  Result<T> run(Op&& op) {
    bool reopened = false, recovered = false;
    for (;;) {
      std::optional<Error> failure;
      std::optional<std::uint64_t> generation;
      {
        auto lease = borrow();
        if (!lease) {
          failure = lease.error();
        } else {
          generation = lease->generation();
          Result<T> r = op(lease->handle());
          if (r) return r;
          failure = r.error();
          CK_RV rv = rv_of(*failure);
          if (session_lost(rv)) {
            lease->mark_broken();
          } else if ((rv == CKR_USER_NOT_LOGGED_IN || handle_stale(rv)) && !recovered) {
            recovered = true;
            KL_CHECK(relogin(lease->handle(), rv == CKR_USER_NOT_LOGGED_IN));
            forget_handles();
            continue;
          }
        }
      }
      if (session_lost(rv_of(*failure)) && !reopened) {
        reopened = true;
        log::get("hsm.pkcs11")
            ->warn("{}: {}; reopening the sessions and retrying once", name_, failure->message());
        KL_CHECK(reopen(generation));
        continue;
      }
      return std::unexpected(*failure);
    }
  }

  // The object of class `cls` labelled `label` (and with CKA_ID `id` when
  // not empty); nullopt when there is none; an error when there are several.
  Result<std::optional<CK_OBJECT_HANDLE>> find_object(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                                      const std::string& label, const Bytes& id = {});
  // Every object that matches `tmpl`; `what` names the search in an error
  // ("searching the token for 'x'").
  Result<std::vector<CK_OBJECT_HANDLE>> find_all(CK_SESSION_HANDLE s, std::span<CK_ATTRIBUTE> tmpl,
                                                 const std::string& what);
  // Like find_object, cached per label, and an error naming the label when absent.
  Result<CK_OBJECT_HANDLE> key(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const std::string& label);
  Result<Bytes> attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                          const std::string& what);
  Result<CK_ULONG> ulong_attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                                   const std::string& what);
  void forget_handles();
  static std::string class_word(CK_OBJECT_CLASS cls);  // "key", "public key", "secret"

 private:
  void give_back(CK_SESSION_HANDLE h, std::uint64_t generation, bool broken) noexcept;
  // Logs in again unless the session shows it is logged in (known_logged_out skips the check).
  Status relogin(CK_SESSION_HANDLE h, bool known_logged_out);
  Status login_locked(CK_SESSION_HANDLE h);  // with mu_ held; C_Login once, a refusal is final
  // Drops the pool (unless another thread already did since `seen`), finds
  // the token again (its slot may have changed) and forgets cached handles.
  Status reopen(std::optional<std::uint64_t> seen);

  std::shared_ptr<Module> module_;
  CK_FUNCTION_LIST* fn_;
  Pkcs11Uri uri_;
  std::string name_;

  std::mutex mu_;  // guards the pool, the slot and the login state
  std::condition_variable cv_;
  CK_SLOT_ID slot_;
  std::vector<CK_SESSION_HANDLE> idle_;
  int open_ = 0;
  std::uint64_t generation_ = 0;
  bool logged_in_ = false;
  std::optional<Error> refused_;  // a refused PIN is never tried again
  SecretString pin_;
  std::string pin_origin_;  // "pin-source=file:/etc/keyline/pin ...", never the PIN

  std::mutex cache_mu_;
  std::map<std::pair<CK_OBJECT_CLASS, std::string>, CK_OBJECT_HANDLE> handles_;
};

}  // namespace pkcs11

}  // namespace keyline::hsm
