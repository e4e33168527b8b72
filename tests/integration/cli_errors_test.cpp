// keyline CLI integration tests: the bad-input table, secrets, usage.
#include "cli_support.hpp"

namespace {

using namespace keyline::cli_test;
namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using keyline::Bytes;
using keyline::EvpPkeyPtr;
using keyline::X509Ptr;
using nlohmann::json;

// ================================================================ 10. the bad-input table

// One initialised state dir with one issued certificate, "dup-0001"; inputs
// for the bad command go in `work`.
struct BadEnv {
  fs::path root;       // the TempDir: snapshotted as a whole
  fs::path state;      // initialised
  fs::path work;       // input files
  fs::path run_state;  // what --state points at (default: state)
  std::string dup_serial;
  std::vector<std::string> prefix;       // argv before the keyline binary (privilege drop)
  std::vector<std::string> also_expect;  // further stderr substrings: the "where" of the message
  std::string setup_error;               // the environment could not be prepared: the case fails with this

  std::string input(const std::string& name, const std::string& content) {
    tk::write_file(work / name, content);
    return (work / name).string();
  }
  // A valid P-256 CSR for `cn`; its path is expected in the message when `named`.
  std::string csr(const std::string& name, const std::string& cn, bool named = true) {
    std::string path = write_csr(work / name, cn).string();
    if (named) also_expect.push_back(path);
    return path;
  }
  std::string named_input(const std::string& name, const std::string& content) {
    std::string path = input(name, content);
    also_expect.push_back(path);
    return path;
  }
};

struct BadCase {
  using Prepare = std::function<std::vector<std::string>(BadEnv&)>;
  using After = std::function<void(const BadEnv&)>;
  BadCase(std::string n, int code, std::vector<std::string> m, Prepare p, After a = {})
      : name(std::move(n)),
        exit_code(code),
        messages(std::move(m)),
        prepare(std::move(p)),
        after(std::move(a)) {}

