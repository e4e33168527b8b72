#include "keyline/ca/profile.hpp"

#include <toml++/toml.h>

namespace keyline::ca {

namespace {

Error bad(std::string_view source, const std::string& profile, std::string_view key,
          std::string_view expected) {
  return Error(Domain::input, std::string(source) + ": [profiles." + profile + "] " +
                                  std::string(key) + " must be " + std::string(expected));
}

Result<Profile> parse_one(const std::string& name, const toml::table& t, std::string_view source) {
  static const char* kKnown[] = {"validity_days", "validity", "key_algorithms", "min_rsa_bits",
                                 "subject", "uri_san", "key_agreement", "backdate_minutes",
                                 "allowed_request_extensions", "serial_number_attribute",
                                 "hardware_module_oid"};
  for (auto&& [k, v] : t) {
    bool known = false;
    for (auto* kk : kKnown) known |= (k.str() == kk);
    if (!known)
      return fail(Domain::input, std::string(source) + ": [profiles." + name + "] has unknown key '" +
                                     std::string(k.str()) + "' (check the spelling; see README 'Profiles')");
  }
  Profile p;
  p.name = name;
  if (auto v = t["validity"]) {
    auto s = v.value<std::string>();
    if (!s || *s != "forever") return std::unexpected(bad(source, name, "validity", "\"forever\" (or use validity_days = N)"));
    p.validity_days.reset();
  }
  if (auto v = t["validity_days"]) {
    auto d = v.value<int64_t>();
    if (!d || *d < 1 || *d > 36500) return std::unexpected(bad(source, name, "validity_days", "a whole number of days from 1 to 36500"));
    p.validity_days = static_cast<int>(*d);
  }
  if (auto v = t["key_algorithms"]) {
    auto* arr = v.as_array();
    if (!arr) return std::unexpected(bad(source, name, "key_algorithms", "a list such as [\"ec-p256\", \"rsa\"]"));
    p.allow_ec_p256 = p.allow_ec_p384 = p.allow_rsa = false;
    for (auto&& e : *arr) {
      auto s = e.value<std::string>();
      if (s && *s == "ec-p256") p.allow_ec_p256 = true;
      else if (s && *s == "ec-p384") p.allow_ec_p384 = true;
      else if (s && *s == "rsa") p.allow_rsa = true;
      else return std::unexpected(bad(source, name, "key_algorithms", "a list of \"ec-p256\", \"ec-p384\", \"rsa\""));
    }
  }
  if (auto v = t["min_rsa_bits"]) {
    auto b = v.value<int64_t>();
    if (!b || *b < 2048 || *b > 16384) return std::unexpected(bad(source, name, "min_rsa_bits", "a number from 2048 to 16384"));
    p.min_rsa_bits = static_cast<int>(*b);
  }
  if (auto v = t["subject"]) {
    auto* st = v.as_table();
    if (!st) return std::unexpected(bad(source, name, "subject", "a table such as { O = \"Example\", C = \"DE\" }"));
    for (auto&& [k, sv] : *st) {
      auto s = sv.value<std::string>();
      if (!s) return std::unexpected(bad(source, name, "subject." + std::string(k.str()), "a string"));
      if (k.str() == "O") p.subject_o = *s;
      else if (k.str() == "OU") p.subject_ou = *s;
      else if (k.str() == "C") {
        if (s->size() != 2) return std::unexpected(bad(source, name, "subject.C", "a two-letter country code"));
        p.subject_c = *s;
      } else return std::unexpected(bad(source, name, "subject", "a table with only O, OU and C"));
    }
  }
  if (auto v = t["uri_san"]) {
    auto s = v.value<std::string>();
    if (!s || s->find("{registration_id}") == std::string::npos)
      return std::unexpected(bad(source, name, "uri_san", "a URI template containing {registration_id}"));
    p.uri_san_template = *s;
  }
  if (auto v = t["key_agreement"]) {
    auto b = v.value<bool>();
    if (!b) return std::unexpected(bad(source, name, "key_agreement", "true or false"));
    p.key_agreement = *b;
  }
  if (auto v = t["backdate_minutes"]) {
    auto m = v.value<int64_t>();
    if (!m || *m < 0 || *m > 1440) return std::unexpected(bad(source, name, "backdate_minutes", "a number from 0 to 1440"));
    p.backdate = std::chrono::minutes(*m);
  }
  if (auto v = t["allowed_request_extensions"]) {
    auto* arr = v.as_array();
    if (!arr) return std::unexpected(bad(source, name, "allowed_request_extensions", "a list of extension names"));
    for (auto&& e : *arr) {
      auto s = e.value<std::string>();
      if (!s) return std::unexpected(bad(source, name, "allowed_request_extensions", "a list of extension names"));
      p.allowed_request_extensions.push_back(*s);
    }
  }
  if (auto v = t["serial_number_attribute"]) {
    auto b = v.value<bool>();
    if (!b) return std::unexpected(bad(source, name, "serial_number_attribute", "true or false"));
    p.serial_number_attribute = *b;
  }
  if (auto v = t["hardware_module_oid"]) {
    auto s = v.value<std::string>();
    bool ok = s && !s->empty();
    if (ok)
      for (char c : *s) ok &= (c >= '0' && c <= '9') || c == '.';
    if (!ok) return std::unexpected(bad(source, name, "hardware_module_oid", "a dotted OID such as \"1.3.6.1.4.1.99999.1\""));
    p.hardware_module_oid = *s;
  }
  return p;
}

}  // namespace

Result<std::map<std::string, Profile>> parse_profiles(std::string_view toml_text,
                                                      std::string_view source) {
  toml::parse_result parsed = toml::parse(toml_text, source);
  if (!parsed) {
    const auto& err = parsed.error();
    return fail(Domain::input, std::string(source) + ":" + std::to_string(err.source().begin.line) +
                                   ": " + std::string(err.description()));
  }
  std::map<std::string, Profile> out;
  if (auto* profiles = parsed.table()["profiles"].as_table()) {
    for (auto&& [k, v] : *profiles) {
      auto* t = v.as_table();
      if (!t) return fail(Domain::input, std::string(source) + ": profiles." + std::string(k.str()) + " must be a table");
      KL_TRY(Profile p, parse_one(std::string(k.str()), *t, source));
      out.emplace(p.name, std::move(p));
    }
  }
  if (out.empty()) out.emplace("device", Profile{});
  return out;
}

}  // namespace keyline::ca
