#include "source.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <filesystem>

#include "keyline/ca/csr_policy.hpp"

namespace keyline::station::batch::detail {

namespace {

// An input that cannot be read is rejected (gone, unreadable, a folder); a
// station out of file descriptors or memory stops the batch instead of
// rejecting every input after it.
Error read_failure(const Options& o, const std::string& name, int err) {
  Domain d = err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS ? Domain::io : Domain::input;
  return Error(d, "cannot read " + files::errno_text(o.csr_dir / name, err));
}

}  // namespace

Result<std::string> read_input(int dir_fd, const Options& o, const std::string& name) {
  // Without O_NOATIME the first read of each CSR dirties its inode, and the
  // writer's file-system sync writes them all back. Only the files' owner
  // (or root) may ask for it; others read as usual.
  static std::atomic<bool> noatime{true};
  int fd = -1;
  if (noatime.load(std::memory_order_relaxed)) {
    fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) noatime = false;
  }
  if (fd < 0 && !noatime.load(std::memory_order_relaxed)) fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(read_failure(o, name, errno));
  thread_local std::array<char, ca::kMaxCsrBytes + 1> buf;
  std::size_t got = 0;
  for (;;) {
    std::size_t want = buf.size() - got;
    ssize_t n = ::read(fd, buf.data() + got, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return std::unexpected(read_failure(o, name, err));
    }
    got += static_cast<std::size_t>(n);
    // A short read of a regular file is its end.
    if (static_cast<std::size_t>(n) < want || got == buf.size()) break;
  }
  ::close(fd);
  if (got > ca::kMaxCsrBytes)
    return fail(Domain::input, (o.csr_dir / name).string() + " is larger than " + std::to_string(ca::kMaxCsrBytes) +
                                   " bytes; it is not a CSR");
  return std::string(buf.data(), got);
}

std::uint64_t count_items(const Options& o) {
  std::uint64_t n = 0;
  if (o.mode == Mode::csr_dir) {
    std::error_code ec;
    for (fs::directory_iterator it(o.csr_dir, ec), end; !ec && it != end; it.increment(ec))
      if (!it->path().filename().string().starts_with('.')) ++n;
  } else if (!o.ids_file.empty()) {
    std::ifstream in(o.ids_file);
    std::string line;
    while (std::getline(in, line)) {
      auto a = line.find_first_not_of(" \t\r");
      if (a != std::string::npos && line[a] != '#') ++n;
    }
  } else {
    n = o.count.value_or(0);
  }
  return n;
}

}  // namespace keyline::station::batch::detail
