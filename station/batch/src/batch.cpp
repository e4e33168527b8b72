#include "keyline/station/batch.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>
#include <variant>

#include <nlohmann/json.hpp>
#include <openssl/cms.h>
#include <openssl/pem.h>

#include "keyline/ca/csr_policy.hpp"
#include "keyline/core/bounded_queue.hpp"
#include "keyline/core/files.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/core/secret.hpp"
#include "device_keys.hpp"

namespace keyline::station::batch {

namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPendingSuffix = ".pending";

// ------------------------------------------------------------------ sources

struct Item {
  std::string input;                      // file name or registration ID (for messages)
  std::string payload;                    // CSR bytes (csr_dir)
  std::optional<std::string> generate_id;  // registration ID (generate)
  std::string read_error;                 // the source could not read this item
};

// Calls `fn` for each item until it returns false.
Status for_each_item(const Options& o, const std::atomic<bool>& stop,
                     const std::function<bool(Item)>& fn) {
  if (o.mode == Mode::csr_dir) {
    std::error_code ec;
    fs::directory_iterator it(o.csr_dir, ec), end;
    if (ec) return fail(Domain::input, "cannot read --csr-dir " + o.csr_dir.string() + ": " + ec.message());
    for (; it != end && !stop.load(); it.increment(ec)) {
      if (ec) return fail(Domain::io, "reading --csr-dir " + o.csr_dir.string() + ": " + ec.message());
      std::string name = it->path().filename().string();
      if (name.starts_with('.') || !it->is_regular_file(ec)) continue;
      Item item;
      item.input = name;
      auto data = files::read(it->path(), ca::kMaxCsrBytes);
      if (data) item.payload = std::move(*data);
      else item.read_error = data.error().message();
      if (!fn(std::move(item))) break;
    }
    return {};
  }
  if (!o.ids_file.empty()) {
    std::ifstream in(o.ids_file);
    if (!in) return fail(Domain::input, "cannot read --ids " + o.ids_file.string());
    std::string line;
    while (!stop.load() && std::getline(in, line)) {
      auto a = line.find_first_not_of(" \t\r");
      if (a == std::string::npos || line[a] == '#') continue;
      auto b = line.find_last_not_of(" \t\r");
      std::string id = line.substr(a, b - a + 1);
      if (!fn(Item{id, {}, id, {}})) break;
    }
    return {};
  }
  for (std::uint64_t i = 0; i < o.count.value_or(0) && !stop.load(); ++i) {
    KL_TRY(std::string id, expand_template(o.id_template, o.start + i));
    if (!fn(Item{id, {}, id, {}})) break;
  }
  return {};
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
    if (!item.read_error.empty()) return Rejected{item.input, item.read_error};
    if (item.generate_id) return generate(item);
    std::optional<ca::AcceptedCsr> accepted = ca::accept_simple_csr(item.payload, profile);
    if (!accepted) {  // not the simple case: the full parser decides and explains
      auto csr = ca::parse_csr(item.payload, item.input);
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

// ------------------------------------------------------------------ out dir

struct OutDir {
  fs::path dir;
  int dir_fd = -1;
  int lock_fd = -1;
  ~OutDir() {
    if (lock_fd >= 0) ::close(lock_fd);
    if (dir_fd >= 0) ::close(dir_fd);
  }

  Status open(const fs::path& path) {
    dir = path;
    KL_CHECK(files::ensure_dir(dir, 0755));
    dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) return fail(Domain::io, "cannot open --out " + files::errno_text(dir, errno));
    lock_fd = ::open((dir / ".keyline-batch.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
      return fail(Domain::state, "another 'keyline ca batch' is writing to " + dir.string() + "; wait for it to finish");
    return {};
  }

  Status sync() {
    if (::syncfs(dir_fd) != 0) return fail(Domain::io, "syncing " + files::errno_text(dir, errno));
    return {};
  }

  // Writes without fsync (the writer syncs the whole file system once per group).
  Status write_pending(const std::string& name, std::string_view data, unsigned mode) {
    fs::path p = dir / name;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return fail(Domain::io, "cannot write " + files::errno_text(p, errno));
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        ::close(fd);
        return fail(Domain::io, "cannot write " + files::errno_text(p, err));
      }
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return {};
  }

  Status rename(const std::string& from, const std::string& to) {
    if (::renameat(dir_fd, from.c_str(), dir_fd, to.c_str()) != 0)
      return fail(Domain::io, "cannot rename " + files::errno_text(dir / from, errno));
    return {};
  }

  void remove(const std::string& name) { ::unlinkat(dir_fd, name.c_str(), 0); }
};

std::string pending_key_name(const std::string& id, const std::string& serial, const char* suffix) {
  return "." + id + "." + serial + suffix + kPendingSuffix;
}

// One manifest.jsonl line. Every value is hex, a timestamp, or made of
// registration-ID characters (letters, digits, - . _ :), so no escaping is
// needed; written by hand because it is on the writer's hot path.
std::string manifest_line(const std::string& id, const std::string& serial, const std::string& cert_sha256,
                          const std::string& pubkey_sha256, std::int64_t not_after, const std::string& key_file,
                          const std::string& key_sha256) {
  std::string line;
  line.reserve(320);
  line += R"({"registration_id":")" + id + R"(","serial":")" + serial + R"(","cert_sha256":")" + cert_sha256 +
          R"(","pubkey_sha256":")" + pubkey_sha256 + R"(","not_after":")" +
          format_utc(TimePoint(std::chrono::seconds(not_after))) + R"(","cert_file":")" + id + R"(.pem")";
  if (!key_file.empty()) line += R"(,"key_file":")" + key_file + R"(","key_file_sha256":")" + key_sha256 + '"';
  line += "}";
  return line;
}

