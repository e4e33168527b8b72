// keyline line run: the continuous line. One worker thread per serial port
// and per USB selector; each waits for a device to appear, provisions it,
// waits for it to go away, and starts over. A status line per port (redrawn
// in place on a terminal, plain lines otherwise). SIGINT/SIGTERM stop the
// line after the step in flight is recorded.

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <filesystem>
#include <thread>

#include "keyline/core/log.hpp"
#include "keyline/link/serial_link.hpp"
#include "keyline/link/usb_link.hpp"
#include "provision_support.hpp"

namespace keyline::cli {

using json = nlohmann::json;
namespace prov = station::provision;
namespace link = station::link;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_line_stop_signal(int) { g_stop.store(true); }

// Status lines, one per port.
class Board {
 public:
  Board(std::vector<std::string> names, bool tty, bool quiet) : names_(std::move(names)), lines_(names_.size(), "idle"), tty_(tty), quiet_(quiet) {
    if (tty_ && !quiet_) draw(false);
  }
  void set(std::size_t i, const std::string& text) {
    std::lock_guard lock(m_);
    if (lines_[i] == text) return;
    lines_[i] = text;
    if (quiet_) return;
    if (tty_) draw(true);
    else std::cout << names_[i] << ": " << text << std::endl;
  }

 private:
  void draw(bool redraw) {
    if (redraw) std::cout << "\x1b[" << names_.size() << "A";
    for (std::size_t i = 0; i < names_.size(); ++i) std::cout << "\r\x1b[2K" << names_[i] << ": " << lines_[i] << "\n";
    std::cout.flush();
  }
  std::mutex m_;
  std::vector<std::string> names_;
  std::vector<std::string> lines_;
  bool tty_;
  bool quiet_;
};

struct Tally {
  std::mutex m;
  json results = json::array();
  int done = 0;
  int failed = 0;
};

void sleep_a_bit() { std::this_thread::sleep_for(std::chrono::milliseconds(100)); }

// Provisions the device on `l`; updates the board and the tally.
void provision_one(const Context& ctx, ProvisionEnv& env, const prov::JobSettings& settings, link::Link& l, Board& board, std::size_t i,
                   const std::string& name, Tally& tally) {
  prov::DeviceSession session(l, env.session);
  auto jc = job_context(ctx, env);
  jc.on_step = [&](std::string_view step) { board.set(i, "step " + std::string(step)); };
  jc.should_stop = [] { return g_stop.load(); };
  prov::ProvisioningJob job(session, settings, jc);
  auto r = job.run();
  std::lock_guard lock(tally.m);
  if (r) {
    board.set(i, r->state + " " + r->registration_id);
    json j = result_json(*r);
    j["port"] = name;
    tally.results.push_back(j);
    ++tally.done;
  } else {
    board.set(i, "failed " + r.error().message());
    tally.results.push_back({{"port", name}, {"state", "failed"}, {"error", r.error().message()}});
    ++tally.failed;
  }
}

void serial_worker(const Context& ctx, ProvisionEnv& env, const prov::JobSettings& settings, const std::string& port, bool once, Board& board,
                   std::size_t i, Tally& tally) {
  namespace fs = std::filesystem;
  while (!g_stop) {
    board.set(i, "idle");
    std::error_code ec;
    if (!fs::exists(port, ec)) {
      sleep_a_bit();
      continue;
    }
    auto l = link::SerialLink::open(port, {env.baud, env.rtscts});
    if (!l) {
      if (link::has_code(l.error(), link::LinkErrc::not_found)) {
        sleep_a_bit();
        continue;
      }
      board.set(i, "failed " + l.error().message());
      {
        std::lock_guard lock(tally.m);
        tally.results.push_back({{"port", port}, {"state", "failed"}, {"error", l.error().message()}});
        ++tally.failed;
      }
      if (once) return;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    provision_one(ctx, env, settings, **l, board, i, port, tally);
    (*l)->close();
    if (once) return;
    // Wait until this device goes away before looking for the next one.
    while (!g_stop && fs::exists(port, ec)) sleep_a_bit();
  }
}

void usb_worker(const Context& ctx, ProvisionEnv& env, const std::string& spec, bool once, Board& board,
                std::size_t i, Tally& tally) {
  auto sel = link::UsbSelector::parse(spec);
  if (!sel) {
    board.set(i, "failed " + sel.error().message());
    std::lock_guard lock(tally.m);
    tally.results.push_back({{"port", spec}, {"state", "failed"}, {"error", sel.error().message()}});
    ++tally.failed;
    return;
  }
  std::mutex m;
  std::condition_variable cv;
  std::deque<link::UsbDeviceInfo> arrivals;
  auto watcher = link::UsbWatcher::start(*sel, [&](const link::UsbDeviceInfo& d, bool arrived) {
    std::lock_guard lock(m);
    if (arrived) arrivals.push_back(d);
    else std::erase_if(arrivals, [&](const link::UsbDeviceInfo& x) { return x.id() == d.id(); });
    cv.notify_all();
  });
  if (!watcher) {
    board.set(i, "failed " + watcher.error().message());
    std::lock_guard lock(tally.m);
    tally.results.push_back({{"port", spec}, {"state", "failed"}, {"error", watcher.error().message()}});
    ++tally.failed;
    return;
  }
  while (!g_stop) {
    board.set(i, "idle");
    link::UsbDeviceInfo dev;
    {
      std::unique_lock lock(m);
      cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return !arrivals.empty(); });
      if (arrivals.empty()) continue;
      dev = arrivals.front();
      arrivals.pop_front();
    }
    link::UsbSelector one = *sel;
    if (!dev.serial.empty()) one.serial = dev.serial;
    auto l = link::UsbLink::open(one);
    if (!l) {
      board.set(i, "failed " + l.error().message());
      std::lock_guard lock(tally.m);
      tally.results.push_back({{"port", spec}, {"state", "failed"}, {"error", l.error().message()}});
      ++tally.failed;
    } else {
      provision_one(ctx, env, env.settings, **l, board, i, spec, tally);
      (*l)->close();
    }
    if (once) return;
  }
}

