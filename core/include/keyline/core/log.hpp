#pragma once
// Per-module loggers (STYLE.md §8): spdlog named loggers ("ca", "hsm.file",
// "ledger", "cli", ...), levels from one spec string such as
// "all=info,ca=debug" (KEYLINE_LOG or --log-level), output to stderr as text
// or JSON lines. Secrets are held in keyline::Secret, which has no formatter.

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "keyline/core/error.hpp"

namespace keyline::log {

enum class Format { text, json };

// Parses a spec ("warn", "all=info,ca=debug") and applies it to every
// logger, present and future. Returns a usage error naming the bad item.
Status configure(std::string_view spec, Format format);

// The named logger, created on first use with the configured level.
std::shared_ptr<spdlog::logger> get(const std::string& name);

}  // namespace keyline::log
