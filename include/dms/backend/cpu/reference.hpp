// dms/backend/cpu/reference.hpp: scalar reference implementations of the CPU kernels.
//
// Each SIMD kernel (dms/backend/cpu/kernels.hpp) and each CUDA kernel is tested against the
// function of the same name here. They are the specification: plain loops in index order, no
// third-party dependency (this header is included from .cu tests as well), and no attempt at
// speed. Results of the SIMD kernels differ from these only by floating-point reassociation
// (dot products are summed in lanes) and by fused multiply-adds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace cpu {
namespace detail {
// Shape checks shared by the reference, SIMD and CUDA versions of the row kernels.
inline void check_rows_kernel(std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                              std::size_t n_per_row, std::size_t n_vector, const char *what) {
  require(rows >= 0 && cols >= 0, errc::invalid_argument, [&] {
    return std::string(what) + ": negative matrix shape " + std::to_string(rows) + " x " +
           std::to_string(cols);
  });
  require(rows <= 1 || row_stride >= cols, errc::invalid_argument, [&] {
    return std::string(what) + ": row_stride " + std::to_string(row_stride) + " is smaller than cols " +
           std::to_string(cols) + " (rows would overlap)";
  });
  require(n_per_row == static_cast<std::size_t>(rows), errc::shape_mismatch, [&] {
    return std::string(what) + ": expected one value per row (" + std::to_string(rows) + "), got " +
           std::to_string(n_per_row);
  });
  require(n_vector == static_cast<std::size_t>(cols), errc::shape_mismatch, [&] {
    return std::string(what) + ": vector length " + std::to_string(n_vector) +
           " does not match the row width " + std::to_string(cols);
  });
}
} // namespace detail

namespace reference {

//! sum_i a[i] * b[i], accumulated in index order in float.
inline float dot(const float *a, const float *b, std::size_t n) noexcept {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

//! y[i] += a * x[i].
inline void axpy(float a, const float *x, float *y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    y[i] += a * x[i];
}

//! rows(r, c) += row_scales[r] * v[c]: the steering update, one scale per token.
inline void add_scaled_rows(matrix_view<float> rows, std::span<const float> row_scales,
                            std::span<const float> v) {
  detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, row_scales.size(), v.size(),
                            "add_scaled_rows");
  for (std::int64_t r = 0; r < rows.rows; ++r)
    axpy(row_scales[static_cast<std::size_t>(r)], v.data(), rows.row(r), static_cast<std::size_t>(rows.cols));
}

//! out[r] = dot(rows[r], w): linear-probe logits, one per token, before the sigmoid.
inline void dot_rows(matrix_view<const float> rows, std::span<const float> w, std::span<float> out) {
  detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, out.size(), w.size(), "dot_rows");
  for (std::int64_t r = 0; r < rows.rows; ++r)
    out[static_cast<std::size_t>(r)] = dot(rows.row(r), w.data(), static_cast<std::size_t>(rows.cols));
}

} // namespace reference
} // namespace cpu
DMS_NAMESPACE_END
