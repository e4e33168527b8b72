#include "format.hpp"

namespace keyline::station::audit {

namespace {

constexpr std::string_view kHashMember = ",\"hash\":\"";
constexpr std::size_t kSuffix = kHashMember.size() + 64 + 2;  // ,"hash":"<64 hex>"}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

Result<std::int64_t> parse_seq(std::string_view digits) {
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string_view::npos)
    return fail(Domain::integrity, "the sequence number is not a number");
  std::int64_t v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

}  // namespace

Result<ParsedLine> parse_jsonl_line(std::string_view line) {
  constexpr std::string_view kPrefix = "{\"seq\":";
  if (line.size() < kPrefix.size() + kSuffix || line.substr(0, kPrefix.size()) != kPrefix ||
      line.substr(line.size() - kSuffix, kHashMember.size()) != kHashMember || line.substr(line.size() - 2) != "\"}")
    return fail(Domain::integrity, "not an audit record (expected {\"seq\":…,\"hash\":\"…\"})");
  ParsedLine p;
  p.hash = line.substr(line.size() - kSuffix + kHashMember.size(), 64);
  if (!is_hex64(p.hash)) return fail(Domain::integrity, "the record's hash is not 64 lower-case hex digits");
  std::size_t comma = line.find(',', kPrefix.size());
  if (comma == std::string_view::npos) return fail(Domain::integrity, "not an audit record");
  KL_TRY(p.seq, parse_seq(line.substr(kPrefix.size(), comma - kPrefix.size())));
  p.head = line.substr(0, line.size() - kSuffix);
  return p;
}

Result<Record> parse_csv_line(std::string_view line) {
  std::vector<std::string> fields;
  std::string cur;
  std::size_t i = 0;
  while (true) {
    cur.clear();
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (true) {
        if (i >= line.size()) return fail(Domain::integrity, "unterminated quoted field");
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cur += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        cur += line[i++];
      }
    } else {
      while (i < line.size() && line[i] != ',') cur += line[i++];
    }
    fields.push_back(cur);
    if (i >= line.size()) break;
    if (line[i] != ',') return fail(Domain::integrity, "text after a quoted field");
    ++i;
  }
  if (fields.size() != 7)
    return fail(Domain::integrity, "expected 7 fields (seq,time,station,operator,type,body,hash), found " +
                                       std::to_string(fields.size()));
  Record r;
  KL_TRY(r.seq, parse_seq(fields[0]));
  r.time = fields[1];
  r.station = fields[2];
  r.operator_name = fields[3];
  r.type = fields[4];
  r.body = fields[5];
  r.hash = fields[6];
  if (!is_hex64(r.hash)) return fail(Domain::integrity, "the record's hash is not 64 lower-case hex digits");
  return r;
}

}  // namespace keyline::station::audit
