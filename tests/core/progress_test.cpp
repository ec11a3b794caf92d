// Tests of dms/core/progress.hpp: reporting, rate limiting (with an injected clock), threads,
// and the text of the terminal bar.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dms/core/progress.hpp"
#include "dms/core/thread_pool.hpp"

namespace {
using namespace std::chrono_literals;
using clock_t_ = std::chrono::steady_clock;

struct recorded {
  std::string label;
  std::uint64_t done, total;
  double elapsed_s;
  bool finished;
};

struct recorder {
  std::vector<recorded> *out;
  void operator()(const dms::progress_state &s) const {
    out->push_back({std::string(s.label), s.done, s.total, s.elapsed_s, s.finished});
  }
};

constexpr std::uint64_t GiB = std::uint64_t{1} << 30;
constexpr std::uint64_t MiB = std::uint64_t{1} << 20;
} // namespace

TEST_CASE("a default progress is silent", "[progress]") {
  const dms::progress p;
  CHECK_FALSE(p.enabled());
  p.start("x", 10);
  p.advance(3);
  p.finish();
  CHECK(p.done() == 0);
}

TEST_CASE("reports are monotone and the final one has done == total", "[progress]") {
  std::vector<recorded> r;
  const dms::progress p(recorder{&r}, {.min_interval = 0ns, .clock = {}});
  CHECK(p.enabled());
  p.start("load", 10, dms::progress_unit::items);
  for (int i = 0; i < 10; ++i) p.advance();
  p.finish();
  REQUIRE(r.size() == 12); // start, 10 advances, finish
  CHECK(r.front().done == 0);
  for (std::size_t i = 1; i < r.size(); ++i) CHECK(r[i].done >= r[i - 1].done);
  CHECK(r.back().finished);
  CHECK(r.back().done == 10);
  CHECK(r.back().total == 10);
  CHECK(r.back().label == "load");
  for (std::size_t i = 0; i + 1 < r.size(); ++i) CHECK_FALSE(r[i].finished);

  // A copy shares the count; a new phase resets it; an unknown total becomes the count.
  const dms::progress copy = p;
  copy.start("scan", 0);
  copy.advance(7);
  p.advance(5);
  CHECK(p.done() == 12);
  p.finish();
  CHECK(r.back().label == "scan");
  CHECK(r.back().total == 12);
  CHECK(r.back().finished);
}

