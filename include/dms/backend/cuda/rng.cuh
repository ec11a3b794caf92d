// dms/backend/cuda/rng.cuh: uniform random floats on the GPU, bit-identical to the CPU.
//
// Random merges (DARE's drop masks, noise) must give the same model whether they run on the CPU
// or the GPU. Both sides draw from the shared counter-based Philox stream of dms/core/rng.hpp,
// whose element i is a pure function of (key, stream id, i) and whose float conversion is exact,
// so `dms::cuda::fill_uniform` writes exactly the bits `dms::fill_uniform` computes on the host.
// One thread evaluates one Philox block (4 consecutive elements), as the host loop does.
// Compile with nvcc.
//
// @code
//   const dms::philox_stream s(dms::key_for(seed, name, model_index), 0);
//   dms::cuda::device_buffer<float> u(n, stream);
//   dms::cuda::fill_uniform(s, 0, u.data(), u.size(), stream);   // == dms::fill_uniform(s, 0, host)
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "dms/backend/cuda/error.cuh"
#include "dms/config.hpp"
#include "dms/core/rng.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

// Elements are indexed modulo 2^64 like the host's (wrapping) loop, so a Philox block number is
// taken modulo 2^62.
inline constexpr std::uint64_t philox_block_mask = (std::uint64_t{1} << 62) - 1;

//! How n elements starting at first_index map onto Philox blocks: `lead` = first_index % 4
//! positions of the first block precede out[0]; work item q covers positions 4q .. 4q + 3, i.e.
//! out[4q - lead .. 4q + 3 - lead], and there are `n_blocks` work items.
struct fill_uniform_plan {
  std::uint64_t first_block;
  unsigned lead;
  std::uint64_t n;
  std::uint64_t n_blocks;
};

constexpr fill_uniform_plan plan_fill_uniform(std::uint64_t first_index, std::uint64_t n) noexcept {
  const auto lead = static_cast<unsigned>(first_index % 4);
  return {first_index / 4, lead, n, (std::uint64_t{lead} + n + 3) / 4};
}

//! Work item q of a plan: one Philox call, up to 4 stores. Host-callable so the index arithmetic
//! is tested without a GPU.
DMS_HOST_DEVICE inline void fill_uniform_item(const philox_stream &s, const fill_uniform_plan &plan,
                                              float *out, std::uint64_t q) {
  const philox_counter c = s.block((plan.first_block + q) & philox_block_mask);
  for (unsigned w = 0; w < 4; ++w) {
    const std::uint64_t p = 4 * q + w;
    if (p >= plan.lead && p - plan.lead < plan.n) out[p - plan.lead] = uniform_from_bits(c.v[w]);
  }
}

template <class Stream> __global__ void fill_uniform_kernel(Stream s, fill_uniform_plan plan, float *out) {
  const std::uint64_t step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t q = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; q < plan.n_blocks; q += step)
    fill_uniform_item(s, plan, out, q);
}

} // namespace detail

//! device_out[j] = s.uniform(first_index + j) for j < n, queued on `stream`: the same bits as
//! the host `dms::fill_uniform(s, first_index, span)`. `device_out` is device memory.
inline void fill_uniform(philox_stream s, std::uint64_t first_index, float *device_out, std::size_t n,
                         cudaStream_t stream) {
  if (n == 0) return;
  const detail::fill_uniform_plan plan = detail::plan_fill_uniform(first_index, n);
  // 256 threads (8 warps) per block; at most 65535 blocks, then grid-stride: enough to fill any
  // current GPU, and the launch stays within every architecture's grid limit.
  constexpr unsigned threads = 256;
  const std::uint64_t wanted = (plan.n_blocks + threads - 1) / threads;
  const auto blocks = static_cast<unsigned>(wanted < 65535 ? wanted : 65535);
  detail::fill_uniform_kernel<<<blocks, threads, 0, stream>>>(s, plan, device_out);
  DMS_CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
DMS_NAMESPACE_END
