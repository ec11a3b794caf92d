// dms/core/thread_pool.hpp: a small fixed-size thread pool with a deterministic parallel_for.
//
// dms parallelizes over tensor elements (merges, conversions, calibration statistics) and its
// results must not depend on how many threads ran: a merge run on a laptop and on a 64-core
// server must write the same bytes. So the pool hands out chunks whose boundaries depend only on
// the problem size and a grain chosen by the caller, never on the thread count; anything reduced
// per chunk and then combined in chunk order (parallel_reduce) is bit-identical for any pool.
//
// Threading model:
//  * `thread_pool(n)` starts n - 1 workers; the thread that calls parallel_for is the n-th
//    participant, so n = 1 starts no thread and runs everything inline on the caller.
//  * f(begin, end) is called on the calling thread and on the pool's workers, concurrently, in
//    no particular order; each chunk exactly once (unless an exception stops the loop).
//  * The first exception thrown by f is rethrown on the caller once all running chunks have
//    returned; chunks not yet started are skipped.
//  * A parallel_for (of any pool) called from inside f runs inline on that thread, so nesting
//    never deadlocks and never oversubscribes.
//  * Concurrent parallel_for calls on one pool from different outside threads are serialized.
//  * Idle workers spin for a short while (spin_duration, ~100 us) before they sleep on a condition
//    variable, and so does the caller waiting for the last chunk: a decoding forward pass posts
//    hundreds of sub-50-us jobs per token, and a futex wake-up per job would cost more than the
//    job (llama.cpp's thread pool polls for the same reason). A pool that is idle for longer than
//    that sleeps and costs nothing.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! True while this thread runs a chunk of some parallel_for; nested calls then run inline.
inline thread_local bool in_parallel_region = false;

//! Sets in_parallel_region for a scope and restores the previous value.
class parallel_region_guard {
public:
  parallel_region_guard() noexcept : previous_(in_parallel_region) { in_parallel_region = true; }
  ~parallel_region_guard() { in_parallel_region = previous_; }
  parallel_region_guard(const parallel_region_guard &) = delete;
  parallel_region_guard &operator=(const parallel_region_guard &) = delete;

private:
  bool previous_;
};

//! One iteration of a spin-wait loop: tells the CPU (and a hyper-threaded sibling) we are waiting.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

//! Spins until done() or until `budget` has passed; true if done() became true.
template <class Done> bool spin_until(Done &&done, std::chrono::nanoseconds budget) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

//! Number of chunks [k * grain, min(n, (k + 1) * grain)) covering [0, n).
constexpr std::size_t parallel_chunk_count(std::size_t n, std::size_t grain) noexcept {
  return n / grain + (n % grain != 0 ? 1 : 0);
}

inline void check_parallel_grain(std::size_t grain) {
  require(grain != 0, errc::invalid_argument,
          [] { return std::string("parallel_for: grain must be at least 1"); });
}
} // namespace detail

//! Threads the machine runs at once (std::thread::hardware_concurrency), at least 1.
inline std::size_t default_thread_count() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

class thread_pool {
public:
  //! A pool of `n_threads` participants (n_threads - 1 workers plus the caller); 0 means
  //! default_thread_count(). Throws std::system_error if a thread cannot be started.
  explicit thread_pool(std::size_t n_threads = default_thread_count()) {
    const std::size_t n = n_threads == 0 ? default_thread_count() : n_threads;
    workers_.reserve(n - 1);
    try {
      for (std::size_t i = 0; i + 1 < n; ++i) workers_.emplace_back([this] { worker_loop(); });
    } catch (...) {
      shut_down();
      throw;
    }
  }
  ~thread_pool() { shut_down(); }
  thread_pool(const thread_pool &) = delete;
  thread_pool &operator=(const thread_pool &) = delete;

  //! Number of participants, the caller included.
  std::size_t size() const noexcept { return workers_.size() + 1; }

  //! Calls f(begin, end) for the chunks [k * grain, min(n, (k + 1) * grain)), k = 0, 1, ...,
  //! which cover [0, n) and depend only on n and grain. See the header comment for which thread
  //! runs f and how exceptions travel. grain == 0 throws errc::invalid_argument.
  //! @code
  //!   pool.parallel_for(out.size(), 1 << 14, [&](std::size_t begin, std::size_t end) {
  //!     for (std::size_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  //!   });
  //! @endcode
  template <class F> void parallel_for(std::size_t n, std::size_t grain, F &&f) {
    detail::check_parallel_grain(grain);
    const std::size_t chunks = detail::parallel_chunk_count(n, grain);
    if (chunks == 0) return;
    if (chunks == 1 || workers_.empty() || detail::in_parallel_region) {
      run_inline(n, grain, f);
      return;
    }
    job j;
    j.n = n;
    j.grain = grain;
    j.chunks = chunks;
    j.ctx = const_cast<void *>(static_cast<const void *>(std::addressof(f)));
    j.invoke = [](void *ctx, std::size_t begin, std::size_t end) {
      (*static_cast<std::remove_reference_t<F> *>(ctx))(begin, end);
    };
    std::lock_guard submit(submit_mutex_); // one job at a time per pool
    {
      std::lock_guard lk(mutex_);
      job_ = &j;
      ++generation_;
      posted_.store(generation_, std::memory_order_release);
    }
    work_cv_.notify_all();
    run_chunks(j); // the caller participates
    {
      // Retire the job: workers that have not picked it up yet no longer can, and the ones that
      // did finish their current chunk (then find none left) before `j` goes out of scope.
      std::unique_lock lk(mutex_);
      job_ = nullptr;
      lk.unlock();
      detail::spin_until([this] { return active_.load(std::memory_order_acquire) == 0; }, spin_duration);
      lk.lock();
      done_cv_.wait(lk, [this] { return active_.load(std::memory_order_relaxed) == 0; });
    }
    if (j.error) std::rethrow_exception(j.error);
  }

