// The pkcs11: key store against a real SoftHSM2 token made per test
// (testkit::SoftHsm): the checks every key store passes (key_store_checks.hpp),
// plus what only a token can show -- keys that never leave it, PIN handling,
// session recovery.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include <openssl/evp.h>
#include <p11-kit-1/p11-kit/pkcs11.h>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/ceremony.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/hsm/credentials.hpp"
#include "keyline/hsm/key_store.hpp"
#include "keyline/hsm/pkcs11_uri.hpp"
#include "keyline/testkit/softhsm.hpp"
#include "keyline/testkit/testkit.hpp"
#include "key_store_checks.hpp"

namespace keyline::hsm {
namespace {

using namespace test;

// A direct Cryptoki view of the token, to inspect what the store made. It
// joins the store's module instance (C_Initialize -> ALREADY_INITIALIZED) and
// its login, and finalises only if it initialised the module itself.
class RawToken {
 public:
  explicit RawToken(const std::string& label) {
    lib_ = dlopen(testkit::SoftHsm::kModule, RTLD_NOW | RTLD_LOCAL);
    EXPECT_NE(lib_, nullptr);
    auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(lib_, "C_GetFunctionList"));
    get(&f_);
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    owns_ = f_->C_Initialize(&args) == CKR_OK;
    CK_ULONG n = 0;
    f_->C_GetSlotList(CK_TRUE, nullptr, &n);
    std::vector<CK_SLOT_ID> slots(n);
    f_->C_GetSlotList(CK_TRUE, slots.data(), &n);
    for (CK_SLOT_ID s : slots) {
      CK_TOKEN_INFO info{};
      f_->C_GetTokenInfo(s, &info);
      std::string l(reinterpret_cast<char*>(info.label), sizeof info.label);
      l.erase(l.find_last_not_of(' ') + 1);
      if (l == label) slot_ = s;
    }
    EXPECT_EQ(f_->C_OpenSession(slot_, CKF_SERIAL_SESSION, nullptr, nullptr, &session_), CKR_OK);
  }
  ~RawToken() {
    if (session_ != CK_INVALID_HANDLE) f_->C_CloseSession(session_);
    if (owns_) f_->C_Finalize(nullptr);
    dlclose(lib_);
  }
  CK_FUNCTION_LIST& f() { return *f_; }
  CK_SESSION_HANDLE session() const { return session_; }
  CK_SLOT_ID slot() const { return slot_; }
  void forget_session() { session_ = CK_INVALID_HANDLE; }  // after C_CloseAllSessions

  CK_OBJECT_HANDLE find(CK_OBJECT_CLASS cls, const std::string& label) {
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                        {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    f_->C_FindObjectsInit(session_, t, 2);
    f_->C_FindObjects(session_, &h, 1, &n);
    f_->C_FindObjectsFinal(session_);
    return n == 1 ? h : CK_INVALID_HANDLE;
  }
  CK_BBOOL flag(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a{type, &v, sizeof v};
    EXPECT_EQ(f_->C_GetAttributeValue(session_, h, &a, 1), CKR_OK);
    return v;
  }
  CK_RV read_secret_part(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type) {
    unsigned char buf[1024];
    CK_ATTRIBUTE a{type, buf, sizeof buf};
    return f_->C_GetAttributeValue(session_, h, &a, 1);
  }

 private:
  void* lib_ = nullptr;
  CK_FUNCTION_LIST* f_ = nullptr;
  bool owns_ = false;
  CK_SLOT_ID slot_ = 0;
  CK_SESSION_HANDLE session_ = CK_INVALID_HANDLE;
};

class Pkcs11Store : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = open(hsm_.uri());
    ASSERT_TRUE(s) << s.error().message();
    store_ = std::move(*s);
  }
  testkit::SoftHsm hsm_;  // declared first: outlives the store, so C_Finalize runs before the next test
  std::unique_ptr<KeyStore> store_;
};

class Pkcs11KeyStore : public Pkcs11Store, public ::testing::WithParamInterface<Algorithm> {};

