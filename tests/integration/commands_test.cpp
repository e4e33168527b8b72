// keyline device list, keyline report devices and keyline ca batch --generate
// with other key algorithms: the real binary in temp state dirs, devices
// played by keyline-devsim on ptys, outputs checked against the ledger and
// every certificate checked with `openssl verify -x509_strict`.

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <sstream>
#include <thread>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cli_support.hpp"
#include "keyline/core/clock.hpp"
#include "keyline/testkit/devsim.hpp"

using namespace keyline::cli_test;

namespace {

// The operator the tests act as (recorded in the ledger and shown in reports).
const Env kEnv{{"KEYLINE_LOG", "error"}, {"KEYLINE_OPERATOR", "commands-tester"}};

tk::RunResult run_kl(const fs::path& state, const std::vector<std::string>& args, const std::string& input = {}) {
  return tk::keyline(state, args, kEnv, input);
}

// Rows of a query on the ledger (sqlite3's default output: '|' between columns).
std::vector<std::string> sql_rows(const fs::path& state, const std::string& query) {
  tk::RunResult r = tk::run({"/usr/bin/sqlite3", (state / "ledger.db").string(), query});
  if (r.exit_code != 0) throw std::runtime_error("sqlite3 " + query + ": " + describe(r));
  std::vector<std::string> rows;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) rows.push_back(line);
  return rows;
}