  std::string name;
  int exit_code;
  std::vector<std::string> messages;  // each must appear in stderr
  Prepare prepare;                    // writes the inputs; returns the args after --state
  After after;                        // optional extra checks
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

std::vector<std::string> issue_args(const std::string& csr, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"ca", "issue", "--csr", csr};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Makes the state dir read-only: for this user with chmod, for root by also
// dropping to an unprivileged uid (root ignores permission bits).
void make_state_read_only(BadEnv& e) {
  fs::path ledger = e.state / "ledger.db";
  if (::geteuid() == 0) {
    tk::RunResult probe = tk::run({"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                                   "--regid=" + std::to_string(kNobody), "--clear-groups", "--",
                                   tk::bin("keyline").string(), "--version"});
    if (probe.exit_code != 0) {
      e.setup_error = "running as root, which ignores permission bits, and cannot drop to uid " +
                      std::to_string(kNobody) + " with setpriv to run keyline: " + describe(probe);
      return;
    }
    for (auto& p : fs::recursive_directory_iterator(e.root)) ::lchown(p.path().c_str(), kNobody, kNobody);
    ::lchown(e.root.c_str(), kNobody, kNobody);
    e.prefix = {"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                "--regid=" + std::to_string(kNobody), "--clear-groups", "--"};
  }
  fs::permissions(ledger, fs::perms::owner_read);
  fs::permissions(e.state, fs::perms::owner_read | fs::perms::owner_exec);
  if (::geteuid() != 0 && ::access(ledger.c_str(), W_OK) == 0)
    e.setup_error =
        "this user can write a 0400 file (CAP_DAC_OVERRIDE?); cannot make the state dir read-only";
}

// One row per case reads better than one argument per line.
// clang-format off
std::vector<BadCase> bad_cases() {
  return {
      {"GarbageText", 3, {"neither a PEM nor a DER"},
       [](BadEnv& e) { return issue_args(e.named_input("garbage.csr", "this is not a CSR, just text\n")); }},
      {"DerWherePemExpected", 3, {"DER", "openssl req -inform DER"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         Bytes der = tk::csr_der(key.get(), "dev-0002");
         return issue_args(e.named_input("device.der", std::string(der.begin(), der.end())));
       }},
      {"BrokenSignature", 3, {"signature does not verify"},
       [](BadEnv& e) {
         return issue_args(e.named_input("broken.csr", csr_with_broken_signature("dev-0002")));
       }},
      {"UnsupportedCurve", 4, {"secp256k1", "not supported"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("secp256k1");
         return issue_args(e.named_input("k1.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"Rsa1024", 4, {"1024 bits"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::rsa_key(1024);
         return issue_args(e.named_input("rsa1024.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"Ed25519Key", 4, {"ED25519", "not supported"},
       [](BadEnv& e) {
         EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
         return issue_args(e.named_input("ed.csr", tk::csr_pem(key.get(), "dev-0002")));
       }},
      {"CnDoesNotMatchRegistrationId", 4, {"does not match", "'dev-0002'", "'other-0002'"},
       [](BadEnv& e) {
         return issue_args(e.csr("mismatch.csr", "dev-0002"), {"--registration-id", "other-0002"});
       }},
      {"InvalidRegistrationIdOption", 3, {"--registration-id", "'!' at position 4"},
       [](BadEnv& e) {
         return issue_args(e.csr("x.csr", "dev-0002", false), {"--registration-id", "dev!2"});
       }},
      {"CnWithSlash", 3, {"'/' at position 4"},
       [](BadEnv& e) { return issue_args(e.csr("slash.csr", "dev/1")); }},
      {"CnEndsWithDot", 3, {"ends with '.'"},
       [](BadEnv& e) { return issue_args(e.csr("dot.csr", "dev-1.")); }},
      {"Cn65Characters", 3, {"65 characters"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         return issue_args(e.named_input("long.csr", csr_with_long_cn(key.get(), std::string(65, 'a'))));
       }},
      {"OversizeCsrFile", 3, {"16384"},  // a valid CSR followed by ~20 KB of comment lines
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         std::string pem = tk::csr_pem(key.get(), "dev-0002");
         for (int i = 0; i < 350; ++i) pem += "# padding padding padding padding padding padding padding\n";
         return issue_args(e.named_input("big.csr", pem));
       }},
      {"EmptyCsrFile", 3, {"empty"}, [](BadEnv& e) { return issue_args(e.named_input("empty.csr", "")); }},
      {"MissingCsrFile", 3, {"cannot read", "No such file"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.work / "nope.csr").string());
         return issue_args((e.work / "nope.csr").string());
       }},
      {"PrivateKeyAsCsr", 3, {"private key"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         return issue_args(e.named_input("device.key", private_key_pem(key.get())));
       }},
      {"CertificateAsCsr", 3, {"not a certificate signing request"},
       [](BadEnv& e) {
         return issue_args(e.named_input("cert.pem", tk::read_file(e.state / "intermediate.pem")));
       }},
      {"CaTrueExtensionRequested", 4, {"basicConstraints", "does not allow"},
       [](BadEnv& e) {
         EvpPkeyPtr key = tk::ec_key("P-256");
         std::string csr = tk::csr_pem(key.get(), "dev-0002", {"basicConstraints=critical,CA:TRUE"});
         return issue_args(e.named_input("ca.csr", csr));
       }},
      {"DuplicateRegistrationId", 4, {"already has an active certificate", "--reissue"},
       [](BadEnv& e) {
         e.also_expect.push_back(e.dup_serial);
         return issue_args(e.csr("dup.csr", "dup-0001", false));
       }},
      {"UnknownProfile", 2, {"no profile 'nope'", "device", "idevid"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.state / "keyline.toml").string());
         return issue_args(e.csr("p.csr", "dev-0002", false), {"--profile", "nope"});
       }},
      {"MisspelledProfileKeyInConfig", 3, {"unknown key 'validty_days'", "[profiles.typo]"},
       [](BadEnv& e) {
         add_profile(e.state, "[profiles.typo]\nvalidty_days = 30\n");
         e.also_expect.push_back((e.state / "keyline.toml").string());
         return issue_args(e.csr("p.csr", "dev-0002", false));
       }},
      {"ProvisionRtsctsNotABoolean", 3, {"rtscts must be true or false", "[provision]"},
       [](BadEnv& e) {
         add_profile(e.state, "[provision]\nrtscts = \"yes\"\n");
         e.also_expect.push_back((e.state / "keyline.toml").string());
         return issue_args(e.csr("r.csr", "dev-0002", false));
       }},
      {"RevokeUnknownSerial", 3, {"no certificate with serial 123456789ABCDEF0123456789ABCDEF"},
       [](BadEnv&) {
         return std::vector<std::string>{"ca", "revoke", "--serial", "0123456789ABCDEF0123456789ABCDEF"};
       }},
      {"RevokeNonHexSerial", 3, {"'xyz-1' is not a hexadecimal serial number"},
       [](BadEnv&) { return std::vector<std::string>{"ca", "revoke", "--serial", "xyz-1"}; }},
      {"RevokeBadReason", 2, {"unknown revocation reason 'bogus'"},
       [](BadEnv& e) {
         return std::vector<std::string>{"ca", "revoke", "--serial", e.dup_serial, "--reason", "bogus"};
       }},
      {"CrlDaysOutOfRange", 2, {"--days"},
       [](BadEnv& e) {
         return std::vector<std::string>{"ca", "crl", "--days", "0", "--out", (e.work / "crl.pem").string()};
       }},
      {"LedgerBadStatus", 2, {"--status must be active, revoked or superseded"},
       [](BadEnv&) { return std::vector<std::string>{"ledger", "certificates", "--status", "expired"}; }},
      {"DeviceSerialNotAPrintableString", 3, {"'SN_1'", "position 3"},
       [](BadEnv& e) {
         return issue_args(e.csr("i.csr", "board-0002", false),
                           {"--profile", "idevid", "--device-serial", "SN_1"});
       }},
      // The certificate must not be recorded when it cannot be delivered.
      {"OutIsADirectory", 5, {"it is a directory"},
       [](BadEnv& e) {
         fs::create_directory(e.work / "outdir");
         e.also_expect.push_back((e.work / "outdir").string());
         return issue_args(e.csr("o.csr", "dev-0002", false), {"--out", (e.work / "outdir").string()});
       },
       [](const BadEnv& e) {
         json list = kl_json(e.state, {"ledger", "certificates"});
         std::string ids;
         for (auto& c : list["certificates"]) ids += " " + c["registration_id"].get<std::string>();
         EXPECT_EQ(list["certificates"].size(), 1u) << "ledger records a certificate nobody received:" << ids;
       }},
      {"OutDirectoryMissing", 5, {"No such file or directory"},
       [](BadEnv& e) {
         e.also_expect.push_back((e.work / "missing" / "leaf.pem").string());
         return issue_args(e.csr("o.csr", "dev-0002", false),
                           {"--out", (e.work / "missing" / "leaf.pem").string()});
       }},
      // A CRL number must not be used up by a CRL that was never written.
      {"CrlOutIsADirectory", 5, {"it is a directory"},
       [](BadEnv& e) {
         fs::create_directory(e.work / "outdir");
         e.also_expect.push_back((e.work / "outdir").string());
         return std::vector<std::string>{"ca", "crl", "--out", (e.work / "outdir").string()};
       },
       [](const BadEnv& e) {
         kl_ok(e.state, {"ca", "crl", "--out", (e.work / "crl.pem").string()});
         EXPECT_EQ(crl_number(e.work / "crl.pem"), 1u) << "the first CRL written must be number 1";
       }},
      {"MissingCaKey", 6, {"key 'keyline-intermediate' not found"},
       [](BadEnv& e) {
         fs::remove(e.state / "keys" / "keyline-intermediate.key.pem");
         return issue_args(e.csr("k.csr", "dev-0002", false));
       }},
      {"IntermediateCertificateForAnotherKey", 6, {"does not belong to the issuer certificate"},
       [](BadEnv& e) {
         tk::write_file(e.state / "intermediate.pem", tk::read_file(e.state / "root.pem"));
         return issue_args(e.csr("k.csr", "dev-0002", false));
       }},
      {"InitWithBadRootSubject", 3, {"'Keyline Root' is not of the form ATTR=value"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-subject", "Keyline Root"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")); }},
      {"InitWithZeroRootDays", 2, {"--root-days must be 1 to 36500"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-days", "0"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")); }},
      // The same usage error with the key store outside the state dir: no CA
      // key may be left in it, or the retry fails with "key already exists".
      {"InitWithZeroRootDaysExternalKeyStore", 2, {"--root-days must be 1 to 36500"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--root-days", "0", "--key-store",
                                         "file:" + (e.root / "hsm").string()};
       },
       [](const BadEnv& e) {
         EXPECT_FALSE(fs::exists(e.root / "fresh"));
         EXPECT_FALSE(fs::exists(e.root / "hsm" / "keyline-root.key.pem")) << "CA key left behind";
       }},
      {"UninitialisedStateDir", 5, {"keyline ca init"},
       [](BadEnv& e) {
         e.run_state = e.root / "empty";
         fs::create_directory(e.run_state);
         e.also_expect.push_back(e.run_state.string());
         return issue_args(e.csr("u.csr", "dev-0002", false));
       }},
      {"ReadOnlyStateDir", 5, {"writable"},
       [](BadEnv& e) {
         std::string csr = e.csr("ro.csr", "dev-0002", false);
         make_state_read_only(e);
         e.also_expect.push_back((e.state / "ledger.db").string());
         return issue_args(csr);
       }},
      {"CorruptLedger", 5, {"corrupt"},
       [](BadEnv& e) {
         fs::remove(e.state / "ledger.db-wal");
         fs::remove(e.state / "ledger.db-shm");
         std::mt19937 gen(20240611);
         std::string noise(4096, '\0');
         for (auto& c : noise) c = static_cast<char>(gen() & 0xff);
         tk::write_file(e.state / "ledger.db", noise);
         e.also_expect.push_back((e.state / "ledger.db").string());
         return issue_args(e.csr("c.csr", "dev-0002", false));
       }},
      {"UnsupportedKeyStoreScheme", 2, {"'foo'", "not supported"},
       [](BadEnv& e) {
         e.run_state = e.root / "fresh";
         return std::vector<std::string>{"ca", "init", "--key-store", "foo:bar"};
       },
       [](const BadEnv& e) { EXPECT_FALSE(fs::exists(e.root / "fresh")) << "the new state dir was left"; }},
  };
}
// clang-format on

