#include "tpm2_store.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "keyline/core/log.hpp"
#include "keyline/hsm/credentials.hpp"
#include "keyline/hsm/pkcs11_uri.hpp"
#include "pkcs11_store.hpp"

namespace keyline::hsm {

namespace {

std::shared_ptr<spdlog::logger> logger() { return log::get("hsm.tpm2"); }

constexpr std::uint32_t kPersistentFirst = 0x81000000;
constexpr std::uint32_t kPersistentLast = 0x817FFFFF;  // owner part of the persistent range
constexpr std::uint32_t kSpan = 0x100;
constexpr int kMaxBusyRetries = 5;

std::string hex_handle(std::uint32_t h) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", h);
  return buf;
}

template <typename T>
using EsysPtr = std::unique_ptr<T, Free<Esys_Free>>;

TSS2_RC rc_of(const Error& e) {
  return e.domain() == Domain::keystore ? static_cast<TSS2_RC>(e.native_code()) : TSS2_RC_SUCCESS;
}

bool tpm_layer(TSS2_RC rc) { return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER; }

// The error number of a TPM response code without handle/parameter/session
// numbers (TPM 2.0 Library Part 2, §6.6.3).
TSS2_RC tpm_code(TSS2_RC rc) { return (rc & TPM2_RC_FMT1) ? (rc & (TPM2_RC_FMT1 | 0x3F)) : (rc & 0xFFF); }

bool is_busy(TSS2_RC rc) {
  return rc != 0 && tpm_layer(rc) && (rc == TPM2_RC_RETRY || rc == TPM2_RC_YIELDED || rc == TPM2_RC_TESTING);
}

bool is_transport(TSS2_RC rc) {
  if (rc == TSS2_RC_SUCCESS || tpm_layer(rc)) return false;
  TSS2_RC base = rc & ~TSS2_RC_LAYER_MASK;
  return (rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER || base == TSS2_BASE_RC_IO_ERROR ||
         base == TSS2_BASE_RC_NO_CONNECTION;
}

Error tpm_error(TSS2_RC rc, const std::string& what) {
  std::string msg = what + " failed: " + Tss2_RC_Decode(rc);
  if (tpm_layer(rc)) {
    TSS2_RC code = tpm_code(rc);
    if (code == TPM2_RC_AUTH_FAIL || code == TPM2_RC_BAD_AUTH)
      msg +=
          " (the TPM refused the authorization value; check auth-source in the key store URI or "
          "KEYLINE_TPM_AUTH)";
    else if (rc == TPM2_RC_LOCKOUT)
      msg += " (the TPM is in dictionary-attack lockout; wait for it to recover or have the owner reset it)";
    else if (code == TPM2_RC_NV_SPACE || rc == TPM2_RC_NV_RATE || code == TPM2_RC_NV_UNAVAILABLE)
      msg += " (the TPM's persistent storage is full or busy)";
    else if (code == TPM2_RC_HIERARCHY || code == TPM2_RC_AUTH_UNAVAILABLE)
      msg += " (the owner hierarchy is disabled or needs an authorization Keyline does not have)";
  }
  return Error(Domain::keystore, std::move(msg), static_cast<std::int64_t>(rc));
}

std::uint32_t fnv1a(std::string_view text) {
  std::uint32_t h = 0x811c9dc5u;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x01000193u;
  }
  return h;
}

struct PublicInfo {
  Algorithm algorithm;
  Bytes spki;
};

// The SubjectPublicKeyInfo of an unrestricted signing key (TPMT_PUBLIC, Part 2 §12.2.4).
Result<PublicInfo> public_info(const TPMT_PUBLIC& p, const std::string& what) {
  TPMA_OBJECT attrs = p.objectAttributes;
  if (!(attrs & TPMA_OBJECT_SIGN_ENCRYPT) || (attrs & (TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)))
    return fail(Domain::keystore,
                what + " is not an unrestricted signing key; Keyline does not sign with it");
  EvpPkeyPtr key;
  if (p.type == TPM2_ALG_ECC) {
    std::size_t field = 0;
    std::string_view group;
    if (p.parameters.eccDetail.curveID == TPM2_ECC_NIST_P256)
      field = 32, group = "P-256";
    else if (p.parameters.eccDetail.curveID == TPM2_ECC_NIST_P384)
      field = 48, group = "P-384";
    else
      return fail(Domain::keystore, what + " is on a curve Keyline does not support (use P-256 or P-384)");
    const auto& x = p.unique.ecc.x;
    const auto& y = p.unique.ecc.y;
    if (x.size > field || y.size > field)
      return fail(Domain::keystore, what + " has a malformed public point");
    Bytes point(1 + 2 * field, 0);
    point[0] = 0x04;
    std::memcpy(point.data() + 1 + field - x.size, x.buffer, x.size);
    std::memcpy(point.data() + 1 + 2 * field - y.size, y.buffer, y.size);
    KL_TRY(key, detail::ec_public_key(group, point));
  } else if (p.type == TPM2_ALG_RSA) {
    std::uint32_t e = p.parameters.rsaDetail.exponent ? p.parameters.rsaDetail.exponent : 65537;
    unsigned char exponent[4] = {static_cast<unsigned char>(e >> 24), static_cast<unsigned char>(e >> 16),
                                 static_cast<unsigned char>(e >> 8), static_cast<unsigned char>(e)};
    KL_TRY(key, detail::rsa_public_key(ByteView(p.unique.rsa.buffer, p.unique.rsa.size), exponent));
  } else {
    return fail(Domain::keystore, what + " is neither an ECC nor an RSA key");
  }
  KL_TRY(Algorithm algorithm, algorithm_of(key.get()));
  KL_TRY(Bytes spki, public_key_der(key.get()));
  return PublicInfo{algorithm, std::move(spki)};
}

TPMI_ALG_HASH hash_alg(Algorithm a) { return a == Algorithm::ec_p384 ? TPM2_ALG_SHA384 : TPM2_ALG_SHA256; }
bool is_ec(Algorithm a) { return a == Algorithm::ec_p256 || a == Algorithm::ec_p384; }

TPM2B_PUBLIC signing_template(Algorithm a) {
  TPM2B_PUBLIC pub{};
  TPMT_PUBLIC& p = pub.publicArea;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                       TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;
  if (is_ec(a)) {
    p.type = TPM2_ALG_ECC;
    p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    p.parameters.eccDetail.scheme.details.ecdsa.hashAlg = hash_alg(a);
    p.parameters.eccDetail.curveID = a == Algorithm::ec_p384 ? TPM2_ECC_NIST_P384 : TPM2_ECC_NIST_P256;
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  } else {
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_RSASSA;
    p.parameters.rsaDetail.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    p.parameters.rsaDetail.keyBits = a == Algorithm::rsa_3072 ? 3072 : 2048;
    p.parameters.rsaDetail.exponent = 0;
  }
  return pub;
}

// Storage primary (TCG EK/SRK template style): ECC P-256, AES-128-CFB, restricted decrypt.
TPM2B_PUBLIC primary_template() {
  TPM2B_PUBLIC pub{};
  TPMT_PUBLIC& p = pub.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                       TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED |
                       TPMA_OBJECT_DECRYPT;
  p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  p.parameters.eccDetail.symmetric.keyBits.aes = 128;
  p.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  return pub;
}

// The TPM and the one thread allowed to talk to it.
class Tpm {
 public:
  Tpm(std::string tcti, SecretString auth) : tcti_(std::move(tcti)), auth_(std::move(auth)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Tpm() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Tpm(const Tpm&) = delete;
  Tpm& operator=(const Tpm&) = delete;

  const std::string& tcti() const { return tcti_; }

  Status probe() {
    auto r = call([&] {
      return attempt<bool>([&]() -> Result<bool> {
        TPMI_YES_NO more = TPM2_NO;
        TPMS_CAPABILITY_DATA* raw = nullptr;
        TSS2_RC rc = Esys_GetCapability(esys_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        TPM2_CAP_TPM_PROPERTIES, TPM2_PT_MANUFACTURER, 1, &more, &raw);
        EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
        if (rc != TSS2_RC_SUCCESS)
          return std::unexpected(tpm_error(rc, "asking the TPM for its manufacturer"));
        return true;
      });
    });
    if (!r) return std::unexpected(r.error());
    return {};
  }

  Result<PublicInfo> generate(std::uint32_t handle, Algorithm a, const std::string& what) {
    return call([&] {
      return attempt<PublicInfo>([&]() -> Result<PublicInfo> {
        KL_TRY(bool taken, occupied(handle));
        if (taken)
          return fail(Domain::keystore,
                      what + " already exists (persistent handle " + hex_handle(handle) +
                          " is occupied); choose another label or evict the old key deliberately");
        TPM2B_SENSITIVE_CREATE no_auth{};
        TPM2B_DATA outside{};
        TPML_PCR_SELECTION pcrs{};
        TPM2B_PUBLIC primary_tmpl = primary_template();
        Transient primary(esys_);
        TSS2_RC rc = Esys_CreatePrimary(esys_, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                        &no_auth, &primary_tmpl, &outside, &pcrs, &primary.tr, nullptr,
                                        nullptr, nullptr, nullptr);
        if (rc != TSS2_RC_SUCCESS)
          return std::unexpected(tpm_error(rc, "creating the owner storage primary"));
        TPM2B_SENSITIVE_CREATE sensitive{};
        KL_CHECK(fill_auth(sensitive.sensitive.userAuth));
        TPM2B_PUBLIC tmpl = signing_template(a);
        TPM2B_PRIVATE* priv_raw = nullptr;
        TPM2B_PUBLIC* pub_raw = nullptr;
        rc = Esys_Create(esys_, primary.tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &tmpl,
                         &outside, &pcrs, &priv_raw, &pub_raw, nullptr, nullptr, nullptr);
        OPENSSL_cleanse(&sensitive, sizeof sensitive);
        EsysPtr<TPM2B_PRIVATE> priv(priv_raw);
        EsysPtr<TPM2B_PUBLIC> pub(pub_raw);
        if (rc != TSS2_RC_SUCCESS)
          return std::unexpected(tpm_error(rc, "creating " + std::string(to_string(a)) + " " + what));
        Transient key(esys_);
        rc = Esys_Load(esys_, primary.tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv.get(), pub.get(),
                       &key.tr);
        if (rc != TSS2_RC_SUCCESS) return std::unexpected(tpm_error(rc, "loading " + what));
        ESYS_TR persistent = ESYS_TR_NONE;
        rc = Esys_EvictControl(esys_, ESYS_TR_RH_OWNER, key.tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               handle, &persistent);
        if (rc != TSS2_RC_SUCCESS)
          return std::unexpected(tpm_error(rc, "making " + what + " persistent at " + hex_handle(handle)));
        // The key is persistent now: if it cannot be used after all, it
        // goes again, so that no key is left that nobody recorded.
        auto undo = [&](const Error& e) {
          ESYS_TR none = ESYS_TR_NONE;
          TSS2_RC erc = Esys_EvictControl(esys_, ESYS_TR_RH_OWNER, persistent, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                          ESYS_TR_NONE, handle, &none);
          objects_.erase(handle);
          return std::unexpected(e.with_context(
              erc == TSS2_RC_SUCCESS
                  ? "the new " + what + " was made and removed again"
                  : "the new " + what + " was made at " + hex_handle(handle) + " and could not be removed (" +
                        tpm_error(erc, "evicting it").message() + "); evict it with the TPM's tools"));
        };
        if (auto kept = remember(handle, persistent); !kept) return undo(kept.error());
        auto info = public_info(pub->publicArea, what);
        if (!info) return undo(info.error());
        return info;
      });
    });
  }

  // Evicts the persistent key at `handle` (TPM2_EvictControl); a not-found
  // error naming `what` when there is none.
  Status evict(std::uint32_t handle, const std::string& what) {
    auto done = call([&] {
      return attempt<bool>([&]() -> Result<bool> {
        KL_TRY(bool taken, occupied(handle));
        if (!taken)
          return fail(Domain::keystore,
                      what + " not found (no persistent object at " + hex_handle(handle) + ")");
        KL_TRY(ESYS_TR key, object(handle, what));
        ESYS_TR none = ESYS_TR_NONE;
        TSS2_RC rc = Esys_EvictControl(esys_, ESYS_TR_RH_OWNER, key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                       ESYS_TR_NONE, handle, &none);
        if (rc != TSS2_RC_SUCCESS)
          return std::unexpected(tpm_error(rc, "evicting " + what + " from " + hex_handle(handle)));
        // ESAPI drops its object for an evicted persistent handle itself.
        objects_.erase(handle);
        return true;
      });
    });
    if (!done) return std::unexpected(done.error());
    return {};
  }

  // The public key at `handle`; a not-found error naming `what` when empty.
  Result<PublicInfo> load(std::uint32_t handle, const std::string& what) {
    return call([&] {
      return attempt<PublicInfo>([&]() -> Result<PublicInfo> {
        KL_TRY(bool taken, occupied(handle));
        if (!taken)
          return fail(Domain::keystore,
                      what + " not found (no persistent object at " + hex_handle(handle) + ")");
        return read_public(handle, what);
      });
    });
  }

  Result<Bytes> sign(std::uint32_t handle, Algorithm a, ByteView digest, const std::string& what) {
    return call([&] {
      return attempt<Bytes>([&]() -> Result<Bytes> {
        KL_TRY(ESYS_TR key, object(handle, what));
        TPM2B_DIGEST dg{};
        dg.size = static_cast<UINT16>(digest.size());
        std::memcpy(dg.buffer, digest.data(), digest.size());
        TPMT_SIG_SCHEME scheme{};
        if (is_ec(a)) {
          scheme.scheme = TPM2_ALG_ECDSA;
          scheme.details.ecdsa.hashAlg = hash_alg(a);
        } else {
          scheme.scheme = TPM2_ALG_RSASSA;
          scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
        }
        TPMT_TK_HASHCHECK ticket{};
        ticket.tag = TPM2_ST_HASHCHECK;
        ticket.hierarchy = TPM2_RH_NULL;
        TPMT_SIGNATURE* raw = nullptr;
        TSS2_RC rc =
            Esys_Sign(esys_, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dg, &scheme, &ticket, &raw);
        EsysPtr<TPMT_SIGNATURE> sig(raw);
        if (rc != TSS2_RC_SUCCESS) return std::unexpected(tpm_error(rc, "signing with " + what));
        if (is_ec(a)) {
          const auto& r = sig->signature.ecdsa.signatureR;
          const auto& s = sig->signature.ecdsa.signatureS;
          return detail::ecdsa_signature_der(ByteView(r.buffer, r.size), ByteView(s.buffer, s.size));
        }
        const auto& s = sig->signature.rsassa.sig;
        return Bytes(s.buffer, s.buffer + s.size);
      });
    });
  }

  // Persistent objects in [base, base + kSpan) with their kind.
  Result<std::vector<KeyInfo>> list(std::uint32_t base) {
    return call([&] {
      return attempt<std::vector<KeyInfo>>([&]() -> Result<std::vector<KeyInfo>> {
        std::vector<KeyInfo> out;
        std::uint32_t next = base;
        TPMI_YES_NO more = TPM2_YES;
        while (more == TPM2_YES && next < base + kSpan) {
          TPMS_CAPABILITY_DATA* raw = nullptr;
          TSS2_RC rc = Esys_GetCapability(esys_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                                          next, kSpan, &more, &raw);
          EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
          if (rc != TSS2_RC_SUCCESS) return std::unexpected(tpm_error(rc, "listing persistent handles"));
          const TPML_HANDLE& handles = data->data.handles;
          if (handles.count == 0) break;
          for (UINT32 i = 0; i < handles.count; ++i) {
            std::uint32_t h = handles.handle[i];
            if (h >= base + kSpan) {
              more = TPM2_NO;
              break;
            }
            auto info = read_public(h, "object " + hex_handle(h));
            out.push_back({hex_handle(h), info ? "signing " + std::string(to_string(info->algorithm))
                                               : "not a signing key Keyline can use"});
            next = h + 1;
          }
        }
        return out;
      });
    });
  }

 private:
  // Flushes a transient object when the job is done with it.
  struct Transient {
    explicit Transient(ESYS_CONTEXT* esys) : esys(esys) {}
    ~Transient() {
      if (tr != ESYS_TR_NONE) Esys_FlushContext(esys, tr);
    }
    Transient(const Transient&) = delete;
    Transient& operator=(const Transient&) = delete;
    ESYS_CONTEXT* esys;
    ESYS_TR tr = ESYS_TR_NONE;
  };

  template <typename F>
  auto call(F&& f) -> decltype(f()) {
    // The job owns the promise: the caller may return (and drop its
    // future) the moment the value is set, while set_value still runs.
    auto done = std::make_shared<std::promise<decltype(f())>>();
    auto result = done->get_future();
    {
      std::lock_guard lock(mu_);
      jobs_.emplace_back([done, &f] { done->set_value(f()); });
    }
    cv_.notify_one();
    return result.get();
  }

  void loop() {
    // A write to a socket whose peer died must fail with EPIPE, not kill the process.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) break;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
    disconnect();
  }

  Error unreachable(TSS2_RC rc) const {
    return Error(
        Domain::keystore,
        "TPM not reachable via TCTI '" + tcti_ + "' (" + Tss2_RC_Decode(rc) +
            "); check that the TPM (or swtpm) is running and that tcti= in the key store URI is right. "
            "Keyline reconnects on the next call",
        static_cast<std::int64_t>(rc));
  }

  Status connect() {
    if (esys_) return {};
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti_.c_str(), &tcti_ctx_);
    if (rc != TSS2_RC_SUCCESS) {
      tcti_ctx_ = nullptr;
      return std::unexpected(unreachable(rc));
    }
    rc = Esys_Initialize(&esys_, tcti_ctx_, nullptr);
    if (rc != TSS2_RC_SUCCESS) {
      esys_ = nullptr;
      Tss2_TctiLdr_Finalize(&tcti_ctx_);
      return std::unexpected(unreachable(rc));
    }
    logger()->debug("connected to the TPM via TCTI '{}'", tcti_);
    return {};
  }

