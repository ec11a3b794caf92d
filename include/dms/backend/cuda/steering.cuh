// dms/backend/cuda/steering.cuh: the per-token steering kernels of the CUDA backend.
//
// What runs inside an engine's decode step, once per steered layer:
//  * add_gathered_rows: rows(r) += row_scales[r] * vectors(vector_index[r]): every row (token) of
//    the residual stream picks its own steering vector from a [n_vectors x width] matrix, so the
//    sequences of one batch can be steered differently (per-request steering); index -1 leaves
//    the row alone.
//  * probe_rows / probe_and_steer: p[r] = sigmoid(w . rows(r) + bias), the linear probe of DMS,
//    written to a caller buffer; probe_and_steer also adds alpha * p[r] * v to the row in the same
//    kernel, so the row is read once for the dot product and once for the update (the second
//    read comes from L1/L2) instead of a probe kernel, a round trip and a steering kernel.
//  * capture_rows / capture_row_range: copy selected rows of the residual stream into a
//    caller-provided buffer (activation capture for probe training).
//
// Every function takes device pointers and the caller's stream, checks shapes on the host (so a
// shape error throws dms::error before anything is queued), never allocates and never
// synchronizes: all of them may be captured in a CUDA graph. Values that live in device memory
// (indices) cannot be checked on the host without a synchronization; an index outside
// [0, n_vectors) or [0, rows) makes the kernel skip that row, it never reads out of bounds.
// Compile with nvcc.
//
// Accuracy against the scalar references (dms/backend/cpu/reference.hpp, logistic_probe):
// the update is `y + s * v` (one FMA where the CPU may round twice); the probe's dot product is
// summed in a different order (per-thread partial sums, then a warp-shuffle tree), so the logit
// differs by at most 2 * width * FLT_EPSILON * sum |w_i x_i|, and sigmoid is computed in float.
//
// @code
//   // acts: n_tokens x n_embd residual stream (device); idx[t] = steering vector of token t or -1
//   dms::matrix_view<float> m{acts, n_tokens, n_embd, n_embd};
//   dms::matrix_view<const float> vecs{vectors.data(), n_vectors, n_embd, n_embd};
//   dms::cuda::add_gathered_rows(m, scales.span(), idx.span(), vecs, stream);
//   dms::cuda::probe_and_steer(m, w.span(), bias, alpha, v.span(), p.span(), stream);
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <cuda_runtime.h>

#include "dms/backend/cpu/reference.hpp" // the shape checks shared with the CPU kernels
#include "dms/backend/cuda/error.cuh"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// 256 threads (8 warps) per block everywhere here: a 4096-wide row is 16 elements per thread,
// and 8 warps per block let 8 blocks share an SM at full occupancy on sm_80/sm_90.
inline constexpr unsigned steering_threads = 256;
// CUDA's grid.y and grid.z limit; grid.x allows 2^31 - 1 but 65535 blocks of rows (with a
// grid-stride loop) already fill every current GPU.
inline constexpr std::int64_t max_grid_rows = 65535;

inline unsigned grid_rows(std::int64_t rows) noexcept {
  return static_cast<unsigned>(rows < max_grid_rows ? rows : max_grid_rows);
}
inline unsigned grid_cols(std::int64_t cols) noexcept {
  // Enough column blocks to cover 256 * 64 = 16384 columns in one pass; wider rows loop.
  const std::int64_t blocks = (cols + steering_threads - 1) / steering_threads;
  return static_cast<unsigned>(blocks < 64 ? blocks : 64);
}

inline void check_matrix(matrix_view<const float> m, const char *what, const char *name) {
  require(m.rows >= 0 && m.cols >= 0, errc::invalid_argument, [&] {
    return std::string(what) + ": negative " + name + " shape " + std::to_string(m.rows) + " x " +
           std::to_string(m.cols);
  });
  require(m.rows <= 1 || m.row_stride >= m.cols, errc::invalid_argument, [&] {
    return std::string(what) + ": " + name + " row_stride " + std::to_string(m.row_stride) +
           " is smaller than cols " + std::to_string(m.cols) + " (rows would overlap)";
  });
}

__global__ void add_gathered_rows_kernel(float *rows, std::int64_t n_rows, std::int64_t cols,
                                         std::int64_t row_stride, const float *row_scales,
                                         const std::int32_t *vector_index, const float *vectors,
                                         std::int64_t n_vectors, std::int64_t vector_stride) {
  for (std::int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
    const std::int32_t k = vector_index[r];
    if (k < 0 || k >= n_vectors) continue; // -1: not steered; out of range: skipped, never read
    const float s = row_scales[r];
    const float *v = vectors + k * vector_stride;
    float *row = rows + r * row_stride;
    for (std::int64_t c = std::int64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < cols;
         c += std::int64_t{gridDim.x} * blockDim.x)
      row[c] += s * v[c];
  }
}

