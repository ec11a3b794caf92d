// dms/model/kv_cache.hpp: the key/value cache of the CPU forward pass.
//
// Each sequence (id 0 .. n_seq - 1) owns a fixed slab of n_ctx positions per layer and KV head,
// so appending a token never moves anything and a sequence's keys for one head are a dense
// [n_ctx][head_dim] matrix: the attention loop walks them with unit stride. Layout, slowest axis
// first: [seq][layer][kv_head][pos][head_dim], separately for K and V. Values are f32 (the
// activations' own precision; llama.cpp's default f16 cache rounds them, dms does not).
//
// Memory: 2 * n_seq * n_layers * n_ctx * n_head_kv * head_dim floats are reserved at
// construction but not touched (no zero fill), so the operating system backs only the pages a
// sequence has written: a 4-sequence, 4096-position cache of SmolLM2 reserves 755 MB and costs
// what the prompts use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

class kv_cache {
public:
  kv_cache() = default;
  kv_cache(std::int32_t n_layers, std::int32_t n_head_kv, std::int64_t head_dim, std::int32_t n_ctx,
           std::int32_t n_seq)
      : n_layers_(n_layers), n_head_kv_(n_head_kv), head_dim_(head_dim), n_ctx_(n_ctx), n_seq_(n_seq),
        length_(static_cast<std::size_t>(n_seq > 0 ? n_seq : 0), 0) {
    require(n_layers > 0 && n_head_kv > 0 && head_dim > 0 && n_ctx > 0 && n_seq > 0, errc::invalid_argument, [&] {
      return "kv_cache: sizes must be positive (layers " + std::to_string(n_layers) + ", kv heads " +
             std::to_string(n_head_kv) + ", head_dim " + std::to_string(head_dim) + ", n_ctx " +
             std::to_string(n_ctx) + ", sequences " + std::to_string(n_seq) + ")";
    });
    // Overflow guard before multiplying the extents together.
    const std::size_t limit = std::numeric_limits<std::size_t>::max() / sizeof(float) / 2;
    std::size_t n = 1;
    for (std::size_t e : {std::size_t(n_seq), std::size_t(n_layers), std::size_t(n_head_kv), std::size_t(n_ctx),
                          std::size_t(head_dim)}) {
      require(n <= limit / e, errc::invalid_argument, [] { return std::string("kv_cache: size overflows"); });
      n *= e;
    }
    per_sequence_ = n / static_cast<std::size_t>(n_seq);
    // make_unique_for_overwrite: default-initialized floats, so no page is touched here.
    k_ = std::make_unique_for_overwrite<float[]>(n);
    v_ = std::make_unique_for_overwrite<float[]>(n);
  }

  std::int32_t n_ctx() const noexcept { return n_ctx_; }
  std::int32_t n_seq() const noexcept { return n_seq_; }
  //! Bytes reserved for K and V together (what a full cache would occupy).
  std::size_t capacity_bytes() const noexcept {
    return 2 * per_sequence_ * static_cast<std::size_t>(n_seq_) * sizeof(float);
  }

  //! Positions cached for `seq` (the next token of seq goes at this position).
  std::int32_t length(std::int32_t seq) const noexcept { return length_[static_cast<std::size_t>(seq)]; }
  void set_length(std::int32_t seq, std::int32_t n) noexcept { length_[static_cast<std::size_t>(seq)] = n; }
  //! Forgets `seq`: its slab is reused from position 0 (the stale values are never read).
  void clear(std::int32_t seq) noexcept { length_[static_cast<std::size_t>(seq)] = 0; }

  //! Keys of (seq, layer, kv_head): n_ctx rows of head_dim floats.
  float *keys(std::int32_t seq, std::int32_t layer, std::int32_t kv_head) const noexcept {
    return k_.get() + offset(seq, layer, kv_head);
  }
  float *values(std::int32_t seq, std::int32_t layer, std::int32_t kv_head) const noexcept {
    return v_.get() + offset(seq, layer, kv_head);
  }

private:
  std::size_t offset(std::int32_t seq, std::int32_t layer, std::int32_t kv_head) const noexcept {
    const std::size_t slab = static_cast<std::size_t>(n_ctx_) * static_cast<std::size_t>(head_dim_);
    return static_cast<std::size_t>(seq) * per_sequence_ +
           (static_cast<std::size_t>(layer) * static_cast<std::size_t>(n_head_kv_) +
            static_cast<std::size_t>(kv_head)) * slab;
  }

  std::int32_t n_layers_ = 0, n_head_kv_ = 0;
  std::int64_t head_dim_ = 0;
  std::int32_t n_ctx_ = 0, n_seq_ = 0;
  std::size_t per_sequence_ = 0; //!< floats of K (or V) per sequence
  std::vector<std::int32_t> length_;
  std::unique_ptr<float[]> k_, v_;
};

DMS_NAMESPACE_END
