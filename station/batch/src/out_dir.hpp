#pragma once
// The out dir of a batch (internal to station/batch): the lock, files
// written without a sync of their own (the writer syncs the file system once
// per group), renames, the manifest's lines and the JSONL files that only
// ever grow by whole lines. See docs/batch.md for the order of durable steps.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "keyline/core/error.hpp"
#include "keyline/core/files.hpp"

namespace keyline::station::batch::detail {

namespace fs = std::filesystem;

inline constexpr const char* kPendingSuffix = ".pending";

struct OutDir {
  fs::path dir;
  int dir_fd = -1;
  int lock_fd = -1;
  ~OutDir() {
    if (lock_fd >= 0) ::close(lock_fd);
    if (dir_fd >= 0) ::close(dir_fd);
  }

  Status open(const fs::path& path) {
    dir = path;
    KL_CHECK(files::ensure_dir(dir, 0755));
    dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) return fail(Domain::io, "cannot open --out " + files::errno_text(dir, errno));
    lock_fd = ::open((dir / ".keyline-batch.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0)
      return fail(Domain::io, "cannot create the batch lock " + files::errno_text(dir / ".keyline-batch.lock", errno) +
                                  " (--out must be writable)");
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
      return fail(Domain::state, "another 'keyline ca batch' is writing to " + dir.string() + "; wait for it to finish");
    return {};
  }

  Status sync() {
    if (::syncfs(dir_fd) != 0) return fail(Domain::io, "syncing " + files::errno_text(dir, errno));
    return {};
  }

  // Writes without fsync (the writer syncs the whole file system once per group).
  Status write_pending(const std::string& name, std::string_view data, unsigned mode) {
    int fd = ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return fail(Domain::io, "cannot write " + files::errno_text(dir / name, errno));
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        ::close(fd);
        return fail(Domain::io, "cannot write " + files::errno_text(dir / name, err));
      }
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return {};
  }

  Status rename(const std::string& from, const std::string& to) {
    if (::renameat(dir_fd, from.c_str(), dir_fd, to.c_str()) != 0)
      return fail(Domain::io, "cannot rename " + files::errno_text(dir / from, errno));
    return {};
  }

  void remove(const std::string& name) { ::unlinkat(dir_fd, name.c_str(), 0); }
};

std::string pending_key_name(const std::string& id, const std::string& serial, const char* suffix);

// One manifest.jsonl line. Every value is hex, a timestamp, or made of
// registration-ID characters (letters, digits, - . _ :), so no escaping is
// needed; written by hand because it is on the writer's hot path.
std::string manifest_line(const std::string& id, const std::string& serial, const std::string& cert_sha256,
                          const std::string& pubkey_sha256, std::int64_t not_after, const std::string& key_file,
                          const std::string& key_sha256);

// The body of a batch's "certificate.issued" audit record, in canonical
// form (members sorted, compact) without building a JSON object: the values
// are hex, timestamps and registration IDs, which need no escaping, and
// `profile_json` (the profile name as a JSON string literal, escaped once per
// run). Equal to canonical_body() of the same object (tested).
std::string issued_record_body(const std::string& batch_id, const std::string& cert_sha256, const char* key_origin,
                               std::int64_t not_after, const std::string& profile_json,
                               const std::string& pubkey_sha256, const std::string& registration_id,
                               const std::string& serial);

// Appends lines and fsyncs; the file only ever grows by whole lines.
class JsonlFile {
 public:
  Status open(const fs::path& path, bool truncate) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd_ < 0) return fail(Domain::io, "cannot open " + files::errno_text(path, errno));
    return {};
  }
  ~JsonlFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  // Names and reasons may hold bytes that are not UTF-8 (a Latin-1 file
  // name, an ID file in another encoding): they are written as U+FFFD, not
  // refused, so a bad input is reported instead of stopping the batch.
  void add(const nlohmann::json& j) { add(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)); }
  void add(const std::string& line) {
    buffer_ += line;
    buffer_ += '\n';
  }
  Status flush() {
    if (buffer_.empty()) return {};
    std::size_t off = 0;
    while (off < buffer_.size()) {
      ssize_t n = ::write(fd_, buffer_.data() + off, buffer_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail(Domain::io, "cannot append to " + files::errno_text(path_, errno));
      off += static_cast<std::size_t>(n);
    }
    buffer_.clear();
    if (::fdatasync(fd_) != 0) return fail(Domain::io, "cannot sync " + files::errno_text(path_, errno));
    return {};
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::string buffer_;
};

// Keeps whole lines only (drops a line torn by a crash) and counts them.
Result<std::uint64_t> repair_jsonl(const fs::path& path);

}  // namespace keyline::station::batch::detail