class BadInput : public testing::TestWithParam<BadCase> {};

TEST_P(BadInput, FailsWithExactExitCodeAndMessageAndWritesNothing) {
  const BadCase& c = GetParam();
  tk::TempDir tmp;
  BadEnv e;
  e.root = tmp.path();
  e.state = init_ca(tmp);
  e.work = tmp / "in";
  e.run_state = e.state;
  fs::create_directory(e.work);
  e.dup_serial =
      issue(e.state, write_csr(e.work / "dup-0001.csr", "dup-0001"), e.work / "dup-0001.pem")["serial"]
          .get<std::string>();

  std::vector<std::string> args = c.prepare(e);
  // Never skipped: a case whose setup is impossible here fails and says why.
  ASSERT_TRUE(e.setup_error.empty()) << e.setup_error;
  DirState before = capture(e.root);
  std::string audit_before = audit_types(e.state);

  std::vector<std::string> argv = e.prefix;
  argv.insert(argv.end(), {tk::bin("keyline").string(), "--state", e.run_state.string()});
  argv.insert(argv.end(), args.begin(), args.end());
  tk::RunResult r = tk::run(argv, kQuiet);

  EXPECT_EQ(r.exit_code, c.exit_code) << join(args) << "\n" << describe(r);
  EXPECT_TRUE(r.err.starts_with("keyline: error: ")) << r.err;
  for (auto& m : c.messages) EXPECT_TRUE(contains(r.err, m)) << "expected '" << m << "' in: " << r.err;
  for (auto& m : e.also_expect) EXPECT_TRUE(contains(r.err, m)) << "expected '" << m << "' in: " << r.err;
  EXPECT_EQ(r.out, "") << "a refused command prints nothing on stdout";
  // A refused request leaves one trace: its "request.rejected" audit record.
  std::string changes = changes_since(before, e.root);
  std::string audit_after = audit_types(e.state);
  if (audit_after != audit_before) {
    EXPECT_EQ(audit_after, audit_before + "request.rejected\n") << "only the refusal may be recorded";
    EXPECT_EQ(changes, "changed state/ledger.db\n") << "nothing but the audit record may change";
  } else {
    EXPECT_EQ(changes, "") << "a refused command must not create, change or remove anything";
  }
  if (c.after) c.after(e);
}