Status line_run(const Context& ctx, const std::vector<std::string>& ports, const std::vector<std::string>& usbs,
                bool once, const ProvisionOverrides& o) {
  if (ports.empty() && usbs.empty())
    return fail(Domain::usage, "give at least one --port PATH or --usb VID:PID to watch");
  KL_TRY(auto env, open_provision_env(ctx, o));
  g_stop = false;
  struct sigaction sa{};
  sa.sa_handler = on_line_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // --port PATH[,mode=M]: a port whose devices get another mode.
  std::vector<std::string> paths;
  std::vector<prov::JobSettings> settings;
  for (const auto& spec : ports) {
    ProvisionOverrides po = o;
    auto comma = spec.find(",mode=");
    paths.push_back(spec.substr(0, comma));
    if (comma != std::string::npos) po.mode = spec.substr(comma + 6);
    auto s = settings_for(*env, po);
    if (!s) return std::unexpected(s.error().with_context("--port " + spec));
    settings.push_back(std::move(*s));
  }
  std::vector<std::string> names = paths;
  for (auto& u : usbs) names.push_back("usb " + u);
  Board board(names, isatty(STDOUT_FILENO) == 1 && !ctx.json(), ctx.json());
  Tally tally;
  std::vector<std::jthread> workers;
  for (std::size_t i = 0; i < ports.size(); ++i)
    workers.emplace_back([&, i] { serial_worker(ctx, *env, settings[i], paths[i], once, board, i, tally); });
  for (std::size_t k = 0; k < usbs.size(); ++k)
    workers.emplace_back([&, k] { usb_worker(ctx, *env, usbs[k], once, board, ports.size() + k, tally); });
  for (auto& w : workers) w.join();
  bool interrupted = g_stop.load();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);

  json doc = {{"devices", tally.results}, {"done", tally.done}, {"failed", tally.failed}, {"interrupted", interrupted}};
  if (ctx.json()) ctx.print(doc, [](std::ostream&) {});
  else std::cout << "line: " << tally.done << " done, " << tally.failed << " failed" << (interrupted ? " (stopped)" : "") << "\n";
  if (interrupted) ctx.set_outcome(ExitCode::interrupted);
  else if (tally.failed > 0) ctx.set_outcome(ExitCode::device);
  return {};
}

}  // namespace

void add_line_commands(CLI::App& app, Handler& run) {
  auto* line = app.add_subcommand("line", "The continuous provisioning line");
  line->require_subcommand(1);
  auto* r = line->add_subcommand(
      "run",
      "Watch serial ports and USB devices; provision each device that appears, one worker per port.\n"
      "Ctrl-C stops after the step in flight. Exit 0 when every device was done, 10 when one failed\n"
      "(with --once), 8 when stopped by a signal.");
  auto ports = std::make_shared<std::vector<std::string>>();
  auto usbs = std::make_shared<std::vector<std::string>>();
  auto once = std::make_shared<bool>(false);
  auto o = std::make_shared<ProvisionOverrides>();
  r->add_option("--port", *ports, "Serial port to watch, PATH[,mode=MODE] (repeatable)");
  r->add_option("--usb", *usbs, "USB VID:PID[:SERIAL] to watch (repeatable)");
  r->add_flag("--once", *once, "Exit after each port handled one device");
  add_provision_overrides(r, *o);
  r->callback([&run, ports, usbs, once, o] {
    run = [ports, usbs, once, o](const Context& c) { return line_run(c, *ports, *usbs, *once, *o); };
  });
}

}  // namespace keyline::cli