//! Sum of `x` over the block (blockDim.x == steering_threads), returned to every thread.
//! Warp shuffles, then one value per warp through shared memory.
__device__ inline float block_sum(float x) {
  __shared__ float warp_sums[steering_threads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  float total = lane < steering_threads / 32 ? warp_sums[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
  __syncthreads(); // warp_sums is reused by the next row of a grid-stride loop
  return total;
}

//! One block per row: p = sigmoid(w . row + bias); probs[r] = p; if Steer, row += alpha * p * v.
template <bool Steer>
__global__ void probe_rows_kernel(float *rows, std::int64_t n_rows, std::int64_t cols, std::int64_t row_stride,
                                  const float *w, float bias, float alpha, const float *v, float *probs) {
  for (std::int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    float *row = rows + r * row_stride;
    float partial = 0.0f;
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) partial += w[c] * row[c];
    const float z = block_sum(partial) + bias;
    // 1 / (1 + e^-z) overflows e^-z to inf for z < -88 and still gives the right limit, 0.
    const float p = 1.0f / (1.0f + expf(-z));
    if (threadIdx.x == 0) probs[r] = p;
    if constexpr (Steer) {
      const float s = alpha * p;
      for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) row[c] += s * v[c];
    }
  }
}

__global__ void capture_rows_kernel(const float *rows, std::int64_t n_rows, std::int64_t row_stride,
                                    const std::int32_t *row_index, float *out, std::int64_t n_out,
                                    std::int64_t cols, std::int64_t out_stride) {
  for (std::int64_t i = blockIdx.y; i < n_out; i += gridDim.y) {
    const std::int32_t r = row_index[i];
    if (r < 0 || r >= n_rows) continue;
    const float *src = rows + r * row_stride;
    float *dst = out + i * out_stride;
    for (std::int64_t c = std::int64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < cols;
         c += std::int64_t{gridDim.x} * blockDim.x)
      dst[c] = src[c];
  }
}

inline void check_probe(matrix_view<const float> rows, std::size_t n_w, std::size_t n_probs, const char *what) {
  cpu::detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, n_probs, n_w, what);
}

} // namespace detail

