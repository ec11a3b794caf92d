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
#include "dms/core/half.hpp" // half_isa_supported
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
DMS_ALWAYS_INLINE void weighted_sum_body(std::span<const std::span<const float>> xs, std::span<const double> coef,
                                         std::span<float> out, std::size_t begin, std::size_t end) noexcept {
  // The first input initializes the block's accumulators (0.0 + c x, as a running sum from zero:
  // a product of -0.0 still sums to +0.0) and the last is added on the way out, so two models
  // cost two passes over the block, not four; the same bits as summing from zero.
  if (xs.empty()) {
    for (std::size_t j = begin; j < end; ++j) out[j] = 0.0f;
    return;
  }
  const std::size_t last = xs.size() - 1;
  double acc[weighted_sum_block];
  for (std::size_t b = begin; b < end; b += weighted_sum_block) {
    const std::size_t len = std::min(weighted_sum_block, end - b);
    const float *x0 = xs[0].data() + b;
    const double c0 = coef[0];
    for (std::size_t j = 0; j < len; ++j) acc[j] = 0.0 + c0 * static_cast<double>(x0[j]);
    for (std::size_t i = 1; i < last; ++i) {
      const float *x = xs[i].data() + b;
      const double c = coef[i];
      for (std::size_t j = 0; j < len; ++j) acc[j] += c * static_cast<double>(x[j]);
    }
    float *o = out.data() + b;
    if (last == 0) {
      for (std::size_t j = 0; j < len; ++j) o[j] = static_cast<float>(acc[j]);
    } else {
      const float *xl = xs[last].data() + b;
      const double cl = coef[last];
      for (std::size_t j = 0; j < len; ++j) o[j] = static_cast<float>(acc[j] + cl * static_cast<double>(xl[j]));
    }
  }
}

// AVX2 without FMA (four doubles a step instead of SSE2's two): no multiply-add is fused, so the
// sums are the same bits on every x86 CPU.
#if defined(DMS_X86_DISPATCH)
DMS_TARGET("avx2") DMS_MERGE_VECTORIZE
inline void weighted_sum_avx2(std::span<const std::span<const float>> xs, std::span<const double> coef,
                              std::span<float> out, std::size_t begin, std::size_t end) noexcept {
  weighted_sum_body(xs, coef, out, begin, end);
}
#endif
DMS_MERGE_VECTORIZE inline void weighted_sum_portable(std::span<const std::span<const float>> xs,
                                                      std::span<const double> coef, std::span<float> out,
                                                      std::size_t begin, std::size_t end) noexcept {
  weighted_sum_body(xs, coef, out, begin, end);
}
inline void weighted_sum(std::span<const std::span<const float>> xs, std::span<const double> coef, std::span<float> out,
                         std::size_t begin, std::size_t end) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx2)) return weighted_sum_avx2(xs, coef, out, begin, end);
#endif
  weighted_sum_portable(xs, coef, out, begin, end);
}

//! out[j] = base[j] + sum_i coef[i] * (xs[i][j] - base[j]) for j in [begin, end). The task
//! vector xs[i][j] - base[j] is formed in fp32 (as mergekit does), the sum in double.
DMS_ALWAYS_INLINE void weighted_task_sum_body(std::span<const std::span<const float>> xs,
                                              std::span<const double> coef, std::span<const float> base,
                                              std::span<float> out, std::size_t begin, std::size_t end) noexcept {
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

#if defined(DMS_X86_DISPATCH)
DMS_TARGET("avx2") DMS_MERGE_VECTORIZE
inline void weighted_task_sum_avx2(std::span<const std::span<const float>> xs, std::span<const double> coef,
                                   std::span<const float> base, std::span<float> out, std::size_t begin,
                                   std::size_t end) noexcept {
  weighted_task_sum_body(xs, coef, base, out, begin, end);
}
#endif
DMS_MERGE_VECTORIZE inline void weighted_task_sum_portable(std::span<const std::span<const float>> xs,
                                                           std::span<const double> coef, std::span<const float> base,
                                                           std::span<float> out, std::size_t begin,
                                                           std::size_t end) noexcept {
  weighted_task_sum_body(xs, coef, base, out, begin, end);
}
inline void weighted_task_sum(std::span<const std::span<const float>> xs, std::span<const double> coef,
                              std::span<const float> base, std::span<float> out, std::size_t begin,
                              std::size_t end) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx2)) return weighted_task_sum_avx2(xs, coef, base, out, begin, end);
#endif
  weighted_task_sum_portable(xs, coef, base, out, begin, end);
}

} // namespace detail
DMS_NAMESPACE_END
