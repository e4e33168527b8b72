#include "keyline/station/batch.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <fstream>
#include <thread>
#include <variant>

#include <nlohmann/json.hpp>
#include <openssl/cms.h>
#include <openssl/pem.h>

#include "keyline/ca/csr_policy.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/secret.hpp"
#include "device_keys.hpp"
#include "out_dir.hpp"

namespace keyline::station::batch {

namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------------------ sources

struct Item {
  std::string input;                      // file name or registration ID (for messages)
  std::optional<std::string> generate_id;  // registration ID (generate)
};

// The inputs, handed out in chunks to whichever worker asks next. CSR files
// are named here and read by the worker (relative to the folder, so the
// kernel does not walk the whole path for each one).
class Source {
 public:
  ~Source() {
    if (dir_) ::closedir(dir_);
  }

  Status open(const Options& o) {
    o_ = &o;
    if (o.mode == Mode::csr_dir) {
      dir_ = ::opendir(o.csr_dir.c_str());
      if (!dir_) return fail(Domain::input, "cannot read --csr-dir " + files::errno_text(o.csr_dir, errno));
    } else if (!o.ids_file.empty()) {
      ids_.open(o.ids_file);
      if (!ids_) return fail(Domain::input, "cannot read --ids " + o.ids_file.string());
    }
    return {};
  }

  int dir_fd() const { return dir_ ? ::dirfd(dir_) : -1; }

  // Up to `n` more items; none when the source is exhausted or `stop` is set.
  Result<std::vector<Item>> next(std::size_t n, const std::atomic<bool>& stop) {
    std::vector<Item> items;
    items.reserve(n);
    std::lock_guard lock(mu_);
    while (items.size() < n && !done_ && !stop.load()) {
      if (dir_) {
        errno = 0;
        dirent* e = ::readdir(dir_);
        if (!e) {
          done_ = true;
          if (errno) return fail(Domain::io, "reading --csr-dir " + files::errno_text(o_->csr_dir, errno));
          break;
        }
        if (e->d_name[0] == '.') continue;
        bool regular = e->d_type == DT_REG;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
          struct stat st{};
          regular = ::fstatat(dirfd(dir_), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode);
        }
        if (regular) items.push_back(Item{e->d_name, std::nullopt});
      } else if (ids_.is_open()) {
        if (!std::getline(ids_, line_)) {
          done_ = true;
          break;
        }
        auto a = line_.find_first_not_of(" \t\r");
        if (a == std::string::npos || line_[a] == '#') continue;
        auto b = line_.find_last_not_of(" \t\r");
        std::string id = line_.substr(a, b - a + 1);
        items.push_back(Item{id, id});
      } else {
        if (seq_ >= o_->count.value_or(0)) {
          done_ = true;
          break;
        }
        KL_TRY(std::string id, expand_template(o_->id_template, o_->start + seq_));
        ++seq_;
        items.push_back(Item{id, id});
      }
    }
    return items;
  }

 private:
  const Options* o_ = nullptr;
  std::mutex mu_;
  DIR* dir_ = nullptr;
  std::ifstream ids_;
  std::string line_;
  std::uint64_t seq_ = 0;
  bool done_ = false;
};