  //! Deterministic reduction: map(begin, end) -> T for each chunk of parallel_for(n, grain, ...),
  //! then reduce(acc, chunk_value) over the chunks in order, starting from init, on the caller.
  //! The result is the same for every pool size.
  template <class T, class Map, class Reduce>
  T parallel_reduce(std::size_t n, std::size_t grain, T init, Map &&map, Reduce &&reduce) {
    detail::check_parallel_grain(grain);
    struct slot { // a struct, so that T = bool does not become a bit-packed vector<bool>
      T value;
    };
    std::vector<slot> partial(detail::parallel_chunk_count(n, grain), slot{init});
    parallel_for(n, grain, [&](std::size_t begin, std::size_t end) {
      partial[begin / grain].value = map(begin, end);
    });
    T acc = std::move(init);
    for (slot &p : partial) acc = reduce(std::move(acc), std::move(p.value));
    return acc;
  }

private:
  struct job {
    std::size_t n = 0, grain = 1, chunks = 0;
    void *ctx = nullptr;
    void (*invoke)(void *, std::size_t, std::size_t) = nullptr;
    std::atomic<std::size_t> next{0};   //!< next chunk to hand out
    std::atomic<bool> failed{false};    //!< set by the first exception: skip remaining chunks
    std::mutex error_mutex;
    std::exception_ptr error;           //!< the first exception thrown by f
  };

  template <class F> static void run_inline(std::size_t n, std::size_t grain, F &f) {
    const detail::parallel_region_guard region;
    for (std::size_t begin = 0; begin < n; begin += std::min(grain, n - begin))
      f(begin, begin + std::min(grain, n - begin));
  }

  static void run_chunks(job &j) noexcept {
    const detail::parallel_region_guard region;
    while (!j.failed.load(std::memory_order_relaxed)) {
      const std::size_t k = j.next.fetch_add(1, std::memory_order_relaxed);
      if (k >= j.chunks) break;
      const std::size_t begin = k * j.grain;
      const std::size_t end = begin + std::min(j.grain, j.n - begin);
      try {
        j.invoke(j.ctx, begin, end);
      } catch (...) {
        std::lock_guard lk(j.error_mutex);
        if (!j.error) j.error = std::current_exception();
        j.failed.store(true, std::memory_order_relaxed);
      }
    }
  }

  void worker_loop() noexcept {
    std::uint64_t seen = 0;
    std::unique_lock lk(mutex_);
    for (;;) {
      // Spin (without the lock) for the next job before sleeping; the predicate below decides.
      lk.unlock();
      detail::spin_until([&] { return posted_.load(std::memory_order_acquire) != seen || stopping_.load(); },
                         spin_duration);
      lk.lock();
      if (!stop_ && job_ == nullptr && generation_ != seen) {
        // A job came and went while we spun (the caller ran all its chunks): note it and spin for
        // the next one. Sleeping here would make every following job pay a futex wake-up and
        // find its worker late, so a decode step would run mostly on the caller alone.
        seen = generation_;
        continue;
      }
      work_cv_.wait(lk, [&] { return stop_ || (job_ != nullptr && generation_ != seen); });
      if (stop_) return;
      seen = generation_;
      job *j = job_;
      ++active_;
      lk.unlock();
      run_chunks(*j);
      lk.lock();
      if (--active_ == 0) done_cv_.notify_all();
    }
  }

  void shut_down() noexcept {
    {
      std::lock_guard lk(mutex_);
      stop_ = true;
      stopping_.store(true);
    }
    work_cv_.notify_all();
    for (std::thread &t : workers_)
      if (t.joinable()) t.join();
  }

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;           //!< serializes parallel_for calls from outside threads
  std::mutex mutex_;                  //!< guards job_, generation_, active_, stop_
  std::condition_variable work_cv_;   //!< a job was posted, or stop_
  std::condition_variable done_cv_;   //!< active_ dropped to 0
  job *job_ = nullptr;                //!< the job being run, null between jobs
  std::uint64_t generation_ = 0;      //!< incremented per job, so a worker joins each job once
  std::atomic<std::size_t> active_{0}; //!< workers inside run_chunks (changed under mutex_)
  bool stop_ = false;
  std::atomic<std::uint64_t> posted_{0}; //!< generation_, readable without the lock (spinning)
  std::atomic<bool> stopping_{false};    //!< stop_, readable without the lock (spinning)
  static constexpr std::chrono::microseconds spin_duration{100};
};

DMS_NAMESPACE_END
