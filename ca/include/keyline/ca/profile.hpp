#pragma once
// ca::Profile -- what a leaf certificate says, per profile, from keyline.toml:
//
//   [profiles.device]
//   validity_days = 365            # or validity = "forever" (notAfter 99991231235959Z, RFC 5280 §4.1.2.5)
//   key_algorithms = ["ec-p256", "ec-p384", "rsa"]
//   min_rsa_bits = 2048
//   subject = { O = "Example Corp", OU = "Line 1", C = "DE" }
//   uri_san = "urn:example:device:{registration_id}"   # optional
//   key_agreement = false          # EC keys: keyUsage also keyAgreement
//   backdate_minutes = 5           # notBefore = now - skew
//   allowed_request_extensions = ["subjectAltName"]    # others in a CSR are refused
//   serial_number_attribute = false # IEEE 802.1AR: subject serialNumber = device serial
//   hardware_module_oid = "1.3.6.1.4.1.99999.1"        # optional: hardwareModuleName SAN (RFC 4108)

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keyline/core/error.hpp"

namespace keyline::ca {

struct Profile {
  std::string name = "device";
  std::optional<int> validity_days = 365;  // nullopt: "forever"
  bool allow_ec_p256 = true;
  bool allow_ec_p384 = true;
  bool allow_rsa = true;
  int min_rsa_bits = 2048;
  std::string subject_o;
  std::string subject_ou;
  std::string subject_c;
  std::string uri_san_template;
  bool key_agreement = false;
  std::chrono::seconds backdate{300};
  std::vector<std::string> allowed_request_extensions;
  bool serial_number_attribute = false;
  std::string hardware_module_oid;
};

// Parses every [profiles.NAME] table of a keyline.toml text. Errors name the
// profile, the key and the expected form. A text without profiles yields the
// built-in "device" profile.
Result<std::map<std::string, Profile>> parse_profiles(std::string_view toml_text,
                                                      std::string_view source);

}  // namespace keyline::ca
