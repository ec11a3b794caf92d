// dms/model/ops.hpp: the element-wise steps of the Llama forward pass (RMS norm, SwiGLU, the
// residual add), written to match llama.cpp's CPU kernels operation for operation.
//
// They are cheap next to the mat-muls (a few hundred flops per token and layer against ~2 * n_embd
// * n_ff), so they are plain loops the compiler vectorizes; what matters is doing the same
// arithmetic as the reference: ggml_rms_norm sums squares in double and multiplies by the scale
// before the weight (ggml_mul), ggml's swiglu is x / (1 + exp(-x)) * g.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! out[i] = (x[i] / sqrt(mean(x^2) + eps)) * weight[i], over n elements. `out` may equal `x`.
inline void rms_norm(const float *x, const float *weight, std::int64_t n, float eps, float *out) noexcept {
  double sum = 0.0;
  for (std::int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (std::int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
}

//! gate[i] = silu(gate[i]) * up[i] over n elements: the MLP's SwiGLU, in place.
inline void swiglu(float *gate, const float *up, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

//! x[i] += y[i] over n elements (the residual add).
inline void add_in_place(float *x, const float *y, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) x[i] += y[i];
}

//! x[i] += b[i] for each of `rows` rows of width n (row stride ld): a projection's bias.
inline void add_bias_rows(float *x, std::int64_t ld, std::int64_t rows, const float *b, std::int64_t n) noexcept {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < n; ++i) x[r * ld + i] += b[i];
}

DMS_NAMESPACE_END
