#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keyline {

// Upper-case hexadecimal, no separators.
std::string to_hex(std::span<const unsigned char> bytes);
// Accepts upper/lower case, optional ':' separators; nullopt on any other character.
std::optional<std::vector<unsigned char>> from_hex(std::string_view hex);

std::string base64_encode(std::span<const unsigned char> bytes);
std::optional<std::vector<unsigned char>> base64_decode(std::string_view text);

}  // namespace keyline
