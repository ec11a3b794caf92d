// Must NOT compile; the test checks that the error names the missing member.
#include "dms/concepts/probe.hpp"
struct almost_probe {
  long n_features() const { return 4; }
  float evaluate(std::span<const float>) const { return 0; } // wrong name
};
static_assert(dms::diagnose_probe<almost_probe>());
