#pragma once
// link::SerialLink -- a serial port (USB CDC-ACM, FTDI, UART, or a pty in
// tests) in raw 8N1 mode.
//
// open() promises: O_NOCTTY (the port never becomes our controlling
// terminal), exclusive use (flock LOCK_EX, so a second station process gets
// LinkErrc::busy "port already in use"; TIOCEXCL against other programs),
// raw termios (no echo, no CR/LF translation, no signals), 8 data bits, no
// parity, 1 stop bit, the chosen baud, optional RTS/CTS hardware flow control,
// and input/output queues flushed. Unplug (EIO, ENXIO, hang-up) is reported as
// LinkErrc::disconnected.

#include <memory>
#include <string>
#include <vector>

#include "keyline/link/link.hpp"

namespace keyline::station::link {

struct SerialOptions {
  unsigned baud = 115200;  // one of the standard rates 1200..4000000
  bool rtscts = false;     // hardware flow control
};

class SerialLink final : public Link {
 public:
  // Errors: not_found (no such path), busy (in use), open_failed (not a tty,
  // unsupported baud, termios refused).
  static Result<std::unique_ptr<SerialLink>> open(const std::string& path, const SerialOptions& options = {});
  ~SerialLink() override;

  Status send(ByteView bytes) override;
  Result<std::size_t> receive(std::span<unsigned char> buf, Deadline deadline) override;
  void close() noexcept override;
  std::string description() const override;
  const std::string& path() const noexcept { return path_; }

 private:
  SerialLink(int fd, std::string path, SerialOptions options)
      : fd_(fd), path_(std::move(path)), options_(options) {}
  Error disconnected(int err) const;
  int fd_ = -1;
  std::string path_;
  SerialOptions options_;
};

// Serial ports matching any of `patterns` (glob(7)), sorted, duplicates
// removed. Default: /dev/ttyUSB* and /dev/ttyACM*.
std::vector<std::string> discover_serial_ports(const std::vector<std::string>& patterns = {"/dev/ttyUSB*",
                                                                                           "/dev/ttyACM*"});

}  // namespace keyline::station::link
