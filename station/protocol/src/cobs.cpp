#include "keyline/protocol/cobs.hpp"

namespace keyline::station::protocol {

void cobs_encode(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out) {
  out.reserve(out.size() + cobs_max_encoded(in.size()));
  std::size_t code_at = out.size();
  out.push_back(0);  // placeholder for the first code byte
  std::uint8_t code = 1;
  for (std::uint8_t b : in) {
    if (b == 0) {
      out[code_at] = code;
      code_at = out.size();
      out.push_back(0);
      code = 1;
      continue;
    }
    out.push_back(b);
    if (++code == 0xFF) {  // a full block of 254 non-zero bytes
      out[code_at] = code;
      code_at = out.size();
      out.push_back(0);
      code = 1;
    }
  }
  out[code_at] = code;
}

bool cobs_decode(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out) {
  out.clear();
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    const std::uint8_t code = in[i++];
    if (code == 0) return false;
    const std::size_t run = code - 1u;
    if (run > in.size() - i) return false;
    for (std::size_t k = 0; k < run; ++k) {
      if (in[i + k] == 0) return false;
      out.push_back(in[i + k]);
    }
    i += run;
    // A zero follows every block except a full one (code 0xFF) and the last.
    if (code != 0xFF && i < in.size()) out.push_back(0);
  }
  return true;
}

}  // namespace keyline::station::protocol