INSTANTIATE_TEST_SUITE_P(Table, BadInput, testing::ValuesIn(bad_cases()),
                         [](const testing::TestParamInfo<BadCase>& info) { return info.param.name; });

// ================================================================ 11. secrets

// What must never leave the key store: the key file's base64 body, its DER,
// and the private scalar (raw, hex, and base64 at each of the three byte
// alignments it can have inside a larger base64 text). Parts of the file that
// only hold the public key are public and legitimately appear in certificates.
struct KeyNeedles {
  std::string label;
  std::vector<std::string> needles;
};

std::vector<KeyNeedles> key_needles(const fs::path& keys_dir) {
  std::vector<KeyNeedles> out;
  for (auto& entry : fs::directory_iterator(keys_dir)) {
    if (!entry.path().string().ends_with(".key.pem")) continue;
    std::string pem = tk::read_file(entry.path());
    KeyNeedles k{entry.path().filename().string(), {}};
    std::string body = pem_body(pem);
    k.needles.push_back(body);
    auto der = keyline::base64_decode(body);
    if (!der) throw std::runtime_error("key file is not PEM: " + entry.path().string());
    k.needles.emplace_back(der->begin(), der->end());
    keyline::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) throw std::runtime_error("unreadable key " + entry.path().string());
    BIGNUM* priv = nullptr;
    if (!EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &priv))
      EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_D, &priv);
    if (!priv) throw std::runtime_error("no private scalar in " + entry.path().string());
    Bytes raw(static_cast<std::size_t>(BN_num_bytes(priv)));
    BN_bn2bin(priv, raw.data());
    BN_clear_free(priv);
    k.needles.emplace_back(raw.begin(), raw.end());
    std::string hex = keyline::to_hex(raw);
    k.needles.push_back(hex);
    for (auto& ch : hex) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    k.needles.push_back(hex);
    for (std::size_t shift = 0; shift < 3; ++shift) {
      std::size_t n = (raw.size() - shift) / 3 * 3;
      k.needles.push_back(keyline::base64_encode(Bytes(raw.begin() + shift, raw.begin() + shift + n)));
    }
    out.push_back(std::move(k));
  }
  return out;
}

