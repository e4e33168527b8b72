#include "keyline/core/log.hpp"

#include <cstdio>
#include <map>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace keyline::log {

namespace {

struct State {
  std::mutex mu;
  spdlog::level::level_enum all = spdlog::level::warn;
  std::map<std::string, spdlog::level::level_enum, std::less<>> per_module;
  Format format = Format::text;
  std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink =
      std::make_shared<spdlog::sinks::stderr_sink_mt>();
};

State& state() {
  static State s;
  return s;
}

Result<spdlog::level::level_enum> parse_level(std::string_view text) {
  static const std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"off", spdlog::level::off},     {"none", spdlog::level::off}};
  for (auto& [name, level] : kLevels)
    if (name == text) return level;
  return fail(Domain::usage, "unknown log level '" + std::string(text) +
                                 "' (use trace, debug, info, warn, error or off)");
}

spdlog::level::level_enum level_for(const State& s, std::string_view name) {
  // "hsm.pkcs11" falls back to "hsm", then to all.
  std::string_view n = name;
  for (;;) {
    auto it = s.per_module.find(n);
    if (it != s.per_module.end()) return it->second;
    auto dot = n.rfind('.');
    if (dot == std::string_view::npos) return s.all;
    n = n.substr(0, dot);
  }
}

// The message as a JSON string body (quotes, backslashes, control characters escaped).
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        dest.append(buf, buf + 6);
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

void apply(State& s, spdlog::logger& l) {
  l.set_level(level_for(s, l.name()));
  if (s.format == Format::json) {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<JsonMessageFlag>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","module":"%n","msg":"%*"})");
    l.set_formatter(std::move(f));
  } else {
    l.set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l [%n] %v", spdlog::pattern_time_type::utc);
  }
}

}  // namespace

Status configure(std::string_view spec, Format format) {
  State& s = state();
  std::lock_guard lock(s.mu);
  s.format = format;
  std::size_t pos = 0;
  while (pos <= spec.size() && !spec.empty()) {
    auto comma = spec.find(',', pos);
    std::string_view item = spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (!item.empty()) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos) {
        KL_TRY(s.all, parse_level(item));
      } else {
        std::string_view module = item.substr(0, eq);
        KL_TRY(auto level, parse_level(item.substr(eq + 1)));
        if (module == "all") s.all = level;
        else s.per_module[std::string(module)] = level;
      }
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { apply(s, *l); });
  return {};
}

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  if (auto l = spdlog::get(name)) return l;
  State& s = state();
  std::lock_guard lock(s.mu);
  if (auto l = spdlog::get(name)) return l;
  auto l = std::make_shared<spdlog::logger>(name, s.sink);
  apply(s, *l);
  spdlog::register_logger(l);
  return l;
}

}  // namespace keyline::log