TEST_P(Pkcs11KeyStore, GeneratedKeysSignVerifiablyAndReopenByLabel) {
  Algorithm a = GetParam();
  std::string label = "k-" + std::string(to_string(a));
  auto signer = store_->generate_signing_key(label, a);
  ASSERT_TRUE(signer) << signer.error().message();
  EXPECT_EQ((*signer)->algorithm(), a);
  Bytes message = bytes_of("hello");
  auto sig = (*signer)->sign(digest_of(message, a));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(verifies(**signer, message, *sig));
  message[0] ^= 1;
  EXPECT_FALSE(verifies(**signer, message, *sig));

  auto again = store_->signer(label);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ((*again)->public_key(), (*signer)->public_key());
  EXPECT_EQ((*again)->algorithm(), a);
  // A second store on the same token (the module is shared, not re-initialised).
  auto other = open(hsm_.uri());
  ASSERT_TRUE(other) << other.error().message();
  auto third = (*other)->signer(label);
  ASSERT_TRUE(third);
  EXPECT_EQ((*third)->public_key(), (*signer)->public_key());
  EXPECT_NE((*third)->describe().find(label), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, Pkcs11KeyStore,
                         ::testing::Values(Algorithm::ec_p256, Algorithm::ec_p384, Algorithm::rsa_2048,
                                           Algorithm::rsa_3072),
                         [](const auto& info) {
                           std::string n(to_string(info.param));
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST_F(Pkcs11Store, NeverOverwritesAKeyAndNamesMissingOnes) {
  ASSERT_NO_FATAL_FAILURE(expect_never_overwrites_and_names_missing_keys(*store_));
  EXPECT_FALSE(store_->generate_signing_key("ca", Algorithm::ec_p384)) << "not under another algorithm either";
  EXPECT_FALSE(store_->is_development());
}

TEST_F(Pkcs11Store, DestroyRemovesTheKeyPairOrTheSecret) {
  ASSERT_NO_FATAL_FAILURE(expect_destroy_frees_the_label(*store_, "undo"));
  // On the token itself, both halves of a pair go.
  ASSERT_TRUE(store_->generate_signing_key("pair", Algorithm::ec_p256));
  ASSERT_TRUE(store_->generate_secret("undo-secret"));
  RawToken raw(hsm_.label());  // joins the store's login: sees its private objects
  ASSERT_NE(raw.find(CKO_PRIVATE_KEY, "pair"), CK_INVALID_HANDLE);
  ASSERT_NE(raw.find(CKO_PUBLIC_KEY, "pair"), CK_INVALID_HANDLE);
  ASSERT_NE(raw.find(CKO_SECRET_KEY, "undo-secret"), CK_INVALID_HANDLE);
  ASSERT_TRUE(store_->destroy_signing_key("pair"));
  EXPECT_EQ(raw.find(CKO_PRIVATE_KEY, "pair"), CK_INVALID_HANDLE);
  EXPECT_EQ(raw.find(CKO_PUBLIC_KEY, "pair"), CK_INVALID_HANDLE) << "the public half goes too";
  EXPECT_NE(raw.find(CKO_PRIVATE_KEY, "undo"), CK_INVALID_HANDLE) << "another label's key stays";

  // Another application's object under the same label (another CKA_ID) is
  // not Keyline's to destroy: a session object, made beside the store.
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_GENERIC_SECRET;
  CK_BBOOL no = CK_FALSE;
  unsigned char value[32] = {7};
  unsigned char other_id[] = {1, 2, 3};
  std::string label = "undo-secret";
  CK_ATTRIBUTE foreign_tmpl[] = {{CKA_CLASS, &cls, sizeof cls},         {CKA_KEY_TYPE, &type, sizeof type},
                                 {CKA_TOKEN, &no, sizeof no},           {CKA_LABEL, label.data(), label.size()},
                                 {CKA_ID, other_id, sizeof other_id},   {CKA_VALUE, value, sizeof value}};
  CK_OBJECT_HANDLE foreign = CK_INVALID_HANDLE;
  ASSERT_EQ(raw.f().C_CreateObject(raw.session(), foreign_tmpl, 6, &foreign), CKR_OK);

  ASSERT_TRUE(store_->destroy_secret("undo-secret"));
  EXPECT_EQ(raw.find(CKO_SECRET_KEY, "undo-secret"), foreign) << "only the foreign object is left";
  EXPECT_FALSE(store_->destroy_secret("undo-secret"));
  raw.f().C_DestroyObject(raw.session(), foreign);
  EXPECT_FALSE(store_->secret("undo-secret"));
}

// A key made but unusable (here: a stale public key left under its label)
// is removed again, so no key exists that nobody recorded.
TEST_F(Pkcs11Store, AKeyPairThatCannotBeUsedIsRemovedAgain) {
  ASSERT_TRUE(store_->generate_signing_key("stale", Algorithm::ec_p256));
  RawToken raw(hsm_.label());
  CK_SESSION_HANDLE rw = CK_INVALID_HANDLE;
  ASSERT_EQ(raw.f().C_OpenSession(raw.slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &rw), CKR_OK);
  CK_OBJECT_HANDLE old_priv = raw.find(CKO_PRIVATE_KEY, "stale");
  ASSERT_NE(old_priv, CK_INVALID_HANDLE);
  ASSERT_EQ(raw.f().C_DestroyObject(rw, old_priv), CKR_OK);  // its public half stays behind
  raw.f().C_CloseSession(rw);

  auto again = store_->generate_signing_key("stale", Algorithm::ec_p256);
  ASSERT_FALSE(again) << "two public keys under one label cannot name one key";
  EXPECT_NE(again.error().message().find("made and removed again"), std::string::npos) << again.error().message();
  EXPECT_EQ(raw.find(CKO_PRIVATE_KEY, "stale"), CK_INVALID_HANDLE) << "the new private key is gone";
  EXPECT_EQ(raw.find(CKO_PUBLIC_KEY, "stale"), CK_INVALID_HANDLE);
  // The label works again.
  EXPECT_TRUE(store_->generate_signing_key("stale", Algorithm::ec_p256));
}

TEST_F(Pkcs11Store, WrongDigestLengthIsRefused) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes short_digest(20);
  EXPECT_FALSE((*signer)->sign(short_digest));
}

TEST_F(Pkcs11Store, PrivateKeysAreSensitiveAndNeverExtractable) {
  ASSERT_TRUE(store_->generate_signing_key("ec", Algorithm::ec_p256));
  ASSERT_TRUE(store_->generate_signing_key("rsa", Algorithm::rsa_2048));
  ASSERT_TRUE(store_->generate_secret("group"));
  RawToken raw(hsm_.label());
  struct Case {
    CK_OBJECT_CLASS cls;
    const char* label;
    CK_ATTRIBUTE_TYPE secret_part;
  };
  for (auto [cls, label, secret_part] :
       {Case{CKO_PRIVATE_KEY, "ec", CKA_VALUE}, Case{CKO_PRIVATE_KEY, "rsa", CKA_PRIVATE_EXPONENT},
        Case{CKO_SECRET_KEY, "group", CKA_VALUE}}) {
    SCOPED_TRACE(label);
    CK_OBJECT_HANDLE h = raw.find(cls, label);
    ASSERT_NE(h, CK_INVALID_HANDLE);
    EXPECT_EQ(raw.flag(h, CKA_SENSITIVE), CK_TRUE);
    EXPECT_EQ(raw.flag(h, CKA_EXTRACTABLE), CK_FALSE);
    EXPECT_EQ(raw.flag(h, CKA_TOKEN), CK_TRUE);
    EXPECT_EQ(raw.flag(h, CKA_PRIVATE), CK_TRUE);
    EXPECT_EQ(raw.flag(h, CKA_SIGN), CK_TRUE);
    EXPECT_EQ(raw.flag(h, CKA_DECRYPT), CK_FALSE);
    EXPECT_EQ(raw.flag(h, CKA_UNWRAP), CK_FALSE);
    EXPECT_EQ(raw.flag(h, CKA_DERIVE), CK_FALSE);
    EXPECT_EQ(raw.read_secret_part(h, secret_part), CKR_ATTRIBUTE_SENSITIVE);
  }
}

TEST_F(Pkcs11Store, WrongPinIsReportedOnceAndTheRightPinStillWorks) {
  // Login state is per application and token (PKCS#11 v2.40 §5.6): with the
  // fixture's store still logged in, C_Login would not check the PIN at all.
  store_.reset();
  write_secret_file(hsm_.dir() / "wrong-pin", "9999\n");
  auto bad = open(hsm_.uri_with_pin_file(hsm_.dir() / "wrong-pin"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().domain(), Domain::keystore);
  EXPECT_EQ(bad.error().native_code(), static_cast<std::int64_t>(CKR_PIN_INCORRECT));
  const std::string& msg = bad.error().message();
  EXPECT_NE(msg.find("PKCS#11 token 'LINE1' refused the PIN (CKR_PIN_INCORRECT)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pin-source=file:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not retry"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("9999"), std::string::npos) << msg;
  // The token is not locked: the right PIN still opens it and signs.
  auto good = open(hsm_.uri());
  ASSERT_TRUE(good) << good.error().message();
  auto signer = (*good)->generate_signing_key("after", Algorithm::ec_p256);
  ASSERT_TRUE(signer) << signer.error().message();
}

TEST_F(Pkcs11Store, MissingTokenIsNamedWithTheTokensPresent) {
  auto s = open("pkcs11:token=NOPE?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:" +
                hsm_.pin_file().string());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().domain(), Domain::keystore);
  EXPECT_NE(s.error().message().find("'NOPE' not found"), std::string::npos) << s.error().message();
  EXPECT_NE(s.error().message().find("'LINE1'"), std::string::npos) << s.error().message();
  auto no_module = open("pkcs11:token=LINE1?module-path=/nonexistent/module.so");
  ASSERT_FALSE(no_module);
  EXPECT_NE(no_module.error().message().find("/nonexistent/module.so"), std::string::npos);
}

TEST_F(Pkcs11Store, SecretHmacMatchesRfc4231AndStaysInTheToken) {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  SecretBytes key(bytes_of("Jefe"));
  ASSERT_TRUE(store_->import_secret("group", key));
  auto secret = store_->secret("group");
  ASSERT_TRUE(secret) << secret.error().message();
  auto mac = (*secret)->hmac_sha256(bytes_of("what do ya want for nothing?"));
  ASSERT_TRUE(mac) << mac.error().message();
  EXPECT_EQ(to_hex(*mac), "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843");
  EXPECT_FALSE(store_->import_secret("group", key));  // never overwritten
  ASSERT_TRUE(store_->generate_secret("random"));
  EXPECT_FALSE(store_->generate_secret("random"));
  auto random = store_->secret("random");
  ASSERT_TRUE(random);
  auto mac1 = (*random)->hmac_sha256(bytes_of("x"));
  ASSERT_TRUE(mac1);
  EXPECT_EQ(mac1->size(), 32u);
  auto missing = store_->secret("absent");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("'absent'"), std::string::npos);

  ASSERT_TRUE(store_->generate_signing_key("issuer", Algorithm::ec_p384));
  auto listed = store_->list();
  ASSERT_TRUE(listed) << listed.error().message();
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].label, "group");
  EXPECT_EQ((*listed)[0].kind, "secret");
  EXPECT_EQ((*listed)[1].label, "issuer");
  EXPECT_EQ((*listed)[1].kind, "signing ec-p384");
  EXPECT_EQ((*listed)[2].label, "random");
}

