#pragma once
// Internal: the export file formats and what export and verify share.

#include <string>
#include <string_view>

#include <openssl/evp.h>

#include "keyline/station/audit.hpp"

namespace keyline::station::audit {

inline std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// SHA-256(prev || a || b) without allocating; hex helpers for 32-byte hashes.
void chain_hash_raw(const unsigned char prev[32], std::string_view a, std::string_view b, unsigned char out[32]);
void lower_hex(const unsigned char raw[32], char out[64]);
bool parse_hash(std::string_view hex, unsigned char out[32]);

// One JSON Lines record: the canonical record with "hash" as its last member.
std::string jsonl_line(const Record& r);
// One CSV row (RFC 4180): seq,time,station,operator,type,body,hash.
std::string csv_line(const Record& r);

// A JSONL line split back into its canonical record, sequence number and hash.
// Views into the line: the canonical record is `head` followed by "}".
struct ParsedLine {
  std::int64_t seq = 0;
  std::string_view head;
  std::string_view hash;
};
Result<ParsedLine> parse_jsonl_line(std::string_view line);
Result<Record> parse_csv_line(std::string_view line);

class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(std::string_view data);
  std::string hex();

 private:
  EVP_MD_CTX* ctx_;
};

nlohmann::json checkpoint_json(const Checkpoint& c);
Result<Bytes> sign_message(const hsm::Signer& key, std::string_view message);

}  // namespace keyline::station::audit
