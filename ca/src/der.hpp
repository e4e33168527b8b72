#pragma once
// A minimal, bounds-checked DER reader for the hot paths (lean CSR parsing,
// SubjectPublicKeyInfo inspection). It understands definite lengths only,
// as DER requires; anything else is "not parsed" and the caller falls back
// to OpenSSL's full parser.

#include <cstdint>
#include <optional>
#include <span>

namespace keyline::ca::der {

struct Tlv {
  unsigned char tag = 0;
  std::span<const unsigned char> value;  // contents
  std::span<const unsigned char> whole;  // tag + length + contents
};

// Reads one TLV from the front of `in`; advances `in` past it.
inline std::optional<Tlv> read(std::span<const unsigned char>& in) {
  if (in.size() < 2) return std::nullopt;
  unsigned char tag = in[0];
  if ((tag & 0x1f) == 0x1f) return std::nullopt;  // high tag numbers: not used here
  std::size_t len = in[1], header = 2;
  if (len & 0x80) {
    std::size_t n = len & 0x7f;
    if (n == 0 || n > 3 || in.size() < 2 + n) return std::nullopt;
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = len << 8 | in[2 + i];
    if (len < 0x80 || (n > 1 && in[2] == 0)) return std::nullopt;  // not minimal: not DER
    header = 2 + n;
  }
  if (in.size() - header < len) return std::nullopt;
  Tlv t{tag, in.subspan(header, len), in.subspan(0, header + len)};
  in = in.subspan(header + len);
  return t;
}

// Reads one TLV and requires its tag.
inline std::optional<Tlv> expect(std::span<const unsigned char>& in, unsigned char tag) {
  auto t = read(in);
  if (!t || t->tag != tag) return std::nullopt;
  return t;
}

template <std::size_t N>
bool equals(std::span<const unsigned char> a, const unsigned char (&b)[N]) {
  if (a.size() != N) return false;
  for (std::size_t i = 0; i < N; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace keyline::ca::der