TEST_F(Pkcs11Store, UriNamesThePinSourceButNeverThePin) {
  std::string uri = store_->uri();
  EXPECT_TRUE(uri.starts_with("pkcs11:token=LINE1;object=keyline-intermediate?module-path="));
  EXPECT_NE(uri.find("pin-source=file:" + hsm_.pin_file().string()), std::string::npos);
  EXPECT_EQ(uri.find("pin-value"), std::string::npos);
}

TEST_F(Pkcs11Store, RecoversFromClosedSessionsAndALogout) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes message = bytes_of("m");
  ASSERT_TRUE((*signer)->sign(digest_of(message, Algorithm::ec_p256)));
  {
    RawToken raw(hsm_.label());
    // Logging out affects every session of this application on the token.
    EXPECT_EQ(raw.f().C_Logout(raw.session()), CKR_OK);
    auto sig = (*signer)->sign(digest_of(message, Algorithm::ec_p256));
    ASSERT_TRUE(sig) << sig.error().message();
    EXPECT_TRUE(verifies(**signer, message, *sig));
    // Every session of the application is closed under the store's feet.
    EXPECT_EQ(raw.f().C_CloseAllSessions(raw.slot()), CKR_OK);
    sig = (*signer)->sign(digest_of(message, Algorithm::ec_p256));
    ASSERT_TRUE(sig) << sig.error().message();
    EXPECT_TRUE(verifies(**signer, message, *sig));
    raw.forget_session();
  }
  auto again = store_->signer("k");
  ASSERT_TRUE(again) << again.error().message();
}

