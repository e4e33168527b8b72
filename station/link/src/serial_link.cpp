#include "keyline/link/serial_link.hpp"

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "keyline/core/log.hpp"

namespace keyline::station::link {
namespace {

std::optional<speed_t> speed_for(unsigned baud) {
  switch (baud) {
    case 1200:
      return B1200;
    case 2400:
      return B2400;
    case 4800:
      return B4800;
    case 9600:
      return B9600;
    case 19200:
      return B19200;
    case 38400:
      return B38400;
    case 57600:
      return B57600;
    case 115200:
      return B115200;
    case 230400:
      return B230400;
    case 460800:
      return B460800;
    case 500000:
      return B500000;
    case 921600:
      return B921600;
    case 1000000:
      return B1000000;
    case 1500000:
      return B1500000;
    case 2000000:
      return B2000000;
    case 3000000:
      return B3000000;
    case 4000000:
      return B4000000;
    default:
      return std::nullopt;
  }
}

bool is_gone(int err) { return err == EIO || err == ENXIO || err == ENODEV || err == EPIPE; }

int ms_until(Deadline d) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(d - std::chrono::steady_clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left + 1, 60'000));
}

}  // namespace

Result<std::unique_ptr<SerialLink>> SerialLink::open(const std::string& path, const SerialOptions& options) {
  auto speed = speed_for(options.baud);
  if (!speed)
    return std::unexpected(link_error(
        LinkErrc::open_failed, "serial port " + path + ": unsupported baud rate " +
                                   std::to_string(options.baud) + " (use a standard rate such as 115200)"));
  int fd = ::open(path.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT)
      return std::unexpected(link_error(
          LinkErrc::not_found, "serial port " + path + " does not exist: is the device plugged in?"));
    if (err == EBUSY)
      return std::unexpected(
          link_error(LinkErrc::busy,
                     "serial port " + path + " is already in use (opened exclusively by another program)"));
    return std::unexpected(
        link_error(LinkErrc::open_failed, "cannot open serial port " + path + ": " + std::strerror(err)));
  }
  std::unique_ptr<SerialLink> link(new SerialLink(fd, path, options));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err == EWOULDBLOCK)
      return std::unexpected(link_error(LinkErrc::busy, "serial port " + path +
                                                            " is already in use by another station process; "
                                                            "stop it or choose another port"));
    return std::unexpected(
        link_error(LinkErrc::open_failed, "cannot lock serial port " + path + ": " + std::strerror(err)));
  }
  termios tio{};
  if (::tcgetattr(fd, &tio) != 0)
    return std::unexpected(link_error(
        LinkErrc::open_failed, "serial port " + path + " is not a terminal device: " + std::strerror(errno)));
  ::cfmakeraw(&tio);
  tio.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB | CSTOPB | CRTSCTS);
  tio.c_cflag |= CS8 | CLOCAL | CREAD;
  if (options.rtscts) tio.c_cflag |= CRTSCTS;
  tio.c_iflag &= ~static_cast<tcflag_t>(IXON | IXOFF | IXANY);
  tio.c_cc[VMIN] = 0;
  tio.c_cc[VTIME] = 0;
  ::cfsetispeed(&tio, *speed);
  ::cfsetospeed(&tio, *speed);
  if (::tcsetattr(fd, TCSANOW, &tio) != 0)
    return std::unexpected(link_error(LinkErrc::open_failed, "cannot configure serial port " + path +
                                                                 " (raw 8N1 " + std::to_string(options.baud) +
                                                                 "): " + std::strerror(errno)));
  ::ioctl(fd, TIOCEXCL);  // best effort: other programs' opens fail with EBUSY
  ::tcflush(fd, TCIOFLUSH);
  log::get("link")->debug("opened {}", link->description());
  return link;
}

SerialLink::~SerialLink() { close(); }

void SerialLink::close() noexcept {
  if (fd_ >= 0) {
    ::ioctl(fd_, TIOCNXCL);
    ::close(fd_);  // also releases the flock
    fd_ = -1;
  }
}

std::string SerialLink::description() const {
  return "serial " + path_ + " " + std::to_string(options_.baud) + " 8N1" +
         (options_.rtscts ? " rts/cts" : "");
}

Error SerialLink::disconnected(int err) const {
  return link_error(LinkErrc::disconnected,
                    "device disconnected: serial port " + path_ + " (" +
                        (err ? std::string(std::strerror(err)) : std::string("hang-up")) +
                        "); reconnect the device and run again");
}

Status SerialLink::send(ByteView bytes) {
  if (fd_ < 0) return std::unexpected(link_error(LinkErrc::io, "serial port " + path_ + " is closed"));
  std::size_t off = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (off < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + off, bytes.size() - off);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      count_sent(static_cast<std::size_t>(n));
      continue;
    }
    int err = errno;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && err == EAGAIN) {
      pollfd p{fd_, POLLOUT, 0};
      int ms = ms_until(deadline);
      if (ms == 0)
        return std::unexpected(link_error(
            LinkErrc::io, "serial port " + path_ + ": output blocked for 10 s (flow control held off?)"));
      ::poll(&p, 1, ms);
      if (p.revents & (POLLHUP | POLLERR)) return std::unexpected(disconnected(0));
      continue;
    }
    if (is_gone(err)) return std::unexpected(disconnected(err));
    return std::unexpected(
        link_error(LinkErrc::io, "writing to serial port " + path_ + ": " + std::strerror(err)));
  }
  return {};
}

Result<std::size_t> SerialLink::receive(std::span<unsigned char> buf, Deadline deadline) {
  if (fd_ < 0) return std::unexpected(link_error(LinkErrc::io, "serial port " + path_ + " is closed"));
  for (;;) {
    ssize_t n = ::read(fd_, buf.data(), buf.size());
    if (n > 0) {
      count_received(static_cast<std::size_t>(n));
      return static_cast<std::size_t>(n);
    }
    int err = errno;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && err != EAGAIN) {
      if (is_gone(err)) return std::unexpected(disconnected(err));
      return std::unexpected(
          link_error(LinkErrc::io, "reading serial port " + path_ + ": " + std::strerror(err)));
    }
    // n == 0 on a non-blocking raw tty with VMIN=0 means "nothing yet";
    // a hang-up shows as POLLHUP below.
    int ms = ms_until(deadline);
    if (ms == 0) return std::size_t{0};
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno != EINTR)
      return std::unexpected(
          link_error(LinkErrc::io, "waiting on serial port " + path_ + ": " + std::strerror(errno)));
    if (r > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
      // A hung-up tty polls readable too; read what is left, then report it.
      ssize_t last = ::read(fd_, buf.data(), buf.size());
      if (last > 0) {
        count_received(static_cast<std::size_t>(last));
        return static_cast<std::size_t>(last);
      }
      return std::unexpected(disconnected(last < 0 && is_gone(errno) ? errno : 0));
    }
    if (r == 0 && ms_until(deadline) == 0) return std::size_t{0};
  }
}

std::vector<std::string> discover_serial_ports(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& pattern : patterns) {
    glob_t g{};
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
      for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace keyline::station::link
