// dms/model/rope.hpp: rotary position embeddings (RoPE) for the Llama family.
//
// Dimension pair i of a head at position p is rotated by theta_i = p * s * base^(-2i/d) / f_i,
// with s the linear position scale (1 unless rope scaling says otherwise) and f_i llama3's
// per-frequency divisors (1 unless given). Which two dimensions form pair i depends on how the
// Q/K rows are stored: GGUF llama files hold them permuted so that pairs are adjacent (llama.cpp's
// "norm" mode), HF checkpoints and qwen2 keep the two halves of a head apart (NEOX / rotate_half).
// Both give the same attention scores for the same weights; see dms/formats/gguf_names.hpp.
//
// The angles depend on the position only, so a forward step computes cos/sin once per token
// (`rope_table::angles`) and applies them to every head of q and k (`apply_rope`). Angles are
// computed in double and rounded once (llama.cpp accumulates theta in float; the difference is
// below 1e-5 rad at the positions of a 4096 context).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "dms/config.hpp"
#include "dms/model/hparams.hpp"

DMS_NAMESPACE_BEGIN

//! The inverse frequencies of a model's rotary embedding; cheap to copy.
class rope_table {
public:
  rope_table() = default;
  explicit rope_table(const llama_hparams &hp) : style_(hp.rope) {
    const auto half = static_cast<std::size_t>(hp.head_dim / 2);
    inv_freq_.resize(half);
    for (std::size_t i = 0; i < half; ++i) {
      double f = static_cast<double>(hp.rope_freq_scale) *
                 std::pow(static_cast<double>(hp.rope_theta),
                          -2.0 * static_cast<double>(i) / static_cast<double>(hp.head_dim));
      if (!hp.rope_freq_factors.empty()) f /= static_cast<double>(hp.rope_freq_factors[i]);
      inv_freq_[i] = f;
    }
  }

  //! Number of rotated pairs per head (head_dim / 2).
  std::size_t pairs() const noexcept { return inv_freq_.size(); }
  rope_style style() const noexcept { return style_; }

  //! cos and sin of theta_i at position `pos`, for i < pairs().
  void angles(std::int32_t pos, float *cos_out, float *sin_out) const noexcept {
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      const double theta = static_cast<double>(pos) * inv_freq_[i];
      cos_out[i] = static_cast<float>(std::cos(theta));
      sin_out[i] = static_cast<float>(std::sin(theta));
    }
  }

private:
  std::vector<double> inv_freq_;
  rope_style style_ = rope_style::adjacent;
};

//! Rotates `n_heads` consecutive heads of width 2 * n_pairs at `x` in place, with the angles of
//! one position. (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos), as llama.cpp's ggml_rope.
inline void apply_rope(float *x, std::int64_t n_heads, std::size_t n_pairs, const float *cos_t,
                       const float *sin_t, rope_style style) noexcept {
  const std::size_t head_dim = 2 * n_pairs;
  for (std::int64_t h = 0; h < n_heads; ++h) {
    float *v = x + static_cast<std::size_t>(h) * head_dim;
    if (style == rope_style::adjacent) {
      for (std::size_t i = 0; i < n_pairs; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cos_t[i] - x1 * sin_t[i];
        v[2 * i + 1] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    } else {
      for (std::size_t i = 0; i < n_pairs; ++i) {
        const float x0 = v[i], x1 = v[i + n_pairs];
        v[i] = x0 * cos_t[i] - x1 * sin_t[i];
        v[i + n_pairs] = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
}

DMS_NAMESPACE_END