// Reads one CSR file of the folder: open, one read, close.
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
  if (fd < 0) return fail(Domain::input, "cannot read " + files::errno_text(o.csr_dir / name, errno));
  thread_local std::array<char, ca::kMaxCsrBytes + 1> buf;
  std::size_t got = 0;
  for (;;) {
    std::size_t want = buf.size() - got;
    ssize_t n = ::read(fd, buf.data() + got, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail(Domain::input, "cannot read " + files::errno_text(o.csr_dir / name, err));
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

// ------------------------------------------------------------------ results

struct Issued {
  std::string input;
  ca::IssuedCertificate cert;
  std::string key_bytes;  // encrypted (DER CMS) or plain PEM; empty for CSR batches
};
struct Rejected {
  std::string input;
  std::string reason;
};
struct AlreadyDone {};
// The key store (or the machine) failed: no input is at fault, and no
// further input can succeed. The batch stops; what was signed is committed.
struct Fatal {
  Error error;
};
using Outcome = std::variant<Issued, Rejected, AlreadyDone, Fatal>;

// Whether an issuance error belongs to the input (reject it, go on) or to
// the station (stop the batch).
Outcome issue_failure(const std::string& input, const Error& e) {
  if (e.domain() == Domain::input || e.domain() == Domain::policy) return Rejected{input, e.message()};
  return Fatal{e};
}

// ------------------------------------------------------------------ keys

class KeyWrapper {
 public:
  static Result<KeyWrapper> create(const Options& o) {
    KeyWrapper w;
    if (o.mode != Mode::generate) return w;
    if (o.plain_keys == !o.encrypt_keys_to.empty())
      return fail(Domain::usage, "--generate needs exactly one of --encrypt-keys-to CERT or --plain-keys");
    if (!o.plain_keys) {
      KL_TRY(std::string pem, files::read(o.encrypt_keys_to, 1 << 20));
      auto cert = x509_from_pem(pem, o.encrypt_keys_to.string());
      if (!cert) return std::unexpected(cert.error().with_context("--encrypt-keys-to"));
      w.recipient_ = std::shared_ptr<X509>(cert->release(), X509_free);
    }
    return w;
  }

  bool encrypted() const { return recipient_ != nullptr; }
  const char* file_suffix() const { return encrypted() ? ".key.p7m" : ".key.pem"; }

  // The PKCS#8 PEM, enveloped to the recipient when there is one.
  Result<std::string> wrap(const SecretString& pem) const {
    if (!encrypted()) return std::string(pem.reveal());
    BioPtr in(BIO_new_mem_buf(pem.reveal().data(), static_cast<int>(pem.reveal().size())));
    X509StackPtr recips(sk_X509_new_null());
    X509_up_ref(recipient_.get());
    sk_X509_push(recips.get(), recipient_.get());
    std::unique_ptr<CMS_ContentInfo, Free<CMS_ContentInfo_free>> cms(
        CMS_encrypt(recips.get(), in.get(), EVP_aes_256_gcm(), CMS_BINARY));
    if (!cms) return std::unexpected(openssl_error(Domain::openssl, "encrypting a generated key to the recipient"));
    unsigned char* der = nullptr;
    int len = i2d_CMS_ContentInfo(cms.get(), &der);
    if (len <= 0) return std::unexpected(openssl_error(Domain::openssl, "encoding CMS"));
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
  }

 private:
  std::shared_ptr<X509> recipient_;
};

// ------------------------------------------------------------------ worker

struct Worker {
  const Options& o;
  const ca::Authority& authority;
  const ca::Profile& profile;
  const KeyWrapper& keys;
  const std::string& batch_id;
  Ledger* reader;  // read-only connection of this worker
  // False for a batch with nothing committed yet: no input can be done
  // already, and a registration ID active elsewhere is refused by the
  // ledger's unique index when the writer commits, so the per-item lookup
  // is skipped.
  bool resuming;
  int input_dir_fd;  // the CSR folder (csr_dir)

  // Done in this batch already? Active elsewhere? nullopt = go ahead.
  // `key` (CSR batches): a certificate in this batch counts as this input's
  // only if it is for the same public key.
  std::optional<Outcome> prior(const std::string& input, const std::string& id, const Bytes* key = nullptr) {
    if (!resuming) return std::nullopt;
    auto ref = reader->active_ref(id, profile.name);
    if (!ref) return Rejected{input, ref.error().message()};
    if (!*ref) return std::nullopt;
    if ((*ref)->batch_id == batch_id) {
      if (!key || (*ref)->pubkey_sha256 == sha256_hex(*key)) return AlreadyDone{};
      return Rejected{input, "registration ID '" + id + "' appears more than once in this batch; certificate " +
                                 (*ref)->serial + " was issued for another input's key"};
    }
    return Rejected{input, "registration ID '" + id + "' already has an active certificate (serial " +
                               (*ref)->serial + ") outside this batch"};
  }

  Outcome process(const Item& item) {
    if (item.generate_id) return generate(item);
    auto payload = read_input(input_dir_fd, o, item.input);
    if (!payload) return Rejected{item.input, payload.error().message()};
    std::optional<ca::AcceptedCsr> accepted = ca::accept_simple_csr(*payload, profile);
    if (!accepted) {  // not the simple case: the full parser decides and explains
      auto csr = ca::parse_csr(*payload, item.input);
      if (!csr) return Rejected{item.input, csr.error().message()};
      auto checked = ca::check_csr(**csr, profile, std::nullopt, item.input);
      if (!checked) return Rejected{item.input, checked.error().message()};
      accepted = std::move(*checked);
    }
    if (auto p = prior(item.input, accepted->registration_id.str(), &accepted->public_key)) return *p;
    auto cert = authority.issue({accepted->registration_id, accepted->public_key, std::nullopt}, profile);
    if (!cert) return issue_failure(item.input, cert.error());
    return Issued{item.input, std::move(*cert), {}};
  }

  Outcome generate(const Item& item) {
    auto id = ca::RegistrationId::for_certificate(*item.generate_id);
    if (!id) return Rejected{item.input, id.error().message()};
    if (auto p = prior(item.input, id->str())) return *p;
    auto key = generate_device_key(o.key_algorithm);
    if (!key) return issue_failure(item.input, key.error());
    auto cert = authority.issue({*id, key->spki, std::nullopt}, profile);
    if (!cert) return issue_failure(item.input, cert.error());
    auto wrapped = keys.wrap(key->pkcs8_pem);
    if (!wrapped) return issue_failure(item.input, wrapped.error());
    return Issued{item.input, std::move(*cert), std::move(*wrapped)};
  }
};

using detail::issued_record_body;
using detail::JsonlFile;
using detail::kPendingSuffix;
using detail::manifest_line;
using detail::OutDir;
using detail::pending_key_name;
using detail::repair_jsonl;

std::string random_batch_id() {
  unsigned char b[8];
  SystemRng().fill(b);
  return "b-" + to_hex(b);
}

// What random_batch_id() makes: "b-" and 16 upper-case hex digits. A batch
// ID read back from batch.json goes into audit records and file names.
bool is_batch_id(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const auto& id = v.get_ref<const std::string&>();
  return id.size() == 18 && id.starts_with("b-") &&
         id.find_first_not_of("0123456789ABCDEF", 2) == std::string::npos;
}

}  // namespace

Result<std::string> expand_template(const std::string& tmpl, std::uint64_t seq) {
  auto open = tmpl.find("{seq");
  if (open == std::string::npos)
    return fail(Domain::usage, "--id-template '" + tmpl + "' has no {seq} or {seq:0N} placeholder");
  auto close = tmpl.find('}', open);
  if (close == std::string::npos) return fail(Domain::usage, "--id-template '" + tmpl + "' has an unclosed {seq");
  std::string spec = tmpl.substr(open + 4, close - open - 4);
  std::size_t width = 0;
  if (!spec.empty()) {
    if (spec.size() < 3 || spec[0] != ':' || spec[1] != '0' ||
        spec.find_first_not_of("0123456789", 1) != std::string::npos)
      return fail(Domain::usage, "--id-template placeholder must be {seq} or {seq:0N}, e.g. {seq:06}");
    width = std::stoul(spec.substr(1));
    if (width > 20) return fail(Domain::usage, "--id-template width must be at most 20");
  }
  std::string number = std::to_string(seq);
  if (number.size() < width) number.insert(0, width - number.size(), '0');
  return tmpl.substr(0, open) + number + tmpl.substr(close + 1);
}

namespace {

// One run of a batch. run() checks the options, opens (or resumes) the
// batch, finishes what an interrupted run left, then runs the pipeline:
// --jobs N threads each take a chunk of inputs, read, check and sign them,
// and leave the outcomes for the writer. The writer is a role, not a
// thread: whichever worker finds a group ready (or the main thread, when a
// group has waited group_interval) takes it and commits, while the others
// go on signing. So --jobs N keeps N cores busy and no more; the main
// thread only reports progress.
class Pipeline {
 public:
  Pipeline(const Options& o, const ca::Authority& authority, const ca::Profile& profile, const fs::path& ledger_path,
           const Clock& clock, const std::atomic<bool>& stop, const ProgressFn& progress_fn)
      : o_(o),
        authority_(authority),
        profile_(profile),
        ledger_path_(ledger_path),
        clock_(clock),
        stop_(stop),
        progress_fn_(progress_fn),
        mode_name_(o.mode == Mode::csr_dir ? "csr-dir" : "generate"),
        profile_json_(audit::canonical_body(profile.name)),
        key_origin_(o.mode == Mode::generate ? "generated by the station" : "from CSR") {}

  Result<Summary> run() {
    KL_CHECK(check_options());
    KL_CHECK(open_batch());
    KL_CHECK(reconcile());
    KL_TRY(std::uint64_t committed_before, ledger_->batch_certificate_count(summary_.batch_id));
    resuming_ = committed_before > 0;
    progress_.total = count_items(o_);
    KL_CHECK(source_.open(o_));
    // One group waiting while the writer commits the one it took: the
    // writer is the backpressure, and peak memory stays near two groups.
    pending_cap_ = std::max<std::size_t>(o_.group_rows, 2 * kChunk * o_.jobs);
    last_commit_ns_ = SteadyClock::now().time_since_epoch().count();
    started_ = SteadyClock::now();

    std::vector<std::thread> workers;
    workers_left_ = o_.jobs;
    for (unsigned i = 0; i < o_.jobs; ++i) workers.emplace_back([this] { work(); });
    // The main thread: progress, and the commit of a group that has waited
    // long enough while the workers are slow (a TPM signs ~2,000/s).
    const auto tick = std::min<std::chrono::milliseconds>(o_.group_interval, std::chrono::milliseconds(200));
    auto last_progress = SteadyClock::now();
    for (;;) {
      {
        std::unique_lock lock(done_mu_);
        if (done_cv_.wait_for(lock, tick, [&] { return workers_left_ == 0; })) break;
      }
      write(false);
      if (SteadyClock::now() - last_progress >= std::chrono::milliseconds(200)) {
        report();
        last_progress = SteadyClock::now();
      }
    }
    for (auto& t : workers) t.join();
    write(true);  // what is left, in one last group
    report();
    if (writer_status_) writer_status_ = rejected_.flush();
    if (writer_status_) writer_status_ = record_outcome();
    // Pending files of a failed group are removed by the next run's reconcile.
    if (!writer_status_) return std::unexpected(writer_status_.error());
    if (pipeline_error_) return std::unexpected(*pipeline_error_);
    progress_.seconds = std::chrono::duration<double>(SteadyClock::now() - started_).count();
    summary_.progress = progress_;
    summary_.interrupted = stop_.load();
    return summary_;
  }

 private:
  static constexpr std::size_t kChunk = 64;

  Status check_options() {
    if (o_.jobs < 1 || o_.jobs > 256) return fail(Domain::usage, "--jobs must be 1 to 256");
    if (o_.mode == Mode::csr_dir && !fs::is_directory(o_.csr_dir))
      return fail(Domain::input, "--csr-dir " + o_.csr_dir.string() + " is not a directory");
    if (o_.mode == Mode::generate && o_.ids_file.empty() && !o_.count)
      return fail(Domain::usage, "--generate needs --ids FILE or --count N with --id-template");
    if (o_.mode == Mode::generate && !o_.ids_file.empty() && o_.count)
      return fail(Domain::usage, "give either --ids or --count, not both");
    if (o_.count) KL_CHECK(expand_template(o_.id_template, o_.start));
    KL_TRY(keys_, KeyWrapper::create(o_));
    key_suffix_ = keys_.file_suffix();
    if (o_.mode == Mode::generate) {
      bool allowed = o_.key_algorithm == hsm::Algorithm::ec_p256   ? profile_.allow_ec_p256
                     : o_.key_algorithm == hsm::Algorithm::ec_p384 ? profile_.allow_ec_p384
                                                                   : profile_.allow_rsa;
      if (!allowed)
        return fail(Domain::policy, "profile '" + profile_.name + "' does not allow " +
                                        std::string(hsm::to_string(o_.key_algorithm)) + " keys (--key-algorithm)");
    }
    return {};
  }

  // The out dir, the ledger, and which batch this out dir is: made once
  // (batch.json), then fixed. Records the start (or resumption) in the trail.
  Status open_batch() {
    KL_CHECK(out_.open(o_.out_dir));
    KL_TRY(Ledger ledger, Ledger::open(ledger_path_));
    ledger_.emplace(std::move(ledger));
    // The writer keeps the certificate indexes in memory (the one-active
    // index takes inputs in directory order, which is random), and
    // checkpoints the WAL every ~40 MB instead of every 4 MB, so a page
    // changed by many groups is copied to the database once. Both last as
    // long as this connection.
    KL_CHECK(ledger_->exec("PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=10000;"));

    fs::path batch_file = o_.out_dir / "batch.json";
    if (fs::exists(batch_file)) {
      KL_TRY(std::string text, files::read(batch_file, 1 << 16));
      json j = json::parse(text, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("batch_id") || !is_batch_id(j["batch_id"]))
        return fail(Domain::state, batch_file.string() +
                                       " is damaged (it needs a batch_id like b-0123456789ABCDEF); this out dir "
                                       "cannot be resumed: restore the file or use another --out");
      summary_.batch_id = j["batch_id"].get<std::string>();
      if (j.value("profile", "") != profile_.name || j.value("mode", "") != mode_name_ ||
          j.value("key_file_suffix", "") != (o_.mode == Mode::generate ? key_suffix_ : ""))
        return fail(Domain::usage, "out dir " + o_.out_dir.string() + " holds batch " + summary_.batch_id +
                                       " made with mode " + j.value("mode", "?") + ", profile " +
                                       j.value("profile", "?") + ", keys " + j.value("key_file_suffix", "-") +
                                       "; resume it with the same options or use another --out");
    } else {
      summary_.batch_id = random_batch_id();
      json j = {{"batch_id", summary_.batch_id}, {"profile", profile_.name}, {"mode", mode_name_},
                {"key_file_suffix", o_.mode == Mode::generate ? key_suffix_ : ""},
                {"created_at", format_utc(clock_.now())}};
      KL_CHECK(files::write_atomic(batch_file, j.dump(2) + "\n", 0644));
    }
    trail_.emplace(*ledger_, o_.actor, clock_);
    KL_TRY(auto batch_row, ledger_->batch(summary_.batch_id));
    KL_TRY(auto tx, ledger_->begin());
    if (!batch_row)
      KL_CHECK(ledger_->insert_batch({summary_.batch_id, fs::absolute(o_.out_dir).string(), profile_.name, mode_name_,
                                      clock_.now().time_since_epoch().count()}));
    KL_TRY(auto r1, trail_->append("keystore.opened", {{"key_store", o_.key_store}}));
    KL_TRY(auto r2, trail_->append(batch_row ? "batch.resumed" : "batch.started",
                                   {{"batch", summary_.batch_id}, {"out_dir", fs::absolute(o_.out_dir).string()},
                                    {"profile", profile_.name}, {"mode", mode_name_}, {"jobs", o_.jobs}}));
    (void)r1, (void)r2;
    KL_CHECK(tx.commit());
    return files::write_atomic(o_.out_dir / "chain.pem", authority_.chain_pem(), 0644);
  }

  // Finishes what an interrupted run left: committed rows whose files were
  // not renamed or whose manifest line was not written; then removes the
  // pending files of certificates that were never committed.
  Status reconcile() {
    KL_TRY(std::uint64_t manifest_lines, repair_jsonl(o_.out_dir / "manifest.jsonl"));
    KL_CHECK(manifest_.open(o_.out_dir / "manifest.jsonl", false));
    KL_CHECK(rejected_.open(o_.out_dir / "rejected.jsonl", true));
    KL_CHECK(ledger_->for_each_batch_certificate(
        summary_.batch_id, manifest_lines, [&](const CertificateRecord& r) -> Status {
          // The certificate file may be missing or cut short: written again from the ledger.
          std::error_code ec;
          KL_TRY(X509Ptr x, x509_from_der(r.der));
          KL_CHECK(files::write_atomic(o_.out_dir / (r.registration_id + ".pem"), to_pem(x.get()), 0644));
          std::string key_file, key_sha;
          if (o_.mode == Mode::generate) {
            key_file = r.registration_id + key_suffix_;
            if (!fs::exists(o_.out_dir / key_file, ec)) {
              std::string pending = pending_key_name(r.registration_id, r.serial, key_suffix_);
              if (!fs::exists(o_.out_dir / pending, ec))
                return fail(Domain::state, "the key file for " + r.registration_id + " (certificate " + r.serial +
                                               ") is missing from " + o_.out_dir.string() +
                                               "; revoke that certificate and issue it again with --reissue");
              KL_CHECK(out_.rename(pending, key_file));
            }
            KL_TRY(std::string kb, files::read(o_.out_dir / key_file, 1 << 20));
            key_sha = sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(kb.data()), kb.size()));
          }
          manifest_.add(manifest_line(r.registration_id, r.serial, r.cert_sha256, r.pubkey_sha256, r.not_after,
                                      key_file, key_sha));
          ++summary_.recovered;
          return {};
        }));
    KL_CHECK(out_.sync());
    KL_CHECK(manifest_.flush());
    if (summary_.recovered)
      log::get("batch")->info("recovered {} certificate(s) committed by an interrupted run", summary_.recovered);
    // Pending files left now belong to certificates that were never committed.
    std::error_code ec;
    for (fs::directory_iterator it(o_.out_dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.starts_with('.') && name.ends_with(kPendingSuffix)) out_.remove(name);
    }
    return {};
  }

  // ---------------------------------------------------------------- workers

  void work() {
    auto reader = Ledger::open_readonly(ledger_path_);
    if (!reader) {
      fail_pipeline(reader.error());
    } else {
      Worker w{o_, authority_, profile_, keys_, summary_.batch_id, &*reader, resuming_, source_.dir_fd()};
      while (!failed_.load()) {
        auto chunk = source_.next(kChunk, stop_);
        if (!chunk) {
          fail_pipeline(chunk.error());
          break;
        }
        if (chunk->empty()) break;
        std::vector<Outcome> outcomes;
        outcomes.reserve(chunk->size());
        for (const Item& item : *chunk) outcomes.push_back(w.process(item));
        {
          std::unique_lock lock(pending_mu_);
          pending_space_.wait(lock, [&] { return pending_.size() < pending_cap_ || failed_.load(); });
          if (failed_.load()) break;
          for (Outcome& outcome : outcomes) pending_.push_back(std::move(outcome));
        }
        write(false);
      }
    }
    std::lock_guard lock(done_mu_);
    --workers_left_;
    done_cv_.notify_all();
  }

  void stop_pipeline() {
    failed_ = true;
    std::lock_guard lock(pending_mu_);
    pending_space_.notify_all();
  }

  // The first error of a worker or the source stops the pipeline.
  void fail_pipeline(const Error& e) {
    {
      std::lock_guard lock(done_mu_);
      if (!pipeline_error_) pipeline_error_ = e;
    }
    stop_pipeline();
  }

  // ----------------------------------------------------------------- writer

  bool interval_passed() const {
    return SteadyClock::now().time_since_epoch().count() - last_commit_ns_.load() >=
           std::chrono::nanoseconds(o_.group_interval).count();
  }

  // Whether the writer has work: a full group waiting, or any outcome that
  // has waited group_interval, or (`all`) anything at all.
  bool writer_due(bool all) {
    std::size_t n;
    {
      std::lock_guard lock(pending_mu_);
      n = pending_.size();
    }
    bool waiting = n > 0 || group_waiting_.load();
    return n >= o_.group_rows || (waiting && (all || interval_passed()));
  }

  // Takes the writer role if it is free and there is work, and writes
  // until there is none; with `all`, commits everything taken.
  void write(bool all) {
    while (!writer_failed_.load() && writer_due(all)) {
      std::unique_lock role(writer_role_, std::try_to_lock);
      if (!role) return;  // another thread writes; it looks again before it lets go
      if (!writer_status_) return;
      std::vector<Outcome> taken;
      {
        std::lock_guard lock(pending_mu_);
        taken.swap(pending_);
        pending_space_.notify_all();
      }
      {
        std::lock_guard lock(progress_mu_);  // take() and flush_group() count
        for (Outcome& outcome : taken) {
          writer_status_ = take(outcome);
          if (!writer_status_) break;
        }
        if (writer_status_ && (all || interval_passed())) writer_status_ = flush_group();
        group_waiting_ = !group_.empty() || !rejections_.empty();
      }
      if (!writer_status_) {
        writer_failed_ = true;
        stop_pipeline();
      }
    }
  }

  // One outcome into the group (a generated key goes to disk as a pending
  // file first); a full group is committed.
  Status take(Outcome& outcome) {
    if (auto* issued = std::get_if<Issued>(&outcome)) {
      const auto& c = issued->cert;
      if (o_.mode == Mode::generate)
        KL_CHECK(out_.write_pending(pending_key_name(c.registration_id, c.serial_hex, key_suffix_), issued->key_bytes,
                                    keys_.encrypted() ? 0644 : 0600));
      group_.push_back(std::move(*issued));
    } else if (auto* rej = std::get_if<Rejected>(&outcome)) {
      rejected_.add({{"input", rej->input}, {"reason", rej->reason}});
      rejections_.emplace_back(rej->input, rej->reason);
      ++progress_.rejected;
    } else if (auto* fatal = std::get_if<Fatal>(&outcome)) {
      KL_CHECK(flush_group());  // what was signed before the failure is kept
      return std::unexpected(fatal->error.with_context("batch stopped"));
    } else {
      ++progress_.already_done;
    }
    if (group_.size() >= o_.group_rows) KL_CHECK(flush_group());
    return {};
  }

  // Rejections wait for the next group transaction to be recorded.
  Status record_rejections() {
    for (auto& [input, reason] : rejections_) {
      KL_TRY(auto rec, trail_->append("request.rejected", {{"batch", summary_.batch_id}, {"input", input},
                                                           {"profile", profile_.name}, {"reason", reason}}));
      (void)rec;
    }
    rejections_.clear();
    return {};
  }

  // Commits the group: its ledger rows and audit records in one
  // transaction, then REGID.pem and the keys' final names, a sync, and the
  // manifest lines.
  Status flush_group() {
    if (group_.empty()) {
      if (rejections_.empty()) return {};
      KL_TRY(auto tx, ledger_->begin());
      KL_CHECK(record_rejections());
      return tx.commit();
    }
    // Generated private keys exist nowhere else: they are on disk before
    // their certificates are committed. Certificates are in the ledger.
    if (o_.mode == Mode::generate) KL_CHECK(out_.sync());
    std::vector<bool> ok(group_.size(), true);
    {
      KL_TRY(auto tx, ledger_->begin());
      std::int64_t now = clock_.now().time_since_epoch().count();
      for (std::size_t i = 0; i < group_.size(); ++i) {
        KL_TRY(ok[i], insert(group_[i], now));
      }
      KL_CHECK(record_rejections());
      if (o_.on_commit) KL_CHECK(o_.on_commit(*trail_));
      KL_CHECK(tx.commit());
    }
    for (std::size_t i = 0; i < group_.size(); ++i) {
      const auto& c = group_[i].cert;
      if (!ok[i]) {
        if (o_.mode == Mode::generate) out_.remove(pending_key_name(c.registration_id, c.serial_hex, key_suffix_));
        continue;
      }
      KL_CHECK(out_.write_pending(c.registration_id + ".pem", c.pem, 0644));
      std::string key_file, key_sha;
      if (o_.mode == Mode::generate) {
        key_file = c.registration_id + key_suffix_;
        KL_CHECK(out_.rename(pending_key_name(c.registration_id, c.serial_hex, key_suffix_), key_file));
        key_sha = sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(group_[i].key_bytes.data()),
                                      group_[i].key_bytes.size()));
      }
      manifest_.add(manifest_line(c.registration_id, c.serial_hex, c.cert_sha256, c.pubkey_sha256,
                                  c.not_after.time_since_epoch().count(), key_file, key_sha));
      ++progress_.issued;
    }
    KL_CHECK(out_.sync());  // files are durable before the manifest says so
    KL_CHECK(manifest_.flush());
    KL_CHECK(rejected_.flush());
    group_.clear();
    last_commit_ns_ = SteadyClock::now().time_since_epoch().count();
    return {};
  }

  // One certificate's ledger row and audit record, inside the group's
  // transaction. False: the registration ID got an active certificate first
  // (the ledger's unique index said so); the input is rejected instead.
  Result<bool> insert(Issued& issued, std::int64_t now) {
    auto& c = issued.cert;
    CertificateRecord r;
    r.serial = c.serial_hex;
    r.registration_id = c.registration_id;
    r.profile = profile_.name;
    r.subject = std::move(c.subject);  // not needed after the commit
    r.cert_sha256 = c.cert_sha256;
    r.pubkey_sha256 = c.pubkey_sha256;
    r.not_before = c.not_before.time_since_epoch().count();
    r.not_after = c.not_after.time_since_epoch().count();
    r.issued_at = now;
    r.batch_id = summary_.batch_id;
    r.operator_name = o_.actor.operator_name;
    r.der = std::move(c.der);  // nor is the DER (the file is written from the PEM)
    auto st = ledger_->insert_certificate(r, false);
    if (!st) {
      if (st.error().domain() != Domain::policy) return std::unexpected(st.error());
      auto holder = ledger_->active_ref(c.registration_id, profile_.name);
      std::string reason = "registration ID '" + c.registration_id + "' already has an active certificate";
      if (holder && *holder)
        reason += " (serial " + (*holder)->serial + ((*holder)->batch_id == summary_.batch_id
                                                         ? ", issued in this batch for another input)"
                                                         : ", outside this batch)");
      rejected_.add({{"input", issued.input}, {"reason", reason}});
      ++progress_.rejected;
      KL_TRY(auto rec, trail_->append("request.rejected", {{"batch", summary_.batch_id}, {"input", issued.input},
                                                           {"profile", profile_.name}, {"reason", reason}}));
      (void)rec;
      return false;
    }
    KL_TRY(auto rec, trail_->append_canonical(
                         "certificate.issued",
                         issued_record_body(summary_.batch_id, r.cert_sha256, key_origin_, r.not_after, profile_json_,
                                            r.pubkey_sha256, r.registration_id, r.serial)));
    (void)rec;
    return true;
  }

  // The run's outcome closes its part of the trail. A run stopped by an
  // unreadable input folder is interrupted too (what was signed before is
  // committed); the body says why.
  Status record_outcome() {
    KL_TRY(auto tx, ledger_->begin());
    nlohmann::json body = {{"batch", summary_.batch_id},
                           {"issued", progress_.issued},
                           {"already_done", progress_.already_done},
                           {"rejected", progress_.rejected}};
    if (pipeline_error_) body["error"] = pipeline_error_->message();
    KL_TRY(auto rec,
           trail_->append(stop_.load() || pipeline_error_ ? "batch.interrupted" : "batch.finished", body));
    (void)rec;
    if (o_.on_commit) KL_CHECK(o_.on_commit(*trail_));
    return tx.commit();
  }

  void report() {
    if (!progress_fn_) return;
    Progress snapshot;
    {
      std::lock_guard lock(progress_mu_);
      snapshot = progress_;
    }
    snapshot.seconds = std::chrono::duration<double>(SteadyClock::now() - started_).count();
    progress_fn_(snapshot);
  }

  const Options& o_;
  const ca::Authority& authority_;
  const ca::Profile& profile_;
  const fs::path& ledger_path_;
  const Clock& clock_;
  const std::atomic<bool>& stop_;
  const ProgressFn& progress_fn_;
  const std::string mode_name_;
  const std::string profile_json_;  // the profile name as a canonical JSON string
  const char* const key_origin_;
  KeyWrapper keys_;
  const char* key_suffix_ = "";

  OutDir out_;
  std::optional<Ledger> ledger_;       // the writer's connection
  std::optional<audit::Trail> trail_;  // on ledger_
  Summary summary_;
  JsonlFile manifest_, rejected_;
  // False for a batch with nothing committed yet (no per-item lookups).
  bool resuming_ = false;
  Source source_;

  Progress progress_;  // written under writer_role_, read under progress_mu_
  std::mutex progress_mu_;
  SteadyClock::time_point started_;

  // Outcomes waiting for the writer, at most pending_cap_; a worker that
  // finds it full waits (memory does not grow with the batch).
  std::size_t pending_cap_ = 0;
  std::mutex pending_mu_;
  std::condition_variable pending_space_;
  std::vector<Outcome> pending_;
  std::atomic<bool> failed_{false};

  std::mutex done_mu_;  // also guards pipeline_error_
  std::condition_variable done_cv_;
  unsigned workers_left_ = 0;
  std::optional<Error> pipeline_error_;

  // The writer role and what only its holder touches.
  std::mutex writer_role_;
  std::vector<Issued> group_;  // taken, waiting for its group commit
  std::vector<std::pair<std::string, std::string>> rejections_;  // input, reason; recorded with the next group
  Status writer_status_;
  std::atomic<bool> writer_failed_{false};
  std::atomic<bool> group_waiting_{false};
  std::atomic<std::int64_t> last_commit_ns_{0};
};

}  // namespace

Result<Summary> run(const Options& o, const ca::Authority& authority, const ca::Profile& profile,
                    const fs::path& ledger_path, const Clock& clock, const std::atomic<bool>& stop,
                    const ProgressFn& progress_fn) {
  Pipeline pipeline(o, authority, profile, ledger_path, clock, stop, progress_fn);
  return pipeline.run();
}

}  // namespace keyline::station::batch
