#pragma once
// link::Link -- a byte pipe to one device (serial port or USB bulk pair).
//
// Implementations: SerialLink (serial_link.hpp), UsbLink (usb_link.hpp).
// A Link is used by one thread at a time (the DeviceSession that owns the
// device); the byte counters may be read from any thread.
//
// Errors are Domain::device with a LinkErrc native code. A device that went
// away (serial EIO/ENXIO/hang-up, LIBUSB_ERROR_NO_DEVICE) is always
// LinkErrc::disconnected, so callers can tell an unplug from other failures
// with is_disconnected().

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "keyline/core/error.hpp"
#include "keyline/core/openssl.hpp"

namespace keyline::station::link {

enum class LinkErrc : std::int64_t {
  disconnected = 1001,  // the device went away (unplugged, closed, reset)
  busy = 1002,          // the port/device is already in use by another process
  not_found = 1003,     // no such port / no matching USB device
  open_failed = 1004,   // the port exists but could not be opened or configured
  io = 1005,            // any other I/O failure (message says which)
};

Error link_error(LinkErrc code, std::string message);
bool is_disconnected(const Error& e) noexcept;
bool has_code(const Error& e, LinkErrc code) noexcept;

using Deadline = std::chrono::steady_clock::time_point;

class Link {
 public:
  virtual ~Link() = default;
  Link() = default;
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Sends all of `bytes` (one encoded frame, normally). Blocks until they are
  // handed to the OS / USB stack.
  virtual Status send(ByteView bytes) = 0;

  // Waits until at least one byte arrives or `deadline` passes. Returns the
  // number of bytes stored in `buf` (>= 1), or 0 when the deadline passed
  // with nothing received. Errors: disconnected, io.
  virtual Result<std::size_t> receive(std::span<unsigned char> buf, Deadline deadline) = 0;

  // Releases the port / interface. Idempotent; later calls fail with io.
  virtual void close() noexcept = 0;

  // "serial /dev/ttyUSB0 115200 8N1", "usb 1209:0001 serial ABC (bus 1 dev 2)".
  virtual std::string description() const = 0;

  // Bytes moved since open (for wire-time figures).
  std::uint64_t bytes_sent() const noexcept { return sent_.load(std::memory_order_relaxed); }
  std::uint64_t bytes_received() const noexcept { return received_.load(std::memory_order_relaxed); }

 protected:
  void count_sent(std::size_t n) noexcept { sent_.fetch_add(n, std::memory_order_relaxed); }
  void count_received(std::size_t n) noexcept { received_.fetch_add(n, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> received_{0};
};

}  // namespace keyline::station::link