std::string sql_one(const fs::path& state, const std::string& query) {
  auto rows = sql_rows(state, query);
  return rows.empty() ? "" : rows.front();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string serial_hex(X509* cert) {
  keyline::BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

std::string cert_sha256(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert, EVP_sha256(), md, &n);
  return keyline::to_hex(std::span<const unsigned char>(md, n));
}

std::string pubkey_sha256(X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(der, static_cast<std::size_t>(len), md, &n, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return keyline::to_hex(std::span<const unsigned char>(md, n));
}

// Lines of a text, without their newlines.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<json> jsonl(const std::string& text) {
  std::vector<json> out;
  for (auto& line : lines_of(text)) out.push_back(json::parse(line));
  return out;
}

// Splits one CSV line (the report quotes fields with ',' or '"').
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') out.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else out.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

// ================================================================ device list

// A station whose [provision] section lets devsim devices be provisioned.
fs::path provisioning_station(const tk::TempDir& tmp) {
  fs::path state = init_ca(tmp);
  auto secret = run_kl(state, {"hsm", "secret", "import", "--label", "master-1"},
                       "bWFzdGVyLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=\n");
  if (secret.exit_code != 0) throw std::runtime_error("hsm secret import: " + describe(secret));
  std::string toml = tk::read_file(state / "keyline.toml");
  toml += "\n[provision]\nmode = \"x509-device-key\"\nregistration_id_template = \"{model}-{serial}\"\n"
          "individual_key = \"hsm:master-1\"\nid_scope = \"0ne00000001\"\ntimeout_ms = 2000\n";
  tk::write_file(state / "keyline.toml", toml);
  return state;
}

json devsim_show(const fs::path& flash) {
  tk::RunResult r = tk::run({tk::bin("keyline-devsim").string(), "--state", flash.string(), "--show"});
  if (r.exit_code != 0) throw std::runtime_error("keyline-devsim --show: " + describe(r));
  return json::parse(r.out);
}

// The row of `list` (a --json device list) for `regid`, or null.
json find_device(const json& list, const std::string& regid) {
  for (auto& d : list["devices"])
    if (d["registration_id"] == regid) return d;
  return nullptr;
}

TEST(DeviceList, EmptyLedgerSaysSo) {
  tk::TempDir tmp;
  fs::path state = provisioning_station(tmp);
  auto text = run_kl(state, {"device", "list"});
  ASSERT_EQ(text.exit_code, 0) << describe(text);
  auto lines = lines_of(text.out);
  ASSERT_FALSE(lines.empty()) << describe(text);
  EXPECT_TRUE(lines[0].starts_with("REGISTRATION ID")) << text.out;
  ASSERT_EQ(lines.size(), 2u) << text.out;
  EXPECT_EQ(lines[1], "(no devices provisioned yet)") << text.out;

  auto doc = run_kl(state, {"--json", "device", "list"});
  ASSERT_EQ(doc.exit_code, 0) << describe(doc);
  EXPECT_EQ(json::parse(doc.out), (json{{"devices", json::array()}})) << doc.out;
  // The global options are taken after the command too.
  auto after = run_kl(state, {"device", "list", "--json"});
  ASSERT_EQ(after.exit_code, 0) << describe(after);
  EXPECT_EQ(after.out, doc.out);

  // Not a station at all: a state problem, not an empty list.
  auto missing = run_kl(tmp / "nowhere", {"device", "list"});
  EXPECT_EQ(missing.exit_code, 5) << describe(missing);
  EXPECT_EQ(missing.out, "");
}

TEST(DeviceList, ShowsProvisionedDevicesWithTheirFields) {
  tk::TempDir tmp;
  fs::path state = provisioning_station(tmp);
  const std::int64_t started = std::time(nullptr);

  // A device with its own key (x509), one with a derived symmetric key, and
  // one that refuses LOCK and so ends failed.
  auto gauge = tk::Devsim::pty(tmp / "gauge.json", {"--serial-number", "SN-A1", "--model", "Gauge"});
  auto gauge_r = run_kl(state, {"--json", "device", "provision", "--port", gauge.port()});
  ASSERT_EQ(gauge_r.exit_code, 0) << describe(gauge_r) << gauge.stderr_text();
  json gauge_doc = json::parse(gauge_r.out);
  ASSERT_EQ(gauge_doc["state"], "done");
  const std::string gauge_serial = gauge_doc["certificate_serial"];
  ASSERT_FALSE(gauge_serial.empty());

  auto valve = tk::Devsim::pty(tmp / "valve.json", {"--serial-number", "SN-B2", "--model", "Valve"});
  auto valve_r =
      run_kl(state, {"--json", "device", "provision", "--port", valve.port(), "--mode", "symmetric-individual"});
  ASSERT_EQ(valve_r.exit_code, 0) << describe(valve_r) << valve.stderr_text();

  auto pump = tk::Devsim::pty(tmp / "pump.json", {"--serial-number", "SN-C3", "--model", "Pump", "--refuse-lock"});
  auto pump_r = run_kl(state, {"--json", "device", "provision", "--port", pump.port()});
  ASSERT_EQ(pump_r.exit_code, 10) << describe(pump_r);
  const std::int64_t finished = std::time(nullptr);

  auto listed = run_kl(state, {"--json", "device", "list"});
  ASSERT_EQ(listed.exit_code, 0) << describe(listed);
  json list = json::parse(listed.out);
  ASSERT_EQ(list["devices"].size(), 3u) << listed.out;

  json g = find_device(list, "gauge-sn-a1");
  ASSERT_FALSE(g.is_null()) << listed.out;
  EXPECT_EQ(g["serial_number"], "SN-A1");
  EXPECT_EQ(g["model"], "Gauge");
  EXPECT_EQ(g["mode"], "x509-device-key");
  EXPECT_EQ(g["state"], "done");
  EXPECT_EQ(g["locked"], true);
  EXPECT_EQ(g["certificate_serial"], gauge_serial);
  EXPECT_EQ(g["last_error"], "");

  json v = find_device(list, "valve-sn-b2");
  ASSERT_FALSE(v.is_null()) << listed.out;
  EXPECT_EQ(v["serial_number"], "SN-B2");
  EXPECT_EQ(v["model"], "Valve");
  EXPECT_EQ(v["mode"], "symmetric-individual");
  EXPECT_EQ(v["state"], "done");
  EXPECT_EQ(v["locked"], true);
  EXPECT_EQ(v["certificate_serial"], "");  // a symmetric key, no certificate
  EXPECT_EQ(v["last_error"], "");

  json p = find_device(list, "pump-sn-c3");
  ASSERT_FALSE(p.is_null()) << listed.out;
  EXPECT_EQ(p["state"], "failed");
  EXPECT_EQ(p["locked"], false);
  EXPECT_NE(p["last_error"], "");

  // Each row is what the ledger holds, and its time is when it happened.
  for (const json& d : list["devices"]) {
    std::string regid = d["registration_id"];
    EXPECT_EQ(sql_one(state, "SELECT serial_number || '|' || model || '|' || mode || '|' || state || '|' || locked || "
                             "'|' || cert_serial || '|' || last_error FROM devices WHERE registration_id = '" +
                                 regid + "'"),
              d["serial_number"].get<std::string>() + "|" + d["model"].get<std::string>() + "|" +
                  d["mode"].get<std::string>() + "|" + d["state"].get<std::string>() + "|" +
                  (d["locked"].get<bool>() ? "1" : "0") + "|" + d["certificate_serial"].get<std::string>() + "|" +
                  d["last_error"].get<std::string>())
        << regid;
    auto at = keyline::parse_utc(d["updated_at"].get<std::string>());
    ASSERT_TRUE(at) << d.dump();
    EXPECT_GE(at->time_since_epoch().count(), started) << d.dump();
    EXPECT_LE(at->time_since_epoch().count(), finished) << d.dump();
  }
  EXPECT_EQ(sql_one(state, "SELECT count(*) FROM devices"), "3");

  // The certificate the list names is the one the device holds, and it verifies.
  json shown = devsim_show(tmp / "gauge.json");
  std::string chain = shown["slots"]["cert-chain"];
  auto end = chain.find("-----END CERTIFICATE-----");
  ASSERT_NE(end, std::string::npos);
  tk::write_file(tmp / "gauge.pem", chain.substr(0, end + 26));
  auto ok = verify_strict(state / "root.pem", state / "intermediate.pem", tmp / "gauge.pem");
  EXPECT_EQ(ok.exit_code, 0) << describe(ok);
  X509Ptr leaf = parse_cert(tmp / "gauge.pem");
  EXPECT_EQ(lower(serial_hex(leaf.get())), lower(gauge_serial));
  EXPECT_EQ(subject_entry(leaf.get(), NID_commonName), "gauge-sn-a1");
  EXPECT_EQ(sql_one(state, "SELECT status FROM certificates WHERE serial = '" + gauge_serial + "'"), "active");

  // The table: a header, then one line per device with its columns.
  auto text = run_kl(state, {"device", "list"});
  ASSERT_EQ(text.exit_code, 0) << describe(text);
  auto lines = lines_of(text.out);
  ASSERT_EQ(lines.size(), 4u) << text.out;
  EXPECT_TRUE(lines[0].starts_with("REGISTRATION ID")) << text.out;
  for (const char* col : {"MODE", "STATE", "CERTIFICATE", "ERROR"})
    EXPECT_TRUE(contains(lines[0], col)) << lines[0];
  auto line_for = [&](const std::string& regid) -> std::string {
    for (auto& l : lines)
      if (l.starts_with(regid + " ")) return l;
    return "";
  };
  std::string gl = line_for("gauge-sn-a1");
  EXPECT_TRUE(contains(gl, "x509-device-key") && contains(gl, " done ") && contains(gl, gauge_serial)) << text.out;
  std::string vl = line_for("valve-sn-b2");
  EXPECT_TRUE(contains(vl, "symmetric-individual") && contains(vl, " done")) << text.out;
  std::string pl = line_for("pump-sn-c3");
  EXPECT_TRUE(contains(pl, "failed") && contains(pl, p["last_error"].get<std::string>())) << text.out;

  // Listing changes nothing.
  auto before = capture(state);
  ASSERT_EQ(run_kl(state, {"device", "list"}).exit_code, 0);
  EXPECT_EQ(changes_since(before, state), "");
}

// ================================================================ report devices

const std::vector<std::string> kReportColumns = {
    "device_serial", "registration_id", "certificate_serial", "certificate_sha256", "public_key_sha256",
    "profile",       "status",          "issued_at",          "not_after",          "enrollment",
    "station",       "operator",        "batch"};

std::int64_t issued_at(const fs::path& state, const std::string& regid) {
  return std::stoll(sql_one(state, "SELECT issued_at FROM certificates WHERE registration_id = '" + regid + "'"));
}

std::string utc(std::int64_t seconds) {
  return keyline::format_utc(keyline::TimePoint(std::chrono::seconds(seconds)));
}

// The registration IDs of a JSONL report, in order.
std::vector<std::string> report_ids(const std::string& out) {
  std::vector<std::string> ids;
  for (auto& j : jsonl(out)) ids.push_back(j["registration_id"]);
  return ids;
}

TEST(ReportDevices, SinceFiltersByIssueTimeAndOutWritesTheFileAtomically) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  // The first certificate, then, once the clock has moved on by at least a
  // second (issue times are whole seconds), the second.
  ASSERT_EQ(run_kl(state, {"ca", "issue", "--csr", write_csr(tmp / "early.csr", "early-dev").string(), "--out",
                           (tmp / "early.pem").string()})
                .exit_code,
            0);
  const std::int64_t t_early = issued_at(state, "early-dev");
  const auto wait_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::time(nullptr) <= t_early && std::chrono::steady_clock::now() < wait_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GT(std::time(nullptr), t_early);
  ASSERT_EQ(run_kl(state, {"ca", "issue", "--csr", write_csr(tmp / "late.csr", "late-dev").string(), "--out",
                           (tmp / "late.pem").string(), "--device-serial", "SN-LATE"})
                .exit_code,
            0);
  const std::int64_t t_late = issued_at(state, "late-dev");
  ASSERT_GT(t_late, t_early);

  for (const char* name : {"early", "late"}) {
    auto v = verify_strict(state / "root.pem", state / "intermediate.pem", tmp / (std::string(name) + ".pem"));
    EXPECT_EQ(v.exit_code, 0) << describe(v);
  }

  // --since: at or after the time given.
  auto all = run_kl(state, {"report", "devices", "--format", "jsonl"});
  ASSERT_EQ(all.exit_code, 0) << describe(all);
  EXPECT_EQ(report_ids(all.out), (std::vector<std::string>{"early-dev", "late-dev"})) << all.out;
  auto from_early = run_kl(state, {"report", "devices", "--since", utc(t_early), "--format", "jsonl"});
  ASSERT_EQ(from_early.exit_code, 0) << describe(from_early);
  EXPECT_EQ(report_ids(from_early.out), (std::vector<std::string>{"early-dev", "late-dev"})) << from_early.out;
  auto from_late = run_kl(state, {"report", "devices", "--since", utc(t_late), "--format", "jsonl"});
  ASSERT_EQ(from_late.exit_code, 0) << describe(from_late);
  EXPECT_EQ(report_ids(from_late.out), std::vector<std::string>{"late-dev"}) << from_late.out;
  auto after_both = run_kl(state, {"report", "devices", "--since", utc(t_late + 1), "--format", "jsonl"});
  ASSERT_EQ(after_both.exit_code, 0) << describe(after_both);
  EXPECT_EQ(after_both.out, "");
  auto by_date = run_kl(state, {"report", "devices", "--since", "2000-01-01", "--format", "jsonl"});
  ASSERT_EQ(by_date.exit_code, 0) << describe(by_date);
  EXPECT_EQ(report_ids(by_date.out).size(), 2u);
  auto bad_since = run_kl(state, {"report", "devices", "--since", "yesterday", "--format", "jsonl"});
  EXPECT_EQ(bad_since.exit_code, 2) << describe(bad_since);
  EXPECT_EQ(bad_since.out, "");

  // The fields of the late device's record are its certificate's.
  auto late_doc = jsonl(from_late.out).at(0);
  X509Ptr late = parse_cert(tmp / "late.pem");
  EXPECT_EQ(late_doc["device_serial"], "SN-LATE");
  EXPECT_EQ(lower(late_doc["certificate_serial"]), lower(serial_hex(late.get())));
  EXPECT_EQ(lower(late_doc["certificate_sha256"]), lower(cert_sha256(late.get())));
  EXPECT_EQ(lower(late_doc["public_key_sha256"]), lower(pubkey_sha256(late.get())));
  EXPECT_EQ(late_doc["profile"], "device");
  EXPECT_EQ(late_doc["status"], "active");
  EXPECT_EQ(late_doc["issued_at"], utc(t_late));
  EXPECT_EQ(late_doc["not_after"], utc(to_time_t(X509_get0_notAfter(late.get()))));
  EXPECT_EQ(late_doc["enrollment"], "none");
  EXPECT_EQ(late_doc["station"], "station-1");
  EXPECT_EQ(late_doc["operator"], "commands-tester");
  EXPECT_EQ(late_doc["batch"], "");

  // CSV: the header, then the same records.
  auto csv = run_kl(state, {"report", "devices", "--since", utc(t_late), "--format", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << describe(csv);
  auto csv_lines = lines_of(csv.out);
  ASSERT_EQ(csv_lines.size(), 2u) << csv.out;
  EXPECT_EQ(csv_fields(csv_lines[0]), kReportColumns);
  auto row = csv_fields(csv_lines[1]);
  ASSERT_EQ(row.size(), kReportColumns.size()) << csv_lines[1];
  for (std::size_t i = 0; i < kReportColumns.size(); ++i)
    EXPECT_EQ(row[i], late_doc[kReportColumns[i]].get<std::string>()) << kReportColumns[i];
  auto csv_none = run_kl(state, {"report", "devices", "--since", utc(t_late + 1), "--format", "csv"});
  ASSERT_EQ(csv_none.exit_code, 0) << describe(csv_none);
  EXPECT_EQ(lines_of(csv_none.out).size(), 1u) << csv_none.out;  // the header alone

  // --out: the same bytes in the file, nothing on stdout, an existing file
  // replaced by a new one (renamed into place), no temp file left beside it.
  fs::path reports = tmp / "reports";
  fs::create_directories(reports);
  for (const char* format : {"csv", "jsonl"}) {
    fs::path out = reports / (std::string("devices.") + format);
    tk::write_file(out, "an older report\n");
    struct stat old_st {};
    ASSERT_EQ(::stat(out.c_str(), &old_st), 0);
    auto to_stdout = run_kl(state, {"report", "devices", "--since", utc(t_early), "--format", format});
    ASSERT_EQ(to_stdout.exit_code, 0) << describe(to_stdout);
    auto to_file = run_kl(state, {"report", "devices", "--since", utc(t_early), "--format", format, "--out",
                                  out.string()});
    ASSERT_EQ(to_file.exit_code, 0) << describe(to_file);
    EXPECT_EQ(to_file.out, "") << format;
    EXPECT_TRUE(contains(to_file.err, "2 device record(s)")) << to_file.err;
    EXPECT_EQ(tk::read_file(out), to_stdout.out) << format;
    struct stat new_st {};
    ASSERT_EQ(::stat(out.c_str(), &new_st), 0);
    EXPECT_NE(new_st.st_ino, old_st.st_ino) << format << ": the file was rewritten in place, not replaced";
    EXPECT_EQ(new_st.st_mode & 0777, 0644u) << format;

    // A refused command leaves the earlier report as it was.
    std::string kept = tk::read_file(out);
    auto refused = run_kl(state, {"report", "devices", "--since", "not-a-time", "--format", format, "--out",
                                  out.string()});
    EXPECT_EQ(refused.exit_code, 2) << describe(refused);
    EXPECT_EQ(tk::read_file(out), kept);
  }
  EXPECT_EQ(tree(reports), (std::set<std::string>{"devices.csv", "devices.jsonl"}));

  // --json with --out: a summary document, the records only in the file.
  auto summary = run_kl(state, {"--json", "report", "devices", "--since", utc(t_late), "--format", "jsonl", "--out",
                                (reports / "late.jsonl").string()});
  ASSERT_EQ(summary.exit_code, 0) << describe(summary);
  EXPECT_EQ(json::parse(summary.out)["devices"], 1) << summary.out;
  EXPECT_EQ(report_ids(tk::read_file(reports / "late.jsonl")), std::vector<std::string>{"late-dev"});
}

// ================================================================ ca batch --generate --key-algorithm

struct AlgorithmCase {
  const char* option;
  int type;          // EVP_PKEY_EC / EVP_PKEY_RSA
  const char* group; // EC curve, or nullptr
  int bits;
};

EvpPkeyPtr read_private_key(const fs::path& path) {
  std::string pem = tk::read_file(path);
  keyline::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return EvpPkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

std::string group_name(EVP_PKEY* key) {
  char name[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name, &len) != 1) return "";
  return name;
}

void PrintTo(const AlgorithmCase& c, std::ostream* os) { *os << c.option; }

class BatchKeyAlgorithm : public ::testing::TestWithParam<AlgorithmCase> {};

TEST_P(BatchKeyAlgorithm, GeneratedKeysAreOfThatAlgorithmAndMatchTheirCertificates) {
  const AlgorithmCase& c = GetParam();
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  add_profile(state, "[profiles.agree]\nkey_agreement = true\n");
  fs::path out = tmp / "out";
  auto r = run_kl(state, {"--json", "ca", "batch", "--generate", "--count", "3", "--id-template", "alg-{seq:03}",
                          "--plain-keys", "--key-algorithm", c.option, "--profile", "agree", "--jobs", "2", "--out",
                          out.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json summary = json::parse(r.out);
  EXPECT_EQ(summary["issued"], 3);
  EXPECT_EQ(summary["rejected"], 0);
  const std::string batch_id = summary["batch_id"];

  auto manifest = jsonl(tk::read_file(out / "manifest.jsonl"));
  ASSERT_EQ(manifest.size(), 3u);
  EXPECT_EQ(json::parse(tk::read_file(out / "batch.json"))["key_algorithm"], c.option);
  for (const char* id : {"alg-001", "alg-002", "alg-003"}) {
    SCOPED_TRACE(id);
    fs::path cert_path = out / (std::string(id) + ".pem");
    fs::path key_path = out / (std::string(id) + ".key.pem");
    auto v = verify_strict(state / "root.pem", out / "chain.pem", cert_path);
    EXPECT_EQ(v.exit_code, 0) << describe(v);
    X509Ptr cert = parse_cert(cert_path);
    EvpPkeyPtr key = read_private_key(key_path);
    ASSERT_TRUE(key);
    EXPECT_EQ(mode_of(key_path), 0600u);
    EXPECT_EQ(EVP_PKEY_get_base_id(key.get()), c.type);
    EXPECT_EQ(EVP_PKEY_get_bits(key.get()), c.bits);
    if (c.group) {
      EXPECT_EQ(group_name(key.get()), c.group);
    }
    EVP_PKEY* cert_key = X509_get0_pubkey(cert.get());
    EXPECT_EQ(EVP_PKEY_get_base_id(cert_key), c.type);
    EXPECT_EQ(EVP_PKEY_get_bits(cert_key), c.bits);
    EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
    EXPECT_EQ(EVP_PKEY_eq(cert_key, key.get()), 1);
    EXPECT_EQ(subject_entry(cert.get(), NID_commonName), id);
    // keyAgreement goes with EC keys only (the profile asks for it).
    auto* ku = static_cast<ASN1_BIT_STRING*>(X509_get_ext_d2i(cert.get(), NID_key_usage, nullptr, nullptr));
    ASSERT_NE(ku, nullptr);
    EXPECT_EQ(ASN1_BIT_STRING_get_bit(ku, 4), c.type == EVP_PKEY_EC ? 1 : 0);  // keyAgreement
    ASN1_BIT_STRING_free(ku);

    // The ledger and the manifest name this certificate and this key.
    std::string serial = serial_hex(cert.get());
    EXPECT_EQ(sql_one(state, "SELECT registration_id || '|' || profile || '|' || status || '|' || batch_id "
                             "FROM certificates WHERE serial = '" + serial + "'"),
              std::string(id) + "|agree|active|" + batch_id);
    EXPECT_EQ(lower(sql_one(state, "SELECT pubkey_sha256 FROM certificates WHERE serial = '" + serial + "'")),
              lower(pubkey_sha256(cert.get())));
    bool in_manifest = false;
    for (auto& m : manifest)
      if (m.dump().find(id) != std::string::npos) {
        in_manifest = true;
        EXPECT_TRUE(contains(lower(m.dump()), lower(serial))) << m.dump();
        EXPECT_TRUE(contains(lower(m.dump()), lower(pubkey_sha256(cert.get())))) << m.dump();
      }
    EXPECT_TRUE(in_manifest);
  }
  EXPECT_EQ(sql_one(state, "SELECT count(*) FROM certificates WHERE batch_id = '" + batch_id + "'"), "3");
}

INSTANTIATE_TEST_SUITE_P(Commands, BatchKeyAlgorithm,
                         ::testing::Values(AlgorithmCase{"ec-p384", EVP_PKEY_EC, "secp384r1", 384},
                                           AlgorithmCase{"rsa-2048", EVP_PKEY_RSA, nullptr, 2048},
                                           AlgorithmCase{"rsa-3072", EVP_PKEY_RSA, nullptr, 3072}),
                         [](const auto& info) {
                           std::string n = info.param.option;
                           std::erase(n, '-');
                           return n;
                         });

TEST(BatchKeyAlgorithm, AProfileThatDoesNotAllowTheAlgorithmIsRefusedBeforeAnythingIsWritten) {
  tk::TempDir tmp;
  fs::path state = init_ca(tmp);
  add_profile(state, "[profiles.ec-only]\nkey_algorithms = [\"ec-p256\"]\n\n"
                     "[profiles.rsa-only]\nkey_algorithms = [\"rsa\"]\n\n"
                     "[profiles.rsa-large]\nkey_algorithms = [\"rsa\"]\nmin_rsa_bits = 3072\n");
  const auto before = capture(state);
  const std::string audit_before = audit_types(state);

  struct Refusal {
    const char* profile;
    const char* algorithm;
  };
  for (auto [profile, algorithm] : {Refusal{"ec-only", "ec-p384"}, Refusal{"ec-only", "rsa-3072"},
                                    Refusal{"rsa-only", "ec-p256"}}) {
    SCOPED_TRACE(std::string(profile) + " " + algorithm);
    fs::path out = tmp / (std::string("out-") + profile + "-" + algorithm);
    auto r = run_kl(state, {"ca", "batch", "--generate", "--count", "2", "--id-template", "no-{seq}", "--plain-keys",
                            "--profile", profile, "--key-algorithm", algorithm, "--out", out.string()});
    // README, exit codes: 4 = refused by policy (profile, CSR policy, uniqueness).
    EXPECT_EQ(r.exit_code, 4) << describe(r);
    EXPECT_TRUE(contains(r.err, profile) && contains(r.err, algorithm)) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_FALSE(fs::exists(out)) << "the out dir was created";
    EXPECT_EQ(changes_since(before, state), "");
    EXPECT_EQ(audit_types(state), audit_before);
  }

  // The profile's RSA minimum counts too: 2048-bit keys under a 3072-bit
  // minimum must be refused like any other disallowed algorithm.
  fs::path small = tmp / "out-rsa-small";
  auto r = run_kl(state, {"ca", "batch", "--generate", "--count", "2", "--id-template", "small-{seq}", "--plain-keys",
                          "--profile", "rsa-large", "--key-algorithm", "rsa-2048", "--out", small.string()});
  EXPECT_EQ(r.exit_code, 4) << describe(r);
  EXPECT_NE(r.err.find("at least 3072 bits"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(small));

  // An algorithm the option does not know is a usage error.
  auto unknown = run_kl(state, {"ca", "batch", "--generate", "--count", "2", "--id-template", "u-{seq}",
                                "--plain-keys", "--key-algorithm", "ed25519", "--out", (tmp / "out-u").string()});
  EXPECT_EQ(unknown.exit_code, 2) << describe(unknown);
  EXPECT_FALSE(fs::exists(tmp / "out-u"));
}

}  // namespace
