#pragma once
// station::batch -- certificates for thousands to millions of devices with
// no device attached.
//
//   source (CSR folder | generated keys for an ID list or template)
//     -> N jobs (threads): read + parse + policy + issue, in parallel
//     -> the writer role, taken in turn by whichever job finds a group
//        ready: pending files, ledger group commit, rename, manifest
//   (--jobs N keeps N cores busy; see docs/batch.md)
//
// Guarantees (see docs/batch.md):
//  * streaming: queues are bounded, memory does not grow with the batch;
//  * exactly once: a certificate becomes visible in the out dir (REGID.pem)
//    only after its ledger row is committed; a re-run of the same command
//    reconciles what a crash left (pending files, manifest tail) and issues
//    only what is missing; every registration ID ends with one active
//    certificate;
//  * a bad input is rejected with its reason in rejected.jsonl and the batch
//    goes on.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "keyline/ca/authority.hpp"
#include "keyline/ca/profile.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/station/audit.hpp"
#include "keyline/station/ledger.hpp"

namespace keyline::station::batch {

namespace fs = std::filesystem;

enum class Mode { csr_dir, generate };

struct Options {
  Mode mode = Mode::csr_dir;
  fs::path csr_dir;
  fs::path ids_file;                 // generate: one registration ID per line
  std::optional<std::uint64_t> count;  // generate: with id_template
  std::string id_template;           // e.g. "sn-{seq:06}"
  std::uint64_t start = 1;
  fs::path out_dir;
  unsigned jobs = 1;
  // generate: where private keys go. Exactly one of the two.
  fs::path encrypt_keys_to;  // recipient certificate (CMS enveloped data)
  bool plain_keys = false;
  hsm::Algorithm key_algorithm = hsm::Algorithm::ec_p256;
  std::size_t group_rows = 1000;               // ledger rows per commit at most
  std::chrono::milliseconds group_interval{100};  // ... or this long
  // The audit trail: every issued certificate and rejected input is recorded
  // in the same transaction as its ledger row; `on_commit` runs inside each
  // group transaction (e.g. a signed checkpoint when one is due).
  audit::Actor actor;
  std::string key_store;  // URI, recorded as "keystore.opened"
  std::function<Status(audit::Trail&)> on_commit;
};

struct Progress {
  std::uint64_t issued = 0;        // this run
  std::uint64_t already_done = 0;  // found done from an earlier run
  std::uint64_t rejected = 0;
  std::uint64_t total = 0;  // known size of the source (0 = unknown)
  double seconds = 0;
};

struct Summary {
  std::string batch_id;
  Progress progress;
  std::uint64_t recovered = 0;  // finished from what an interrupted run left
  bool interrupted = false;
};

using ProgressFn = std::function<void(const Progress&)>;

// Runs (or resumes) the batch described by `options` into options.out_dir.
// `ledger_path` is opened once for writing (the writer) and read-only by
// each worker. `stop` is polled: when it becomes true, no new input is
// read, items in flight are finished and committed, and the summary says
// `interrupted`.
Result<Summary> run(const Options& options, const ca::Authority& authority,
                    const ca::Profile& profile, const fs::path& ledger_path, const Clock& clock,
                    const std::atomic<bool>& stop, const ProgressFn& progress);

// Expands "sn-{seq:06}" for seq = 42 to "sn-000042"; "{seq}" without width.
Result<std::string> expand_template(const std::string& tmpl, std::uint64_t seq);

}  // namespace keyline::station::batch