TEST_CASE("advance is thread-safe and reports stay monotone", "[progress]") {
  std::vector<recorded> r; // the callback is serialized by progress, so no lock needed here
  const dms::progress p(recorder{&r}, {.min_interval = 0ns, .clock = {}});
  dms::thread_pool pool(4);
  p.start("parallel", 100'000);
  pool.parallel_for(100'000, 100, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) p.advance();
  });
  p.finish();
  REQUIRE(r.size() >= 2);
  for (std::size_t i = 1; i < r.size(); ++i) REQUIRE(r[i].done >= r[i - 1].done);
  CHECK(r.back().done == 100'000);
  CHECK(r.back().finished);
}

TEST_CASE("reports are rate-limited, finish always reports", "[progress]") {
  clock_t_::time_point now{};
  std::vector<recorded> r;
  const dms::progress p(recorder{&r}, {.min_interval = 100ms, .clock = [&] { return now; }});
  p.start("io", 1000, dms::progress_unit::bytes); // t = 0: reported
  now += 10ms;
  p.advance(100); // too soon
  now += 50ms;
  p.advance(100); // t = 60 ms: too soon
  now += 40ms;
  p.advance(100); // t = 100 ms: reported
  now += 99ms;
  p.advance(100); // t = 199 ms: too soon
  now += 1ms;
  p.advance(100); // t = 200 ms: reported
  now += 5ms;
  p.finish(); // always
  p.advance(1); // after finish: counted, never reported
  REQUIRE(r.size() == 4);
  CHECK(r[0].done == 0);
  CHECK(r[1].done == 300);
  CHECK(r[1].elapsed_s == Approx(0.1));
  CHECK(r[2].done == 500);
  CHECK(r[3].done == 500);
  CHECK(r[3].finished);
  CHECK(r[3].elapsed_s == Approx(0.205));
}

TEST_CASE("a throwing callback cancels through advance", "[progress]") {
  const dms::progress p(
      [](const dms::progress_state &s) {
        if (s.done >= 3) throw std::runtime_error("cancelled");
      },
      {.min_interval = 0ns, .clock = {}});
  p.start("x", 10);
  p.advance(2);
  CHECK_THROWS_WITH(p.advance(1), "cancelled");
  CHECK_THROWS_WITH(p.finish(), "cancelled"); // the lock was released: no deadlock
}

TEST_CASE("byte and duration formatting", "[progress]") {
  CHECK(dms::format_bytes(0) == "0 B");
  CHECK(dms::format_bytes(512) == "512 B");
  CHECK(dms::format_bytes(1023) == "1023 B");
  CHECK(dms::format_bytes(1024) == "1.0 KiB");
  CHECK(dms::format_bytes(1536) == "1.5 KiB");
  CHECK(dms::format_bytes(MiB - 1) == "1.0 MiB"); // never "1024.0 KiB"
  CHECK(dms::format_bytes(GiB * 12 / 10) == "1.2 GiB");
  CHECK(dms::format_bytes(std::uint64_t{5} << 40) == "5.0 TiB");
  CHECK(dms::format_bytes(~std::uint64_t{0}) == "16.0 EiB");
  CHECK(dms::format_bytes_pair(GiB * 12 / 10, GiB * 26 / 10) == "1.2/2.6 GiB");
  CHECK(dms::format_bytes_pair(100, 512) == "100/512 B");
  CHECK(dms::format_bytes_pair(0, 4 * MiB) == "0.0/4.0 MiB");
  CHECK(dms::format_byte_rate(85.0 * MiB) == "85.0 MiB/s");
  CHECK(dms::format_byte_rate(0) == "0 B/s");
  CHECK(dms::format_duration(0) == "0:00");
  CHECK(dms::format_duration(17) == "0:17");
  CHECK(dms::format_duration(59.6) == "1:00");
  CHECK(dms::format_duration(725) == "12:05");
  CHECK(dms::format_duration(3723) == "1:02:03");
  CHECK(dms::format_duration(-5) == "0:00");
  CHECK(dms::format_duration(INFINITY) == "0:00");
}

TEST_CASE("terminal_progress_bar renders the expected line", "[progress]") {
  using bar = dms::terminal_progress_bar;
  dms::progress_state s;
  s.label = "merge";
  s.unit = dms::progress_unit::bytes;
  s.total = 4 * GiB;
  s.done = GiB;
  s.elapsed_s = 8;
  CHECK(bar::render(s) == "merge [#####...............]  25% 1.0/4.0 GiB 128.0 MiB/s ETA 0:24");
  s.done = 0;
  s.elapsed_s = 0;
  CHECK(bar::render(s) == "merge [....................]   0% 0.0/4.0 GiB ETA -:--");
  s.done = s.total;
  s.elapsed_s = 32;
  s.finished = true;
  CHECK(bar::render(s) == "merge [####################] 100% 4.0/4.0 GiB 128.0 MiB/s in 0:32");

  dms::progress_state items;
  items.label = "tensors";
  items.total = 100;
  items.done = 45;
  items.elapsed_s = 1;
  CHECK(bar::render(items) == "tensors [#########...........]  45% 45/100 45.0/s ETA 0:01");

  dms::progress_state unknown;
  unknown.label = "scan";
  unknown.unit = dms::progress_unit::bytes;
  unknown.done = GiB;
  unknown.elapsed_s = 8;
  CHECK(bar::render(unknown) == "scan 1.0 GiB 128.0 MiB/s 0:08");
}

TEST_CASE("terminal_progress_bar on a TTY redraws in place", "[progress]") {
  std::ostringstream os;
  dms::terminal_progress_bar b(os, dms::terminal_progress_bar::mode::tty);
  dms::progress_state s;
  s.label = "x";
  s.total = 10;
  s.done = 5;
  s.elapsed_s = 1;
  b(s);
  s.done = 10;
  s.elapsed_s = 2;
  s.finished = true;
  b(s);
  CHECK(os.str() == "\rx [##########..........]  50% 5/10 5.0/s ETA 0:01"
                    "\rx [####################] 100% 10/10 5.0/s in 0:02\n");

  // A shorter line blanks the rest of the longer one.
  std::ostringstream os2;
  dms::terminal_progress_bar b2(os2, dms::terminal_progress_bar::mode::tty);
  dms::progress_state u;
  u.label = "scan";
  u.done = 123456;
  u.elapsed_s = 1;
  b2(u);
  const std::size_t first = os2.str().size() - 1; // without the '\r'
  u.done = 1;
  b2(u);
  CHECK(os2.str().substr(first + 1) == "\rscan 1 1.0/s 0:01" + std::string(10, ' '));
}

TEST_CASE("terminal_progress_bar off a TTY writes periodic plain lines", "[progress]") {
  std::ostringstream os;
  dms::terminal_progress_bar b(os, dms::terminal_progress_bar::mode::plain, 10);
  dms::progress_state s;
  s.label = "p";
  s.total = 100;
  for (double t : {0.0, 5.0, 11.0, 15.0, 22.0}) {
    s.elapsed_s = t;
    s.done = static_cast<std::uint64_t>(t * 4);
    b(s);
  }
  s.finished = true;
  s.done = 100;
  s.elapsed_s = 25;
  b(s);
  const std::string out = os.str();
  CHECK(out.find('\r') == std::string::npos);
  CHECK(out == "p [########............]  44% 44/100 4.0/s ETA 0:14\n"
               "p [#################...]  88% 88/100 4.0/s ETA 0:03\n"
               "p [####################] 100% 100/100 4.0/s in 0:25\n");
}

TEST_CASE("progress drives terminal_progress_bar end to end", "[progress]") {
  std::ostringstream os;
  clock_t_::time_point now{};
  const dms::progress p(dms::terminal_progress_bar(os, dms::terminal_progress_bar::mode::plain, 1),
                        {.min_interval = 100ms, .clock = [&] { return now; }});
  p.start("copy", 8 * MiB, dms::progress_unit::bytes);
  for (int i = 0; i < 8; ++i) {
    now += 500ms;
    p.advance(MiB);
  }
  p.finish();
  CHECK(os.str() == "copy [#####...............]  25% 2.0/8.0 MiB 2.0 MiB/s ETA 0:03\n"
                    "copy [##########..........]  50% 4.0/8.0 MiB 2.0 MiB/s ETA 0:02\n"
                    "copy [###############.....]  75% 6.0/8.0 MiB 2.0 MiB/s ETA 0:01\n"
                    "copy [####################] 100% 8.0/8.0 MiB 2.0 MiB/s ETA 0:00\n"
                    "copy [####################] 100% 8.0/8.0 MiB 2.0 MiB/s in 0:04\n");
}
