#include "keyline/core/error.hpp"

namespace keyline {

std::string_view to_string(Domain d) noexcept {
  switch (d) {
    case Domain::internal: return "internal";
    case Domain::usage: return "usage";
    case Domain::input: return "input";
    case Domain::policy: return "policy";
    case Domain::state: return "state";
    case Domain::keystore: return "keystore";
    case Domain::openssl: return "openssl";
    case Domain::sqlite: return "sqlite";
    case Domain::io: return "io";
    case Domain::integrity: return "integrity";
    case Domain::device: return "device";
  }
  return "unknown";
}

Error Error::with_context(std::string_view context) const {
  Error e = *this;
  e.message_ = std::string(context) + ": " + message_;
  return e;
}

ExitCode exit_code_for(const Error& e) noexcept {
  switch (e.domain()) {
    case Domain::usage: return ExitCode::usage;
    case Domain::input: return ExitCode::bad_input;
    case Domain::policy: return ExitCode::refused;
    case Domain::state:
    case Domain::sqlite:
    case Domain::io: return ExitCode::state;
    case Domain::keystore: return ExitCode::keystore;
    case Domain::integrity: return ExitCode::tampered;
    case Domain::device: return ExitCode::device;
    case Domain::internal:
    case Domain::openssl: return ExitCode::internal;
  }
  return ExitCode::internal;
}

}  // namespace keyline
