#include "publisher.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "keyline/core/files.hpp"

namespace keyline::station::batch::detail {

Publisher::Publisher(OutDir& out, JsonlFile& manifest, JsonlFile& rejected, const std::filesystem::path& wal)
    : out_(out), manifest_(manifest), rejected_(rejected), wal_(wal) {
  wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

Publisher::~Publisher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

void Publisher::committed(std::uint64_t group) {
  {
    std::lock_guard lock(mu_);
    committed_ = group;
    if (wal_fd_ < 0) durable_ = group;  // the commit synced itself
  }
  cv_.notify_all();
}

std::uint64_t Publisher::durable() {
  std::lock_guard lock(mu_);
  return durable_;
}

Status Publisher::wait_for_room(std::uint64_t max_behind) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return error_ || (committed_ - durable_ < max_behind && queue_.size() < max_behind); });
  if (error_) return std::unexpected(*error_);
  return {};
}

Status Publisher::wait_durable(std::uint64_t group) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return error_ || durable_ >= group; });
  if (error_) return std::unexpected(*error_);
  return {};
}

void Publisher::publish(std::string manifest_lines, std::string rejected_lines) {
  if (manifest_lines.empty() && rejected_lines.empty()) return;
  {
    std::lock_guard lock(mu_);
    queue_.push_back({std::move(manifest_lines), std::move(rejected_lines)});
  }
  cv_.notify_all();
}

Status Publisher::finish() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return error_ || (durable_ >= committed_ && queue_.empty() && !publishing_); });
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  if (error_) return std::unexpected(*error_);
  return {};
}

std::optional<Error> Publisher::error() {
  std::lock_guard lock(mu_);
  return error_;
}

void Publisher::run() {
  std::unique_lock lock(mu_);
  auto failed = [&](Error e) {
    error_ = std::move(e);
    publishing_ = false;
    cv_.notify_all();
  };
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || committed_ > durable_ || !queue_.empty(); });
    if (committed_ > durable_) {
      std::uint64_t target = committed_;
      lock.unlock();
      bool ok = ::fdatasync(wal_fd_) == 0;
      int err = errno;
      lock.lock();
      if (!ok) return failed(Error(Domain::io, "syncing the ledger's log " + files::errno_text(wal_, err)));
      durable_ = target;
      cv_.notify_all();
      continue;
    }
    if (!queue_.empty()) {
      std::deque<Lines> lines;
      lines.swap(queue_);
      publishing_ = true;
      lock.unlock();
      Status st = out_.sync();  // the files are durable before the manifest says so
      for (auto& l : lines) {
        if (!l.manifest.empty()) manifest_.add_lines(std::move(l.manifest));
        if (!l.rejected.empty()) rejected_.add_lines(std::move(l.rejected));
      }
      if (st) st = manifest_.flush();
      if (st) st = rejected_.flush();
      lock.lock();
      if (!st) return failed(st.error());
      publishing_ = false;
      cv_.notify_all();
      continue;
    }
    if (stop_) return;
  }
}

}  // namespace keyline::station::batch::detail
