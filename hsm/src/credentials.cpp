#include "keyline/hsm/credentials.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "keyline/core/files.hpp"
#include "keyline/core/log.hpp"

namespace keyline::hsm {

namespace {

Result<SecretString> from_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return fail(Domain::keystore, "secret file " + files::errno_text(path, errno) +
                                      "; create it with the PIN / auth value on its first line, mode 0600");
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    log::get("hsm")->warn("secret file {} is accessible by group or others (mode {:o}); chmod 600 it", path,
                          st.st_mode & 0777);
  auto text = files::read(path, 4096);
  if (!text) return std::unexpected(text.error().with_context("reading a secret file"));
  SecretString whole(std::move(*text));
  const std::string& s = whole.reveal();
  std::size_t end = s.find('\n');
  if (end == std::string::npos) end = s.size();
  if (end > 0 && s[end - 1] == '\r') --end;
  if (end == 0)
    return fail(Domain::keystore, "secret file " + path + " is empty (its first line is the secret)");
  return SecretString(s.substr(0, end));
}

// Restores the terminal even when reading fails.
class EchoOff {
 public:
  explicit EchoOff(int fd) : fd_(fd) {
    if (::tcgetattr(fd_, &saved_) == 0) {
      termios quiet = saved_;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      quiet.c_lflag |= ECHONL;
      active_ = ::tcsetattr(fd_, TCSAFLUSH, &quiet) == 0;
    }
  }
  ~EchoOff() {
    if (active_) ::tcsetattr(fd_, TCSAFLUSH, &saved_);
  }
  EchoOff(const EchoOff&) = delete;
  EchoOff& operator=(const EchoOff&) = delete;

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

Result<SecretString> from_terminal(std::string_view prompt_text) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return fail(Domain::keystore,
                "cannot open /dev/tty to ask for the secret: " + std::string(std::strerror(errno)));
  std::string line;
  {
    EchoOff quiet(fd);
    std::size_t off = 0;
    while (off < prompt_text.size()) {
      ssize_t n = ::write(fd, prompt_text.data() + off, prompt_text.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    char c = 0;
    for (;;) {
      ssize_t n = ::read(fd, &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || c == '\n') break;
      if (line.size() < 1024) line.push_back(c);
    }
  }
  ::close(fd);
  SecretString secret(std::move(line));
  if (!secret.empty() && secret.reveal().back() == '\r') {
    std::string trimmed = secret.reveal().substr(0, secret.reveal().size() - 1);
    secret = SecretString(std::move(trimmed));
  }
  if (secret.empty()) return fail(Domain::keystore, "no secret was entered at the prompt");
  return secret;
}

}  // namespace

Result<SecretString> resolve_secret(std::string_view source, std::string_view env_name,
                                    std::string_view prompt_text) {
  if (!source.empty()) {
    std::string_view path = source;
    if (path.starts_with("file://"))
      path.remove_prefix(7);
    else if (path.starts_with("file:"))
      path.remove_prefix(5);
    else if (!path.starts_with("/"))
      return fail(Domain::usage,
                  "secret source '" + std::string(source) +
                      "' is not supported; write file:/path/to/secret (the first line is used)");
    if (path.empty())
      return fail(Domain::usage, "secret source 'file:' needs a path, for example file:/etc/keyline/pin");
    return from_file(std::string(path));
  }
  std::string env(env_name);
  if (!env.empty()) {
    if (const char* value = std::getenv(env.c_str()); value && *value)
      return SecretString(std::string(value));
  }
  if (::isatty(STDIN_FILENO)) return from_terminal(prompt_text);
  return fail(Domain::keystore,
              "no secret available: add pin-source=file:/path/to/secret (auth-source=... for "
              "tpm2:) to the key store URI, or set " +
                  (env.empty() ? std::string("the environment") : env) +
                  ", or run on a terminal to be asked");
}

}  // namespace keyline::hsm
