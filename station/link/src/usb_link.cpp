#include "keyline/link/usb_link.hpp"

#include <libusb.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "keyline/core/log.hpp"

namespace keyline::station::link {

namespace {

std::string usb_text(int rc) { return std::string(libusb_error_name(rc)) + ": " + libusb_strerror(rc); }

bool matches(const UsbSelector& sel, const libusb_device_descriptor& d) {
  return d.idVendor == sel.vid && d.idProduct == sel.pid;
}

std::string read_serial(libusb_device_handle* h, const libusb_device_descriptor& d) {
  if (!d.iSerialNumber) return {};
  unsigned char buf[256] = {};
  int n = libusb_get_string_descriptor_ascii(h, d.iSerialNumber, buf, sizeof buf);
  return n > 0 ? std::string(reinterpret_cast<char*>(buf), static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

Result<UsbSelector> UsbSelector::parse(std::string_view text) {
  UsbSelector s;
  auto bad = [&] {
    return fail(
        Domain::usage,
        "USB device '" + std::string(text) +
            "': expected VID:PID or VID:PID:SERIAL with VID and PID as 4 hex digits (e.g. 1209:0001)");
  };
  auto hex4 = [](std::string_view h, std::uint16_t& out) {
    if (h.size() != 4) return false;
    unsigned v = 0;
    for (char c : h) {
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        return false;
    }
    out = static_cast<std::uint16_t>(v);
    return true;
  };
  auto c1 = text.find(':');
  if (c1 == std::string_view::npos) return bad();
  auto c2 = text.find(':', c1 + 1);
  if (!hex4(text.substr(0, c1), s.vid)) return bad();
  if (!hex4(text.substr(c1 + 1, c2 == std::string_view::npos ? std::string_view::npos : c2 - c1 - 1), s.pid))
    return bad();
  if (c2 != std::string_view::npos) {
    if (c2 + 1 >= text.size()) return bad();
    s.serial = std::string(text.substr(c2 + 1));
  }
  return s;
}

std::string UsbSelector::to_string() const {
  char b[16];
  std::snprintf(b, sizeof b, "%04x:%04x", vid, pid);
  return std::string(b) + (serial ? ":" + *serial : "");
}

std::string UsbDeviceInfo::id() const {
  char b[16];
  std::snprintf(b, sizeof b, "%03u/%03u", bus, address);
  return b;
}

namespace {

// Calls fn(device, descriptor) for each device matching vid:pid.
template <typename Fn>
Status for_each_match(libusb_context* ctx, const UsbSelector& sel, Fn&& fn) {
  libusb_device** list = nullptr;
  ssize_t n = libusb_get_device_list(ctx, &list);
  if (n < 0)
    return fail(Domain::device, "listing USB devices: " + usb_text(static_cast<int>(n)),
                static_cast<std::int64_t>(LinkErrc::io));
  for (ssize_t i = 0; i < n; ++i) {
    libusb_device_descriptor d{};
    if (libusb_get_device_descriptor(list[i], &d) != 0 || !matches(sel, d)) continue;
    if (fn(list[i], d)) break;
  }
  libusb_free_device_list(list, 1);
  return {};
}

std::vector<UsbDeviceInfo> scan(libusb_context* ctx, const UsbSelector& sel) {
  std::vector<UsbDeviceInfo> out;
  (void)for_each_match(ctx, sel, [&](libusb_device* dev, const libusb_device_descriptor& d) {
    UsbDeviceInfo info{
        libusb_get_bus_number(dev), libusb_get_device_address(dev), d.idVendor, d.idProduct, {}};
    libusb_device_handle* h = nullptr;
    if (libusb_open(dev, &h) == 0) {
      info.serial = read_serial(h, d);
      libusb_close(h);
    }
    if (!sel.serial || info.serial == *sel.serial) out.push_back(info);
    return false;
  });
  return out;
}

}  // namespace

Result<std::vector<UsbDeviceInfo>> list_usb_devices(const UsbSelector& selector) {
  libusb_context* ctx = nullptr;
  int rc = libusb_init(&ctx);
  if (rc != 0) return std::unexpected(link_error(LinkErrc::io, "cannot start libusb: " + usb_text(rc)));
  auto out = scan(ctx, selector);
  libusb_exit(ctx);
  return out;
}

Error UsbLink::usb_failure(int rc, std::string_view what) const {
  if (rc == LIBUSB_ERROR_NO_DEVICE)
    return link_error(LinkErrc::disconnected, "device disconnected: " + description() + " (" +
                                                  std::string(what) +
                                                  "); reconnect the device and run again");
  return link_error(LinkErrc::io, std::string(what) + " on " + description() + ": " + usb_text(rc));
}

Result<std::unique_ptr<UsbLink>> UsbLink::open(const UsbSelector& selector) {
  std::unique_ptr<UsbLink> link(new UsbLink());
  int rc = libusb_init(&link->ctx_);
  if (rc != 0) return std::unexpected(link_error(LinkErrc::io, "cannot start libusb: " + usb_text(rc)));
  int open_rc = 0;
  KL_CHECK(for_each_match(link->ctx_, selector, [&](libusb_device* dev, const libusb_device_descriptor& d) {
    libusb_device_handle* h = nullptr;
    int r = libusb_open(dev, &h);
    if (r != 0) {
      open_rc = r;
      return false;
    }
    std::string serial = read_serial(h, d);
    if (selector.serial && serial != *selector.serial) {
      libusb_close(h);
      return false;
    }
    link->handle_ = h;
    link->info_ = {libusb_get_bus_number(dev), libusb_get_device_address(dev), d.idVendor, d.idProduct,
                   serial};
    return true;
  }));
  if (!link->handle_) {
    if (open_rc == LIBUSB_ERROR_ACCESS)
      return std::unexpected(link_error(
          LinkErrc::open_failed, "USB device " + selector.to_string() +
                                     ": permission denied (add a udev rule giving the station user access)"));
    return std::unexpected(link_error(
        LinkErrc::not_found,
        "no USB device " + selector.to_string() + " is connected; plug it in or check VID:PID and serial"));
  }
  // Find the vendor-specific interface with one bulk IN and one bulk OUT endpoint.
  libusb_config_descriptor* cfg = nullptr;
  rc = libusb_get_active_config_descriptor(libusb_get_device(link->handle_), &cfg);
  if (rc != 0) return std::unexpected(link->usb_failure(rc, "reading the configuration descriptor"));
  for (int i = 0; i < cfg->bNumInterfaces && link->interface_ < 0; ++i) {
    for (int a = 0; a < cfg->interface[i].num_altsetting; ++a) {
      const libusb_interface_descriptor& alt = cfg->interface[i].altsetting[a];
      if (alt.bInterfaceClass != LIBUSB_CLASS_VENDOR_SPEC) continue;
      unsigned char in = 0, out = 0;
      for (int e = 0; e < alt.bNumEndpoints; ++e) {
        const auto& ep = alt.endpoint[e];
        if ((ep.bmAttributes & LIBUSB_TRANSFER_TYPE_MASK) != LIBUSB_TRANSFER_TYPE_BULK) continue;
        if (ep.bEndpointAddress & LIBUSB_ENDPOINT_IN) {
          if (!in) in = ep.bEndpointAddress;
        } else if (!out) {
          out = ep.bEndpointAddress;
        }
      }
      if (in && out) {
        link->interface_ = alt.bInterfaceNumber;
        link->ep_in_ = in;
        link->ep_out_ = out;
        break;
      }
    }
  }
  libusb_free_config_descriptor(cfg);
  if (link->interface_ < 0)
    return std::unexpected(
        link_error(LinkErrc::not_found, "USB device " + link->description() +
                                            " has no vendor-specific interface with bulk IN and OUT "
                                            "endpoints; is it running Keyline protocol firmware?"));
  rc = libusb_claim_interface(link->handle_, link->interface_);
  if (rc == LIBUSB_ERROR_BUSY) {
    link->interface_ = -1;
    return std::unexpected(link_error(
        LinkErrc::busy, "USB device " + link->description() + " is already in use by another process"));
  }
  if (rc != 0) {
    link->interface_ = -1;
    return std::unexpected(link->usb_failure(rc, "claiming the vendor interface"));
  }
  log::get("link")->debug("opened {}", link->description());
  return link;
}

UsbLink::~UsbLink() { close(); }

void UsbLink::close() noexcept {
  if (handle_) {
    if (interface_ >= 0) libusb_release_interface(handle_, interface_);
    libusb_close(handle_);
    handle_ = nullptr;
  }
  if (ctx_) {
    libusb_exit(ctx_);
    ctx_ = nullptr;
  }
}

std::string UsbLink::description() const {
  char b[32];
  std::snprintf(b, sizeof b, "usb %04x:%04x", info_.vid, info_.pid);
  return std::string(b) + (info_.serial.empty() ? "" : " serial " + info_.serial) + " (bus " + info_.id() +
         ")";
}

Status UsbLink::send(ByteView bytes) {
  if (!handle_) return std::unexpected(link_error(LinkErrc::io, description() + " is closed"));
  std::size_t off = 0;
  while (off < bytes.size()) {
    int done = 0;
    const int len = static_cast<int>(std::min<std::size_t>(bytes.size() - off, 16384));
    int rc = libusb_bulk_transfer(handle_, ep_out_, const_cast<unsigned char*>(bytes.data() + off), len,
                                  &done, 5000);
    off += static_cast<std::size_t>(std::max(done, 0));
    count_sent(static_cast<std::size_t>(std::max(done, 0)));
    if (rc != 0) return std::unexpected(usb_failure(rc, "bulk OUT"));
  }
  return {};
}

Result<std::size_t> UsbLink::receive(std::span<unsigned char> buf, Deadline deadline) {
  if (!handle_) return std::unexpected(link_error(LinkErrc::io, description() + " is closed"));
  if (rx_.empty()) {
    for (;;) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
              .count();
      if (left <= 0) return std::size_t{0};
      rx_.resize(16384);  // a multiple of the packet size: no overflow
      int got = 0;
      int rc = libusb_bulk_transfer(handle_, ep_in_, rx_.data(), static_cast<int>(rx_.size()), &got,
                                    static_cast<unsigned>(std::min<long long>(left, 60'000)));
      rx_.resize(static_cast<std::size_t>(std::max(got, 0)));
      if (got > 0) {
        count_received(static_cast<std::size_t>(got));
        break;
      }
      if (rc == LIBUSB_ERROR_TIMEOUT) continue;
      if (rc != 0) return std::unexpected(usb_failure(rc, "bulk IN"));
    }
  }
  const std::size_t n = std::min(buf.size(), rx_.size());
  std::memcpy(buf.data(), rx_.data(), n);
  rx_.erase(rx_.begin(), rx_.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

}  // namespace keyline::station::link