  void disconnect() {
    objects_.clear();
    if (esys_) Esys_Finalize(&esys_);
    if (tcti_ctx_) Tss2_TctiLdr_Finalize(&tcti_ctx_);
    esys_ = nullptr;
    tcti_ctx_ = nullptr;
  }

  // Runs `op` on the worker with the retry rules of tpm2_store.hpp.
  template <typename T, typename Op>
  Result<T> attempt(Op&& op) {
    bool reconnected = false, started = false;
    for (int busy = 0;;) {
      KL_CHECK(connect());
      Result<T> r = op();
      if (r) return r;
      TSS2_RC rc = rc_of(r.error());
      if (is_busy(rc) && busy < kMaxBusyRetries) {
        ++busy;
        std::this_thread::sleep_for(std::chrono::milliseconds(20 * busy));
        continue;
      }
      if (tpm_layer(rc) && rc == TPM2_RC_INITIALIZE && !started) {
        started = true;
        logger()->info("the TPM was not started; sending TPM2_Startup(CLEAR)");
        Esys_Startup(esys_, TPM2_SU_CLEAR);
        continue;
      }
      if (is_transport(rc)) {
        disconnect();
        if (!reconnected) {
          reconnected = true;
          logger()->warn("lost the TPM connection ({}); reconnecting once", Tss2_RC_Decode(rc));
          continue;
        }
        return std::unexpected(unreachable(rc));
      }
      return r;
    }
  }

