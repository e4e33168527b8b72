#include <sqlite3.h>

#include <cstring>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "format.hpp"
#include "keyline/station/sqlite_util.hpp"
#include "keyline/core/hex.hpp"
#include "keyline/core/openssl.hpp"
#include "keyline/station/audit.hpp"

namespace keyline::station::audit {

namespace {

// JSON string literal; the fast path copies plain printable ASCII.
void append_json_string(std::string& out, std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      out += nlohmann::json(std::string(s)).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
      return;
    }
  out += '"';
  out.append(s);
  out += '"';
}

Record read_record(sqlite3_stmt* s) {
  Record r;
  r.seq = sqlite3_column_int64(s, 0);
  r.time = sql::text(s, 1);
  r.station = sql::text(s, 2);
  r.operator_name = sql::text(s, 3);
  r.type = sql::text(s, 4);
  r.body = sql::text(s, 5);
  r.hash = sql::text(s, 6);
  return r;
}

Error db_error(Ledger& ledger, const std::string& what) {
  return Error(Domain::state, what + " in ledger " + ledger.path().string() + ": " + sqlite3_errmsg(ledger.handle()),
               sqlite3_extended_errcode(ledger.handle()));
}

Result<sql::Stmt> prepare(Ledger& ledger, const char* statement) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(ledger.handle(), statement, -1, &s, nullptr) != SQLITE_OK)
    return std::unexpected(db_error(ledger, "reading the audit trail (is the ledger at schema 4 or later?)"));
  return sql::Stmt(s);
}

constexpr const char* kRecordColumns = "seq, time, station, operator, type, body, hash";

}  // namespace

bool valid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n = 0;
    std::uint32_t cp = 0, min = 0;
    if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1fu, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0fu, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07u, min = 0x10000;
    else return false;
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

std::string canonical_body(const nlohmann::json& body) {
  return body.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

std::string canonical_record(const Record& r) {
  std::string out;
  out.reserve(96 + r.time.size() + r.station.size() + r.operator_name.size() + r.type.size() + r.body.size());
  out += "{\"seq\":";
  out += std::to_string(r.seq);
  out += ",\"time\":";
  append_json_string(out, r.time);
  out += ",\"station\":";
  append_json_string(out, r.station);
  out += ",\"operator\":";
  append_json_string(out, r.operator_name);
  out += ",\"type\":";
  append_json_string(out, r.type);
  out += ",\"body\":";
  out += r.body;
  out += '}';
  return out;
}

void chain_hash_raw(const unsigned char prev[32], std::string_view a, std::string_view b, unsigned char out[32]) {
  // One context and one fetched digest per thread: an implicit fetch per
  // record would cost more than the hash itself.
  struct Ctx {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Ctx() {
      EVP_MD_CTX_free(ctx);
      EVP_MD_free(md);
    }
  };
  thread_local Ctx c;
  unsigned int n = 0;
  EVP_DigestInit_ex(c.ctx, c.md, nullptr);
  EVP_DigestUpdate(c.ctx, prev, 32);
  EVP_DigestUpdate(c.ctx, a.data(), a.size());
  if (!b.empty()) EVP_DigestUpdate(c.ctx, b.data(), b.size());
  EVP_DigestFinal_ex(c.ctx, out, &n);
}

void lower_hex(const unsigned char raw[32], char out[64]) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) {
    out[2 * i] = kDigits[raw[i] >> 4];
    out[2 * i + 1] = kDigits[raw[i] & 15];
  }
}

