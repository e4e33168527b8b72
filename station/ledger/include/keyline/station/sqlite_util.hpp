#pragma once
// SQLite helpers for code that works on the ledger's connection: the
// ledger's table classes and the audit trail.
#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "keyline/core/error.hpp"

namespace keyline::station::sql {

struct StmtFree {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFree>;

// "`what`: SQLite's message", with SQLite's extended result code.
inline Error error(sqlite3* db, const std::string& what) {
  return Error(Domain::sqlite, what + ": " + sqlite3_errmsg(db), sqlite3_extended_errcode(db));
}

inline Result<Stmt> prepare(sqlite3* db, const char* sql, const std::string& what) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) return std::unexpected(error(db, what));
  return Stmt(s);
}

inline void bind(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
inline void bind(sqlite3_stmt* s, int i, std::int64_t v) { sqlite3_bind_int64(s, i, v); }

inline std::string text(sqlite3_stmt* s, int i) {
  auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<std::size_t>(sqlite3_column_bytes(s, i)))
           : std::string();
}

// Column `i` into `out`, keeping out's capacity (for loops over many rows).
inline void assign_text(std::string& out, sqlite3_stmt* s, int i) {
  auto* p = sqlite3_column_text(s, i);
  if (p)
    out.assign(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
  else
    out.clear();
}

}  // namespace keyline::station::sql
