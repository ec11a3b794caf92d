// The replaced global operator new of dms_forward_tests (see alloc_count.hpp). The plain forms
// only: the array forms call them, and the aligned forms are not on the decode path.
#include "alloc_count.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::size_t> allocations{0};
std::atomic<bool> counting{false};
} // namespace

namespace dms::test {
std::size_t forward_allocations() noexcept { return allocations.load(); }
void count_forward_allocations(bool on) noexcept { counting.store(on); }
} // namespace dms::test

void *operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (void *p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
