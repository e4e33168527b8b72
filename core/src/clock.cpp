#include <pthread.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "keyline/core/clock.hpp"

namespace keyline {

namespace {

void rand_bytes(unsigned char* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) {
    std::fputs("keyline: the system random generator failed; refusing to continue\n", stderr);
    std::abort();
  }
}

// Bumped in a forked child, so it never hands out its parent's bytes.
std::atomic<unsigned> g_fork_generation{0};

// Small requests (serial numbers: one per certificate) are served from a
// per-thread block drawn from the DRBG, which costs one DRBG call (with its
// locks and fork check) per block instead of per certificate. Bytes are
// wiped as they are handed out and never handed out twice.
struct Pool {
  static constexpr std::size_t kSize = 1024;
  unsigned char bytes[kSize];
  std::size_t used = kSize;
  unsigned generation = 0;
  ~Pool() { OPENSSL_cleanse(bytes, kSize); }
};

}  // namespace

void SystemRng::fill(std::span<unsigned char> out) {
  constexpr std::size_t kPooledMax = 64;
  if (out.size() > kPooledMax) return rand_bytes(out.data(), out.size());
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); });
    return true;
  }();
  (void)registered;
  thread_local Pool pool;
  unsigned generation = g_fork_generation.load(std::memory_order_relaxed);
  if (pool.used + out.size() > Pool::kSize || pool.generation != generation) {
    rand_bytes(pool.bytes, Pool::kSize);
    pool.used = 0;
    pool.generation = generation;
  }
  std::memcpy(out.data(), pool.bytes + pool.used, out.size());
  OPENSSL_cleanse(pool.bytes + pool.used, out.size());
  pool.used += out.size();
}

std::string format_utc(TimePoint t) {
  // Batch issuance formats the same few seconds thousands of times (record
  // times, not_after): the last two are kept per thread.
  struct Cache {
    std::time_t t[2] = {};
    bool valid[2] = {};
    char text[2][32] = {};
    int next = 0;
  };
  thread_local Cache cache;
  std::time_t tt = static_cast<std::time_t>(t.time_since_epoch().count());
  for (int i = 0; i < 2; ++i)
    if (cache.valid[i] && cache.t[i] == tt) return cache.text[i];
  std::tm tm{};
  gmtime_r(&tt, &tm);
  int slot = cache.next;
  cache.next ^= 1;
  cache.valid[slot] = std::strftime(cache.text[slot], sizeof cache.text[slot], "%Y-%m-%dT%H:%M:%SZ", &tm) != 0;
  if (!cache.valid[slot]) return {};
  cache.t[slot] = tt;
  return cache.text[slot];
}

std::optional<TimePoint> parse_utc(std::string_view text) {
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text[19] != 'Z')
    return std::nullopt;
  auto num = [&](std::size_t at, std::size_t n) -> int {
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (text[i] < '0' || text[i] > '9') return -1;
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour < 0 ||
      tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
    return std::nullopt;
  return TimePoint(std::chrono::seconds(timegm(&tm)));
}

}  // namespace keyline
