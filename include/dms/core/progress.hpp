// dms/core/progress.hpp: progress reporting for long operations (merges, calibration, I/O).
//
// A merge of two 70B checkpoints runs for minutes; the CLI wants a progress bar, a GUI wants a
// callback, and a library user embedding dms in a server wants silence at zero cost. So library
// code takes a `progress` handle (a cheap copyable value, default: silent) and calls
// start / advance / finish on it; whoever created the handle decides where the reports go.
//
//  * A default-constructed `progress` does nothing: each call is one test of a null pointer.
//  * `advance` may be called from any thread (the count is atomic); the callback is never run by
//    two threads at once and sees `done` never decreasing within a phase. Reports are
//    rate-limited (by default at most one per 100 ms); `finish` always reports.
//  * start and finish belong to the thread that drives the operation, not to its workers.
//  * A callback may throw to cancel the operation: the exception leaves the advance() or
//    finish() call that ran it.
//  * `terminal_progress_bar` is the callback the dms CLI uses: a redrawn bar on a terminal,
//    plain periodic lines otherwise (CI logs stay readable).
//
// @code
//   dms::progress p(dms::terminal_progress_bar{});
//   p.start("merging", total_bytes, dms::progress_unit::bytes);
//   pool.parallel_for(n, grain, [&](std::size_t b, std::size_t e) { ...; p.advance(bytes_of(b, e)); });
//   p.finish();   // prints: merging [####################] 100% 2.6/2.6 GiB 85.0 MiB/s in 0:31
// @endcode
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <iostream>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#if defined(_WIN32)
#include <io.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! What the units of a progress count are; decides how they are printed.
enum class progress_unit : std::uint8_t {
  items, //!< tensors, layers, samples: printed as plain integers
  bytes, //!< printed with binary prefixes (KiB, MiB, GiB)
};

//! One report, as a callback receives it. `label` points into the progress object and is valid
//! only during the call.
struct progress_state {
  std::string_view label;
  std::uint64_t done = 0;  //!< units completed so far in this phase
  std::uint64_t total = 0; //!< units in this phase; 0 when unknown
  progress_unit unit = progress_unit::items;
  double elapsed_s = 0;  //!< seconds since start()
  bool finished = false; //!< true for the one report made by finish()
};

//! Source of the current time; tests inject a fake.
using progress_clock = std::function<std::chrono::steady_clock::time_point()>;

struct progress_options {
  //! Minimum time between two reports made by advance(); 0 reports on every advance. 100 ms
  //! (10 redraws a second) looks continuous and costs nothing next to the work being counted.
  std::chrono::nanoseconds min_interval = std::chrono::milliseconds(100);
  //! Empty: std::chrono::steady_clock::now.
  progress_clock clock;
};

namespace detail {
struct progress_impl {
  std::function<void(const progress_state &)> callback;
  std::chrono::nanoseconds min_interval;
  progress_clock clock;

  std::atomic<std::uint64_t> done{0};
  std::atomic<std::int64_t> next_report_ns{0}; //!< clock time before which advance() is silent
  std::mutex mutex;                            //!< serializes reports; guards the fields below
  std::string label;
  std::uint64_t total = 0;
  progress_unit unit = progress_unit::items;
  std::chrono::steady_clock::time_point start_time{};
  bool finished = false;

  std::chrono::steady_clock::time_point now() const {
    return clock ? clock() : std::chrono::steady_clock::now();
  }
  static std::int64_t ns(std::chrono::steady_clock::time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  // Called with `mutex` held. Reading `done` under the mutex keeps reports monotone: each read
  // happens after the previous report's read, and the counter only grows.
  void report(std::chrono::steady_clock::time_point t) {
    if (!callback) return;
    progress_state s;
    s.label = label;
    s.done = done.load(std::memory_order_relaxed);
    s.total = total;
    s.unit = unit;
    s.elapsed_s = std::chrono::duration<double>(t - start_time).count();
    s.finished = finished;
    callback(s);
  }
};
} // namespace detail

//! A handle through which an operation reports progress. Copies share one count; a
//! default-constructed handle is silent. See the header comment for the threading rules.
class progress {
public:
  using callback = std::function<void(const progress_state &)>;

  //! Silent: every call returns at once.
  progress() noexcept = default;
  //! Reports to `cb` (rate-limited as `options` says).
  explicit progress(callback cb, progress_options options = {})
      : impl_(std::make_shared<detail::progress_impl>()) {
    impl_->callback = std::move(cb);
    impl_->min_interval = options.min_interval;
    impl_->clock = std::move(options.clock);
    impl_->start_time = impl_->now();
  }