// `text` as is, and with line breaks removed (PEM wraps base64 at 64 columns).
bool leaks(const std::string& text, const std::string& needle) {
  if (contains(text, needle)) return true;
  std::string joined;
  for (char c : text)
    if (c != '\n' && c != '\r') joined.push_back(c);
  return contains(joined, needle);
}

TEST(Secrets, PrivateKeyBytesNeverReachOutputLogsOrLedger) {
  tk::TempDir tmp;
  fs::path state = tmp / "state";
  std::vector<std::pair<std::string, tk::RunResult>> runs;
  auto trace = [&](std::vector<std::string> args) {
    std::vector<std::string> full{"--log-level", "trace"};
    full.insert(full.end(), args.begin(), args.end());
    runs.emplace_back(join(args), tk::keyline(state, full));
    return runs.back().second;
  };
  ASSERT_EQ(trace({"ca", "init"}).exit_code, 0) << describe(runs.back().second);
  EXPECT_FALSE(runs.back().second.err.empty())
      << "trace logging should say something (the key store warning)";
  fs::path csr = write_csr(tmp / "a.csr", "dev-secret");
  json doc = json::parse(
      trace({"--json", "ca", "issue", "--csr", csr.string(), "--out", (tmp / "a.pem").string()}).out);
  trace({"ca", "issue", "--csr", write_csr(tmp / "b.csr", "dev-secret-b").string()});
  trace({"ca", "issue", "--csr", csr.string()});  // refused: duplicate
  trace({"ca", "issue", "--csr", csr.string(), "--reissue", "--chain"});
  trace({"ca", "show"});
  trace({"--json", "ca", "show"});
  trace({"ca", "revoke", "--serial", doc["serial"].get<std::string>(), "--reason", "keyCompromise"});
  trace({"ca", "crl"});
  trace({"ca", "verification-cert", "--code", "ABC123"});
  trace({"ledger", "certificates"});
  trace({"--json", "ledger", "certificates"});
  trace({"ca", "init"});  // refused: already initialised

  auto keys = key_needles(state / "keys");
  ASSERT_EQ(keys.size(), 3u) << "root, intermediate and audit key";
  // The needles do find a key where it is: in its own file.
  for (auto& key : keys) {
    std::string own = tk::read_file(state / "keys" / key.label);
    int found = 0;
    for (auto& needle : key.needles) found += leaks(own, needle) ? 1 : 0;
    EXPECT_GE(found, 2) << "body and one base64 alignment of the scalar must match " << key.label;
  }
  for (auto& key : keys) {
    for (auto& needle : key.needles) {
      for (auto& [what, r] : runs) {
        EXPECT_FALSE(leaks(r.out, needle)) << key.label << " leaked on stdout of: " << what;
        EXPECT_FALSE(leaks(r.err, needle)) << key.label << " leaked on stderr of: " << what;
      }
      for (auto& entry : fs::directory_iterator(state)) {
        if (!entry.is_regular_file()) continue;
        EXPECT_FALSE(leaks(tk::read_file(entry.path()), needle))
            << key.label << " found in " << entry.path().filename();
      }
    }
  }
}

