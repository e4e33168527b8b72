#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include <openssl/rand.h>

#include "keyline/core/clock.hpp"

namespace keyline {

void SystemRng::fill(std::span<unsigned char> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    std::fputs("keyline: the system random generator failed; refusing to continue\n", stderr);
    std::abort();
  }
}

std::string format_utc(TimePoint t) {
  std::time_t tt = static_cast<std::time_t>(t.time_since_epoch().count());
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace keyline
