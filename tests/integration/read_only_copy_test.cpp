// The commands that only read the ledger, on an auditor's read-only copy of a
// state dir (`cp -r` then `chmod -R a-w`): they work, and they leave the copy
// exactly as it was -- same bytes, same modification times, no SQLite -wal or
// -shm file. Root ignores permission bits, so under root the copy is also
// read by an unprivileged uid (setpriv), for which writing really fails.
#include <sys/stat.h>

#include "cli_support.hpp"

namespace keyline::read_only_copy_test {
namespace {

using namespace keyline::cli_test;

// Every path under `dir` (and `dir` itself) with what would show a write:
// the content's SHA-256 for files, the modification time for everything
// (a directory's changes when a file is created or removed in it).
std::map<std::string, std::string> stamps(const fs::path& dir) {
  std::map<std::string, std::string> out;
  auto stamp = [&](const fs::path& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) throw std::runtime_error("lstat " + p.string() + " failed");
    std::string key = p == dir ? "." : fs::relative(p, dir).string();
    out[key] = "mtime " + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) +
               " mode " + std::to_string(st.st_mode & 07777);
  };
  stamp(dir);
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    stamp(it->path());
  for (auto& [path, sha] : tk::snapshot(dir)) out[path] += " sha256 " + sha;
  return out;
}

std::string differences(const std::map<std::string, std::string>& before,
                        const std::map<std::string, std::string>& after) {
  std::string out;
  for (auto& [p, s] : after) {
    auto it = before.find(p);
    if (it == before.end())
      out += "added " + p + "\n";
    else if (it->second != s)
      out += "changed " + p + ": " + it->second + " -> " + s + "\n";
  }
  for (auto& [p, s] : before)
    if (!after.contains(p)) out += "removed " + p + "\n";
  return out;
}

// chmod -R a-w: files 0444, directories 0555.
void make_read_only(const fs::path& dir) {
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    fs::permissions(it->path(), it->is_directory() ? fs::perms(0555) : fs::perms(0444));
  fs::permissions(dir, fs::perms(0555));
}

struct Station {
  fs::path state;
  std::vector<std::string> serials;
};

// A station with two issued certificates, one of them revoked.
Station make_station(const tk::TempDir& tmp) {
  Station s{init_ca(tmp, {"--station-id", "audited-station"}), {}};
  for (const char* id : {"ro-dev-1", "ro-dev-2"})
    s.serials.push_back(issue(s.state, write_csr(tmp / (std::string(id) + ".csr"), id),
                              tmp / (std::string(id) + ".pem"))["serial"]);
  kl_ok(s.state, {"ca", "revoke", "--serial", s.serials[1]});
  return s;
}

// What each reading command must print about the station (checked on stdout).
struct ReadCommand {
  std::vector<std::string> args;
  std::vector<std::string> expect;
};

std::vector<ReadCommand> read_commands(const Station& s) {
  return {
      {{"audit", "verify", "--ledger"}, {"OK: ", "audited-station"}},
      {{"ledger", "certificates"}, {s.serials[0], s.serials[1], "2 certificate(s)"}},
      {{"report", "devices", "--format", "jsonl"}, {s.serials[0], s.serials[1], "audited-station"}},
      {{"device", "list"}, {"no devices provisioned yet"}},
      {{"dps", "status"}, {"outbox: 0 pending"}},
      {{"ca", "show"}, {"1 active, 1 revoked", "ledger.db"}},
  };
}

// Runs every reading command on `copy` (through `prefix`, e.g. a privilege
// drop) and checks that each works and that none changes anything.
void read_everything(const Station& s, const fs::path& copy, const std::vector<std::string>& prefix) {
  auto before = stamps(copy);
  for (const ReadCommand& c : read_commands(s)) {
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {tk::bin("keyline").string(), "--state", copy.string()});
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    tk::RunResult r = tk::run(argv, kQuiet);
    SCOPED_TRACE(join(c.args));
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    for (const std::string& e : c.expect)
      EXPECT_TRUE(contains(r.out, e)) << "expected '" << e << "' in " << r.out;
    EXPECT_EQ(differences(before, stamps(copy)), "") << "a reading command wrote to the read-only copy";
    EXPECT_FALSE(fs::exists(copy / "ledger.db-wal"));
    EXPECT_FALSE(fs::exists(copy / "ledger.db-shm"));
  }
}

TEST(ReadOnlyCopy, ReadingCommandsWorkAndWriteNothing) {
  tk::TempDir tmp;
  Station s = make_station(tmp);
  fs::path copy = tmp / "copy";
  fs::copy(s.state, copy, fs::copy_options::recursive);
  ASSERT_FALSE(fs::exists(copy / "ledger.db-wal")) << "the copy is of a station at rest";
  make_read_only(copy);
  read_everything(s, copy, {});

  if (::geteuid() == 0) {
    // Root ignores the permission bits: read the copy as an unprivileged
    // uid too, for which any attempt to write fails (EACCES). The files are
    // world-readable (0444) and the temp dir must be traversable.
    fs::permissions(tmp.path(), fs::perms(0711));
    std::vector<std::string> drop{"/usr/bin/setpriv", "--reuid=" + std::to_string(kNobody),
                                  "--regid=" + std::to_string(kNobody), "--clear-groups", "--"};
    std::vector<std::string> probe = drop;
    probe.insert(probe.end(), {tk::bin("keyline").string(), "--version"});
    tk::RunResult p = tk::run(probe);
    ASSERT_EQ(p.exit_code, 0) << "cannot drop to uid " << kNobody
                              << " to read the copy unprivileged: " << describe(p);
    read_everything(s, copy, drop);
  }
}

TEST(ReadOnlyCopy, ReadingCommandsOnAWritableStationLeaveItAsItWas) {
  tk::TempDir tmp;
  Station s = make_station(tmp);
  DirState before = capture(s.state);
  for (const ReadCommand& c : read_commands(s)) {
    tk::RunResult r = kl(s.state, c.args);
    EXPECT_EQ(r.exit_code, 0) << join(c.args) << ": " << describe(r);
    // A read-only SQLite connection leaves empty -wal and -shm files behind
    // in a writable directory; the reading commands must not.
    EXPECT_EQ(changes_since(before, s.state), "") << join(c.args);
  }
}

}  // namespace
}  // namespace keyline::read_only_copy_test
