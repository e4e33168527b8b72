#pragma once
// Where the secrets that unlock a key store come from (DESIGN.md "hsm/"):
// a PKCS#11 user PIN, a TPM key's authorization value. Never argv, never a
// URI: a file, the environment, or the operator at a terminal.

#include <string_view>

#include "keyline/core/error.hpp"
#include "keyline/core/secret.hpp"

namespace keyline::hsm {

// Resolves one secret, first match wins:
//   1. `source` when not empty: "file:PATH", "file:///PATH" or an absolute
//      path. The first line of the file, without its trailing "\n" / "\r\n".
//      A file readable by group or others is used, with a warning in the log
//      (module "hsm"); a missing, unreadable or empty file is an error.
//      Other schemes are refused (Domain::usage).
//   2. The environment variable `env_name` when set and not empty.
//   3. A prompt showing `prompt_text` on /dev/tty, echo off, when standard
//      input is a terminal. An empty answer is an error.
// Otherwise a Domain::keystore error saying how to provide the secret.
// The secret itself never appears in a message or a log line.
Result<SecretString> resolve_secret(std::string_view source, std::string_view env_name,
                                    std::string_view prompt_text);

}  // namespace keyline::hsm
