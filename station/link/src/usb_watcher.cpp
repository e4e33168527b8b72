#include <libusb.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "keyline/core/log.hpp"
#include "keyline/link/usb_link.hpp"

namespace keyline::station::link {
namespace {

// Rescans the device list every poll interval and reports the difference.
// With libusb hotplug, the callback wakes the thread at once (arrivals are
// seen without waiting for the next poll); without it, polling alone.
class Watcher final : public UsbWatcher {
 public:
  Watcher(UsbSelector sel, Callback cb, std::chrono::milliseconds interval)
      : sel_(std::move(sel)), cb_(std::move(cb)), interval_(interval) {}

  Status init() {
    int rc = libusb_init(&ctx_);
    if (rc != 0)
      return std::unexpected(
          link_error(LinkErrc::io, std::string("cannot start libusb: ") + libusb_strerror(rc)));
    if (libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
      rc = libusb_hotplug_register_callback(
          ctx_,
          static_cast<libusb_hotplug_event>(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED |
                                            LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT),
          LIBUSB_HOTPLUG_NO_FLAGS, sel_.vid, sel_.pid, LIBUSB_HOTPLUG_MATCH_ANY, &Watcher::on_hotplug, this,
          &handle_);
      hotplug_ = rc == LIBUSB_SUCCESS;
    }
    thread_ = std::thread([this] { run(); });
    return {};
  }

  ~Watcher() override {
    stop_ = true;
    if (hotplug_) libusb_hotplug_deregister_callback(ctx_, handle_);  // wakes libusb_handle_events
    thread_.join();
    libusb_exit(ctx_);
  }

  bool uses_hotplug() const noexcept override { return hotplug_; }

 private:
  static int on_hotplug(libusb_context*, libusb_device*, libusb_hotplug_event, void* self) {
    static_cast<Watcher*>(self)->changed_ = true;
    return 0;
  }

  void rescan() {
    std::map<std::string, UsbDeviceInfo> now;
    libusb_device** list = nullptr;
    ssize_t n = libusb_get_device_list(ctx_, &list);
    for (ssize_t i = 0; i < n; ++i) {
      libusb_device_descriptor d{};
      if (libusb_get_device_descriptor(list[i], &d) != 0 || d.idVendor != sel_.vid || d.idProduct != sel_.pid)
        continue;
      UsbDeviceInfo info{
          libusb_get_bus_number(list[i]), libusb_get_device_address(list[i]), d.idVendor, d.idProduct, {}};
      // Opening and one control transfer (string descriptor 0) prove the
      // device is still there: libusb's cached list can keep an unplugged
      // device when the removal event is missed.
      libusb_device_handle* h = nullptr;
      const int rc = libusb_open(list[i], &h);
      if (rc == LIBUSB_ERROR_NO_DEVICE || rc == LIBUSB_ERROR_NOT_FOUND) continue;
      if (h) {
        unsigned char langs[4];
        if (libusb_get_string_descriptor(h, 0, 0, langs, sizeof langs) == LIBUSB_ERROR_NO_DEVICE) {
          libusb_close(h);
          continue;
        }
      }
      auto known = seen_.find(info.id());
      if (known != seen_.end()) {
        info.serial = known->second.serial;
      } else if (h && d.iSerialNumber) {
        unsigned char buf[256] = {};
        int len = libusb_get_string_descriptor_ascii(h, d.iSerialNumber, buf, sizeof buf);
        if (len > 0) info.serial.assign(reinterpret_cast<char*>(buf), static_cast<std::size_t>(len));
      }
      if (h) libusb_close(h);
      if (sel_.serial && info.serial != *sel_.serial) continue;
      now[info.id()] = info;
    }
    if (n >= 0) libusb_free_device_list(list, 1);
    for (auto& [id, info] : seen_)
      if (!now.count(id)) cb_(info, false);
    for (auto& [id, info] : now)
      if (!seen_.count(id)) cb_(info, true);
    seen_ = std::move(now);
  }

  void run() {
    while (!stop_) {
      rescan();
      const auto until = std::chrono::steady_clock::now() + interval_;
      while (!stop_ && !changed_ && std::chrono::steady_clock::now() < until) {
        if (hotplug_) {
          timeval tv{0, 50'000};
          libusb_handle_events_timeout_completed(ctx_, &tv, nullptr);
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      changed_ = false;
    }
  }

  UsbSelector sel_;
  Callback cb_;
  std::chrono::milliseconds interval_;
  libusb_context* ctx_ = nullptr;
  libusb_hotplug_callback_handle handle_ = 0;
  bool hotplug_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> changed_{false};
  std::map<std::string, UsbDeviceInfo> seen_;
  std::thread thread_;
};

}  // namespace

Result<std::unique_ptr<UsbWatcher>> UsbWatcher::start(const UsbSelector& selector, Callback callback,
                                                      std::chrono::milliseconds poll_interval) {
  auto w = std::make_unique<Watcher>(selector, std::move(callback), poll_interval);
  KL_CHECK(w->init());
  return std::unique_ptr<UsbWatcher>(std::move(w));
}

}  // namespace keyline::station::link
