#include "keyline/hsm/pkcs11_uri.hpp"

#include <charconv>
#include <vector>

namespace keyline::hsm {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  if (text.empty()) return out;
  std::size_t pos = 0;
  for (;;) {
    auto next = text.find(sep, pos);
    out.push_back(text.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return out;
}

// Characters left as they are in the canonical form (RFC 7512 §2.3 pk11-pchar
// and pk11-qchar, minus the separators of the other part).
constexpr std::string_view kPathKeep = "-._~:[]@!$'()*+,=&";
constexpr std::string_view kQueryKeep = "-._~:[]@!$'()*+,=/?|;";

// The value itself is never echoed back.
constexpr std::string_view kPinValueRefused =
    "PKCS#11 URI carries the PIN in 'pin-value'; Keyline refuses secrets in URIs (they end up in argv, "
    "shell history and logs). Put the PIN in a file readable only by the station user and write "
    "pin-source=file:/path/to/pin, or set KEYLINE_PKCS11_PIN";

}  // namespace

Result<std::string> percent_decode(std::string_view text, std::string_view what) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int hi = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
    int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      return fail(Domain::usage, std::string(what) + " has a '%' at position " + std::to_string(i + 1) +
                                     " that is not followed by two hex digits (write %25 for a literal '%')");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string percent_encode(std::string_view text, std::string_view keep) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 keep.find(c) != std::string_view::npos;
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

Result<Pkcs11Uri> Pkcs11Uri::parse(std::string_view text) {
  constexpr std::string_view kScheme = "pkcs11:";
  if (!text.starts_with(kScheme))
    return fail(Domain::usage,
                "a PKCS#11 URI starts with 'pkcs11:' (RFC 7512), for example "
                "pkcs11:token=LINE1?pin-source=file:/etc/keyline/pin");
  text.remove_prefix(kScheme.size());
  auto q = text.find('?');
  std::string_view path = text.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : text.substr(q + 1);

  Pkcs11Uri uri;
  auto attribute = [](std::string_view item, char part) -> Result<std::pair<std::string, std::string>> {
    auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return fail(Domain::usage, std::string("PKCS#11 URI ") + (part == ';' ? "path" : "query") +
                                     " attribute '" + std::string(item) + "' is not of the form name=value");
    std::string name(item.substr(0, eq));
    KL_TRY(std::string value, percent_decode(item.substr(eq + 1), "PKCS#11 URI attribute '" + name + "'"));
    return std::pair{std::move(name), std::move(value)};
  };

  for (std::string_view item : split(path, ';')) {
    if (item.empty()) continue;
    KL_TRY(auto kv, attribute(item, ';'));
    auto& [name, value] = kv;
    if (name == "token")
      uri.token_ = value;
    else if (name == "manufacturer")
      uri.manufacturer_ = value;
    else if (name == "model")
      uri.model_ = value;
    else if (name == "serial")
      uri.serial_ = value;
    else if (name == "object")
      uri.object_ = value;
    else if (name == "id")
      uri.id_ = value;
    else if (name == "slot-id") {
      unsigned long n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || value.empty())
        return fail(Domain::usage, "PKCS#11 URI slot-id '" + value + "' is not a decimal number");
      uri.slot_id_ = n;
    } else if (name == "x-session-copy") {  // before the other x- attributes, which are ignored
      if (value != "yes" && value != "no")
        return fail(Domain::usage, "PKCS#11 URI x-session-copy must be yes or no, not '" + value + "'");
      uri.session_copy_ = value == "yes";
    } else if (name == "type" || name == "slot-description" || name == "slot-manufacturer" ||
               name == "library-manufacturer" || name == "library-description" || name == "library-version" ||
               name.starts_with("x-")) {
      // Accepted, not used for matching.
    } else if (name == "pin-value") {
      return fail(Domain::usage, std::string(kPinValueRefused));
    } else if (name == "pin-source" || name == "module-path") {
      return fail(Domain::usage, "PKCS#11 URI attribute '" + name +
                                     "' belongs in the query part (after '?'), not in the path");
    } else {
      return fail(Domain::usage,
                  "unknown PKCS#11 URI path attribute '" + name +
                      "' (RFC 7512 §2.3: token, object, id, serial, model, manufacturer, slot-id, ...)");
    }
  }

  for (std::string_view item : split(query, '&')) {
    if (item.empty()) continue;
    KL_TRY(auto kv, attribute(item, '&'));
    auto& [name, value] = kv;
    if (name == "module-path") {
      if (value.empty() || value.front() != '/')
        return fail(Domain::usage, "PKCS#11 URI module-path '" + value +
                                       "' must be an absolute path to the Cryptoki library");
      uri.module_path_ = value;
    } else if (name == "pin-source") {
      if (value.empty())
        return fail(Domain::usage, "PKCS#11 URI pin-source is empty; write pin-source=file:/path/to/pin");
      uri.pin_source_ = value;
    } else if (name == "x-session-copy") {
      if (value != "yes" && value != "no")
        return fail(Domain::usage, "PKCS#11 URI x-session-copy must be yes or no, not '" + value + "'");
      uri.session_copy_ = value == "yes";
    } else if (name == "pin-value") {
      return fail(Domain::usage, std::string(kPinValueRefused));
    } else if (name == "module-name") {
      return fail(
          Domain::usage,
          "PKCS#11 URI module-name is not supported; give the library with module-path=/path/to/module.so");
    } else if (!name.starts_with("x-")) {
      return fail(Domain::usage, "unknown PKCS#11 URI query attribute '" + name +
                                     "' (Keyline understands module-path, pin-source and x-session-copy)");
    }
  }
  if (uri.token_.empty() && uri.serial_.empty() && !uri.slot_id_)
    return fail(Domain::usage,
                "PKCS#11 URI names no token; add token=LABEL (the label given to "
                "softhsm2-util --init-token or the HSM's token label)");
  return uri;
}

std::string Pkcs11Uri::to_string() const {
  std::string out = "pkcs11:";
  bool first = true;
  auto path = [&](std::string_view name, const std::string& value) {
    if (value.empty()) return;
    if (!first) out += ';';
    first = false;
    out += name;
    out += '=';
    out += percent_encode(value, kPathKeep);
  };
  path("token", token_);
  path("manufacturer", manufacturer_);
  path("model", model_);
  path("serial", serial_);
  if (slot_id_) path("slot-id", std::to_string(*slot_id_));
  path("object", object_);
  path("id", id_);
  out += "?module-path=" + percent_encode(module_path_, kQueryKeep);
  if (!pin_source_.empty()) out += "&pin-source=" + percent_encode(pin_source_, kQueryKeep);
  if (!session_copy_) out += "&x-session-copy=no";
  return out;
}

}  // namespace keyline::hsm
