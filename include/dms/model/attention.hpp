// dms/model/attention.hpp: causal grouped-query attention over the KV cache, on the CPU.
//
// After a step has written its keys and values into the cache, the token at position p of a
// sequence attends to that sequence's positions [0, p]: this is the causal mask, and it also
// makes a prefill of N tokens compute exactly what N one-token decode steps compute. Query head h
// reads KV head h / (n_head / n_head_kv) (GQA, as llama.cpp and transformers group them).
//
// softmax(q.K^T * scale) V is computed in f32 with the keys taken in blocks of `key_block`: the
// scores of a block live on the stack, and a running maximum rescales the partial sums when a
// later block holds a larger score (the "online softmax" of FlashAttention). So a query needs no
// heap scratch however long the context, and for contexts up to one block it is the plain
// two-pass softmax. Every (token, head) is computed by one thread from its own inputs only, so
// the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "dms/backend/cpu/kernels.hpp"
#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/model/hparams.hpp"
#include "dms/model/kv_cache.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! Keys scored per block: 128 scores (512 bytes) stay in L1 next to the head's accumulator, and
//! the running maximum is rescaled at most once per block.
inline constexpr std::int64_t attention_key_block = 128;
//! Below this many (query head x key) pairs a step's attention runs on the calling thread: waking
//! the pool costs more than the work (a decode step of SmolLM2 at position 300 is ~2700 pairs).
inline constexpr std::int64_t attention_parallel_min_pairs = 4096;
} // namespace detail

//! out[0, head_dim) = softmax(scale * q . k_j, j < n_keys) weighted sum of v_j. `keys` and
//! `values` are n_keys dense rows of head_dim floats; n_keys >= 1.
inline void attend_head(const float *q, const float *keys, const float *values, std::int64_t n_keys,
                        std::int64_t head_dim, float scale, float *out) noexcept {
  const auto hd = static_cast<std::size_t>(head_dim);
  float scores[detail::attention_key_block];
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0.0f;
  std::fill(out, out + hd, 0.0f);
  for (std::int64_t j0 = 0; j0 < n_keys; j0 += detail::attention_key_block) {
    const std::int64_t nb = std::min(detail::attention_key_block, n_keys - j0);
    float block_max = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < nb; ++j) {
      scores[j] = scale * cpu::dot(q, keys + static_cast<std::size_t>(j0 + j) * hd, hd);
      block_max = std::max(block_max, scores[j]);
    }
    if (block_max > running_max) {
      // exp(-inf) = 0 on the first block: the empty accumulator stays empty.
      const float r = std::exp(running_max - block_max);
      if (running_sum != 0.0f)
        for (std::size_t d = 0; d < hd; ++d) out[d] *= r;
      running_sum *= r;
      running_max = block_max;
    }
    for (std::int64_t j = 0; j < nb; ++j) {
      const float p = std::exp(scores[j] - running_max);
      running_sum += p;
      cpu::axpy(p, values + static_cast<std::size_t>(j0 + j) * hd, out, hd);
    }
  }
  const float inv = 1.0f / running_sum;
  for (std::size_t d = 0; d < hd; ++d) out[d] *= inv;
}

//! Attention of one forward step of one layer. Row t of `q` (row stride ldq) holds the roped
//! queries of token t, n_head heads of head_dim; row t of `out` (stride ldo) receives its n_head
//! head outputs. Token t belongs to slots[t].seq at slots[t].pos, whose keys and values at
//! positions [0, pos] must already be in `cache`.
inline void causal_attention(const float *q, std::int64_t ldq, float *out, std::int64_t ldo,
                             std::span<const token_slot> slots, const kv_cache &cache, std::int32_t layer,
                             const llama_hparams &hp, thread_pool *pool) {
  const std::int64_t n_tokens = static_cast<std::int64_t>(slots.size());
  const std::int64_t n_head = hp.n_head, group = hp.n_head / hp.n_head_kv, hd = hp.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  auto run = [&](std::size_t begin, std::size_t end) {
    for (std::size_t item = begin; item < end; ++item) {
      const std::int64_t t = static_cast<std::int64_t>(item) / n_head;
      const std::int64_t h = static_cast<std::int64_t>(item) % n_head;
      const token_slot &s = slots[static_cast<std::size_t>(t)];
      const auto kvh = static_cast<std::int32_t>(h / group);
      attend_head(q + t * ldq + h * hd, cache.keys(s.seq, layer, kvh), cache.values(s.seq, layer, kvh),
                  static_cast<std::int64_t>(s.pos) + 1, hd, scale, out + t * ldo + h * hd);
    }
  };
  const std::size_t items = static_cast<std::size_t>(n_tokens * n_head);
  std::int64_t pairs = 0;
  for (const token_slot &s : slots) pairs += (static_cast<std::int64_t>(s.pos) + 1) * n_head;
  if (pool == nullptr || pool->size() == 1 || pairs < detail::attention_parallel_min_pairs) {
    run(0, items);
    return;
  }
  // A few chunks per thread balance the uneven items (later positions attend to more keys); the
  // chunking does not change any result.
  const std::size_t grain = std::max<std::size_t>(1, items / (4 * pool->size()));
  pool->parallel_for(items, grain, run);
}

DMS_NAMESPACE_END
