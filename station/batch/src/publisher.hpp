#pragma once
// The durable steps after a batch group's ledger commit, done by a thread of
// their own so that the signing threads never wait for the disk (internal to
// station/batch; see docs/batch.md for the order of durable steps).
//
// A group commits without an fsync (SQLite's synchronous=NORMAL). The
// publisher then syncs the ledger's WAL: from then on the group's rows
// survive a power loss (`durable()` says up to which group). Only then does
// the writer write the group's certificate files and hand their manifest
// lines to publish(); the publisher syncs the file system and appends the
// lines. So the order stays: ledger row, certificate file, manifest line.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keyline/core/error.hpp"
#include "out_dir.hpp"

namespace keyline::station::batch::detail {

class Publisher {
 public:
  // `wal` is the ledger's write-ahead log (LEDGER-wal). If it cannot be
  // opened, commits stay durable on their own (deferred() is false) and
  // the publisher only publishes.
  Publisher(OutDir& out, JsonlFile& manifest, JsonlFile& rejected, const std::filesystem::path& wal);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Whether group commits may skip their fsync (the publisher syncs the WAL).
  bool deferred() const { return wal_fd_ >= 0; }

  // Group `group` (numbered from 1, in commit order) is committed.
  void committed(std::uint64_t group);
  // The last group whose ledger rows are on disk.
  std::uint64_t durable();
  // Waits until fewer than `max_behind` committed groups wait for their WAL
  // sync or for publishing (the writer's back-pressure); an error if the
  // publisher failed.
  Status wait_for_room(std::uint64_t max_behind);
  // Waits until group `group` is durable or the publisher failed.
  Status wait_durable(std::uint64_t group);
  // Lines to append once the files they name are synced (in call order).
  void publish(std::string manifest_lines, std::string rejected_lines);
  // Waits until everything handed over is published, then stops the thread.
  Status finish();
  // The publisher's first error, if any (it stops working after one).
  std::optional<Error> error();

 private:
  void run();
  struct Lines {
    std::string manifest, rejected;
  };
  OutDir& out_;
  JsonlFile& manifest_;
  JsonlFile& rejected_;
  int wal_fd_ = -1;
  std::filesystem::path wal_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t committed_ = 0;  // under mu_
  std::uint64_t durable_ = 0;    // under mu_
  std::deque<Lines> queue_;      // under mu_
  bool publishing_ = false;      // under mu_: lines taken from queue_, not yet on disk
  bool stop_ = false;            // under mu_
  std::optional<Error> error_;   // under mu_
  std::thread thread_;
};

}  // namespace keyline::station::batch::detail
