// Must NOT compile; the test checks that the error names the missing member.
#include "dms/concepts/merge_strategy.hpp"
struct almost_strategy {
  bool needs_base() const { return false; }
  void merge(const dms::merge_inputs &, std::span<float>) const {}
};
static_assert(dms::diagnose_merge_strategy<almost_strategy>());