  //! Whether reports go anywhere (false for a default-constructed handle).
  bool enabled() const noexcept { return impl_ != nullptr; }

  //! Begins a phase: resets the count, sets label, total (0 if unknown) and unit, reports once.
  void start(std::string_view label, std::uint64_t total,
             progress_unit unit = progress_unit::items) const {
    if (!impl_) return;
    std::lock_guard lk(impl_->mutex);
    const auto t = impl_->now();
    impl_->label.assign(label);
    impl_->total = total;
    impl_->unit = unit;
    impl_->start_time = t;
    impl_->finished = false;
    impl_->done.store(0, std::memory_order_relaxed);
    impl_->next_report_ns.store(detail::progress_impl::ns(t) + impl_->min_interval.count(),
                                std::memory_order_relaxed);
    impl_->report(t);
  }

  //! Adds n completed units; reports if min_interval has passed since the last report and no
  //! other thread is reporting right now. Safe to call from any thread.
  void advance(std::uint64_t n = 1) const {
    if (!impl_) return;
    impl_->done.fetch_add(n, std::memory_order_relaxed);
    if (!impl_->callback) return;
    const auto t = impl_->now();
    const std::int64_t t_ns = detail::progress_impl::ns(t);
    if (t_ns < impl_->next_report_ns.load(std::memory_order_relaxed)) return;
    std::unique_lock lk(impl_->mutex, std::try_to_lock);
    if (!lk.owns_lock()) return; // another thread is reporting: this one would be redundant
    if (impl_->finished || t_ns < impl_->next_report_ns.load(std::memory_order_relaxed)) return;
    impl_->next_report_ns.store(t_ns + impl_->min_interval.count(), std::memory_order_relaxed);
    impl_->report(t);
  }

  //! Ends the phase and always reports (finished = true). An unknown total becomes the count.
  void finish() const {
    if (!impl_) return;
    std::lock_guard lk(impl_->mutex);
    impl_->finished = true;
    if (impl_->total == 0) impl_->total = impl_->done.load(std::memory_order_relaxed);
    impl_->report(impl_->now());
  }

  //! Units completed so far in this phase (0 for a silent handle).
  std::uint64_t done() const noexcept {
    return impl_ ? impl_->done.load(std::memory_order_relaxed) : 0;
  }

private:
  std::shared_ptr<detail::progress_impl> impl_;
};

// --- formatting -----------------------------------------------------------------------------------

namespace detail {
inline std::string progress_fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}
// Binary prefixes; an unsigned 64-bit count never exceeds 16 EiB.
inline constexpr std::string_view progress_byte_units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};

//! Index into progress_byte_units for `v` bytes: the largest prefix that keeps the printed value >= 1,
//! and that does not print as "1024.0" after rounding to one decimal.
inline std::size_t progress_byte_unit_index(double v) noexcept {
  std::size_t u = 0;
  while (u + 1 < std::size(progress_byte_units) && v >= 1023.95) {
    v /= 1024;
    ++u;
  }
  return u;
}

inline std::string progress_scaled(double v, std::size_t unit) {
  if (unit == 0) return std::to_string(static_cast<std::uint64_t>(std::llround(v)));
  return progress_fixed1(std::ldexp(v, -10 * static_cast<int>(unit)));
}
} // namespace detail

//! "512 B", "4.0 KiB", "1.2 GiB": binary prefixes, one decimal above bytes.
inline std::string format_bytes(std::uint64_t bytes) {
  const auto v = static_cast<double>(bytes);
  const std::size_t u = detail::progress_byte_unit_index(v);
  return detail::progress_scaled(v, u) + " " + std::string(detail::progress_byte_units[u]);
}

//! "1.2/2.6 GiB": both counts in the unit that suits `total`.
inline std::string format_bytes_pair(std::uint64_t done, std::uint64_t total) {
  const std::size_t u = detail::progress_byte_unit_index(static_cast<double>(total));
  return detail::progress_scaled(static_cast<double>(done), u) + "/" +
         detail::progress_scaled(static_cast<double>(total), u) + " " +
         std::string(detail::progress_byte_units[u]);
}

//! "85.0 MiB/s", "512 B/s".
inline std::string format_byte_rate(double bytes_per_s) {
  const double v = std::isfinite(bytes_per_s) && bytes_per_s > 0 ? bytes_per_s : 0.0;
  const std::size_t u = detail::progress_byte_unit_index(v);
  return detail::progress_scaled(v, u) + " " + std::string(detail::progress_byte_units[u]) + "/s";
}

