// dms/concepts/probe.hpp: a probe maps one activation row to a score in [0, 1].
//
// Dynamic Mode Steering reads, token by token, how much the model is reciting from memory: a
// probe turns the residual-stream row of a token into that score. dms ships a logistic-regression
// probe (with its standardization folded in); users plug their own (an MLP, an SAE-feature probe)
// by modelling this concept. A probe knows nothing of layers: the steering policy that owns it
// decides at which hook point it reads.
//
// @code
//   struct threshold_probe {                  // a user probe: 1 if feature k is above t
//     std::int64_t width, k; float t;
//     std::int64_t n_features() const noexcept { return width; }
//     float score(std::span<const float> h) const noexcept { return h[k] > t ? 1.0f : 0.0f; }
//   };
//   static_assert(dms::probe<threshold_probe>);
// @endcode
//
// Members:
// - `p.n_features()`: the row width it expects (the model's n_embd for a residual probe).
// - `p.score(h)`: the score of one row, h.size() == n_features(), host memory.
// - optional `p.score_rows(rows, out)`: the scores of many rows at once (a GEMV); when present
//   dms::score_rows uses it, else it loops over score().
// Threads: both are const and may be called from any number of threads at once.
// Allocation: none; they run on the per-token path.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

template <class P>
concept probe = requires(const P &p, std::span<const float> h) {
  { p.n_features() } -> std::convertible_to<std::int64_t>;
  { p.score(h) } -> std::convertible_to<float>;
};

namespace detail {
template <class P> concept has_n_features = requires(const P &p) {
  { p.n_features() } -> std::convertible_to<std::int64_t>;
};
template <class P> concept has_score = requires(const P &p, std::span<const float> h) {
  { p.score(h) } -> std::convertible_to<float>;
};
template <class P>
concept has_score_rows = requires(const P &p, matrix_view<const float> rows, std::span<float> out) {
  p.score_rows(rows, out);
};
} // namespace detail

//! Names the first missing member of a would-be probe: `static_assert(diagnose_probe<P>())`.
template <class P> consteval bool diagnose_probe() {
  static_assert(detail::has_n_features<P>, "dms::probe: needs `std::int64_t n_features() const`");
  static_assert(detail::has_score<P>, "dms::probe: needs `float score(std::span<const float>) const`");
  return probe<P>;
}

//! Scores every row of `rows` into `out` (out.size() == rows.rows), using the probe's batched
//! member when it has one.
template <probe P> void score_rows(const P &p, matrix_view<const float> rows, std::span<float> out) {
  require(static_cast<std::int64_t>(out.size()) == rows.rows, errc::shape_mismatch, [&] {
    return "score_rows: " + std::to_string(rows.rows) + " rows but " + std::to_string(out.size()) +
           " outputs";
  });
  require(rows.rows == 0 || rows.cols == static_cast<std::int64_t>(p.n_features()),
          errc::shape_mismatch, [&] {
            return "probe expects rows of width " + std::to_string(p.n_features()) + ", got " +
                   std::to_string(rows.cols);
          });
  if constexpr (detail::has_score_rows<P>) {
    p.score_rows(rows, out);
  } else {
    for (std::int64_t r = 0; r < rows.rows; ++r) out[r] = static_cast<float>(p.score(rows.row_span(r)));
  }
}

namespace archetypes {
//! The least a probe provides.
struct probe {
  std::int64_t n_features() const noexcept { return 1; }
  float score(std::span<const float>) const noexcept { return 0.0f; }
};
} // namespace archetypes

DMS_NAMESPACE_END
