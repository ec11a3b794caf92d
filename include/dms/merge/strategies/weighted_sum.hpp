// dms/merge/strategies/weighted_sum.hpp: the one kernel behind linear and task arithmetic.
//
// Both methods read N input tensors once and write one: at memory bandwidth only if the loop
// streams every input exactly once and vectorizes. The kernel therefore walks the tensor in
// blocks small enough for L1 (block_elements doubles), adds each model's contribution to the
// block's accumulators in a plain loop the compiler vectorizes, and writes the block out; each
// input is touched once, in order. Accumulators are double: summing N fp32 terms in fp32 loses up
// to N ulps, and the conversion is free next to the memory traffic.
//
// Each output element depends only on the same element of the inputs, so splitting [0, n) into
// chunks (engine chunks via element_offset, or thread-pool chunks) gives the same bits.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>

#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"

// GCC 12 does not vectorize at -O2 (RelWithDebInfo's level) unless asked; Clang does anyway.
#if defined(__GNUC__) && !defined(__clang__)
#define DMS_MERGE_VECTORIZE __attribute__((optimize("tree-vectorize")))
#else
#define DMS_MERGE_VECTORIZE
#endif

DMS_NAMESPACE_BEGIN
namespace detail {

//! 512 doubles = 4 KiB of accumulators: stays in L1 next to one cache line of each input.
inline constexpr std::size_t weighted_sum_block = 512;

//! Elements per thread-pool chunk: 256 Ki floats = 1 MiB per input, large enough that handing out
//! a chunk costs nothing next to streaming it, small enough to balance 64 threads on 100 MiB.
inline constexpr std::size_t elementwise_grain = std::size_t{1} << 18;

//! Runs f(begin, end) over [0, n): on `pool` in chunks of elementwise_grain when given and the
//! tensor spans several chunks, else inline. Chunk boundaries never change an elementwise result.
template <class F> void for_each_chunk(thread_pool *pool, std::size_t n, F &&f) {
  if (pool != nullptr && pool->size() > 1 && n > elementwise_grain) pool->parallel_for(n, elementwise_grain, f);
  else if (n != 0) f(std::size_t{0}, n);
}

//! out[j] = sum_i coef[i] * xs[i][j] for j in [begin, end), accumulated in double.
DMS_MERGE_VECTORIZE inline void weighted_sum(std::span<const std::span<const float>> xs, std::span<const double> coef,
                         std::span<float> out, std::size_t begin, std::size_t end) noexcept {
  double acc[weighted_sum_block];
  for (std::size_t b = begin; b < end; b += weighted_sum_block) {
    const std::size_t len = std::min(weighted_sum_block, end - b);
    for (std::size_t j = 0; j < len; ++j) acc[j] = 0.0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const float *x = xs[i].data() + b;
      const double c = coef[i];
      for (std::size_t j = 0; j < len; ++j) acc[j] += c * static_cast<double>(x[j]);
    }
    float *o = out.data() + b;
    for (std::size_t j = 0; j < len; ++j) o[j] = static_cast<float>(acc[j]);
  }
}

//! out[j] = base[j] + sum_i coef[i] * (xs[i][j] - base[j]) for j in [begin, end). The task
//! vector xs[i][j] - base[j] is formed in fp32 (as mergekit does), the sum in double.
DMS_MERGE_VECTORIZE inline void weighted_task_sum(std::span<const std::span<const float>> xs, std::span<const double> coef,
                              std::span<const float> base, std::span<float> out, std::size_t begin,
                              std::size_t end) noexcept {
  double acc[weighted_sum_block];
  for (std::size_t b = begin; b < end; b += weighted_sum_block) {
    const std::size_t len = std::min(weighted_sum_block, end - b);
    const float *bs = base.data() + b;
    for (std::size_t j = 0; j < len; ++j) acc[j] = 0.0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const float *x = xs[i].data() + b;
      const double c = coef[i];
      for (std::size_t j = 0; j < len; ++j) acc[j] += c * static_cast<double>(x[j] - bs[j]);
    }
    float *o = out.data() + b;
    for (std::size_t j = 0; j < len; ++j) o[j] = static_cast<float>(static_cast<double>(bs[j]) + acc[j]);
  }
}

} // namespace detail
DMS_NAMESPACE_END
