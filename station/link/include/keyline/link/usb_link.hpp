#pragma once
// link::UsbLink -- a USB device with a vendor-specific interface (class
// 0xFF) carrying device protocol v1 over one bulk OUT and one bulk IN
// endpoint (found from the descriptors), through libusb.
//
// The device is chosen by VID:PID and, optionally, its USB serial-number
// string. open() claims the interface (LinkErrc::busy when another process
// holds it). LIBUSB_ERROR_NO_DEVICE at any point is LinkErrc::disconnected.
// Each UsbLink has its own libusb context.
//
// Discovery: list_usb_devices() lists matching devices now; UsbWatcher
// reports arrivals and removals, with libusb hotplug when
// libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG), by polling otherwise.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keyline/link/link.hpp"

struct libusb_context;
struct libusb_device_handle;

namespace keyline::station::link {

struct UsbSelector {
  std::uint16_t vid = 0;
  std::uint16_t pid = 0;
  std::optional<std::string> serial;  // USB iSerialNumber string

  // "VID:PID" or "VID:PID:SERIAL", VID/PID in hex (e.g. "1209:0001:SN42").
  static Result<UsbSelector> parse(std::string_view text);
  std::string to_string() const;
};

struct UsbDeviceInfo {
  std::uint8_t bus = 0;
  std::uint8_t address = 0;
  std::uint16_t vid = 0;
  std::uint16_t pid = 0;
  std::string serial;      // empty when the device has none or it could not be read
  std::string id() const;  // "BUS/ADDR", e.g. "001/002"
};

// Devices matching `selector` now. Errors: io (libusb could not start).
Result<std::vector<UsbDeviceInfo>> list_usb_devices(const UsbSelector& selector);

class UsbLink final : public Link {
 public:
  // Errors: not_found (no matching device, or no vendor interface with bulk
  // IN+OUT), busy (interface claimed elsewhere), open_failed, disconnected.
  static Result<std::unique_ptr<UsbLink>> open(const UsbSelector& selector);
  ~UsbLink() override;

  Status send(ByteView bytes) override;
  Result<std::size_t> receive(std::span<unsigned char> buf, Deadline deadline) override;
  void close() noexcept override;
  std::string description() const override;
  const UsbDeviceInfo& device() const noexcept { return info_; }

 private:
  UsbLink() = default;
  Error usb_failure(int rc, std::string_view what) const;
  libusb_context* ctx_ = nullptr;
  libusb_device_handle* handle_ = nullptr;
  int interface_ = -1;
  unsigned char ep_in_ = 0;
  unsigned char ep_out_ = 0;
  UsbDeviceInfo info_;
  std::vector<unsigned char> rx_;  // bytes read but not yet returned
};

// Reports matching devices arriving and leaving, on its own thread, until
// destroyed. Devices present at start are reported as arrivals.
class UsbWatcher {
 public:
  using Callback = std::function<void(const UsbDeviceInfo& device, bool arrived)>;
  static Result<std::unique_ptr<UsbWatcher>> start(
      const UsbSelector& selector, Callback callback,
      std::chrono::milliseconds poll_interval = std::chrono::milliseconds(250));
  virtual ~UsbWatcher() = default;
  // True when libusb hotplug events are used, false when polling.
  virtual bool uses_hotplug() const noexcept = 0;
};

}  // namespace keyline::station::link
