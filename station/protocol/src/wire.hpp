#pragma once
// Bounds-checked readers and writers for message payloads (private).

#include <string>
#include <string_view>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"

namespace keyline::station::protocol::wire {

class Reader {
 public:
  Reader(ByteView data, std::string_view what) : data_(data), what_(what) {}
  Result<std::uint8_t> u8(std::string_view field);
  Result<std::uint16_t> u16(std::string_view field);
  Result<ByteView> bytes(std::size_t n, std::string_view field);
  // A length-prefixed field: u8 or u16 length, at most `max` bytes.
  Result<ByteView> lp8(std::string_view field, std::size_t max);
  Result<ByteView> lp16(std::string_view field, std::size_t max);
  ByteView rest();
  keyline::Status end();  // error when bytes are left over
  std::size_t remaining() const { return data_.size() - off_; }

 private:
  Error short_error(std::string_view field, std::size_t need) const;
  ByteView data_;
  std::string_view what_;
  std::size_t off_ = 0;
};

void put_u8(Bytes& out, std::uint8_t v);
void put_u16(Bytes& out, std::uint16_t v);
void put_lp8(Bytes& out, ByteView v);
void put_lp16(Bytes& out, ByteView v);
inline ByteView view(std::string_view s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}
inline std::string str(ByteView b) { return {b.begin(), b.end()}; }

}  // namespace keyline::station::protocol::wire
