#include "out_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "keyline/core/clock.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/log.hpp"

namespace keyline::station::batch::detail {

std::string pending_key_name(const std::string& id, const std::string& serial, const char* suffix) {
  return "." + id + "." + serial + suffix + kPendingSuffix;
}

// One manifest.jsonl line. Every value is hex, a timestamp, or made of
// registration-ID characters (letters, digits, - . _ :), so no escaping is
// needed; written by hand because it is on the writer's hot path.
std::string manifest_line(const std::string& id, const std::string& serial, const std::string& cert_sha256,
                          const std::string& pubkey_sha256, std::int64_t not_after, const std::string& key_file,
                          const std::string& key_sha256) {
  std::string line;
  line.reserve(320);
  line += R"({"registration_id":")" + id + R"(","serial":")" + serial + R"(","cert_sha256":")" + cert_sha256 +
          R"(","pubkey_sha256":")" + pubkey_sha256 + R"(","not_after":")" +
          format_utc(TimePoint(std::chrono::seconds(not_after))) + R"(","cert_file":")" + id + R"(.pem")";
  if (!key_file.empty()) line += R"(,"key_file":")" + key_file + R"(","key_file_sha256":")" + key_sha256 + '"';
  line += "}";
  return line;
}

std::string issued_record_body(const std::string& batch_id, const std::string& cert_sha256, const char* key_origin,
                               std::int64_t not_after, const std::string& profile_json,
                               const std::string& pubkey_sha256, const std::string& registration_id,
                               const std::string& serial) {
  std::string body;
  body.reserve(320 + profile_json.size());
  body += R"({"batch":")" + batch_id + R"(","cert_sha256":")" + cert_sha256 + R"(","key":")" + key_origin +
          R"(","not_after":")" + format_utc(TimePoint(std::chrono::seconds(not_after))) + R"(","profile":)" +
          profile_json + R"(,"pubkey_sha256":")" + pubkey_sha256 + R"(","registration_id":")" + registration_id +
          R"(","serial":")" + serial + R"("})";
  return body;
}

// Keeps whole lines only (drops a line torn by a crash) and counts them.
Result<std::uint64_t> repair_jsonl(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    return fail(Domain::io, "cannot open " + files::errno_text(path, errno));
  }
  std::uint64_t lines = 0;
  off_t last_newline_end = 0, pos = 0;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i)
      if (buf[i] == '\n') {
        ++lines;
        last_newline_end = pos + i + 1;
      }
    pos += n;
  }
  if (pos != last_newline_end) {
    if (::ftruncate(fd, last_newline_end) != 0) {
      ::close(fd);
      return fail(Domain::io, "cannot repair " + files::errno_text(path, errno));
    }
    log::get("batch")->warn("dropped a torn last line from {}", path.string());
  }
  ::close(fd);
  return lines;
}

}  // namespace keyline::station::batch::detail
