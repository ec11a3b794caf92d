// tests/generate: counts heap allocations of the calling code, to check "no allocation per token".
// alloc_counter.cpp replaces the global operator new of this test executable; counting is off
// unless a counting_scope is alive, so Catch2's own allocations elsewhere do not matter.
#pragma once

#include <cstddef>

namespace dms::test {

std::size_t allocation_count() noexcept;  //!< allocations seen while counting was on
void set_allocation_counting(bool on) noexcept;

//! Counts allocations for its lifetime; `count()` is the number so far.
class counting_scope {
public:
  counting_scope() noexcept : start_(allocation_count()) { set_allocation_counting(true); }
  ~counting_scope() { set_allocation_counting(false); }
  counting_scope(const counting_scope &) = delete;
  counting_scope &operator=(const counting_scope &) = delete;
  std::size_t count() const noexcept { return allocation_count() - start_; }

private:
  std::size_t start_;
};

} // namespace dms::test
