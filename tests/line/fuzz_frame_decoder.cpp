// libFuzzer target for the device-protocol frame decoder (untrusted bytes
// from a device). Built with clang -fsanitize=fuzzer,address,undefined from
// the codec sources only (crc32c, cobs, frame), which avoid <expected>.
// Properties checked: no crash or over-read; memory bounded; the decoder
// gives the same frames whether fed at once or in pieces; every frame it
// accepts re-encodes to a wire form that decodes to the same frame.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "keyline/protocol/cobs.hpp"
#include "keyline/protocol/frame.hpp"

using namespace keyline::station::protocol;

namespace {

bool same(const Frame& a, const Frame& b) {
  return a.version == b.version && a.type == b.type && a.seq == b.seq && a.payload == b.payload;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> in(data, size);
  FrameDecoder whole;
  std::vector<Decoded> a;
  whole.feed(in, a);
  if (whole.buffered() > kMaxEncoded) std::abort();

  FrameDecoder pieces;
  std::vector<Decoded> b;
  const std::size_t step = size ? (data[0] % 7) + 1 : 1;
  for (std::size_t off = 0; off < size; off += step)
    pieces.feed(in.subspan(off, std::min(step, size - off)), b);
  if (a.size() != b.size()) std::abort();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].error != b[i].error) std::abort();
    if (a[i].error != FrameError::none) continue;
    if (!same(a[i].frame, b[i].frame)) std::abort();
    std::vector<std::uint8_t> wire;
    if (!encode_frame(a[i].frame, wire)) std::abort();
    FrameDecoder again;
    std::vector<Decoded> c;
    again.feed(wire, c);
    if (c.size() != 1 || c[0].error != FrameError::none || !same(c[0].frame, a[i].frame)) std::abort();
  }
  std::vector<std::uint8_t> out;
  (void)cobs_decode(in, out);
  return 0;
}