// Appends lines and fsyncs; the file only ever grows by whole lines.
class JsonlFile {
 public:
  Status open(const fs::path& path, bool truncate) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd_ < 0) return fail(Domain::io, "cannot open " + files::errno_text(path, errno));
    return {};
  }
  ~JsonlFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  void add(const json& j) { add(j.dump()); }
  void add(const std::string& line) {
    buffer_ += line;
    buffer_ += '\n';
  }
  Status flush() {
    if (buffer_.empty()) return {};
    std::size_t off = 0;
    while (off < buffer_.size()) {
      ssize_t n = ::write(fd_, buffer_.data() + off, buffer_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail(Domain::io, "cannot append to " + files::errno_text(path_, errno));
      off += static_cast<std::size_t>(n);
    }
    buffer_.clear();
    if (::fdatasync(fd_) != 0) return fail(Domain::io, "cannot sync " + files::errno_text(path_, errno));
    return {};
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::string buffer_;
};

// Keeps whole lines only (drops a line torn by a crash) and counts them.
Result<std::uint64_t> repair_jsonl(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    return fail(Domain::io, "cannot open " + files::errno_text(path, errno));
  }
  std::uint64_t lines = 0;
  off_t last_newline_end = 0, pos = 0;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i)
      if (buf[i] == '\n') {
        ++lines;
        last_newline_end = pos + i + 1;
      }
    pos += n;
  }
  if (pos != last_newline_end) {
    if (::ftruncate(fd, last_newline_end) != 0) {
      ::close(fd);
      return fail(Domain::io, "cannot repair " + files::errno_text(path, errno));
    }
    log::get("batch")->warn("dropped a torn last line from {}", path.string());
  }
  ::close(fd);
  return lines;
}

