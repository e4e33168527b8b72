#include "keyline/link/link.hpp"

namespace keyline::station::link {

Error link_error(LinkErrc code, std::string message) {
  return Error(Domain::device, std::move(message), static_cast<std::int64_t>(code));
}

bool has_code(const Error& e, LinkErrc code) noexcept {
  return e.domain() == Domain::device && e.native_code() == static_cast<std::int64_t>(code);
}

bool is_disconnected(const Error& e) noexcept { return has_code(e, LinkErrc::disconnected); }

}  // namespace keyline::station::link
