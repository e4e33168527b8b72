#pragma once
// Secret<T>: holds a PIN, a key or a token. It has no formatter and no
// stream operator, so it cannot reach a log line by accident; the bytes are
// wiped (OPENSSL_cleanse) when it dies. Read it explicitly with reveal().

#include <string>
#include <utility>
#include <vector>

#include <openssl/crypto.h>

namespace keyline {

template <typename T>
class Secret {
 public:
  Secret() = default;
  explicit Secret(T value) : value_(std::move(value)) {}
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      wipe();
      value_ = std::move(other.value_);
      other.wipe();
    }
    return *this;
  }
  ~Secret() { wipe(); }

  const T& reveal() const noexcept { return value_; }
  bool empty() const noexcept { return value_.empty(); }

  // What a log line or an error message may show for any secret.
  static constexpr const char* redacted() noexcept { return "***"; }

 private:
  void wipe() noexcept {
    if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size() * sizeof(value_[0]));
    value_.clear();
  }
  T value_{};
};

using SecretString = Secret<std::string>;
using SecretBytes = Secret<std::vector<unsigned char>>;

}  // namespace keyline
