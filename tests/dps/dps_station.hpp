#pragma once
// Points a station's keyline.toml at a DPS emulator: the [dps] section
// (replaced if present) with the connection string read from a file in
// `dir`, the emulator's ID scope and its CA. Shared by the DPS CLI tests.
#include <filesystem>
#include <string>

#include "keyline/testkit/dps_emulator.hpp"
#include "keyline/testkit/testkit.hpp"

namespace keyline::dps_test {

inline void point_station_at(const std::filesystem::path& state, const std::filesystem::path& dir,
                             const testkit::DpsEmulator& emu, const std::string& connection_string) {
  testkit::write_file(dir / "dps-cs", connection_string + "\n");
  std::string toml = testkit::read_file(state / "keyline.toml");
  toml = toml.substr(0, toml.find("\n[dps]"));
  toml += "\n[dps]\nconnection-string-source = \"file:" + (dir / "dps-cs").string() + "\"\nid-scope = \"" +
          emu.id_scope() + "\"\nca-file = \"" + emu.ca_cert() + "\"\nquota-per-minute = 6000\n";
  testkit::write_file(state / "keyline.toml", toml);
}

}  // namespace keyline::dps_test
