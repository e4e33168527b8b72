#include "keyline/station/dps/sas.hpp"

#include <cstdlib>
#include <fstream>

#include <openssl/hmac.h>

#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"

namespace keyline::station::dps {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

Result<Bytes> hmac(ByteView key, std::string_view msg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len))
    return std::unexpected(openssl_error(Domain::openssl, "HMAC-SHA256"));
  return Bytes(out, out + len);
}

}  // namespace

Result<ConnectionString> parse_connection_string(std::string_view text) {
  text = trim(text);
  if (text.empty()) return fail(Domain::input, "DPS connection string is empty");
  ConnectionString cs;
  bool have_host = false, have_name = false, have_key = false;
  while (!text.empty()) {
    auto semi = text.find(';');
    std::string_view part = trim(text.substr(0, semi));
    text = semi == std::string_view::npos ? std::string_view{} : text.substr(semi + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return fail(Domain::input, "DPS connection string: member '" +
                                     std::string(part.substr(0, std::min<std::size_t>(part.size(), 20))) +
                                     "…' is not NAME=VALUE (expected HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)");
    std::string_view name = part.substr(0, eq), value = part.substr(eq + 1);
    auto once = [&](bool& seen) -> Status {
      if (seen) return fail(Domain::input, "DPS connection string: " + std::string(name) + " appears twice");
      seen = true;
      if (value.empty()) return fail(Domain::input, "DPS connection string: " + std::string(name) + " is empty");
      return {};
    };
    if (name == "HostName") {
      KL_CHECK(once(have_host));
      cs.host_name = std::string(value);
    } else if (name == "SharedAccessKeyName") {
      KL_CHECK(once(have_name));
      cs.key_name = std::string(value);
    } else if (name == "SharedAccessKey") {
      KL_CHECK(once(have_key));
      auto key = base64_decode(value);
      if (!key || key->empty())
        return fail(Domain::input, "DPS connection string: SharedAccessKey is not base64 (copy it again from the DPS instance's shared access policy)");
      cs.key = SecretBytes(std::move(*key));
    } else {
      return fail(Domain::input, "DPS connection string: unknown member '" + std::string(name) +
                                     "' (known: HostName, SharedAccessKeyName, SharedAccessKey)");
    }
  }
  if (!have_host) return fail(Domain::input, "DPS connection string has no HostName");
  if (!have_name) return fail(Domain::input, "DPS connection string has no SharedAccessKeyName");
  if (!have_key) return fail(Domain::input, "DPS connection string has no SharedAccessKey");
  return cs;
}

Result<ConnectionString> load_connection_string(std::string_view source) {
  if (source.starts_with("file:")) {
    std::string path(source.substr(5));
    auto text = files::read(path, 1 << 16);
    if (!text) return std::unexpected(text.error().with_context("DPS connection string"));
    std::string_view first(*text);
    first = first.substr(0, first.find('\n'));
    auto cs = parse_connection_string(first);
    OPENSSL_cleanse(text->data(), text->size());
    if (!cs) return std::unexpected(cs.error().with_context(path));
    return cs;
  }
  if (source.starts_with("env:")) {
    std::string var(source.substr(4));
    const char* v = std::getenv(var.c_str());
    if (!v || !*v)
      return fail(Domain::input, "environment variable " + var + " (DPS connection string) is not set");
    auto cs = parse_connection_string(v);
    if (!cs) return std::unexpected(cs.error().with_context("$" + var));
    return cs;
  }
  return fail(Domain::usage, "DPS connection string source '" + std::string(source.substr(0, 8)) +
                                 "…' must be file:PATH or env:VAR (never the string itself)");
}

std::string url_encode(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

Result<std::string> url_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%') {
      if (i + 2 >= text.size()) return fail(Domain::input, "truncated %-escape");
      auto b = from_hex(text.substr(i + 1, 2));
      if (!b || b->size() != 1) return fail(Domain::input, "bad %-escape");
      out.push_back(static_cast<char>((*b)[0]));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

Result<std::string> sas_signature(ByteView key, std::string_view sr_as_sent, std::int64_t se) {
  std::string msg = std::string(sr_as_sent) + "\n" + std::to_string(se);
  KL_TRY(Bytes mac, hmac(key, msg));
  return base64_encode(mac);
}

Result<std::string> make_sas_token(std::string_view resource, ByteView key, std::int64_t expiry,
                                   std::string_view key_name) {
  std::string sr = url_encode(resource);
  KL_TRY(std::string sig, sas_signature(key, sr, expiry));
  std::string t = "SharedAccessSignature sr=" + sr + "&sig=" + url_encode(sig) + "&se=" + std::to_string(expiry);
  if (!key_name.empty()) t += "&skn=" + std::string(key_name);
  return t;
}

Result<std::string> SasToken::get() {
  std::int64_t now = clock_.now().time_since_epoch().count();
  if (token_.empty() || expiry_ - now < ttl_.count() / 4) {
    std::int64_t se = now + ttl_.count();
    KL_TRY(std::string t, make_sas_token(cs_.host_name, cs_.key.reveal(), se, cs_.key_name));
    token_ = SecretString(std::move(t));
    expiry_ = se;
  }
  return token_.reveal();
}

Result<ParsedSas> parse_sas_token(std::string_view header) {
  constexpr std::string_view kPrefix = "SharedAccessSignature ";
  if (!header.starts_with(kPrefix)) return fail(Domain::input, "Authorization is not a SharedAccessSignature");
  std::string_view rest = header.substr(kPrefix.size());
  ParsedSas p;
  bool have_se = false;
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    auto eq = part.find('=');
    if (eq == std::string_view::npos) return fail(Domain::input, "SAS member without '='");
    std::string_view n = part.substr(0, eq), v = part.substr(eq + 1);
    if (n == "sr") p.sr = std::string(v);
    else if (n == "sig") {
      KL_TRY(p.sig, url_decode(v));
    } else if (n == "skn") p.skn = std::string(v);
    else if (n == "se") {
      char* end = nullptr;
      std::string s(v);
      p.se = std::strtoll(s.c_str(), &end, 10);
      if (s.empty() || *end) return fail(Domain::input, "SAS se is not a number");
      have_se = true;
    }
  }
  if (p.sr.empty() || p.sig.empty() || !have_se) return fail(Domain::input, "SAS token lacks sr, sig or se");
  return p;
}

std::vector<std::string> sas_resource_spellings(std::string_view r) {
  std::string upper = url_encode(r), lower_hex = upper;
  for (std::size_t i = 0; i < lower_hex.size(); ++i)
    if (lower_hex[i] == '%' && i + 2 < lower_hex.size()) {
      lower_hex[i + 1] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower_hex[i + 1])));
      lower_hex[i + 2] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower_hex[i + 2])));
    }
  return {std::string(r), upper, lower_hex};
}

Result<std::string> derive_device_key(ByteView group_key, std::string_view registration_id) {
  KL_TRY(Bytes mac, hmac(group_key, registration_id));
  return base64_encode(mac);
}

Result<std::string> derive_device_key(std::string_view group_key_base64, std::string_view registration_id) {
  auto key = base64_decode(trim(group_key_base64));
  if (!key || key->empty())
    return fail(Domain::input, "the group key is not base64 (DPS shows it as the enrollment group's primary key)");
  SecretBytes k(std::move(*key));
  return derive_device_key(ByteView(k.reveal()), registration_id);
}

Result<std::string> derive_device_key(const hsm::SecretKey& group_key, std::string_view registration_id) {
  KL_TRY(Bytes mac, group_key.hmac_sha256(ByteView(reinterpret_cast<const unsigned char*>(registration_id.data()),
                                                     registration_id.size())));
  return base64_encode(mac);
}

}  // namespace keyline::station::dps