//! "0:17", "12:05", "1:02:03": whole seconds (rounded), minutes always shown. Negative or
//! non-finite durations print as "0:00".
inline std::string format_duration(double seconds) {
  const std::int64_t s =
      std::isfinite(seconds) && seconds > 0 ? static_cast<std::int64_t>(std::llround(seconds)) : 0;
  char buf[48];
  const long long h = s / 3600, m = s / 60 % 60, sec = s % 60;
  if (h > 0) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", h, m, sec);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", m, sec);
  return buf;
}

//! Callback for `progress` that draws on a terminal:
//!   label [#########...........]  45% 1.2/2.6 GiB 85.0 MiB/s ETA 0:17
//! On a TTY the line is redrawn in place with '\r' at every report; elsewhere (a file, a CI log)
//! a plain line is written at most every `plain_interval_s` seconds and at finish.
class terminal_progress_bar {
public:
  enum class mode : std::uint8_t { tty, plain };

  //! Width of the bar between the brackets: 20 cells is 5% per cell and keeps the whole line
  //! under 80 columns for labels up to about 20 characters.
  static constexpr std::size_t bar_width = 20;
  //! Default seconds between plain lines: a ten-minute merge logs about 60 lines.
  static constexpr double default_plain_interval_s = 10;

  //! Writes to std::cerr, redrawing in place if stderr is a terminal.
  terminal_progress_bar()
      : terminal_progress_bar(std::cerr, stderr_is_tty() ? mode::tty : mode::plain) {}
  //! Writes to `os` (which must outlive every copy of this object) in the given mode.
  explicit terminal_progress_bar(std::ostream &os, mode m = mode::plain,
                                 double plain_interval_s = default_plain_interval_s)
      : os_(&os), mode_(m), plain_interval_s_(plain_interval_s) {}

  void operator()(const progress_state &s) {
    const std::string line = render(s);
    if (mode_ == mode::tty) {
      std::string out = "\r" + line;
      if (line.size() < last_width_) out.append(last_width_ - line.size(), ' '); // erase the rest
      last_width_ = s.finished ? 0 : line.size();
      if (s.finished) out += '\n';
      *os_ << out << std::flush;
      return;
    }
    if (s.elapsed_s < last_plain_s_) last_plain_s_ = 0; // a new phase restarted the clock
    if (s.finished || s.elapsed_s - last_plain_s_ >= plain_interval_s_) {
      *os_ << line << '\n' << std::flush;
      last_plain_s_ = s.finished ? 0 : s.elapsed_s;
    }
  }

  //! The text of one report, without '\r' or newline.
  static std::string render(const progress_state &s) {
    const bool bytes = s.unit == progress_unit::bytes;
    const double done = static_cast<double>(s.done);
    std::string line(s.label);
    if (s.total > 0) {
      const double frac = std::min(1.0, done / static_cast<double>(s.total));
      const auto filled = static_cast<std::size_t>(frac * static_cast<double>(bar_width));
      line += " [";
      line.append(filled, '#');
      line.append(bar_width - filled, '.');
      char pct[8];
      std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
      line += "] ";
      line += pct;
      line += ' ';
      line += bytes ? format_bytes_pair(s.done, s.total)
                    : std::to_string(s.done) + "/" + std::to_string(s.total);
    } else {
      line += ' ';
      line += bytes ? format_bytes(s.done) : std::to_string(s.done);
    }
    const double rate = s.elapsed_s > 0 ? done / s.elapsed_s : 0;
    if (s.elapsed_s > 0)
      line += " " + (bytes ? format_byte_rate(rate) : detail::progress_fixed1(rate) + "/s");
    if (s.finished) {
      line += " in " + format_duration(s.elapsed_s);
    } else if (s.total > 0) {
      line += " ETA ";
      line += s.done > 0 && s.elapsed_s > 0 && s.done <= s.total
                  ? format_duration(static_cast<double>(s.total - s.done) / rate)
                  : std::string("-:--");
    } else {
      line += " " + format_duration(s.elapsed_s);
    }
    return line;
  }

  //! Whether the process's stderr is a terminal (false where that cannot be told).
  static bool stderr_is_tty() noexcept {
#if defined(_WIN32)
    return _isatty(_fileno(stderr)) != 0;
#elif defined(__unix__) || defined(__APPLE__)
    return isatty(STDERR_FILENO) != 0;
#else
    return false;
#endif
  }

private:
  std::ostream *os_;
  mode mode_;
  double plain_interval_s_;
  std::size_t last_width_ = 0; //!< length of the line on screen (tty), to blank its remainder
  double last_plain_s_ = 0;    //!< elapsed_s of the last plain line of this phase
};

DMS_NAMESPACE_END
