#pragma once
// HTTPS transport over libcurl: one easy handle reused, so connections are
// kept alive between calls. Not thread-safe: one transport per thread.
//
// Trust: the system store, plus `ca_file` when set (the emulator's CA).
// Proxies: libcurl's usual environment variables (https_proxy, no_proxy);
// loopback hosts never go through a proxy.

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "keyline/core/error.hpp"

namespace keyline::station::dps {

struct HttpOptions {
  std::string ca_file;            // extra trust anchor(s), PEM
  std::string client_cert_file;   // PEM chain (leaf first) for TLS client auth
  std::string client_key_file;    // its private key
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds timeout{30000};
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class HttpTransport {
 public:
  explicit HttpTransport(HttpOptions options);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // A connection-level failure (refused, reset, timeout, TLS) is a
  // Domain::io error whose native code is the CURLcode; any HTTP status is a
  // response.
  Result<HttpResponse> request(const std::string& method, const std::string& url,
                               const std::map<std::string, std::string>& headers,
                               const std::string& body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keyline::station::dps
