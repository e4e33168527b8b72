#pragma once
// ca::RegistrationId -- a DPS registration ID, validated once at construction
// (../dps-api §5): 1..128 characters (1..64 when it is a certificate CN),
// ASCII letters and digits plus '-', '.', '_', ':'; the last character is a
// letter, a digit or '-'. DPS treats it case-insensitively; Keyline stores
// the lower-case form.

#include <compare>
#include <string>
#include <string_view>

#include "keyline/core/error.hpp"

namespace keyline::ca {

class RegistrationId {
 public:
  static constexpr std::size_t kMaxLength = 128;
  static constexpr std::size_t kMaxCnLength = 64;

  // Validates `text`; the error names the offending character and its 1-based position.
  static Result<RegistrationId> parse(std::string_view text, std::size_t max_length = kMaxLength);
  // The same, with the 64-character limit of an X.509 common name.
  static Result<RegistrationId> for_certificate(std::string_view text) {
    return parse(text, kMaxCnLength);
  }

  const std::string& str() const noexcept { return value_; }
  auto operator<=>(const RegistrationId&) const = default;

 private:
  explicit RegistrationId(std::string v) : value_(std::move(v)) {}
  std::string value_;
};

}  // namespace keyline::ca