// Keyline signs with a session copy of the private key (SoftHSM2 re-reads a
// token object from disk for every signature): the copy is as sensitive and
// non-extractable as the token object, and x-session-copy=no signs with the
// token object itself.
TEST_F(Pkcs11Store, SignsWithASessionCopyAsProtectedAsTheTokenKeyUnlessToldNot) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes message = bytes_of("m");
  auto sig = (*signer)->sign(digest_of(message, Algorithm::ec_p256));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(verifies(**signer, message, *sig));
  auto session_copies = [&](RawToken& raw) {
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_TOKEN, &no, sizeof no}, {CKA_LABEL, (void*)"k", 1}};
    std::vector<CK_OBJECT_HANDLE> found(8);
    CK_ULONG n = 0;
    raw.f().C_FindObjectsInit(raw.session(), t, 3);
    raw.f().C_FindObjects(raw.session(), found.data(), found.size(), &n);
    raw.f().C_FindObjectsFinal(raw.session());
    found.resize(n);
    return found;
  };
  {
    RawToken raw(hsm_.label());  // the same application: it sees the store's session objects
    auto copies = session_copies(raw);
    ASSERT_EQ(copies.size(), 1u);
    EXPECT_EQ(raw.flag(copies[0], CKA_SENSITIVE), CK_TRUE);
    EXPECT_EQ(raw.flag(copies[0], CKA_EXTRACTABLE), CK_FALSE);
    EXPECT_EQ(raw.read_secret_part(copies[0], CKA_VALUE), CKR_ATTRIBUTE_SENSITIVE);
  }
  // Listing and finding by label see the token object only.
  auto again = store_->signer("k");
  ASSERT_TRUE(again) << again.error().message();
  ASSERT_TRUE((*again)->sign(digest_of(message, Algorithm::ec_p256)));

  *signer = nullptr;
  *again = nullptr;
  store_.reset();  // the last user of the token's sessions: they close, and the copy with them
  auto plain = open(hsm_.uri() + "&x-session-copy=no");
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_NE((*plain)->uri().find("x-session-copy=no"), std::string::npos);
  auto token_signer = (*plain)->signer("k");
  ASSERT_TRUE(token_signer) << token_signer.error().message();
  sig = (*token_signer)->sign(digest_of(message, Algorithm::ec_p256));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(verifies(**token_signer, message, *sig));
  RawToken raw(hsm_.label());
  EXPECT_TRUE(session_copies(raw).empty());
  EXPECT_FALSE(Pkcs11Uri::parse(hsm_.uri() + "&x-session-copy=maybe"));
}