  Status fill_auth(TPM2B_AUTH& out) const {
    const std::string& value = auth_.reveal();
    if (value.size() > 32)
      return fail(Domain::usage,
                  "the TPM authorization value is longer than 32 bytes (the SHA-256 digest size)");
    out.size = static_cast<UINT16>(value.size());
    std::memcpy(out.buffer, value.data(), value.size());
    return {};
  }

  Status remember(std::uint32_t handle, ESYS_TR tr) {
    TPM2B_AUTH auth{};
    KL_CHECK(fill_auth(auth));
    TSS2_RC rc = Esys_TR_SetAuth(esys_, tr, &auth);
    OPENSSL_cleanse(&auth, sizeof auth);
    if (rc != TSS2_RC_SUCCESS) return std::unexpected(tpm_error(rc, "setting the key authorization"));
    objects_[handle] = tr;
    return {};
  }

  Result<ESYS_TR> object(std::uint32_t handle, const std::string& what) {
    if (auto it = objects_.find(handle); it != objects_.end()) return it->second;
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc = Esys_TR_FromTPMPublic(esys_, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
    if (rc != TSS2_RC_SUCCESS)
      return std::unexpected(tpm_error(rc, "opening " + what + " at " + hex_handle(handle)));
    KL_CHECK(remember(handle, tr));
    return tr;
  }

  Result<bool> occupied(std::uint32_t handle) {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    TSS2_RC rc = Esys_GetCapability(esys_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, handle,
                                    1, &more, &raw);
    EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
    if (rc != TSS2_RC_SUCCESS)
      return std::unexpected(tpm_error(rc, "asking the TPM about handle " + hex_handle(handle)));
    return data->data.handles.count > 0 && data->data.handles.handle[0] == handle;
  }

  Result<PublicInfo> read_public(std::uint32_t handle, const std::string& what) {
    KL_TRY(ESYS_TR tr, object(handle, what));
    TPM2B_PUBLIC* raw = nullptr;
    TSS2_RC rc = Esys_ReadPublic(esys_, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw, nullptr, nullptr);
    EsysPtr<TPM2B_PUBLIC> pub(raw);
    if (rc != TSS2_RC_SUCCESS) return std::unexpected(tpm_error(rc, "reading the public part of " + what));
    return public_info(pub->publicArea, what);
  }

  const std::string tcti_;
  const SecretString auth_;
  // Worker-thread state: touched only by jobs.
  TSS2_TCTI_CONTEXT* tcti_ctx_ = nullptr;
  ESYS_CONTEXT* esys_ = nullptr;
  std::map<std::uint32_t, ESYS_TR> objects_;  // persistent handle -> ESYS object
  // The queue.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

class Tpm2Signer final : public Signer {
 public:
  Tpm2Signer(std::shared_ptr<Tpm> tpm, std::uint32_t handle, std::string description, Algorithm algorithm,
             Bytes spki)
      : tpm_(std::move(tpm)),
        handle_(handle),
        description_(std::move(description)),
        algorithm_(algorithm),
        spki_(std::move(spki)) {}

  Algorithm algorithm() const noexcept override { return algorithm_; }
  const Bytes& public_key() const noexcept override { return spki_; }
  std::string describe() const override { return description_; }

  Result<Bytes> sign(ByteView digest) const override {
    if (digest.size() != digest_size(digest_for(algorithm_)))
      return fail(Domain::internal, "signer " + description_ + " was given a digest of " +
                                        std::to_string(digest.size()) + " bytes");
    return tpm_->sign(handle_, algorithm_, digest, description_);
  }

 private:
  std::shared_ptr<Tpm> tpm_;
  std::uint32_t handle_;
  std::string description_;
  Algorithm algorithm_;
  Bytes spki_;
};

class Tpm2Store final : public KeyStore {
 public:
  Tpm2Store(Tpm2Uri uri, std::shared_ptr<Tpm> tpm) : uri_(std::move(uri)), tpm_(std::move(tpm)) {}

  std::string uri() const override { return uri_.to_string(); }
  bool is_development() const noexcept override { return false; }

  Result<std::shared_ptr<Signer>> generate_signing_key(const std::string& label,
                                                       Algorithm algorithm) override {
    KL_CHECK(validate_label(label));
    std::uint32_t handle = tpm2_handle_for(uri_.base_handle(), label);
    KL_TRY(PublicInfo info, tpm_->generate(handle, algorithm, what(label)));
    logger()->info("generated {} key '{}' in the TPM at persistent handle {}", to_string(algorithm), label,
                   hex_handle(handle));
    return std::make_shared<Tpm2Signer>(tpm_, handle, describe(label, handle), info.algorithm,
                                        std::move(info.spki));
  }

  Result<std::shared_ptr<Signer>> signer(const std::string& label) override {
    KL_CHECK(validate_label(label));
    std::uint32_t handle = tpm2_handle_for(uri_.base_handle(), label);
    KL_TRY(PublicInfo info, tpm_->load(handle, what(label)));
    return std::make_shared<Tpm2Signer>(tpm_, handle, describe(label, handle), info.algorithm,
                                        std::move(info.spki));
  }

  Status generate_secret(const std::string& label) override { return unsupported(label); }
  Status import_secret(const std::string& label, const SecretBytes&) override { return unsupported(label); }
  Result<std::shared_ptr<SecretKey>> secret(const std::string& label) override { return unsupported(label); }

  Result<std::vector<KeyInfo>> list() override { return tpm_->list(uri_.base_handle()); }

  Status destroy_signing_key(const std::string& label) override {
    KL_CHECK(validate_label(label));
    std::uint32_t handle = tpm2_handle_for(uri_.base_handle(), label);
    KL_CHECK(tpm_->evict(handle, what(label)));
    logger()->info("evicted key '{}' from the TPM's persistent handle {}", label, hex_handle(handle));
    return {};
  }
  Status destroy_secret(const std::string& label) override { return unsupported(label); }

 private:
  std::string what(const std::string& label) const { return "key '" + label + "' in " + uri(); }
  std::string describe(const std::string& label, std::uint32_t handle) const {
    return "tpm2:handle=" + hex_handle(handle) + "#" + label;
  }
  std::unexpected<Error> unsupported(const std::string& label) const {
    return fail(Domain::keystore,
                "secret '" + label +
                    "': secrets are not supported by the tpm2 key store yet; keep DPS group keys "
                    "in a PKCS#11 token (pkcs11:...)");
  }

  Tpm2Uri uri_;
  std::shared_ptr<Tpm> tpm_;
};

}  // namespace

Result<Tpm2Uri> Tpm2Uri::parse(std::string_view text) {
  constexpr std::string_view kScheme = "tpm2:";
  if (!text.starts_with(kScheme))
    return fail(Domain::usage, "a TPM key store URI starts with 'tpm2:', for example tpm2:handle=0x81000100");
  text.remove_prefix(kScheme.size());
  auto q = text.find('?');
  std::string_view path = text.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : text.substr(q + 1);
  Tpm2Uri uri;
  bool have_handle = false;
  auto each = [](std::string_view list, char sep, auto&& fn) -> Status {
    while (!list.empty()) {
      auto end = list.find(sep);
      std::string_view item = list.substr(0, end);
      list = end == std::string_view::npos ? std::string_view{} : list.substr(end + 1);
      if (item.empty()) continue;
      auto eq = item.find('=');
      if (eq == std::string_view::npos)
        return fail(Domain::usage,
                    "tpm2 URI attribute '" + std::string(item) + "' is not of the form name=value");
      std::string name(item.substr(0, eq));
      KL_TRY(std::string value, percent_decode(item.substr(eq + 1), "tpm2 URI attribute '" + name + "'"));
      KL_CHECK(fn(name, value));
    }
    return {};
  };
  KL_CHECK(each(path, ';', [&](const std::string& name, const std::string& value) -> Status {
    if (name != "handle")
      return fail(Domain::usage,
                  "unknown tpm2 URI attribute '" + name + "' before '?' (only handle=0x81......)");
    std::uint32_t h = 0;
    std::string_view digits(value);
    if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), h, 16);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || h < kPersistentFirst ||
        h + (kSpan - 1) > kPersistentLast || h % kSpan != 0)
      return fail(Domain::usage, "tpm2 URI handle '" + value +
                                     "' must be a multiple of 0x100 from 0x81000000 to 0x817fff00 (the owner "
                                     "persistent range), for example handle=0x81000100");
    uri.base_handle_ = h;
    have_handle = true;
    return {};
  }));
  KL_CHECK(each(query, '&', [&](const std::string& name, const std::string& value) -> Status {
    if (name == "tcti") {
      if (value.empty())
        return fail(Domain::usage, "tpm2 URI tcti is empty (for example tcti=device:/dev/tpmrm0)");
      uri.tcti_ = value;
    } else if (name == "auth-source") {
      uri.auth_source_ = value;
    } else if (name == "auth-value" || name == "auth") {
      return fail(Domain::usage,
                  "tpm2 URI carries an authorization value; Keyline refuses secrets in URIs. Put it in "
                  "a file and write auth-source=file:/path, or set KEYLINE_TPM_AUTH");
    } else {
      return fail(Domain::usage,
                  "unknown tpm2 URI query attribute '" + name + "' (use tcti and auth-source)");
    }
    return {};
  }));
  if (!have_handle)
    return fail(Domain::usage, "tpm2 URI needs handle=0x81...... (the base persistent handle)");
  return uri;
}

