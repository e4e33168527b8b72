#pragma once
// File-system primitives with the guarantees the station promises:
// writes are atomic (temp file in the same directory, fsync, rename), reads
// are bounded, and every failure names the path and the errno text.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "keyline/core/error.hpp"

namespace keyline::files {

namespace fs = std::filesystem;

// Reads at most `max_bytes`; a larger file is an input error naming the limit.
Result<std::string> read(const fs::path& path, std::size_t max_bytes = 64u << 20);

// Writes `data` to `path` atomically with the given permission bits.
// Either the old content or the new one is visible, never a mix.
Status write_atomic(const fs::path& path, std::string_view data, unsigned mode = 0644);

// fsync of a directory: makes the renames and creations in it durable.
Status sync_dir(const fs::path& dir);

// Like write_atomic, but never replaces: fails (Domain::io, EEXIST) when
// `path` exists, also when another process creates it meanwhile.
Status write_new(const fs::path& path, std::string_view data, unsigned mode = 0600);

// Writes to a temp file beside `path` and returns its name; publish() renames it.
// Lets a caller commit something else (a ledger row) between write and rename.
class PendingFile {
 public:
  static Result<PendingFile> create(const fs::path& path, std::string_view data, unsigned mode);
  PendingFile(PendingFile&&) noexcept;
  PendingFile& operator=(PendingFile&&) = delete;
  PendingFile(const PendingFile&) = delete;
  ~PendingFile();  // removes the temp file unless published
  Status publish();
  const fs::path& target() const { return target_; }

 private:
  friend class StreamingFile;
  PendingFile(fs::path tmp, fs::path target) : tmp_(std::move(tmp)), target_(std::move(target)) {}
  fs::path tmp_;
  fs::path target_;
  bool done_ = false;
};

// A large output written in pieces (buffered) to a temp file beside `path`;
// finish() flushes and fsyncs it and hands over a PendingFile to publish.
// Memory stays at the buffer size whatever the file size.
class StreamingFile {
 public:
  static Result<StreamingFile> open(const fs::path& path, unsigned mode);
  StreamingFile(StreamingFile&&) noexcept;
  StreamingFile& operator=(StreamingFile&&) = delete;
  StreamingFile(const StreamingFile&) = delete;
  ~StreamingFile();  // removes the temp file unless finished

  Status write(std::string_view data);
  Result<PendingFile> finish();

 private:
  StreamingFile(int fd, fs::path tmp, fs::path target) : fd_(fd), tmp_(std::move(tmp)), target_(std::move(target)) {}
  Status flush();
  int fd_ = -1;
  fs::path tmp_;
  fs::path target_;
  std::string buffer_;
};

// Creates `dir` (and parents) if missing; sets `mode` on the last component when created.
Status ensure_dir(const fs::path& dir, unsigned mode = 0700);

// "path: strerror(errno)" for messages.
std::string errno_text(const fs::path& path, int err);

}  // namespace keyline::files