TEST_F(Pkcs11Store, ConcurrentSigningThroughTheBoundedPool) {
  auto signer = store_->generate_signing_key("k", Algorithm::ec_p256);
  ASSERT_TRUE(signer);
  Bytes message = bytes_of("concurrent");
  Bytes digest = digest_of(message, Algorithm::ec_p256);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto sig = (*signer)->sign(digest);
        if (sig && verifies(**signer, message, *sig)) ++good;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 200);
}

TEST_F(Pkcs11Store, IssuedChainVerifiesWithOpenssl) {
  auto root_key = store_->generate_signing_key("root", Algorithm::ec_p384);
  auto inter_key = store_->generate_signing_key("inter", Algorithm::ec_p256);
  ASSERT_TRUE(root_key && inter_key);
  SystemClock clock;
  SystemRng rng;
  auto root = ca::make_root(**root_key, *parse_dn("CN=Keyline PKCS11 Test Root").value(), 3650, clock, rng);
  ASSERT_TRUE(root) << root.error().message();
  auto inter = ca::make_intermediate(**root_key, **root, (*inter_key)->public_key(),
                                     *parse_dn("CN=Keyline PKCS11 Test Line CA").value(), 365, clock, rng);
  ASSERT_TRUE(inter) << inter.error().message();
  std::string root_pem = to_pem(root->get()), inter_pem = to_pem(inter->get());
  std::vector<X509Ptr> chain;
  chain.push_back(std::move(*root));
  auto authority = ca::Authority::create(std::move(*inter), std::move(chain), *inter_key, clock, rng);
  ASSERT_TRUE(authority) << authority.error().message();
  auto device_key = testkit::ec_key();
  ca::IssueRequest req{*ca::RegistrationId::for_certificate("device-0001"), *public_key_der(device_key.get()),
                       std::nullopt};
  auto leaf = authority->issue(req, ca::Profile{});
  ASSERT_TRUE(leaf) << leaf.error().message();
  testkit::TempDir out;
  testkit::write_file(out / "root.pem", root_pem);
  testkit::write_file(out / "inter.pem", inter_pem);
  testkit::write_file(out / "leaf.pem", leaf->pem);
  auto r = testkit::run({"/usr/bin/openssl", "verify", "-x509_strict", "-CAfile", (out / "root.pem").string(),
                         "-untrusted", (out / "inter.pem").string(), (out / "leaf.pem").string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(": OK"), std::string::npos) << r.out;
}

// Redirects fd 2 into a file for the lifetime of the object.
class StderrCapture {
 public:
  explicit StderrCapture(const testkit::fs::path& file) : file_(file) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { finish(); }
  std::string finish() {
    if (saved_ >= 0) {
      std::fflush(stderr);
      ::dup2(saved_, 2);
      ::close(saved_);
      saved_ = -1;
    }
    return testkit::read_file(file_);
  }

 private:
  testkit::fs::path file_;
  int saved_ = -1;
};

TEST(Pkcs11Logging, ThePinNeverReachesTheLog) {
  const std::string pin = "Pin-7qX-4410-zeta";
  testkit::SoftHsm hsm("LOGGED", pin);
  testkit::TempDir dir;
  struct LogLevel {
    LogLevel() { EXPECT_TRUE(log::configure("trace", log::Format::text)); }
    ~LogLevel() { EXPECT_TRUE(log::configure("warn", log::Format::text)); }
  } trace;
  std::string captured;
  {
    StderrCapture capture(dir / "stderr");
    {
      auto store = open(hsm.uri());
      ASSERT_TRUE(store) << store.error().message();
      auto signer = (*store)->generate_signing_key("k", Algorithm::ec_p256);
      ASSERT_TRUE(signer);
      ASSERT_TRUE((*signer)->sign(Bytes(32, 1)));
      ASSERT_TRUE((*store)->import_secret("s", SecretBytes(bytes_of("key"))));
    }
    write_secret_file(dir / "wrong", pin + "-wrong\n");
    auto bad = open(hsm.uri_with_pin_file(dir / "wrong"));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message().find(pin), std::string::npos);
    {
      ::setenv("KEYLINE_PKCS11_PIN", pin.c_str(), 1);
      auto from_env = open("pkcs11:token=LOGGED");
      ::unsetenv("KEYLINE_PKCS11_PIN");
      ASSERT_TRUE(from_env) << from_env.error().message();
    }
    captured = capture.finish();
  }
  EXPECT_NE(captured.find("[hsm.pkcs11]"), std::string::npos) << "nothing was logged at trace level";
  EXPECT_NE(captured.find("logged in to PKCS#11 token 'LOGGED'"), std::string::npos) << captured;
  EXPECT_EQ(captured.find(pin), std::string::npos) << captured;
}

