// Tests of dms/core/thread_pool.hpp: coverage, deterministic chunking, exceptions, nesting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dms/core/thread_pool.hpp"

namespace {
using chunk = std::pair<std::size_t, std::size_t>;

std::vector<chunk> chunks_seen(dms::thread_pool &pool, std::size_t n, std::size_t grain) {
  std::mutex m;
  std::vector<chunk> out;
  pool.parallel_for(n, grain, [&](std::size_t b, std::size_t e) {
    std::lock_guard lk(m);
    out.emplace_back(b, e);
  });
  std::sort(out.begin(), out.end());
  return out;
}
} // namespace

TEST_CASE("thread_pool size and defaults", "[thread_pool]") {
  CHECK(dms::default_thread_count() >= 1);
  CHECK(dms::thread_pool(1).size() == 1);
  CHECK(dms::thread_pool(3).size() == 3);
  CHECK(dms::thread_pool(0).size() == dms::default_thread_count());
  CHECK(dms::thread_pool().size() == dms::default_thread_count());
}

TEST_CASE("parallel_for covers every index exactly once", "[thread_pool]") {
  for (std::size_t threads : {1u, 2u, 3u, 4u, 8u}) {
    dms::thread_pool pool(threads);
    for (std::size_t n : {0u, 1u, 2u, 7u, 64u, 100u, 1000u, 4097u}) {
      for (std::size_t grain : {1u, 2u, 3u, 16u, 64u, 1000u, 5000u}) {
        INFO("threads " << threads << " n " << n << " grain " << grain);
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> bad_bounds{0}; // (Catch2 assertions are not thread-safe: count, check after)
        pool.parallel_for(n, grain, [&](std::size_t b, std::size_t e) {
          if (!(b < e && e <= n)) bad_bounds.fetch_add(1);
          for (std::size_t i = b; i < e && i < n; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
        });
        REQUIRE(bad_bounds.load() == 0);
        for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
      }
    }
  }
}

TEST_CASE("chunk boundaries depend only on n and grain", "[thread_pool]") {
  for (std::size_t n : {1u, 10u, 999u, 1024u}) {
    for (std::size_t grain : {1u, 7u, 64u, 2000u}) {
      std::vector<chunk> want;
      for (std::size_t b = 0; b < n; b += grain) want.emplace_back(b, std::min(n, b + grain));
      for (std::size_t threads = 1; threads <= 8; ++threads) {
        dms::thread_pool pool(threads);
        INFO("threads " << threads << " n " << n << " grain " << grain);
        CHECK(chunks_seen(pool, n, grain) == want);
      }
    }
  }
}

TEST_CASE("parallel_reduce is bit-identical for every thread count", "[thread_pool]") {
  // A float sum whose value depends on association order: only identical chunking and
  // in-order combination give identical bits.
  std::vector<float> x(100'003);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>((i * 2654435761u) % 1000u) * 1e-3f + 1e-7f * static_cast<float>(i);
  auto sum = [&](dms::thread_pool &pool) {
    return pool.parallel_reduce(
        x.size(), 1000, 0.0f,
        [&](std::size_t b, std::size_t e) {
          float s = 0;
          for (std::size_t i = b; i < e; ++i) s += x[i];
          return s;
        },
        [](float a, float b) { return a + b; });
  };
  dms::thread_pool one(1);
  const float ref = sum(one);
  for (std::size_t threads = 2; threads <= 8; ++threads) {
    dms::thread_pool pool(threads);
    for (int rep = 0; rep < 5; ++rep) REQUIRE(sum(pool) == ref);
  }
  CHECK(one.parallel_reduce(
            0, 4, 5, [](std::size_t, std::size_t) { return 1; },
            [](int a, int b) { return a + b; }) == 5);
  // bool partials are written concurrently: they must not share bytes (no vector<bool>).
  dms::thread_pool four(4);
  CHECK(four.parallel_reduce(
      x.size(), 7, false,
      [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i)
          if (x[i] > 0.9995f) return true;
        return false;
      },
      [](bool a, bool b) { return a || b; }));
}

TEST_CASE("the caller participates and f runs on several threads", "[thread_pool]") {
  dms::thread_pool pool(4);
  std::mutex m;
  std::set<std::thread::id> ids;
  pool.parallel_for(64, 1, [&](std::size_t, std::size_t) {
    {
      std::lock_guard lk(m);
      ids.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  CHECK(ids.count(std::this_thread::get_id()) == 1);
  CHECK(ids.size() >= 2);
  CHECK(ids.size() <= 4);

  dms::thread_pool inline_pool(1);
  std::set<std::thread::id> inline_ids;
  inline_pool.parallel_for(10, 1, [&](std::size_t, std::size_t) {
    inline_ids.insert(std::this_thread::get_id());
  });
  CHECK(inline_ids == std::set<std::thread::id>{std::this_thread::get_id()});
}

TEST_CASE("the first exception reaches the caller and stops the loop", "[thread_pool]") {
  for (std::size_t threads : {1u, 2u, 4u}) {
    dms::thread_pool pool(threads);
    std::atomic<std::size_t> ran{0};
    const std::size_t chunks = 10'000;
    try {
      pool.parallel_for(chunks, 1, [&](std::size_t b, std::size_t) {
        ran.fetch_add(1);
        if (b == 5) throw std::runtime_error("chunk 5 failed");
      });
      FAIL("no exception");
    } catch (const std::runtime_error &e) {
      CHECK(std::string(e.what()) == "chunk 5 failed");
    }
    CHECK(ran.load() < chunks); // remaining chunks were skipped
    // The pool is still usable afterwards.
    std::atomic<std::size_t> count{0};
    pool.parallel_for(100, 3, [&](std::size_t b, std::size_t e) { count += e - b; });
    CHECK(count.load() == 100);
  }
  // With every chunk throwing, exactly one exception comes out.
  dms::thread_pool pool(4);
  CHECK_THROWS_AS(pool.parallel_for(100, 1, [](std::size_t, std::size_t) { throw 42; }), int);
}

TEST_CASE("nested parallel_for runs inline without deadlock", "[thread_pool]") {
  dms::thread_pool pool(4);
  std::vector<std::atomic<int>> hits(64 * 64);
  std::atomic<int> moved{0}; // inner chunks that ran on another thread than the nesting one
  pool.parallel_for(64, 1, [&](std::size_t outer_b, std::size_t outer_e) {
    for (std::size_t o = outer_b; o < outer_e; ++o) {
      const std::thread::id me = std::this_thread::get_id();
      pool.parallel_for(64, 8, [&](std::size_t b, std::size_t e) {
        if (std::this_thread::get_id() != me) moved.fetch_add(1);
        for (std::size_t i = b; i < e; ++i) hits[o * 64 + i].fetch_add(1);
      });
    }
  });
  CHECK(moved.load() == 0); // nested calls ran inline
  for (auto &h : hits) REQUIRE(h.load() == 1);
  // After the nested region, the caller can run parallel again.
  CHECK_FALSE(dms::detail::in_parallel_region);
}

TEST_CASE("concurrent callers on one pool are serialized safely", "[thread_pool]") {
  dms::thread_pool pool(3);
  std::atomic<std::size_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallel_for(1000, 10, [&](std::size_t b, std::size_t e) { total += e - b; });
    });
  for (auto &c : callers) c.join();
  CHECK(total.load() == 4u * 50u * 1000u);
}

TEST_CASE("grain 0 is rejected, n 0 does nothing", "[thread_pool]") {
  dms::thread_pool pool(2);
  bool called = false;
  pool.parallel_for(0, 1, [&](std::size_t, std::size_t) { called = true; });
  CHECK_FALSE(called);
  try {
    pool.parallel_for(10, 0, [](std::size_t, std::size_t) {});
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::invalid_argument);
  }
}
