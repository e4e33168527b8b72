#pragma once
// One error model for all of Keyline (STYLE.md §3).
//
// Expected failures are values: Result<T> = std::expected<T, Error>. An Error
// carries the layer it came from (Domain), the native code of that layer
// (CK_RV, TSS2_RC, sqlite result code, OpenSSL packed error, HTTP status...),
// and a message written for the operator: what happened, to what, what to do.
// Exceptions are reserved for bugs and broken invariants.

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace keyline {

enum class Domain : std::uint8_t {
  internal,  // a bug or broken invariant surfaced as a value
  usage,     // the command line itself is wrong
  input,     // a file or value given by the user is malformed
  policy,    // well-formed input refused by a rule (profile, CSR policy, ledger uniqueness)
  state,     // the state dir / ledger is missing, corrupt, read-only, locked
  keystore,  // key custody: file store, PKCS#11, TPM
  openssl,   // OpenSSL failure that is not the user's input
  sqlite,    // SQLite failure that is not a state problem
  io,        // file system
  integrity, // a record or signature that should verify does not (audit trail)
  device,    // a device or its link (serial, USB, device protocol); native codes in
             // keyline/link/link.hpp and keyline/provision/device_session.hpp
};

std::string_view to_string(Domain d) noexcept;

class Error {
 public:
  Error(Domain domain, std::string message, std::int64_t native_code = 0)
      : domain_(domain), native_code_(native_code), message_(std::move(message)) {}

  Domain domain() const noexcept { return domain_; }
  std::int64_t native_code() const noexcept { return native_code_; }
  const std::string& message() const noexcept { return message_; }

  // Returns a copy whose message is prefixed with `context: `.
  Error with_context(std::string_view context) const;

 private:
  Domain domain_;
  std::int64_t native_code_;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(Domain d, std::string message, std::int64_t code = 0) {
  return std::unexpected<Error>(Error(d, std::move(message), code));
}

// Documented process exit codes (README "Exit codes").
enum class ExitCode : int {
  ok = 0,
  internal = 1,
  usage = 2,
  bad_input = 3,
  refused = 4,
  state = 5,
  keystore = 6,
  partial = 7,      // batch finished with some items rejected
  interrupted = 8,  // stopped by a signal; re-run the same command to finish
  tampered = 9,     // audit verification failed: a record or signature does not verify
  device = 10,      // a device failed, refused, or was disconnected
};

ExitCode exit_code_for(const Error& e) noexcept;

}  // namespace keyline

// Propagate an error from an expression of type Result<T> / Status.
#define KL_TRY_CAT2(a, b) a##b
#define KL_TRY_CAT(a, b) KL_TRY_CAT2(a, b)
#define KL_TRY_IMPL(tmp, decl, expr)             \
  auto tmp = (expr);                             \
  if (!tmp) return std::unexpected(tmp.error()); \
  decl = std::move(*tmp)
#define KL_TRY(decl, expr) KL_TRY_IMPL(KL_TRY_CAT(kl_try_, __LINE__), decl, expr)
#define KL_CHECK(expr)                                   \
  do {                                                   \
    auto kl_chk_ = (expr);                               \
    if (!kl_chk_) return std::unexpected(kl_chk_.error()); \
  } while (0)