// ================================================================ 12. usage

TEST(Usage, HelpListsTheSubcommands) {
  tk::RunResult top = tk::run({tk::bin("keyline").string(), "--help"});
  EXPECT_EQ(top.exit_code, 0) << describe(top);
  for (const char* s : {"ca", "ledger", "--state", "--json", "Exit codes"})
    EXPECT_TRUE(contains(top.out, s)) << s << " missing from:\n" << top.out;

  tk::RunResult ca = tk::run({tk::bin("keyline").string(), "ca", "--help"});
  EXPECT_EQ(ca.exit_code, 0) << describe(ca);
  for (const char* s : {"init", "request", "show", "issue", "revoke", "crl", "verification-cert"})
    EXPECT_TRUE(contains(ca.out, s)) << s << " missing from:\n" << ca.out;
}

TEST(Usage, MissingRequiredOptionOrSubcommandIsExitTwo) {
  tk::TempDir tmp;
  tk::RunResult no_csr = kl(tmp.path(), {"ca", "issue"});
  EXPECT_EQ(no_csr.exit_code, 2) << describe(no_csr);
  EXPECT_TRUE(contains(no_csr.err, "--csr")) << no_csr.err;

  tk::RunResult nothing = tk::run({tk::bin("keyline").string()});
  EXPECT_EQ(nothing.exit_code, 2) << describe(nothing);

  tk::RunResult bad_algorithm = kl(tmp / "state", {"ca", "init", "--algorithm", "dsa-1024"});
  EXPECT_EQ(bad_algorithm.exit_code, 2) << describe(bad_algorithm);
  EXPECT_FALSE(fs::exists(tmp / "state"));
  EXPECT_TRUE(tree(tmp.path()).empty()) << "usage errors write nothing";
}

}  // namespace

