#pragma once
// The inputs of a batch (internal to station/batch): a CSR folder walked
// lazily, an ID file read line by line, or a counter; handed out in chunks
// to whichever worker asks next.
#include <dirent.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "keyline/core/error.hpp"
#include "keyline/core/files.hpp"
#include "keyline/station/batch.hpp"

namespace keyline::station::batch::detail {

struct Item {
  std::string input;                      // file name or registration ID (for messages)
  std::optional<std::string> generate_id;  // registration ID (generate)
};

// The inputs, handed out in chunks to whichever worker asks next. CSR files
// are named here and read by the worker (relative to the folder, so the
// kernel does not walk the whole path for each one).
class Source {
 public:
  ~Source() {
    if (dir_) ::closedir(dir_);
  }

  Status open(const Options& o) {
    o_ = &o;
    if (o.mode == Mode::csr_dir) {
      dir_ = ::opendir(o.csr_dir.c_str());
      if (!dir_) return fail(Domain::input, "cannot read --csr-dir " + files::errno_text(o.csr_dir, errno));
    } else if (!o.ids_file.empty()) {
      ids_.open(o.ids_file);
      if (!ids_) return fail(Domain::input, "cannot read --ids " + o.ids_file.string());
    }
    return {};
  }

  int dir_fd() const { return dir_ ? ::dirfd(dir_) : -1; }

  // Every input has been handed out.
  bool exhausted() {
    std::lock_guard lock(mu_);
    return done_;
  }

  // Up to `n` more items; none when the source is exhausted or `stop` is set.
  Result<std::vector<Item>> next(std::size_t n, const std::atomic<bool>& stop) {
    std::vector<Item> items;
    items.reserve(n);
    std::lock_guard lock(mu_);
    while (items.size() < n && !done_ && !stop.load()) {
      if (dir_) {
        errno = 0;
        dirent* e = ::readdir(dir_);
        if (!e) {
          done_ = true;
          if (errno) return fail(Domain::io, "reading --csr-dir " + files::errno_text(o_->csr_dir, errno));
          break;
        }
        if (e->d_name[0] == '.') continue;
        bool regular = e->d_type == DT_REG;
        if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
          struct stat st{};
          regular = ::fstatat(dirfd(dir_), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode);
        }
        if (regular) items.push_back(Item{e->d_name, std::nullopt});
      } else if (ids_.is_open()) {
        if (!std::getline(ids_, line_)) {
          done_ = true;
          break;
        }
        auto a = line_.find_first_not_of(" \t\r");
        if (a == std::string::npos || line_[a] == '#') continue;
        auto b = line_.find_last_not_of(" \t\r");
        std::string id = line_.substr(a, b - a + 1);
        items.push_back(Item{id, id});
      } else {
        if (seq_ >= o_->count.value_or(0)) {
          done_ = true;
          break;
        }
        KL_TRY(std::string id, expand_template(o_->id_template, o_->start + seq_));
        ++seq_;
        items.push_back(Item{id, id});
      }
    }
    return items;
  }

 private:
  const Options* o_ = nullptr;
  std::mutex mu_;
  DIR* dir_ = nullptr;
  std::ifstream ids_;
  std::string line_;
  std::uint64_t seq_ = 0;
  bool done_ = false;
};

// Reads one CSR file of the folder (relative to `dir_fd`): open, one read, close.
Result<std::string> read_input(int dir_fd, const Options& o, const std::string& name);

// How many inputs the source has (for progress; 0 = unknown).
std::uint64_t count_items(const Options& o);

}  // namespace keyline::station::batch::detail