std::string random_batch_id() {
  unsigned char b[8];
  SystemRng().fill(b);
  return "b-" + to_hex(b);
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

Result<Summary> run(const Options& o, const ca::Authority& authority, const ca::Profile& profile,
                    const fs::path& ledger_path, const Clock& clock, const std::atomic<bool>& stop,
                    const ProgressFn& progress_fn) {
  auto logger = log::get("batch");
  if (o.jobs < 1 || o.jobs > 256) return fail(Domain::usage, "--jobs must be 1 to 256");
  if (o.mode == Mode::csr_dir && !fs::is_directory(o.csr_dir))
    return fail(Domain::input, "--csr-dir " + o.csr_dir.string() + " is not a directory");
  if (o.mode == Mode::generate && o.ids_file.empty() && !o.count)
    return fail(Domain::usage, "--generate needs --ids FILE or --count N with --id-template");
  if (o.mode == Mode::generate && !o.ids_file.empty() && o.count)
    return fail(Domain::usage, "give either --ids or --count, not both");
  if (o.count) KL_CHECK(expand_template(o.id_template, o.start));
  KL_TRY(KeyWrapper keys, KeyWrapper::create(o));
  if (o.mode == Mode::generate) {
    bool allowed = o.key_algorithm == hsm::Algorithm::ec_p256   ? profile.allow_ec_p256
                   : o.key_algorithm == hsm::Algorithm::ec_p384 ? profile.allow_ec_p384
                                                                : profile.allow_rsa;
    if (!allowed)
      return fail(Domain::policy, "profile '" + profile.name + "' does not allow " +
                                      std::string(hsm::to_string(o.key_algorithm)) + " keys (--key-algorithm)");
  }
  const std::string mode_name = o.mode == Mode::csr_dir ? "csr-dir" : "generate";

  OutDir out;
  KL_CHECK(out.open(o.out_dir));
  KL_TRY(Ledger ledger, Ledger::open(ledger_path));

  // Which batch this out dir is: made once, then fixed.
  Summary summary;
  fs::path batch_file = o.out_dir / "batch.json";
  if (fs::exists(batch_file)) {
    KL_TRY(std::string text, files::read(batch_file, 1 << 16));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("batch_id"))
      return fail(Domain::state, batch_file.string() + " is damaged; this out dir cannot be resumed");
    summary.batch_id = j["batch_id"].get<std::string>();
    if (j.value("profile", "") != profile.name || j.value("mode", "") != mode_name ||
        j.value("key_file_suffix", "") != (o.mode == Mode::generate ? keys.file_suffix() : ""))
      return fail(Domain::usage, "out dir " + o.out_dir.string() + " holds batch " + summary.batch_id +
                                     " made with mode " + j.value("mode", "?") + ", profile " +
                                     j.value("profile", "?") + ", keys " + j.value("key_file_suffix", "-") +
                                     "; resume it with the same options or use another --out");
  } else {
    summary.batch_id = random_batch_id();
    json j = {{"batch_id", summary.batch_id}, {"profile", profile.name}, {"mode", mode_name},
              {"key_file_suffix", o.mode == Mode::generate ? keys.file_suffix() : ""},
              {"created_at", format_utc(clock.now())}};
    KL_CHECK(files::write_atomic(batch_file, j.dump(2) + "\n", 0644));
  }
  audit::Trail trail(ledger, o.actor, clock);
  KL_TRY(auto batch_row, ledger.batch(summary.batch_id));
  {
    KL_TRY(auto tx, ledger.begin());
    if (!batch_row)
      KL_CHECK(ledger.insert_batch({summary.batch_id, fs::absolute(o.out_dir).string(), profile.name, mode_name,
                                    clock.now().time_since_epoch().count()}));
    KL_TRY(auto r1, trail.append("keystore.opened", {{"key_store", o.key_store}}));
    KL_TRY(auto r2, trail.append(batch_row ? "batch.resumed" : "batch.started",
                                 {{"batch", summary.batch_id}, {"out_dir", fs::absolute(o.out_dir).string()},
                                  {"profile", profile.name}, {"mode", mode_name}, {"jobs", o.jobs}}));
    (void)r1, (void)r2;
    KL_CHECK(tx.commit());
  }
  // Rejections wait for the next group transaction to be recorded.
  std::vector<std::pair<std::string, std::string>> rejections;
  KL_CHECK(files::write_atomic(o.out_dir / "chain.pem", authority.chain_pem(), 0644));

  // Reconcile what an interrupted run left: committed rows whose files were
  // not renamed or whose manifest line was not written.
  KL_TRY(std::uint64_t manifest_lines, repair_jsonl(o.out_dir / "manifest.jsonl"));
  JsonlFile manifest, rejected;
  KL_CHECK(manifest.open(o.out_dir / "manifest.jsonl", false));
  KL_CHECK(rejected.open(o.out_dir / "rejected.jsonl", true));
  const char* key_suffix = keys.file_suffix();
  KL_CHECK(ledger.for_each_batch_certificate(summary.batch_id, manifest_lines, [&](const CertificateRecord& r) -> Status {
    // The certificate file may be missing or cut short: written again from the ledger.
    std::error_code ec;
    KL_TRY(X509Ptr x, x509_from_der(r.der));
    KL_CHECK(files::write_atomic(o.out_dir / (r.registration_id + ".pem"), to_pem(x.get()), 0644));
    std::string key_file, key_sha;
    if (o.mode == Mode::generate) {
      key_file = r.registration_id + key_suffix;
      if (!fs::exists(o.out_dir / key_file, ec)) {
        std::string pending = pending_key_name(r.registration_id, r.serial, key_suffix);
        if (!fs::exists(o.out_dir / pending, ec))
          return fail(Domain::state, "the key file for " + r.registration_id + " (certificate " + r.serial +
                                         ") is missing from " + o.out_dir.string() +
                                         "; revoke that certificate and issue it again with --reissue");
        KL_CHECK(out.rename(pending, key_file));
      }
      KL_TRY(std::string kb, files::read(o.out_dir / key_file, 1 << 20));
      key_sha = sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(kb.data()), kb.size()));
    }
    manifest.add(manifest_line(r.registration_id, r.serial, r.cert_sha256, r.pubkey_sha256, r.not_after,
                               key_file, key_sha));
    ++summary.recovered;
    return {};
  }));
  KL_CHECK(out.sync());
  KL_CHECK(manifest.flush());
  if (summary.recovered) logger->info("recovered {} certificate(s) committed by an interrupted run", summary.recovered);
  // Pending files left now belong to certificates that were never committed.
  {
    std::error_code ec;
    for (fs::directory_iterator it(o.out_dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.starts_with('.') && name.ends_with(kPendingSuffix)) out.remove(name);
    }
  }

  KL_TRY(std::uint64_t committed_before, ledger.batch_certificate_count(summary.batch_id));
  const bool resuming = committed_before > 0;

  // The pipeline.
  Progress progress;
  progress.total = count_items(o);
  // Items travel in chunks: one queue hand-off (and at most one thread
  // wake-up) per kChunk items instead of per item.
  constexpr std::size_t kChunk = 64;
  // Deep enough that workers keep signing while the writer waits for the
  // disk (syncfs) at a group commit: 64 chunks of 64 = 4,096 items each way.
  const std::size_t queue_cap = 64;  // chunks
  BoundedQueue<std::vector<Item>> work(queue_cap);
  BoundedQueue<std::vector<Outcome>> results(queue_cap);
  std::atomic<bool> failed{false};
  std::optional<Error> source_error;

  std::thread reader([&] {
    std::vector<Item> chunk;
    chunk.reserve(kChunk);
    auto st = for_each_item(o, stop, [&](Item item) {
      chunk.push_back(std::move(item));
      if (chunk.size() < kChunk) return true;
      bool ok = !failed.load() && work.push(std::move(chunk));
      chunk = {};
      chunk.reserve(kChunk);
      return ok;
    });
    if (!chunk.empty() && !failed.load()) work.push(std::move(chunk));
    if (!st) source_error = st.error();
    work.close();
  });
  std::vector<std::thread> workers;
  std::atomic<unsigned> workers_left{o.jobs};
  std::optional<Error> worker_error;
  std::mutex worker_error_mu;
  for (unsigned i = 0; i < o.jobs; ++i) {
    workers.emplace_back([&] {
      auto reader_ledger = Ledger::open_readonly(ledger_path);
      if (!reader_ledger) {
        std::lock_guard lock(worker_error_mu);
        worker_error = reader_ledger.error();
        failed = true;
      } else {
        Worker w{o, authority, profile, keys, summary.batch_id, &*reader_ledger, resuming};
        while (auto chunk = work.pop()) {
          if (failed.load()) continue;
          std::vector<Outcome> out;
          out.reserve(chunk->size());
          for (const Item& item : *chunk) out.push_back(w.process(item));
          if (!results.push(std::move(out))) break;
        }
      }
      if (--workers_left == 0) results.close();
    });
  }

  // The writer (this thread).
  std::vector<Issued> group;
  auto last_commit = SteadyClock::now();
  auto last_progress = SteadyClock::now();
  const auto started = SteadyClock::now();
  Status writer_status;

  auto record_rejections = [&]() -> Status {
    for (auto& [input, reason] : rejections) {
      KL_TRY(auto rec, trail.append("request.rejected", {{"batch", summary.batch_id}, {"input", input},
                                                         {"profile", profile.name}, {"reason", reason}}));
      (void)rec;
    }
    rejections.clear();
    return {};
  };

  auto flush_group = [&]() -> Status {
    if (group.empty()) {
      if (rejections.empty()) return {};
      KL_TRY(auto tx, ledger.begin());
      KL_CHECK(record_rejections());
      return tx.commit();
    }
    // Generated private keys exist nowhere else: they are on disk before
    // their certificates are committed. Certificates are in the ledger.
    if (o.mode == Mode::generate) KL_CHECK(out.sync());
    std::vector<bool> ok(group.size(), true);
    {
      KL_TRY(auto tx, ledger.begin());
      std::int64_t now = clock.now().time_since_epoch().count();
      for (std::size_t i = 0; i < group.size(); ++i) {
        const auto& c = group[i].cert;
        CertificateRecord r;
        r.serial = c.serial_hex;
        r.registration_id = c.registration_id;
        r.profile = profile.name;
        r.subject = c.subject;
        r.cert_sha256 = c.cert_sha256;
        r.pubkey_sha256 = c.pubkey_sha256;
        r.not_before = c.not_before.time_since_epoch().count();
        r.not_after = c.not_after.time_since_epoch().count();
        r.issued_at = now;
        r.batch_id = summary.batch_id;
        r.operator_name = o.actor.operator_name;
        r.der = c.der;
        auto st = ledger.insert_certificate(r, false);
        if (!st) {
          if (st.error().domain() != Domain::policy) return std::unexpected(st.error());
          ok[i] = false;
          auto holder = ledger.active_ref(c.registration_id, profile.name);
          std::string reason = "registration ID '" + c.registration_id + "' already has an active certificate";
          if (holder && *holder)
            reason += " (serial " + (*holder)->serial + ((*holder)->batch_id == summary.batch_id
                                                             ? ", issued in this batch for another input)"
                                                             : ", outside this batch)");
          rejected.add({{"input", group[i].input}, {"reason", reason}});
          ++progress.rejected;
          KL_TRY(auto rec, trail.append("request.rejected", {{"batch", summary.batch_id}, {"input", group[i].input},
                                                             {"profile", profile.name}, {"reason", reason}}));
          (void)rec;
          continue;
        }
        KL_TRY(auto rec, trail.append("certificate.issued",
                                      {{"serial", r.serial}, {"registration_id", r.registration_id},
                                       {"profile", r.profile}, {"cert_sha256", r.cert_sha256},
                                       {"pubkey_sha256", r.pubkey_sha256},
                                       {"not_after", format_utc(c.not_after)}, {"batch", summary.batch_id},
                                       {"key", o.mode == Mode::generate ? "generated by the station" : "from CSR"}}));
        (void)rec;
      }
      KL_CHECK(record_rejections());
      if (o.on_commit) KL_CHECK(o.on_commit(trail));
      KL_CHECK(tx.commit());
    }
    for (std::size_t i = 0; i < group.size(); ++i) {
      const auto& c = group[i].cert;
      std::string pend_key = pending_key_name(c.registration_id, c.serial_hex, key_suffix);
      if (!ok[i]) {
        if (o.mode == Mode::generate) out.remove(pend_key);
        continue;
      }
      KL_CHECK(out.write_pending(c.registration_id + ".pem", c.pem, 0644));
      std::string key_file, key_sha;
      if (o.mode == Mode::generate) {
        key_file = c.registration_id + key_suffix;
        KL_CHECK(out.rename(pend_key, key_file));
        key_sha = sha256_hex(ByteView(reinterpret_cast<const unsigned char*>(group[i].key_bytes.data()),
                                      group[i].key_bytes.size()));
      }
      manifest.add(manifest_line(c.registration_id, c.serial_hex, c.cert_sha256, c.pubkey_sha256,
                                 c.not_after.time_since_epoch().count(), key_file, key_sha));
      ++progress.issued;
    }
    KL_CHECK(out.sync());  // files are durable before the manifest says so
    KL_CHECK(manifest.flush());
    KL_CHECK(rejected.flush());
    group.clear();
    last_commit = SteadyClock::now();
    return {};
  };

  auto take = [&](Outcome& outcome) -> Status {
    if (auto* issued = std::get_if<Issued>(&outcome)) {
      const auto& c = issued->cert;
      if (o.mode == Mode::generate)
        KL_CHECK(out.write_pending(pending_key_name(c.registration_id, c.serial_hex, key_suffix), issued->key_bytes,
                                   keys.encrypted() ? 0644 : 0600));
      group.push_back(std::move(*issued));
    } else if (auto* rej = std::get_if<Rejected>(&outcome)) {
      rejected.add({{"input", rej->input}, {"reason", rej->reason}});
      rejections.emplace_back(rej->input, rej->reason);
      ++progress.rejected;
    } else if (auto* fatal = std::get_if<Fatal>(&outcome)) {
      KL_CHECK(flush_group());  // what was signed before the failure is kept
      return std::unexpected(fatal->error.with_context("batch stopped"));
    } else {
      ++progress.already_done;
    }
    if (group.size() >= o.group_rows) KL_CHECK(flush_group());
    return {};
  };

  for (;;) {
    auto next = results.pop_for(o.group_interval);
    if (next) {
      for (Outcome& outcome : *next) {
        writer_status = take(outcome);
        if (!writer_status) break;
      }
      if (!writer_status) break;
    }
    bool drained = !next && results.closed_and_empty();
    bool waiting = !group.empty() || !rejections.empty();
    if ((waiting && SteadyClock::now() - last_commit >= o.group_interval) || (drained && waiting)) {
      writer_status = flush_group();
      if (!writer_status) break;
    }
    auto now = SteadyClock::now();
    if (progress_fn && (now - last_progress >= std::chrono::milliseconds(200) || drained)) {
      progress.seconds = std::chrono::duration<double>(now - started).count();
      progress_fn(progress);
      last_progress = now;
    }
    if (drained) break;
  }
  if (!writer_status) {
    failed = true;
    work.close();
    results.close();
  }
  reader.join();
  for (auto& t : workers) t.join();
  if (writer_status) {
    auto st = rejected.flush();
    if (!st) writer_status = st;
  }
  if (writer_status) {
    // The run's outcome closes its part of the trail.
    auto st = [&]() -> Status {
      KL_TRY(auto tx, ledger.begin());
      KL_TRY(auto rec, trail.append(stop.load() ? "batch.interrupted" : "batch.finished",
                                    {{"batch", summary.batch_id}, {"issued", progress.issued},
                                     {"already_done", progress.already_done}, {"rejected", progress.rejected}}));
      (void)rec;
      if (o.on_commit) KL_CHECK(o.on_commit(trail));
      return tx.commit();
    }();
    if (!st) writer_status = st;
  }
  // Pending files of a failed group are removed by the next run's reconcile.
  if (!writer_status) return std::unexpected(writer_status.error());
  if (worker_error) return std::unexpected(*worker_error);
  if (source_error) return std::unexpected(*source_error);
  progress.seconds = std::chrono::duration<double>(SteadyClock::now() - started).count();
  summary.progress = progress;
  summary.interrupted = stop.load();
  return summary;
}

}  // namespace keyline::station::batch
