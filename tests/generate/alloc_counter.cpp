// The replaced global operator new of dms_generate_tests (see alloc_counter.hpp). Only the plain
// forms are replaced: the array forms call them, and the aligned forms are not used on the paths
// under test.
#include "alloc_counter.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::size_t> count{0};
std::atomic<bool> counting{false};
} // namespace

namespace dms::test {
std::size_t allocation_count() noexcept { return count.load(); }
void set_allocation_counting(bool on) noexcept { counting.store(on); }
} // namespace dms::test

void *operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) count.fetch_add(1, std::memory_order_relaxed);
  if (void *p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
