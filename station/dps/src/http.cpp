#include "keyline/station/dps/http.hpp"

#include <algorithm>
#include <mutex>

#include <curl/curl.h>

namespace keyline::station::dps {

namespace {
std::once_flag g_curl_init;

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
    (*headers)[name] = value;
  } else if (line.starts_with("HTTP/")) {
    headers->clear();  // a new response (after 100-continue or a redirect)
  }
  return size * n;
}
}  // namespace

struct HttpTransport::Impl {
  HttpOptions options;
  CURL* curl = nullptr;
};

HttpTransport::HttpTransport(HttpOptions options) : impl_(std::make_unique<Impl>()) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  impl_->options = std::move(options);
  impl_->curl = curl_easy_init();
}

HttpTransport::~HttpTransport() {
  if (impl_ && impl_->curl) curl_easy_cleanup(impl_->curl);
}

Result<HttpResponse> HttpTransport::request(const std::string& method, const std::string& url,
                                            const std::map<std::string, std::string>& headers,
                                            const std::string& body) {
  CURL* c = impl_->curl;
  if (!c) return fail(Domain::internal, "libcurl could not create a handle");
  curl_easy_reset(c);  // keeps the connection cache
  const HttpOptions& o = impl_->options;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "GET") curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  if (method == "POST" || method == "PUT" || !body.empty()) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout.count()));
  curl_easy_setopt(c, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
  if (!o.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  if (!o.client_cert_file.empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, o.client_cert_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSLKEY, o.client_key_file.c_str());
  }
  curl_slist* list = nullptr;
  for (auto& [k, v] : headers) list = curl_slist_append(list, (k + ": " + v).c_str());
  list = curl_slist_append(list, "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  HttpResponse resp;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp.headers);
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(list);
  if (rc != CURLE_OK) {
    std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    // Strip the query string: it is not secret but it is noise.
    std::string where = url.substr(0, url.find('?'));
    return fail(Domain::io, method + " " + where + ": " + detail +
                                " (check the endpoint, the network/proxy and the CA file)", rc);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  return resp;
}

}  // namespace keyline::station::dps