//! rows(r, c) += row_scales[r] * vectors(vector_index[r], c) for every row r whose index is in
//! [0, vectors.rows); rows with index -1 (or any index outside that range) are left unchanged.
//! `rows.data`, `row_scales`, `vector_index` and `vectors.data` are device memory; needs
//! row_scales.size() == vector_index.size() == rows.rows and vectors.cols == rows.cols.
//! Queued on `stream`; no allocation, no synchronization.
inline void add_gathered_rows(matrix_view<float> rows, std::span<const float> row_scales,
                              std::span<const std::int32_t> vector_index, matrix_view<const float> vectors,
                              cudaStream_t stream) {
  constexpr const char *what = "add_gathered_rows";
  cpu::detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, row_scales.size(),
                                 static_cast<std::size_t>(vectors.cols < 0 ? 0 : vectors.cols), what);
  detail::check_matrix(vectors, what, "vectors");
  require(vector_index.size() == static_cast<std::size_t>(rows.rows), errc::shape_mismatch, [&] {
    return std::string(what) + ": expected one vector index per row (" + std::to_string(rows.rows) + "), got " +
           std::to_string(vector_index.size());
  });
  if (rows.rows == 0 || rows.cols == 0 || vectors.rows == 0) return;
  const dim3 grid(detail::grid_cols(rows.cols), detail::grid_rows(rows.rows));
  detail::add_gathered_rows_kernel<<<grid, detail::steering_threads, 0, stream>>>(
      rows.data, rows.rows, rows.cols, rows.row_stride, row_scales.data(), vector_index.data(), vectors.data,
      vectors.rows, vectors.row_stride);
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! probs[r] = sigmoid(w . rows(r) + bias) for every row: the linear probe's score per token.
//! Needs w.size() == rows.cols and probs.size() == rows.rows; device memory, queued on `stream`.
inline void probe_rows(matrix_view<const float> rows, std::span<const float> w, float bias,
                       std::span<float> probs, cudaStream_t stream) {
  detail::check_probe(rows, w.size(), probs.size(), "probe_rows");
  if (rows.rows == 0) return;
  detail::probe_rows_kernel<false><<<detail::grid_rows(rows.rows), detail::steering_threads, 0, stream>>>(
      const_cast<float *>(rows.data), rows.rows, rows.cols, rows.row_stride, w.data(), bias, 0.0f, nullptr,
      probs.data()); // Steer == false: the kernel never writes rows
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! The fused probe and steer: for every row, p = sigmoid(w . rows(r) + bias) (computed before
//! the row changes), probs[r] = p, rows(r) += (alpha * p) * v. One block per row; device memory,
//! queued on `stream`. Needs w.size() == v.size() == rows.cols and probs.size() == rows.rows.
inline void probe_and_steer(matrix_view<float> rows, std::span<const float> w, float bias, float alpha,
                            std::span<const float> v, std::span<float> probs, cudaStream_t stream) {
  constexpr const char *what = "probe_and_steer";
  detail::check_probe(rows, w.size(), probs.size(), what);
  require(v.size() == static_cast<std::size_t>(rows.cols), errc::shape_mismatch, [&] {
    return std::string(what) + ": steering vector length " + std::to_string(v.size()) +
           " does not match the row width " + std::to_string(rows.cols);
  });
  if (rows.rows == 0) return;
  detail::probe_rows_kernel<true><<<detail::grid_rows(rows.rows), detail::steering_threads, 0, stream>>>(
      rows.data, rows.rows, rows.cols, rows.row_stride, w.data(), bias, alpha, v.data(), probs.data());
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! out(i) = rows(row_index[i]) for i < out.rows: gathers the rows of the tokens to record.
//! Rows whose index is outside [0, rows.rows) leave out(i) unchanged. Needs
//! row_index.size() == out.rows and out.cols == rows.cols; device memory, queued on `stream`.
inline void capture_rows(matrix_view<const float> rows, std::span<const std::int32_t> row_index,
                         matrix_view<float> out, cudaStream_t stream) {
  constexpr const char *what = "capture_rows";
  detail::check_matrix(rows, what, "rows");
  detail::check_matrix(out, what, "out");
  require(out.cols == rows.cols, errc::shape_mismatch, [&] {
    return std::string(what) + ": out rows have width " + std::to_string(out.cols) + ", the activations " +
           std::to_string(rows.cols);
  });
  require(row_index.size() == static_cast<std::size_t>(out.rows), errc::shape_mismatch, [&] {
    return std::string(what) + ": expected one row index per output row (" + std::to_string(out.rows) +
           "), got " + std::to_string(row_index.size());
  });
  if (out.rows == 0 || out.cols == 0 || rows.rows == 0) return;
  const dim3 grid(detail::grid_cols(out.cols), detail::grid_rows(out.rows));
  detail::capture_rows_kernel<<<grid, detail::steering_threads, 0, stream>>>(
      rows.data, rows.rows, rows.row_stride, row_index.data(), out.data, out.rows, out.cols, out.row_stride);
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! out(i) = rows(first_row + i) for i < out.rows: a contiguous range of tokens (one strided
//! cudaMemcpy2DAsync, device to device). Needs first_row + out.rows <= rows.rows and equal widths.
inline void capture_row_range(matrix_view<const float> rows, std::int64_t first_row, matrix_view<float> out,
                              cudaStream_t stream) {
  constexpr const char *what = "capture_row_range";
  detail::check_matrix(rows, what, "rows");
  detail::check_matrix(out, what, "out");
  require(out.cols == rows.cols, errc::shape_mismatch, [&] {
    return std::string(what) + ": out rows have width " + std::to_string(out.cols) + ", the activations " +
           std::to_string(rows.cols);
  });
  require(first_row >= 0 && first_row <= rows.rows && out.rows <= rows.rows - first_row, errc::invalid_argument,
          [&] {
            return std::string(what) + ": rows [" + std::to_string(first_row) + ", " +
                   std::to_string(first_row + out.rows) + ") are outside the " + std::to_string(rows.rows) +
                   " rows of the activations";
          });
  if (out.rows == 0 || out.cols == 0) return;
  const auto width = static_cast<std::size_t>(out.cols) * sizeof(float);
  // A single row may have any stride; cudaMemcpy2DAsync wants pitch >= width.
  const auto pitch = [&](const auto &m) {
    return m.rows <= 1 ? width : static_cast<std::size_t>(m.row_stride) * sizeof(float);
  };
  DMS_CUDA_CHECK(cudaMemcpy2DAsync(out.data, pitch(out), rows.data + first_row * rows.row_stride,
                                   out.rows == 1 ? width : pitch(rows), width, static_cast<std::size_t>(out.rows),
                                   cudaMemcpyDeviceToDevice, stream));
}

} // namespace cuda
DMS_NAMESPACE_END
