// keyline ca batch: certificates for many devices with no device attached.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "app.hpp"
#include "keyline/core/log.hpp"
#include "keyline/station/batch.hpp"

namespace keyline::cli {

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }

struct BatchCli {
  std::string csr_dir;
  bool generate = false;
  std::string ids;
  std::uint64_t count = 0;
  std::string id_template;
  std::uint64_t start = 1;
  std::string out;
  std::string profile = "device";
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
  std::string encrypt_keys_to;
  bool plain_keys = false;
  std::string key_algorithm = "ec-p256";
};

class ProgressPrinter {
 public:
  ProgressPrinter() : tty_(::isatty(2) == 1) {}
  void operator()(const station::batch::Progress& p) {
    double done = static_cast<double>(p.issued + p.already_done + p.rejected);
    double rate = p.seconds > 0 ? static_cast<double>(p.issued) / p.seconds : 0;
    if (tty_) {
      char bar[31] = {};
      int filled = p.total ? static_cast<int>(30.0 * done / static_cast<double>(p.total)) : 0;
      for (int i = 0; i < 30; ++i) bar[i] = i < filled ? '#' : '.';
      double eta = rate > 0 && p.total > done ? (static_cast<double>(p.total) - done) / rate : 0;
      std::fprintf(stderr, "\r[%s] %llu/%llu issued %llu skipped %llu rejected %llu  %.0f/s  ETA %.0fs   ", bar,
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(p.total),
                   static_cast<unsigned long long>(p.issued), static_cast<unsigned long long>(p.already_done),
                   static_cast<unsigned long long>(p.rejected), rate, eta);
    } else if (p.seconds - last_ >= 5.0) {
      std::fprintf(stderr, "batch: %llu/%llu done (issued %llu, already done %llu, rejected %llu), %.0f certificates/s\n",
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(p.total),
                   static_cast<unsigned long long>(p.issued), static_cast<unsigned long long>(p.already_done),
                   static_cast<unsigned long long>(p.rejected), rate);
      last_ = p.seconds;
    }
  }
  void finish() {
    if (tty_) std::fputc('\n', stderr);
  }

 private:
  bool tty_;
  double last_ = 0;
};

Status ca_batch(const Context& ctx, const BatchCli& c) {
  station::batch::Options o;
  if (c.generate == !c.csr_dir.empty())
    return fail(Domain::usage, "give either --csr-dir DIR or --generate (with --ids FILE or --count N --id-template T)");
  o.mode = c.generate ? station::batch::Mode::generate : station::batch::Mode::csr_dir;
  o.csr_dir = c.csr_dir;
  o.ids_file = c.ids;
  if (c.count) o.count = c.count;
  if (c.count && c.id_template.empty()) return fail(Domain::usage, "--count needs --id-template, e.g. 'sn-{seq:06}'");
  if (!c.generate && (!c.ids.empty() || c.count || !c.encrypt_keys_to.empty() || c.plain_keys))
    return fail(Domain::usage, "--ids, --count, --encrypt-keys-to and --plain-keys go with --generate");
  o.id_template = c.id_template;
  o.start = c.start;
  o.out_dir = c.out;
  o.jobs = c.jobs;
  o.encrypt_keys_to = c.encrypt_keys_to;
  o.plain_keys = c.plain_keys;
  KL_TRY(o.key_algorithm, hsm::parse_algorithm(c.key_algorithm));

  // Ctrl-C from the first moment: a stop before the pipeline runs is an
  // orderly stop too (nothing in flight; the same command resumes).
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  KL_CHECK(ctx.state().require_initialised());
  KL_TRY(station::Config config, ctx.config());
  KL_TRY(const ca::Profile* profile, station::find_profile(config, c.profile));
  KL_TRY(o.actor, ctx.actor(config));
  KL_TRY(auto opened, ctx.state().open_authority(config, ctx.clock(), ctx.rng()));
  o.key_store = opened.key_store->uri();
  hsm::KeyStore* store = opened.key_store.get();
  o.on_commit = [&ctx, &config, store](station::audit::Trail& trail) {
    return checkpoint_if_due(ctx, config, *store, trail);
  };

  ProgressPrinter printer;
  auto summary = station::batch::run(o, *opened.authority, *profile, ctx.state().ledger_path(), ctx.clock(),
                                     g_stop, [&](const station::batch::Progress& p) { printer(p); });
  printer.finish();
  if (!summary) return std::unexpected(summary.error());
  const auto& p = summary->progress;
  double rate = p.seconds > 0 ? static_cast<double>(p.issued) / p.seconds : 0;
  nlohmann::json doc = {{"batch_id", summary->batch_id},
                        {"out", c.out},
                        {"issued", p.issued},
                        {"already_done", p.already_done},
                        {"recovered", summary->recovered},
                        {"rejected", p.rejected},
                        {"seconds", p.seconds},
                        {"certificates_per_second", rate},
                        {"interrupted", summary->interrupted}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Batch " << summary->batch_id << " -> " << c.out << ": issued " << p.issued << ", already done "
       << p.already_done << ", recovered " << summary->recovered << ", rejected " << p.rejected << " in "
       << p.seconds << " s (" << static_cast<long long>(rate) << " certificates/s)\n";
    if (p.rejected) os << "Rejected inputs and reasons: " << c.out << "/rejected.jsonl\n";
    if (summary->interrupted) os << "Interrupted: run the same command again to finish the batch.\n";
  });
  if (summary->interrupted) ctx.set_outcome(ExitCode::interrupted);
  else if (p.rejected) ctx.set_outcome(ExitCode::partial);
  return {};
}

}  // namespace

void add_batch_command(CLI::App& ca_cmd, Handler& run) {
  auto o = std::make_shared<BatchCli>();
  auto* b = ca_cmd.add_subcommand(
      "batch",
      "Issue certificates for a folder of CSRs, or generate device keys and issue for a list of IDs.\n"
      "Resumable: after Ctrl-C, a crash or power loss, run the same command again.");
  b->add_option("--csr-dir", o->csr_dir, "Folder of CSRs (PEM or DER); the registration ID is each CSR's CN");
  b->add_flag("--generate", o->generate, "The station generates each device's key pair");
  b->add_option("--ids", o->ids, "With --generate: file with one registration ID per line");
  b->add_option("--count", o->count, "With --generate: how many IDs to make from --id-template");
  b->add_option("--id-template", o->id_template, "With --count: e.g. 'sn-{seq:06}'");
  b->add_option("--start", o->start, "With --count: first sequence number")->capture_default_str();
  b->add_option("--out", o->out, "Output folder (certificates, keys, manifest.jsonl, rejected.jsonl)")->required();
  b->add_option("--profile", o->profile, "Profile in keyline.toml")->capture_default_str();
  b->add_option("--jobs", o->jobs,
                "Threads that read, sign and take turns committing (default: number of cores; "
                "with a TPM key store, one or two more keep it busy)")
      ->capture_default_str();
  b->add_option("--encrypt-keys-to", o->encrypt_keys_to,
                "With --generate: encrypt each private key to this recipient certificate (CMS)");
  b->add_flag("--plain-keys", o->plain_keys, "With --generate: write private keys unencrypted (PEM, mode 0600)");
  b->add_option("--key-algorithm", o->key_algorithm, "With --generate: device key algorithm")
      ->check(CLI::IsMember({"ec-p256", "ec-p384", "rsa-2048", "rsa-3072"}))->capture_default_str();
  b->callback([&run, o] { run = [o](const Context& c) { return ca_batch(c, *o); }; });
}

}  // namespace keyline::cli
