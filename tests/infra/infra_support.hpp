#pragma once
// Shared material of the infrastructure tests: a full [dps] configuration, a
// fake hub connection string (it must never reach any output), test CA
// certificates made at test time, and scanners for the output languages.

#include <gtest/gtest.h>

#include <openssl/x509.h>

#include <optional>
#include <string>
#include <vector>

#include "keyline/core/openssl.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::infra_test {

// A value no output may contain.
inline const std::string kFakeSecret = "SharedAccessKey=ZmFrZS1zZWNyZXQta2V5LWZvci10ZXN0cw==";
inline const std::string kFakeConnectionString =
    "HostName=hub-a.azure-devices.net;SharedAccessKeyName=iothubowner;" + kFakeSecret;

// The tag value that exercises every quoting rule: quotes, backslash, ${ and %{, a leading '['.
inline const std::string kTrickyTag = "[a'b\"c\\d${x}%{y}";

// [dps] as an operator would write it; kTrickyTag appears TOML-escaped.
inline std::string dps_config() {
  return R"(
[dps]
connection-string-source = "env:KEYLINE_DPS_CONNECTION_STRING"

[dps.instance]
name = "factory-dps-1"
location = "westeurope"
capacity = 2
allocation-policy = "GeoLatency"
ca-certificates = ["intermediate", "root"]
data-residency = true
public-network-access = "Disabled"
tags = { owner = "line 1", "cost center" = "[a'b\"c\\d${x}%{y}" }

[[dps.instance.hubs]]
host-name = "hub-a.azure-devices.net"
location = "westeurope"
allocation-weight = 3
connection-string-parameter = "hubAConnectionString"

[[dps.instance.hubs]]
host-name = "hub-b.azure-devices.net"
location = "northeurope"
allocation-weight = 1
apply-allocation-policy = false
connection-string-parameter = "hubBConnectionString"

[[dps.instance.ip-filter-rules]]
name = "factory-net"
action = "Accept"
ip-mask = "10.1.0.0/16"

[[dps.instance.ip-filter-rules]]
name = "block-guest"
action = "Reject"
ip-mask = "192.168.77.5"
target = "deviceApi"

[[dps.groups]]
name = "line1-x509"
attestation = "x509-ca"
initial-twin-properties = { telemetry = { interval = 30 }, mode = "factory" }
initial-twin-tags = "{\"site\": \"O'Hare \\\"plant\\\"\"}"
allocation-policy = "Static"
iot-hubs = ["hub-a.azure-devices.net"]

[[dps.groups]]
name = "line1-root"
x509-ca = "root"
iot-edge = true
iot-hubs = ["hub-a.azure-devices.net", "hub-b.azure-devices.net"]

[[dps.groups]]
name = "sensors-symkey"
attestation = "symmetric-key"
provisioning-status = "disabled"
)";
}

inline std::string station_config() { return "[station]\nid = \"plant7-line1\"\n" + dps_config(); }

// A self-signed CA certificate (PEM), made now.
inline std::string ca_pem(const std::string& cn) {
  EvpPkeyPtr key = testkit::ec_key();
  X509Ptr x(X509_new());
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 7);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), key.get());
  if (X509_sign(x.get(), key.get(), EVP_sha256()) <= 0) throw std::runtime_error("X509_sign failed");
  return to_pem(x.get());
}

enum class Lang { bicep, hcl };

// The string literals of a Bicep or HCL text, unescaped, and whether the
// text's braces and brackets balance outside them. A literal with an
// unescaped interpolation (${ in Bicep, ${ or %{ in HCL) is reported.
struct Scan {
  std::vector<std::string> literals;
  bool balanced = true;
  std::vector<std::string> problems;
};

inline Scan scan(const std::string& text, Lang lang) {
  Scan s;
  std::vector<char> stack;
  const char quote = lang == Lang::bicep ? '\'' : '"';
  bool comment = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (comment) {
      if (c == '\n') comment = false;
      continue;
    }
    if ((lang == Lang::hcl && c == '#') || (lang == Lang::bicep && c == '/' && i + 1 < text.size() && text[i + 1] == '/')) {
      comment = true;
      continue;
    }
    if (c == quote) {
      std::string lit;
      ++i;
      for (; i < text.size() && text[i] != quote; ++i) {
        char d = text[i];
        if (d == '\n') { s.problems.push_back("newline inside a string literal"); break; }
        if (d == '\\') {
          char e = text[++i];
          switch (e) {
            case 'n': lit += '\n'; break;
            case 'r': lit += '\r'; break;
            case 't': lit += '\t'; break;
            case '\\': lit += '\\'; break;
            case '\'': lit += '\''; break;
            case '"': lit += '"'; break;
            case '$': lit += '$'; break;
            default: s.problems.push_back(std::string("unknown escape \\") + e);
          }
          continue;
        }
        if (lang == Lang::hcl && (d == '$' || d == '%') && i + 2 < text.size() && text[i + 1] == d && text[i + 2] == '{') {
          lit += d;
          lit += '{';
          i += 2;
          continue;
        }
        if ((d == '$' || (lang == Lang::hcl && d == '%')) && i + 1 < text.size() && text[i + 1] == '{')
          s.problems.push_back("unescaped interpolation in a string literal near: " + text.substr(i, 12));
        lit += d;
      }
      s.literals.push_back(lit);
      continue;
    }
    if (c == '{' || c == '[' || c == '(') stack.push_back(c);
    if (c == '}' || c == ']' || c == ')') {
      char open = c == '}' ? '{' : c == ']' ? '[' : '(';
      if (stack.empty() || stack.back() != open) s.balanced = false;
      else stack.pop_back();
    }
  }
  if (!stack.empty()) s.balanced = false;
  return s;
}

inline bool has_literal(const Scan& s, const std::string& value) {
  for (auto& l : s.literals)
    if (l == value) return true;
  return false;
}

}  // namespace keyline::infra_test
