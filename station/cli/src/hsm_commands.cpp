// keyline hsm ...: look into a key store, self-test its signing, manage DPS
// group-key secrets inside it.

#include <chrono>

#include "app.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/log.hpp"
#include "keyline/hsm/key_store.hpp"

namespace keyline::cli {

namespace {

// --key-store, else the state dir's configured CA key store.
Result<std::unique_ptr<hsm::KeyStore>> open_store(const Context& ctx, const std::string& uri) {
  if (!uri.empty()) return hsm::open(uri, std::filesystem::current_path());
  if (!ctx.state().initialised())
    return fail(Domain::usage, "give --key-store URI (or --state DIR of an initialised station to use its CA key store)");
  KL_TRY(station::Config config, ctx.config());
  return ctx.state().open_key_store(config);
}

Status hsm_list(const Context& ctx, const std::string& uri) {
  KL_TRY(auto store, open_store(ctx, uri));
  KL_TRY(auto keys, store->list());
  nlohmann::json doc = {{"key_store", store->uri()}, {"development", store->is_development()}, {"keys", nlohmann::json::array()}};
  for (auto& k : keys) doc["keys"].push_back({{"label", k.label}, {"kind", k.kind}});
  ctx.print(doc, [&](std::ostream& os) {
    os << "Key store " << store->uri() << (store->is_development() ? " (development: plain files)" : "") << "\n";
    for (auto& k : keys) os << "  " << k.label << "  " << k.kind << "\n";
    os << keys.size() << " key(s)\n";
  });
  return {};
}

Status hsm_test(const Context& ctx, const std::string& uri, const std::string& label, int count) {
  if (count < 1 || count > 1000000) return fail(Domain::usage, "--count must be 1 to 1000000");
  KL_TRY(auto store, open_store(ctx, uri));
  KL_TRY(auto signer, store->signer(label));
  KL_TRY(EvpPkeyPtr pub, hsm::public_key_from_der(signer->public_key()));
  const EVP_MD* md = hsm::evp_md(hsm::digest_for(signer->algorithm()));
  std::string message = "keyline hsm self-test";
  Bytes digest(hsm::digest_size(hsm::digest_for(signer->algorithm())));
  unsigned int len = 0;
  EVP_Digest(message.data(), message.size(), digest.data(), &len, md, nullptr);
  auto start = std::chrono::steady_clock::now();
  Bytes last;
  for (int i = 0; i < count; ++i) {
    KL_TRY(last, signer->sign(digest));
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Verified independently of the key store, with the public key only.
  EvpMdCtxPtr vctx(EVP_MD_CTX_new());
  bool ok = EVP_DigestVerifyInit(vctx.get(), nullptr, md, nullptr, pub.get()) == 1 &&
            EVP_DigestVerify(vctx.get(), last.data(), last.size(),
                             reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  drain_openssl_errors();
  if (!ok) return fail(Domain::keystore, "self-test: a signature by " + signer->describe() + " does not verify with its public key");
  double rate = static_cast<double>(count) / seconds;
  nlohmann::json doc = {{"key", signer->describe()}, {"algorithm", hsm::to_string(signer->algorithm())},
                        {"signatures", count}, {"seconds", seconds}, {"signatures_per_second", rate},
                        {"verified", true}};
  ctx.print(doc, [&](std::ostream& os) {
    os << "Self-test of " << signer->describe() << " (" << hsm::to_string(signer->algorithm()) << "): " << count
       << " signature(s) in " << seconds << " s (" << static_cast<long long>(rate)
       << "/s), verified with the public key: OK\n";
  });
  return {};
}

Status hsm_secret(const Context& ctx, const std::string& uri, const std::string& label, bool generate,
                  const std::string& from) {
  KL_TRY(auto store, open_store(ctx, uri));
  std::optional<SecretBytes> imported;
  if (!generate) {
    KL_TRY(std::string text, read_input(from, 1 << 16, "--from"));
    SecretString b64(std::move(text));
    auto raw = base64_decode(b64.reveal());
    if (!raw || raw->empty())
      return fail(Domain::input, "--from: the group key must be base64 (as the DPS portal and 'az iot dps' show it)");
    imported.emplace(std::move(*raw));
  }
  auto create = [&]() -> Status {
    return generate ? store->generate_secret(label) : store->import_secret(label, *imported);
  };
  if (!ctx.state().initialised()) {
    KL_CHECK(create());
  } else {
    // A station's secrets are on its audit trail. The record goes in first,
    // in the transaction that then commits it: a ledger that is busy,
    // read-only or refuses the record refuses before the key store changes,
    // and a secret whose commit fails is destroyed again.
    KL_TRY(station::Config config, ctx.config());
    KL_TRY(station::audit::Actor actor, ctx.actor(config));
    KL_TRY(station::Ledger ledger, ctx.state().open_ledger());
    station::audit::Trail trail(ledger, actor, ctx.clock());
    KL_TRY(auto tx, ledger.begin());
    KL_TRY(auto rec, trail.append("secret.created", {{"label", label}, {"key_store", store->uri()},
                                                     {"origin", generate ? "generated" : "imported"}}));
    (void)rec;
    KL_CHECK(create());
    if (auto committed = tx.commit(); !committed)
      return std::unexpected(undo_unrecorded_key(*store, KeyKind::secret, label, committed.error()));
  }
  log::get("hsm")->info("{} secret '{}' in {}", generate ? "generated" : "imported", label, store->uri());
  nlohmann::json doc = {{"label", label}, {"key_store", store->uri()}, {generate ? "generated" : "imported", true}};
  ctx.print(doc, [&](std::ostream& os) {
    os << (generate ? "Generated" : "Imported") << " secret '" << label << "' in " << store->uri() << "\n";
  });
  return {};
}

}  // namespace

void add_hsm_commands(CLI::App& app, Handler& run) {
  auto* hsm_cmd = app.add_subcommand("hsm", "Key stores: list keys, self-test signing, DPS group-key secrets");
  hsm_cmd->require_subcommand(1);
  auto uri = std::make_shared<std::string>();
  const char* uri_help = "Key store URI: file:DIR, pkcs11:token=...?module-path=...&pin-source=file:..., "
                         "tpm2:handle=0x81000100?tcti=... (default: the station's CA key store)";

  auto* list = hsm_cmd->add_subcommand("list", "Keys and secrets visible in the key store");
  list->add_option("--key-store", *uri, uri_help);
  list->callback([&run, uri] { run = [uri](const Context& c) { return hsm_list(c, *uri); }; });

  auto label = std::make_shared<std::string>("keyline-intermediate");
  auto count = std::make_shared<int>(200);
  auto* test = hsm_cmd->add_subcommand("test", "Sign with a key COUNT times, verify with its public key, print the rate");
  test->add_option("--key-store", *uri, uri_help);
  test->add_option("--label", *label, "Key label")->capture_default_str();
  test->add_option("--count", *count, "Signatures")->capture_default_str();
  test->callback([&run, uri, label, count] {
    run = [uri, label, count](const Context& c) { return hsm_test(c, *uri, *label, *count); };
  });

  auto* secret = hsm_cmd->add_subcommand("secret", "Symmetric secrets (DPS enrollment-group keys) kept in the key store");
  secret->require_subcommand(1);
  auto secret_label = std::make_shared<std::string>();
  auto from = std::make_shared<std::string>("-");
  auto* gen = secret->add_subcommand("generate", "Generate a random secret inside the key store");
  gen->add_option("--key-store", *uri, uri_help);
  gen->add_option("--label", *secret_label, "Secret label")->required();
  gen->callback([&run, uri, secret_label] {
    run = [uri, secret_label](const Context& c) { return hsm_secret(c, *uri, *secret_label, true, ""); };
  });
  auto* imp = secret->add_subcommand("import", "Import a base64 key (e.g. a DPS group key) from a file or stdin");
  imp->add_option("--key-store", *uri, uri_help);
  imp->add_option("--label", *secret_label, "Secret label")->required();
  imp->add_option("--from", *from, "File with the base64 key, or - for standard input")->capture_default_str();
  imp->callback([&run, uri, secret_label, from] {
    run = [uri, secret_label, from](const Context& c) { return hsm_secret(c, *uri, *secret_label, false, *from); };
  });
}

}  // namespace keyline::cli