bool parse_hash(std::string_view hex, unsigned char out[32]) {
  if (hex.size() != 64) return false;
  auto nibble = [](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
  };
  for (int i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

std::string chain_hash(std::string_view prev_hash_hex, std::string_view canonical) {
  unsigned char prev[32] = {};
  parse_hash(prev_hash_hex, prev);
  unsigned char md[32];
  chain_hash_raw(prev, canonical, {}, md);
  char hex[64];
  lower_hex(md, hex);
  return std::string(hex, 64);
}

std::string checkpoint_message(std::string_view station, std::int64_t seq, std::string_view hash,
                               std::string_view time) {
  std::string m = "keyline-audit-checkpoint-v1\n";
  m.append(station).append("\n").append(std::to_string(seq)).append("\n");
  m.append(hash).append("\n").append(time).append("\n");
  return m;
}

Trail::Trail(Ledger& ledger, Actor actor, const Clock& clock)
    : ledger_(ledger), actor_(std::move(actor)), clock_(clock) {}

Trail::~Trail() {
  sqlite3_finalize(head_);
  sqlite3_finalize(insert_);
}

Result<std::pair<std::int64_t, std::string>> Trail::head() {
  if (cached_head_ && cached_head_->transaction == ledger_.transaction_number() &&
      !sqlite3_get_autocommit(ledger_.handle()))
    return std::pair{cached_head_->seq, cached_head_->hash};
  if (!head_ && sqlite3_prepare_v2(ledger_.handle(), "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                                   -1, &head_, nullptr) != SQLITE_OK)
    return std::unexpected(db_error(ledger_, "reading the audit trail's head"));
  int rc = sqlite3_step(head_);
  std::pair<std::int64_t, std::string> h{0, std::string(kGenesisHash)};
  if (rc == SQLITE_ROW) {
    h.first = sqlite3_column_int64(head_, 0);
    h.second = sql::text(head_, 1);
  } else if (rc != SQLITE_DONE) {
    sqlite3_reset(head_);
    return std::unexpected(db_error(ledger_, "reading the audit trail's head"));
  }
  sqlite3_reset(head_);
  return h;
}

Result<Record> Trail::append(std::string_view type, const nlohmann::json& body) {
  return append_canonical(type, canonical_body(body.is_null() ? nlohmann::json::object() : body));
}

Result<Record> Trail::append_canonical(std::string_view type, std::string canonical) {
  if (sqlite3_get_autocommit(ledger_.handle()))
    return fail(Domain::internal, "audit record '" + std::string(type) + "' appended outside a transaction");
  if (!actor_checked_) {
    // The canonical form cannot tell invalid bytes apart (they become U+FFFD).
    if (!valid_utf8(actor_.operator_name))
      return fail(Domain::usage, "the operator name is not valid UTF-8; nothing was recorded or changed");
    if (!valid_utf8(actor_.station))
      return fail(Domain::usage, "the station id is not valid UTF-8; nothing was recorded or changed");
    actor_checked_ = true;
  }
  KL_TRY(auto h, head());
  Record r;
  r.seq = h.first + 1;
  r.time = format_utc(clock_.now());
  r.station = actor_.station;
  r.operator_name = actor_.operator_name;
  r.type = std::string(type);
  r.body = std::move(canonical);
  r.hash = chain_hash(h.second, canonical_record(r));
  if (!insert_ &&
      sqlite3_prepare_v2(ledger_.handle(),
                         "INSERT INTO audit_events (seq, time, station, operator, type, body, hash) "
                         "VALUES (?,?,?,?,?,?,?)",
                         -1, &insert_, nullptr) != SQLITE_OK)
    return std::unexpected(db_error(ledger_, "writing an audit record"));
  sqlite3_bind_int64(insert_, 1, r.seq);
  sqlite3_bind_text(insert_, 2, r.time.data(), static_cast<int>(r.time.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert_, 3, r.station.data(), static_cast<int>(r.station.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert_, 4, r.operator_name.data(), static_cast<int>(r.operator_name.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert_, 5, r.type.data(), static_cast<int>(r.type.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert_, 6, r.body.data(), static_cast<int>(r.body.size()), SQLITE_STATIC);
  sqlite3_bind_text(insert_, 7, r.hash.data(), static_cast<int>(r.hash.size()), SQLITE_STATIC);
  int rc = sqlite3_step(insert_);
  sqlite3_reset(insert_);
  sqlite3_clear_bindings(insert_);
  if (rc != SQLITE_DONE) {
    cached_head_.reset();
    return std::unexpected(db_error(ledger_, "writing audit record '" + r.type +
                                                 "' (the change it records was not made)"));
  }
  cached_head_ = CachedHead{ledger_.transaction_number(), r.seq, r.hash};
  return r;
}

Result<std::optional<Checkpoint>> Trail::checkpoint(const hsm::Signer& key, const std::string& key_id,
                                                    std::optional<std::int64_t> seq) {
  std::optional<Record> rec;
  if (!seq) {
    KL_TRY(auto h, head());
    if (h.first == 0) return std::optional<Checkpoint>{};
    // The checkpoint's own record goes into the chain first and is what the
    // checkpoint signs: a checkpoint deleted later leaves this record behind.
    KL_TRY(rec, append(kCheckpointRecord, {{"key", key_id}}));
  } else {
    KL_TRY(rec, record_at(ledger_, *seq));
    if (!rec) return fail(Domain::internal, "no audit record " + std::to_string(*seq) + " to checkpoint");
  }
  Checkpoint cp;
  cp.seq = rec->seq;
  cp.hash = rec->hash;
  cp.time = format_utc(clock_.now());
  cp.key = key_id;
  std::string message = checkpoint_message(rec->station, cp.seq, cp.hash, cp.time);
  hsm::Digest d = hsm::digest_for(key.algorithm());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(message.data(), message.size(), md, &n, hsm::evp_md(d), nullptr);
  KL_TRY(cp.signature, key.sign(ByteView(md, n)));
  KL_TRY(sql::Stmt st,
         prepare(ledger_, "INSERT INTO audit_checkpoints (seq, hash, time, key, signature) VALUES (?,?,?,?,?)"));
  sqlite3_bind_int64(st.get(), 1, cp.seq);
  sqlite3_bind_text(st.get(), 2, cp.hash.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st.get(), 3, cp.time.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(st.get(), 4, cp.key.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_blob(st.get(), 5, cp.signature.data(), static_cast<int>(cp.signature.size()), SQLITE_STATIC);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return std::unexpected(db_error(ledger_, "storing an audit checkpoint"));
  return std::optional<Checkpoint>(std::move(cp));
}

Result<bool> Trail::checkpoint_due(std::int64_t interval) {
  if (interval <= 0) return false;
  KL_TRY(auto h, head());
  KL_TRY(sql::Stmt st, prepare(ledger_, "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints"));
  std::int64_t last = sqlite3_step(st.get()) == SQLITE_ROW ? sqlite3_column_int64(st.get(), 0) : 0;
  return h.first - last >= interval;
}

Status Trail::checkpoint_if_due(const hsm::Signer& key, const std::string& key_id, std::int64_t interval) {
  KL_TRY(bool due, checkpoint_due(interval));
  if (!due) return {};
  KL_TRY(auto cp, checkpoint(key, key_id));
  (void)cp;
  return {};
}

Result<std::optional<Record>> record_at(Ledger& ledger, std::int64_t seq) {
  std::string query = std::string("SELECT ") + kRecordColumns + " FROM audit_events WHERE seq=?";
  KL_TRY(sql::Stmt st, prepare(ledger, query.c_str()));
  sqlite3_bind_int64(st.get(), 1, seq);
  int rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) return std::optional<Record>(read_record(st.get()));
  if (rc == SQLITE_DONE) return std::optional<Record>{};
  return std::unexpected(db_error(ledger, "reading audit record " + std::to_string(seq)));
}

Result<std::int64_t> head_seq(Ledger& ledger) {
  KL_TRY(sql::Stmt st, prepare(ledger, "SELECT COALESCE(MAX(seq), 0) FROM audit_events"));
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::unexpected(db_error(ledger, "reading the audit trail's head"));
  return sqlite3_column_int64(st.get(), 0);
}

Status for_each_record(Ledger& ledger, std::int64_t first, std::int64_t last,
                       const std::function<Status(const Record&)>& fn) {
  std::string query =
      std::string("SELECT ") + kRecordColumns + " FROM audit_events WHERE seq BETWEEN ? AND ? ORDER BY seq";
  KL_TRY(sql::Stmt st, prepare(ledger, query.c_str()));
  sqlite3_bind_int64(st.get(), 1, first);
  sqlite3_bind_int64(st.get(), 2, last);
  int rc;
  Record r;  // reused: its strings keep their capacity from row to row
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    r.seq = sqlite3_column_int64(st.get(), 0);
    sql::assign_text(r.time, st.get(), 1);
    sql::assign_text(r.station, st.get(), 2);
    sql::assign_text(r.operator_name, st.get(), 3);
    sql::assign_text(r.type, st.get(), 4);
    sql::assign_text(r.body, st.get(), 5);
    sql::assign_text(r.hash, st.get(), 6);
    KL_CHECK(fn(r));
  }
  if (rc != SQLITE_DONE) return std::unexpected(db_error(ledger, "reading the audit trail"));
  return {};
}

Result<std::vector<Checkpoint>> checkpoints(Ledger& ledger, std::int64_t first, std::int64_t last) {
  KL_TRY(sql::Stmt st,
         prepare(ledger,
                 "SELECT seq, hash, time, key, signature FROM audit_checkpoints WHERE seq BETWEEN ? AND ? "
                 "ORDER BY seq, id"));
  sqlite3_bind_int64(st.get(), 1, first);
  sqlite3_bind_int64(st.get(), 2, last);
  std::vector<Checkpoint> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    Checkpoint c;
    c.seq = sqlite3_column_int64(st.get(), 0);
    c.hash = sql::text(st.get(), 1);
    c.time = sql::text(st.get(), 2);
    c.key = sql::text(st.get(), 3);
    auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(st.get(), 4));
    c.signature.assign(p, p + sqlite3_column_bytes(st.get(), 4));
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return std::unexpected(db_error(ledger, "reading audit checkpoints"));
  return out;
}

Result<std::int64_t> resolve_bound(Ledger& ledger, const std::string& text, bool is_until, const char* what) {
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
    if (text.size() > 18) return fail(Domain::usage, std::string(what) + " " + text + " is too large");
    return std::stoll(text);
  }
  // YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ; compared as text with the stored times.
  std::string t = text;
  bool date_only = t.size() == 10;
  bool ok = (date_only || (t.size() == 20 && t[10] == 'T' && t[13] == ':' && t[16] == ':' && t[19] == 'Z')) &&
            t[4] == '-' && t[7] == '-';
  for (std::size_t i = 0; ok && i < t.size(); ++i)
    if (i != 4 && i != 7 && i != 10 && i != 13 && i != 16 && i != 19 && !std::isdigit(static_cast<unsigned char>(t[i])))
      ok = false;
  if (!ok)
    return fail(Domain::usage, std::string(what) + " '" + text +
                                   "' is neither a sequence number nor a UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)");
  if (date_only) t += is_until ? "T23:59:59Z" : "T00:00:00Z";
  KL_TRY(sql::Stmt st, prepare(ledger, is_until ? "SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE time <= ?"
                                                 : "SELECT COALESCE(MIN(seq), 0) FROM audit_events WHERE time >= ?"));
  sqlite3_bind_text(st.get(), 1, t.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::unexpected(db_error(ledger, "resolving " + std::string(what)));
  std::int64_t seq = sqlite3_column_int64(st.get(), 0);
  if (seq == 0 && !is_until) {
    KL_TRY(std::int64_t head, head_seq(ledger));
    return head + 1;  // nothing at or after that time: an empty range
  }
  return seq;
}

Status verify_signature(const std::string& cert_pem, ByteView message, ByteView signature) {
  KL_TRY(X509Ptr cert, x509_from_pem(cert_pem, "audit certificate"));
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (!key) return fail(Domain::integrity, "the audit certificate has no usable public key");
  const EVP_MD* md = EVP_sha256();
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC && EVP_PKEY_get_bits(key) == 384) md = EVP_sha384();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  int ok = EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, key) == 1 &&
           EVP_DigestVerify(ctx, signature.data(), signature.size(), message.data(), message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  if (!ok) return fail(Domain::integrity, "signature does not verify with the audit key");
  return {};
}

}  // namespace keyline::station::audit
