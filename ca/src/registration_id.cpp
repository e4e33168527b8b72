#include "keyline/ca/registration_id.hpp"

namespace keyline::ca {

namespace {
bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
std::string shown(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  if (u < 0x20 || u >= 0x7f) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02X", u);
    return buf;
  }
  return std::string("'") + c + "'";
}
}  // namespace

Result<RegistrationId> RegistrationId::parse(std::string_view text, std::size_t max_length) {
  if (text.empty()) return fail(Domain::input, "registration ID is empty");
  if (text.size() > max_length)
    return fail(Domain::input, "registration ID '" + std::string(text.substr(0, 80)) +
                                   (text.size() > 80 ? "...'" : "'") + " is " +
                                   std::to_string(text.size()) + " characters long; the limit is " +
                                   std::to_string(max_length) +
                                   (max_length == kMaxCnLength ? " (it is a certificate common name)" : ""));
  std::string lower;
  lower.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (!is_alnum(c) && c != '-' && c != '.' && c != '_' && c != ':')
      return fail(Domain::input, "registration ID '" + std::string(text) + "' has " + shown(c) +
                                     " at position " + std::to_string(i + 1) +
                                     "; allowed are letters, digits, '-', '.', '_' and ':'");
    lower.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  char last = text.back();
  if (!is_alnum(last) && last != '-')
    return fail(Domain::input, "registration ID '" + std::string(text) + "' ends with " + shown(last) +
                                   " at position " + std::to_string(text.size()) +
                                   "; the last character must be a letter, a digit or '-'");
  return RegistrationId(std::move(lower));
}

}  // namespace keyline::ca
