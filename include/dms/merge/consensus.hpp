// dms/merge/consensus.hpp: mixing (sparsified) task vectors into one tensor, with or without
// TIES's sign election.
//
// mergekit's generalized task arithmetic ends every method the same way (get_mask and the lines
// after it in generalized_task_arithmetic.py); with weighted deltas wd_i = w_i d_i:
//  * consensus `sum` (TIES): the elected sign s = +1 where sum_i wd_i >= 0, else -1;
//    consensus `count`: s = +1 where sum_i sign(wd_i) >= 0. Entry i takes part where
//    sign(wd_i) == s (so an entry trimmed to 0 never does);
//    mixed = sum_i [taken] wd_i, divisor = sum_i [taken] w_i, with divisor 0 -> 1.
//  * no consensus: mixed = sum_i wd_i, divisor = sum_i w_i, with |divisor| < 1e-8 -> 1.
//  * out = base + lambda * (normalize ? mixed / divisor : mixed).
// The kernel is elementwise and walks blocks of the tensor so that N task vectors, the elected
// sign and the sums stay in L1; sums are double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dms/config.hpp"
#include "dms/merge/strategies/weighted_sum.hpp" // DMS_MERGE_VECTORIZE

DMS_NAMESPACE_BEGIN

//! How TIES elects the sign of each entry.
enum class consensus_method : std::uint8_t {
  none,  //!< no election: every task vector is summed (task arithmetic, dare_linear, ...)
  sum,   //!< the sign of the weighted sum (TIES paper, mergekit `sum`)
  count, //!< the sign held by most task vectors (mergekit `count`)
};

//! How mix_task_vectors combines the task vectors.
struct mix_options {
  consensus_method consensus = consensus_method::sum;
  bool normalize = true; //!< divide by the summed weights of the entries that took part
  double lambda = 1.0;   //!< scales the mixed task vector
};

//! out[j] = base[j] + lambda * mix_j for j in [begin, end), as in the header comment.
//! `deltas[i]` is model i's (sparsified) task vector, `weights[i]` its weight.
DMS_MERGE_VECTORIZE inline void mix_task_vectors(std::span<const std::span<const float>> deltas, std::span<const double> weights,
                             std::span<const float> base, const mix_options &opt, std::span<float> out,
                             std::size_t begin, std::size_t end) noexcept {
  constexpr std::size_t block = 512; // 3 arrays of 512 doubles: 12 KiB, in L1
  double elect[block], mixed[block], divisor[block];
  double weight_sum = 0.0;
  for (double w : weights) weight_sum += w;
  const double plain_divisor = std::abs(weight_sum) < 1e-8 ? 1.0 : weight_sum;
  for (std::size_t b = begin; b < end; b += block) {
    const std::size_t len = std::min(block, end - b);
    for (std::size_t j = 0; j < len; ++j) mixed[j] = 0.0;
    if (opt.consensus == consensus_method::none) {
      for (std::size_t i = 0; i < deltas.size(); ++i) {
        const float *d = deltas[i].data() + b;
        const double w = weights[i];
        for (std::size_t j = 0; j < len; ++j) mixed[j] += w * static_cast<double>(d[j]);
      }
      const double scale = opt.lambda / (opt.normalize ? plain_divisor : 1.0);
      for (std::size_t j = 0; j < len; ++j)
        out[b + j] = static_cast<float>(static_cast<double>(base[b + j]) + scale * mixed[j]);
      continue;
    }
    for (std::size_t j = 0; j < len; ++j) elect[j] = 0.0, divisor[j] = 0.0;
    for (std::size_t i = 0; i < deltas.size(); ++i) {
      const float *d = deltas[i].data() + b;
      const double w = weights[i];
      if (opt.consensus == consensus_method::sum)
        for (std::size_t j = 0; j < len; ++j) elect[j] += w * static_cast<double>(d[j]);
      else
        for (std::size_t j = 0; j < len; ++j) {
          const double wd = w * static_cast<double>(d[j]);
          elect[j] += static_cast<double>((wd > 0.0) - (wd < 0.0));
        }
    }
    for (std::size_t i = 0; i < deltas.size(); ++i) {
      const float *d = deltas[i].data() + b;
      const double w = weights[i];
      for (std::size_t j = 0; j < len; ++j) {
        const double wd = w * static_cast<double>(d[j]);
        // elect >= 0 ? wd > 0 : wd < 0, written without a branch so that it vectorizes (the
        // branchy form ran scalar: a quarter of a TIES merge's time on SmolLM2).
        const bool up = elect[j] >= 0.0;
        const bool taken = (up & (wd > 0.0)) | (!up & (wd < 0.0));
        mixed[j] += taken ? wd : 0.0;
        divisor[j] += taken ? w : 0.0;
      }
    }
    for (std::size_t j = 0; j < len; ++j) {
      const double div = divisor[j] == 0.0 ? 1.0 : divisor[j];
      const double m = opt.normalize ? mixed[j] / div : mixed[j];
      out[b + j] = static_cast<float>(static_cast<double>(base[b + j]) + opt.lambda * m);
    }
  }
}

DMS_NAMESPACE_END
