#include "wire.hpp"

namespace keyline::station::protocol::wire {

Error Reader::short_error(std::string_view field, std::size_t need) const {
  return Error(Domain::input, std::string(what_) + ": field '" + std::string(field) + "' needs " +
                                  std::to_string(need) + " byte(s) at offset " + std::to_string(off_) +
                                  " but the payload has " + std::to_string(remaining()) + " left");
}

Result<std::uint8_t> Reader::u8(std::string_view field) {
  if (remaining() < 1) return std::unexpected(short_error(field, 1));
  return data_[off_++];
}

Result<std::uint16_t> Reader::u16(std::string_view field) {
  if (remaining() < 2) return std::unexpected(short_error(field, 2));
  auto v = static_cast<std::uint16_t>((data_[off_] << 8) | data_[off_ + 1]);
  off_ += 2;
  return v;
}

Result<ByteView> Reader::bytes(std::size_t n, std::string_view field) {
  if (remaining() < n) return std::unexpected(short_error(field, n));
  ByteView v = data_.subspan(off_, n);
  off_ += n;
  return v;
}

Result<ByteView> Reader::lp8(std::string_view field, std::size_t max) {
  KL_TRY(auto n, u8(field));
  if (n > max)
    return fail(Domain::input, std::string(what_) + ": field '" + std::string(field) + "' is " +
                                   std::to_string(n) + " bytes, the limit is " + std::to_string(max));
  return bytes(n, field);
}

Result<ByteView> Reader::lp16(std::string_view field, std::size_t max) {
  KL_TRY(auto n, u16(field));
  if (n > max)
    return fail(Domain::input, std::string(what_) + ": field '" + std::string(field) + "' is " +
                                   std::to_string(n) + " bytes, the limit is " + std::to_string(max));
  return bytes(n, field);
}

ByteView Reader::rest() {
  ByteView v = data_.subspan(off_);
  off_ = data_.size();
  return v;
}

keyline::Status Reader::end() {
  if (remaining() != 0)
    return fail(Domain::input, std::string(what_) + ": " + std::to_string(remaining()) +
                                   " unexpected byte(s) after the last field");
  return {};
}

void put_u8(Bytes& out, std::uint8_t v) { out.push_back(v); }
void put_u16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<unsigned char>(v >> 8));
  out.push_back(static_cast<unsigned char>(v));
}
void put_lp8(Bytes& out, ByteView v) {
  put_u8(out, static_cast<std::uint8_t>(v.size()));
  out.insert(out.end(), v.begin(), v.end());
}
void put_lp16(Bytes& out, ByteView v) {
  put_u16(out, static_cast<std::uint16_t>(v.size()));
  out.insert(out.end(), v.begin(), v.end());
}

}  // namespace keyline::station::protocol::wire
