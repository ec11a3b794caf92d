// Must NOT compile; the test checks that the error names the missing member.
#include "dms/concepts/steering_policy.hpp"
struct almost_policy {
  bool wants(dms::hook_point) const { return true; }
  void apply(dms::activation_block &, std::span<int>, std::span<float>) const {}
};
static_assert(dms::diagnose_steering_policy<almost_policy>());
