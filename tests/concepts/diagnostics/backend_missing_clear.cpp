// Must NOT compile; the test checks that the error names the missing member.
#include "dms/concepts/model_backend.hpp"
struct almost_backend {
  std::int32_t n_layers() const { return 1; }
  std::int64_t n_embd() const { return 1; }
  std::int64_t n_vocab() const { return 1; }
  std::int32_t n_ctx() const { return 1; }
  dms::memory_space space() const { return dms::memory_space::host; }
  template <class H> dms::matrix_view<const float> forward(const dms::token_batch &, H &) { return {}; }
};
static_assert(dms::diagnose_model_backend<almost_backend>());
