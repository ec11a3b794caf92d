// dms/backend/cuda/kernels.cuh: the steering kernels of the CUDA backend.
//
// Same operations, argument order, shape checks and errors as dms/backend/cpu/kernels.hpp, on
// device pointers and queued on the caller's stream (dms never synchronizes an engine's stream).
// Shapes are checked on the host before anything is queued, so a shape error throws without
// touching the device. Results match the scalar reference in dms/backend/cpu/reference.hpp up to
// fused multiply-add rounding (nvcc contracts `y += s * v` into an FMA).
// Compile with nvcc.
//
// @code
//   // acts: the engine's device activations, n_tokens x n_embd, row stride in elements
//   dms::matrix_view<float> m{acts_ptr, n_tokens, n_embd, n_embd};
//   dms::cuda::add_scaled_rows(m, scales.span(), v.span(), stream);   // acts[t] += s[t] * v
// @endcode
#pragma once

#include <cstdint>
#include <span>

#include <cuda_runtime.h>

#include "dms/backend/cpu/reference.hpp" // the shape checks shared with the CPU kernels
#include "dms/backend/cuda/error.cuh"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// grid.y walks rows (grid-stride, for more than 65535 tokens), grid.x * block.x walks columns.
template <class T>
__global__ void add_scaled_rows_kernel(T *rows, std::int64_t n_rows, std::int64_t cols,
                                       std::int64_t row_stride, const T *row_scales, const T *v) {
  for (std::int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
    const T s = row_scales[r];
    T *row = rows + r * row_stride;
    for (std::int64_t c = std::int64_t{blockIdx.x} * blockDim.x + threadIdx.x; c < cols;
         c += std::int64_t{gridDim.x} * blockDim.x)
      row[c] += s * v[c];
  }
}

} // namespace detail

//! rows(r, c) += row_scales[r] * v[c] for every row r, queued on `stream`. `rows.data`,
//! `row_scales` and `v` are device memory. Needs row_scales.size() == rows.rows and
//! v.size() == rows.cols; rows may be padded (row_stride >= cols) but must not overlap.
inline void add_scaled_rows(matrix_view<float> rows, std::span<const float> row_scales,
                            std::span<const float> v, cudaStream_t stream) {
  cpu::detail::check_rows_kernel(rows.rows, rows.cols, rows.row_stride, row_scales.size(), v.size(),
                                 "add_scaled_rows");
  if (rows.rows == 0 || rows.cols == 0) return;
  // 256 threads per block; enough column blocks to cover a row up to 256 * 64 = 16384 wide in
  // one pass (wider rows loop), one grid row per matrix row up to CUDA's grid.y limit of 65535.
  constexpr unsigned threads = 256;
  const std::int64_t col_blocks = (rows.cols + threads - 1) / threads;
  const dim3 grid(static_cast<unsigned>(col_blocks < 64 ? col_blocks : 64),
                  static_cast<unsigned>(rows.rows < 65535 ? rows.rows : 65535));
  detail::add_scaled_rows_kernel<float><<<grid, threads, 0, stream>>>(
      rows.data, rows.rows, rows.cols, rows.row_stride, row_scales.data(), v.data());
  DMS_CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
DMS_NAMESPACE_END