TEST(Pkcs11Uri, ParsesRfc7512PathAndQueryAttributes) {
  auto uri = Pkcs11Uri::parse(
      "pkcs11:token=My%20Token;object=keyline-intermediate;id=%01%02;serial=abc;slot-id=7;type=private"
      "?module-path=/opt/hsm/lib.so&pin-source=file:/etc/keyline/pin");
  ASSERT_TRUE(uri) << uri.error().message();
  EXPECT_EQ(uri->token(), "My Token");
  EXPECT_EQ(uri->object(), "keyline-intermediate");
  EXPECT_EQ(uri->id(), std::string("\x01\x02"));
  EXPECT_EQ(uri->serial(), "abc");
  EXPECT_EQ(uri->slot_id(), 7u);
  EXPECT_EQ(uri->module_path(), "/opt/hsm/lib.so");
  EXPECT_EQ(uri->pin_source(), "file:/etc/keyline/pin");
  auto again = Pkcs11Uri::parse(uri->to_string());
  ASSERT_TRUE(again) << uri->to_string();
  EXPECT_EQ(again->to_string(), uri->to_string());
  EXPECT_NE(uri->to_string().find("token=My%20Token"), std::string::npos);
}

TEST(Pkcs11Uri, DefaultsToSoftHsmAndRefusesSecretsAndTypos) {
  auto plain = Pkcs11Uri::parse("pkcs11:token=LINE1");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->module_path(), kDefaultPkcs11Module);
  EXPECT_EQ(plain->to_string(), "pkcs11:token=LINE1?module-path=/usr/lib/softhsm/libsofthsm2.so");

  auto secret = Pkcs11Uri::parse("pkcs11:token=LINE1?pin-value=s3cr3t-1234");
  ASSERT_FALSE(secret);
  EXPECT_EQ(secret.error().domain(), Domain::usage);
  EXPECT_NE(secret.error().message().find("pin-source=file:"), std::string::npos);
  EXPECT_EQ(secret.error().message().find("s3cr3t-1234"), std::string::npos);
  EXPECT_FALSE(open("pkcs11:token=LINE1?pin-value=1234"));
  auto in_path = Pkcs11Uri::parse("pkcs11:token=LINE1;pin-value=s3cr3t-1234");
  ASSERT_FALSE(in_path);
  EXPECT_NE(in_path.error().message().find("refuses secrets"), std::string::npos);
  EXPECT_EQ(in_path.error().message().find("s3cr3t-1234"), std::string::npos);

  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:tokn=LINE1"));
  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:token=LINE1?modul-path=/x.so"));
  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:token=LINE1?module-path=relative.so"));
  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:token=A%2"));
  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:object=k"));  // names no token
  EXPECT_FALSE(Pkcs11Uri::parse("pkcs11:token=A;slot-id=x"));
  EXPECT_TRUE(Pkcs11Uri::parse("pkcs11:token=A;x-vendor=1?x-other=2"));
}

