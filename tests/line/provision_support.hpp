#pragma once
// Helpers for the provisioning tests (test code): a station with a CA and
// [provision] settings, and ledger queries.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>
#include <string>

#include "keyline/testkit/testkit.hpp"

namespace prov_test {

namespace fs = std::filesystem;
using keyline::testkit::RunResult;

inline const std::map<std::string, std::string> kEnv{{"KEYLINE_LOG", "error"}, {"KEYLINE_OPERATOR", "line-tester"}};
// Known secrets so a test can recompute the derived device keys.
inline const std::string kGroupKeyB64 = "Z3JvdXAta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5YWI=";
inline const std::string kMasterB64 = "bWFzdGVyLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=";

inline void init_station(const fs::path& state) {
  auto r = keyline::testkit::keyline(state, {"ca", "init"}, kEnv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (auto [label, key] : {std::pair{"group-1", kGroupKeyB64}, std::pair{"master-1", kMasterB64}}) {
    auto s = keyline::testkit::keyline(state, {"hsm", "secret", "import", "--label", label}, kEnv, key + "\n");
    ASSERT_EQ(s.exit_code, 0) << s.err;
  }
  std::string toml = keyline::testkit::read_file(state / "keyline.toml");
  toml += "\n[provision]\nmode = \"x509-device-key\"\nregistration_id_template = \"{model}-{serial}\"\n"
          "group_key = \"hsm:group-1\"\nindividual_key = \"hsm:master-1\"\nid_scope = \"0ne00000001\"\n"
          "timeout_ms = 400\n";
  keyline::testkit::write_file(state / "keyline.toml", toml);
}

// Rows of a query on the ledger, each column as text.
inline std::vector<std::vector<std::string>> query(const fs::path& state, const std::string& sql) {
  sqlite3* db = nullptr;
  std::vector<std::vector<std::string>> rows;
  if (sqlite3_open_v2((state / "ledger.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open the ledger";
    sqlite3_close(db);
    return rows;
  }
  // The station may be writing (a test polls a running line): wait out its
  // locks instead of failing with "database is locked".
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sqlite3_errmsg(db) << " in " << sql;
  } else {
    while (sqlite3_step(s) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        auto* t = sqlite3_column_text(s, i);
        row.push_back(t ? reinterpret_cast<const char*>(t) : "");
      }
      rows.push_back(row);
    }
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return rows;
}

inline std::string scalar(const fs::path& state, const std::string& sql) {
  auto rows = query(state, sql);
  return rows.empty() || rows[0].empty() ? "" : rows[0][0];
}

inline nlohmann::json show(const fs::path& device_state) {
  auto r = keyline::testkit::run({keyline::testkit::bin("keyline-devsim").string(), "--state", device_state.string(), "--show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out, nullptr, false);
}

inline RunResult provision(const fs::path& state, const std::string& port, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--json", "device", "provision", "--port", port};
  args.insert(args.end(), extra.begin(), extra.end());
  return keyline::testkit::keyline(state, args, kEnv);
}

}  // namespace prov_test
