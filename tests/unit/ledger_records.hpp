// Certificate rows for ledger tests: only the columns the ledger checks
// carry meaning; the fingerprints and DER are placeholders.
#pragma once

#include <string>

#include "keyline/station/ledger.hpp"

namespace keyline::station::test {

inline CertificateRecord certificate_record(const std::string& serial, const std::string& id,
                                            const std::string& profile = "device") {
  CertificateRecord r;
  r.serial = serial;
  r.registration_id = id;
  r.profile = profile;
  r.subject = "CN=" + id;
  r.cert_sha256 = "C" + serial;
  r.pubkey_sha256 = "P" + serial;
  r.not_before = 1;
  r.not_after = 2;
  r.issued_at = 1;
  r.der = {0x30, 0x00};
  return r;
}

}  // namespace keyline::station::test