TEST(Pkcs11Credentials, SecretComesFromFileThenEnvironment) {
  testkit::TempDir dir;
  write_secret_file(dir / "pin", "12 34\r\nsecond line\n");
  auto from_file = resolve_secret("file:" + (dir / "pin").string(), "KEYLINE_TEST_UNSET_VARIABLE", "PIN: ");
  ASSERT_TRUE(from_file) << from_file.error().message();
  EXPECT_EQ(from_file->reveal(), "12 34");
  auto absolute = resolve_secret((dir / "pin").string(), "", "PIN: ");
  ASSERT_TRUE(absolute);
  EXPECT_EQ(absolute->reveal(), "12 34");

  ::setenv("KEYLINE_TEST_SECRET", "from-env", 1);
  auto from_env = resolve_secret("", "KEYLINE_TEST_SECRET", "PIN: ");
  ::unsetenv("KEYLINE_TEST_SECRET");
  ASSERT_TRUE(from_env);
  EXPECT_EQ(from_env->reveal(), "from-env");

  write_secret_file(dir / "empty", "\n");
  EXPECT_FALSE(resolve_secret("file:" + (dir / "empty").string(), "", ""));
  auto missing = resolve_secret("file:" + (dir / "absent").string(), "", "");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("absent"), std::string::npos);
  auto scheme = resolve_secret("env:FOO", "", "");
  ASSERT_FALSE(scheme);
  EXPECT_EQ(scheme.error().domain(), Domain::usage);
}

// Points stdin at /dev/null for its lifetime, so a check that needs "no
// terminal" holds however the tests are started (from a shell or from CI).
class StdinFromDevNull {
 public:
  StdinFromDevNull() {
    saved_ = ::dup(STDIN_FILENO);  // -1 when stdin was closed
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_GE(null, 0) << "cannot open /dev/null";
    if (null >= 0 && null != STDIN_FILENO) {
      EXPECT_EQ(::dup2(null, STDIN_FILENO), STDIN_FILENO);
      ::close(null);
    }
  }
  ~StdinFromDevNull() {
    if (saved_ >= 0) {
      ::dup2(saved_, STDIN_FILENO);
      ::close(saved_);
    } else {
      ::close(STDIN_FILENO);
    }
  }
  StdinFromDevNull(const StdinFromDevNull&) = delete;
  StdinFromDevNull& operator=(const StdinFromDevNull&) = delete;

 private:
  int saved_ = -1;
};

TEST(Pkcs11Credentials, WithoutASourceOrTerminalTheErrorSaysWhatToDo) {
  StdinFromDevNull no_terminal;
  ASSERT_FALSE(::isatty(STDIN_FILENO));
  auto none = resolve_secret("", "KEYLINE_TEST_UNSET_VARIABLE", "PIN: ");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().domain(), Domain::keystore);
  EXPECT_NE(none.error().message().find("pin-source=file:"), std::string::npos);
  EXPECT_NE(none.error().message().find("KEYLINE_TEST_UNSET_VARIABLE"), std::string::npos);
}

}  // namespace
}  // namespace keyline::hsm
