// tests/model: counts heap allocations, to check that steady-state decoding allocates nothing.
// alloc_count.cpp replaces the global operator new of dms_forward_tests; counting is off unless
// an allocation_scope is alive, so allocations elsewhere (Catch2, the tests themselves) are free.
#pragma once

#include <cstddef>

namespace dms::test {

std::size_t forward_allocations() noexcept;           //!< allocations seen while counting was on
void count_forward_allocations(bool on) noexcept;

//! Counts allocations (from any thread) for its lifetime.
class allocation_scope {
public:
  allocation_scope() noexcept : start_(forward_allocations()) { count_forward_allocations(true); }
  ~allocation_scope() { count_forward_allocations(false); }
  allocation_scope(const allocation_scope &) = delete;
  allocation_scope &operator=(const allocation_scope &) = delete;
  std::size_t count() const noexcept { return forward_allocations() - start_; }

private:
  std::size_t start_;
};

} // namespace dms::test
