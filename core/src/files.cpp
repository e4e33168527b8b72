#include "keyline/core/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace keyline::files {

std::string errno_text(const fs::path& path, int err) {
  return path.string() + ": " + std::strerror(err);
}

Result<std::string> read(const fs::path& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return fail(err == ENOENT || err == EISDIR ? Domain::input : Domain::io,
                "cannot read " + errno_text(path, err), err);
  }
  std::string out;
  // One read for the usual case: a regular file read to its known size.
  struct stat st{};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= max_bytes &&
      st.st_size > 0) {
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got == out.size()) {
      ::close(fd);
      return out;
    }
    out.resize(got);  // shorter than its size said: read on below
  }
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return fail(Domain::io, "cannot read " + errno_text(path, err), err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return fail(Domain::input, path.string() + " is larger than the " +
                                     std::to_string(max_bytes) + "-byte limit for this input");
    }
  }
  ::close(fd);
  return out;
}

namespace {

std::atomic<unsigned> g_counter{0};

Result<fs::path> write_temp(const fs::path& path, std::string_view data, unsigned mode) {
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  fs::path tmp = dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()) +
                        "." + std::to_string(g_counter++));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    int err = errno;
    return fail(Domain::io, "cannot write " + errno_text(path, err), err);
  }
  ::fchmod(fd, mode);
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail(Domain::io, "cannot write " + errno_text(path, err), err);
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(Domain::io, "cannot write " + errno_text(path, err), err);
  }
  return tmp;
}

Status rename_into_place(const fs::path& tmp, const fs::path& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return fail(Domain::io, "cannot write " + errno_text(path, err), err);
  }
  (void)sync_dir(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  return {};
}

}  // namespace

Status write_atomic(const fs::path& path, std::string_view data, unsigned mode) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return fail(Domain::io, "cannot write " + path.string() + ": it is a directory; give a file name");
  KL_TRY(fs::path tmp, write_temp(path, data, mode));
  return rename_into_place(tmp, path);
}

Status sync_dir(const fs::path& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail(Domain::io, "cannot open " + errno_text(dir, errno));
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0) return fail(Domain::io, "cannot sync " + errno_text(dir, err), err);
  return {};
}

Status write_new(const fs::path& path, std::string_view data, unsigned mode) {
  KL_TRY(fs::path tmp, write_temp(path, data, mode));
  // link() publishes the complete file under its name, or fails if the name
  // is taken: two writers cannot both succeed, and neither replaces the other.
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    if (err == EEXIST) return fail(Domain::io, path.string() + " already exists; it was not replaced", err);
    return fail(Domain::io, "cannot write " + errno_text(path, err), err);
  }
  ::unlink(tmp.c_str());
  (void)sync_dir(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  return {};
}

Result<PendingFile> PendingFile::create(const fs::path& path, std::string_view data,
                                        unsigned mode) {
  // Whatever would make the final rename fail is refused now, before the
  // caller commits anything that depends on the file being delivered.
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return fail(Domain::io, "cannot write " + path.string() + ": it is a directory; give a file name");
  KL_TRY(fs::path tmp, write_temp(path, data, mode));
  return PendingFile(std::move(tmp), path);
}

PendingFile::PendingFile(PendingFile&& o) noexcept
    : tmp_(std::move(o.tmp_)), target_(std::move(o.target_)), done_(o.done_) {
  o.done_ = true;
}

PendingFile::~PendingFile() {
  if (!done_) ::unlink(tmp_.c_str());
}

Status PendingFile::publish() {
  done_ = true;
  return rename_into_place(tmp_, target_);
}

Result<StreamingFile> StreamingFile::open(const fs::path& path, unsigned mode) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return fail(Domain::io, "cannot write " + path.string() + ": it is a directory; give a file name");
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  fs::path tmp = dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                        std::to_string(g_counter++));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    int err = errno;
    return fail(Domain::io, "cannot write " + errno_text(path, err), err);
  }
  ::fchmod(fd, mode);
  return StreamingFile(fd, std::move(tmp), path);
}

StreamingFile::StreamingFile(StreamingFile&& o) noexcept
    : fd_(o.fd_), tmp_(std::move(o.tmp_)), target_(std::move(o.target_)), buffer_(std::move(o.buffer_)) {
  o.fd_ = -1;
  o.tmp_.clear();
}

StreamingFile::~StreamingFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

Status StreamingFile::flush() {
  std::size_t off = 0;
  while (off < buffer_.size()) {
    ssize_t n = ::write(fd_, buffer_.data() + off, buffer_.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      return fail(Domain::io, "cannot write " + errno_text(target_, err), err);
    }
    off += static_cast<std::size_t>(n);
  }
  buffer_.clear();
  return {};
}

Status StreamingFile::write(std::string_view data) {
  if (fd_ < 0) return fail(Domain::internal, "write to a finished file " + target_.string());
  buffer_.append(data);
  if (buffer_.size() >= (1u << 20)) return flush();
  return {};
}

Result<PendingFile> StreamingFile::finish() {
  KL_CHECK(flush());
  int rc = ::fsync(fd_);
  int rc2 = ::close(fd_);
  fd_ = -1;
  if (rc != 0 || rc2 != 0) {
    int err = errno;
    return fail(Domain::io, "cannot write " + errno_text(target_, err), err);
  }
  PendingFile pending(tmp_, target_);
  tmp_.clear();
  return pending;
}

Status ensure_dir(const fs::path& dir, unsigned mode) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return {};
  if (!dir.parent_path().empty() && dir.parent_path() != dir) {
    fs::create_directories(dir.parent_path(), ec);
  }
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    int err = errno;
    return fail(Domain::io, "cannot create directory " + errno_text(dir, err), err);
  }
  ::chmod(dir.c_str(), mode);
  return {};
}

}  // namespace keyline::files
