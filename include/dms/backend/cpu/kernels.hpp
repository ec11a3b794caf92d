// dms/backend/cpu/kernels.hpp: the vector kernels of the CPU backend, dispatched at run time.
//
// These are the inner loops of steering (add a scaled vector to every token's activation) and
// probing (one dot product per token). Each is compiled for every dispatch level (dispatch.hpp)
// from one body (detail/kernel_bodies.inl) and the level is chosen per call from
// `active_isa_level()`: a relaxed atomic load and a switch, negligible next to a 576-wide row.
// Every kernel has a scalar reference of the same name in dms/backend/cpu/reference.hpp.
//
// Pointer overloads are unchecked and noexcept; span and matrix overloads check shapes and throw
// dms::error (errc::shape_mismatch). Pointers need no alignment. Results differ between levels
// only by summation order (dot, dot_rows) and fused vs. separate multiply-add; each level is
// deterministic. Nothing here allocates or spawns threads.
//
// @code
//   // activations: n_tokens x n_embd, one row per token; p: probe scores in [0, 1]
//   dms::cpu::dot_rows(acts, probe_w, logits);                        // logits[t] = <acts[t], w>
//   dms::cpu::add_scaled_rows(acts, scales, steering_vector);         // acts[t] += s[t] * v
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dms/backend/cpu/dispatch.hpp"
#include "dms/backend/cpu/reference.hpp"
#include "dms/backend/cpu/simd.hpp"
#include "dms/backend/cpu/vec.hpp"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace cpu {
namespace detail {
// Tagged (see DMS_SIMD_BASELINE_TAG in simd.hpp): level_baseline compiles to different code
// under different -m flags.
inline namespace DMS_CPU_ABI_TAG {

namespace level_baseline {
using vec = simd::float_vec<isa_level::baseline>;
#include "dms/backend/cpu/detail/kernel_bodies.inl"
} // namespace level_baseline

#if defined(DMS_X86_DISPATCH)
DMS_CPU_TARGET_PUSH_AVX2
namespace level_avx2 {
using vec = simd::float_vec<isa_level::avx2>;
#include "dms/backend/cpu/detail/kernel_bodies.inl"
} // namespace level_avx2
DMS_CPU_TARGET_POP

DMS_CPU_TARGET_PUSH_AVX512
namespace level_avx512 {
using vec = simd::float_vec<isa_level::avx512>;
#include "dms/backend/cpu/detail/kernel_bodies.inl"
} // namespace level_avx512
DMS_CPU_TARGET_POP

// Calls `level_<active>::NAME(args...)`. A macro rather than a function template taking the
// three overloads, so that each call site stays a direct (inlinable) call.
#define DMS_CPU_DISPATCH(NAME, ...)                                                                          \
  switch (::dms::cpu::active_isa_level()) {                                                                  \
  case ::dms::cpu::isa_level::avx512: return detail::level_avx512::NAME(__VA_ARGS__);                        \
  case ::dms::cpu::isa_level::avx2: return detail::level_avx2::NAME(__VA_ARGS__);                            \
  case ::dms::cpu::isa_level::baseline: break;                                                               \
  }                                                                                                          \
  return detail::level_baseline::NAME(__VA_ARGS__)
#else
#define DMS_CPU_DISPATCH(NAME, ...) return detail::level_baseline::NAME(__VA_ARGS__)
#endif

} // namespace DMS_CPU_ABI_TAG
} // namespace detail

inline namespace DMS_CPU_ABI_TAG {

//! sum_i a[i] * b[i] over `n` elements.
inline float dot(const float *a, const float *b, std::size_t n) noexcept { DMS_CPU_DISPATCH(dot, a, b, n); }

//! Checked overload: `a` and `b` must have the same length.
inline float dot(std::span<const float> a, std::span<const float> b) {
  require(a.size() == b.size(), errc::shape_mismatch, [&] {
    return "dot: lengths differ (" + std::to_string(a.size()) + " vs " + std::to_string(b.size()) + ")";
  });
  return dot(a.data(), b.data(), a.size());
}

//! y[i] += a * x[i] over `n` elements. `x` and `y` must not overlap (unless equal).
inline void axpy(float a, const float *x, float *y, std::size_t n) noexcept {
  DMS_CPU_DISPATCH(axpy, a, x, y, n);
}

//! Checked overload: `x` and `y` must have the same length.
inline void axpy(float a, std::span<const float> x, std::span<float> y) {
  require(x.size() == y.size(), errc::shape_mismatch, [&] {
    return "axpy: lengths differ (" + std::to_string(x.size()) + " vs " + std::to_string(y.size()) + ")";
  });
  axpy(a, x.data(), y.data(), x.size());
}

//! rows(r, c) += row_scales[r] * v[c] for every row r: the steering update with one scale per
//! token (DMS: the probe-dependent strength). Needs row_scales.size() == rows.rows and
//! v.size() == rows.cols; rows may be padded (row_stride >= cols) but must not overlap.
inline void add_scaled_rows(matrix_view<float> rows, std::span<const float> row_scales,
                            std::span<const float> v) {
  detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, row_scales.size(), v.size(),
                            "add_scaled_rows");
  DMS_CPU_DISPATCH(add_scaled_rows, rows, row_scales.data(), v.data());
}

//! out[r] = sum_c rows(r, c) * w[c] for every row r: the logits of a linear probe, one per token,
//! before the sigmoid. Needs w.size() == rows.cols and out.size() == rows.rows.
inline void dot_rows(matrix_view<const float> rows, std::span<const float> w, std::span<float> out) {
  detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, out.size(), w.size(), "dot_rows");
  DMS_CPU_DISPATCH(dot_rows, rows, w.data(), out.data());
}

#undef DMS_CPU_DISPATCH

} // namespace DMS_CPU_ABI_TAG
} // namespace cpu
DMS_NAMESPACE_END