std::string Tpm2Uri::to_string() const {
  std::string out = "tpm2:handle=" + hex_handle(base_handle_) + "?tcti=" + percent_encode(tcti_, "-._~:/,=@");
  if (!auth_source_.empty()) out += "&auth-source=" + percent_encode(auth_source_, "-._~:/,=@");
  return out;
}

std::uint32_t tpm2_handle_for(std::uint32_t base_handle, std::string_view label) {
  if (label.size() == 10 && (label.starts_with("0x") || label.starts_with("0X"))) {
    std::uint32_t h = 0;
    auto [end, ec] = std::from_chars(label.data() + 2, label.data() + label.size(), h, 16);
    if (ec == std::errc{} && end == label.data() + label.size() && h >= base_handle &&
        h < base_handle + kSpan)
      return h;
  }
  return base_handle + fnv1a(label) % kSpan;
}

Result<std::unique_ptr<KeyStore>> make_tpm2_store(const Tpm2Uri& uri) {
  SecretString auth;
  const char* env = std::getenv("KEYLINE_TPM_AUTH");
  if (!uri.auth_source().empty() || (env && *env)) {
    KL_TRY(auth, resolve_secret(uri.auth_source(), "KEYLINE_TPM_AUTH", "TPM key authorization value: "));
    if (auth.reveal().size() > 32)
      return fail(Domain::usage,
                  "the TPM authorization value is longer than 32 bytes (the SHA-256 digest size)");
  }
  auto tpm = std::make_shared<Tpm>(uri.tcti(), std::move(auth));
  KL_CHECK(tpm->probe());
  logger()->info("opened the TPM via TCTI '{}' (keys at {}..{})", uri.tcti(), hex_handle(uri.base_handle()),
                 hex_handle(uri.base_handle() + kSpan - 1));
  return std::make_unique<Tpm2Store>(uri, std::move(tpm));
}

}  // namespace keyline::hsm
