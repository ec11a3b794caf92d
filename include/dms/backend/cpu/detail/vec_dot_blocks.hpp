// dms/backend/cpu/detail/vec_dot_blocks.hpp: quantized activations and the portable row-dot
// kernels of dms/backend/cpu/matmul.hpp.
//
// A decode step multiplies each weight matrix by one activation vector, so the time goes into
// streaming the weights. Like llama.cpp, matmul quantizes the activations once per call to 8-bit
// blocks matching the weight's block structure, so that each weight block meets an integer
// block of the activation and the inner loop is an integer dot product (one scale multiply per
// block instead of one per element):
//   weight Q4_0, Q8_0 -> act_q8_0   (x ~ d * q, q in [-127, 127])
//   weight Q4_1       -> act_q8_1   (the same plus s = d * sum(q), which carries Q4_1's offset m)
//   weight Q4_K, Q6_K -> act_q8_k   (256 elements, one scale, plus 16 sums of 16 for the mins)
// These layouts live only in matmul_workspace and hold their scales in f32 fields, but d and s of
// act_q8_0/act_q8_1 carry f16-rounded values, as ggml's block_q8_0/q8_1 store them in f16 (the
// quants themselves use the unrounded 127 / amax, as in ggml): SmolLM2 at Q4_1 is sensitive
// enough that keeping f32 scales moved its greedy continuations away from llama.cpp's. Q8_K keeps
// an f32 d, as ggml's block_q8_K does. Quantization rounds x * (127 / amax) to nearest even, one
// product per element and nothing fused, so the portable and the AVX2 quantizers give the same
// bytes; the error per element is at most d / 2 = amax / 254 of its block.
//
// Kernels compute `NT` (1..max_tile_tokens) tokens against one weight row at once, so that a
// weight block is unpacked once per tile; every token's sum follows the same sequence of
// operations whatever NT is, so a result never depends on how tokens were grouped (nor, in the
// driver, on the thread count). Everything here is unchecked and noexcept: matmul.hpp validates.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dms/backend/cpu/dispatch.hpp"
#include "dms/backend/cpu/vec.hpp"
#include "dms/config.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/quant.hpp"

// Loops over the NT tokens of a tile must be unrolled so that the per-token accumulators live in
// registers; GCC -O2 does not always do it by itself (the 6-token panel kernel ran at half speed).
#if defined(__clang__)
#define DMS_VD_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define DMS_VD_UNROLL _Pragma("GCC unroll 8")
#else
#define DMS_VD_UNROLL
#endif

DMS_NAMESPACE_BEGIN
namespace cpu {
namespace detail {

// --- quantized activation blocks (workspace-only layouts) -----------------------------------------------

//! For Q4_0 / Q8_0 weights: x[j] ~ d * qs[j].
struct act_q8_0 {
  float d;
  std::int8_t qs[32];
};
//! For Q4_1 weights: as act_q8_0, and s = d * sum_j qs[j] (the dot of Q4_1's offset m with x).
struct act_q8_1 {
  float d;
  float s;
  std::int8_t qs[32];
};
//! For Q4_K / Q6_K weights: one scale per 256 elements; bsums[k] = sum of qs[16 k .. 16 k + 15].
struct act_q8_k {
  float d;
  std::int8_t qs[qk_k];
  std::int16_t bsums[qk_k / 16];
};
static_assert(sizeof(act_q8_0) == 36 && sizeof(act_q8_1) == 40 && sizeof(act_q8_k) == 292,
              "activation blocks must be packed: kernels address their fields by offset");

enum class act_kind : std::uint8_t { q8_0, q8_1, q8_k };

//! Elements per block and bytes per block of an activation layout.
constexpr std::size_t act_block_elems(act_kind k) noexcept { return k == act_kind::q8_k ? qk_k : 32; }
constexpr std::size_t act_block_bytes(act_kind k) noexcept {
  switch (k) {
  case act_kind::q8_0: return sizeof(act_q8_0);
  case act_kind::q8_1: return sizeof(act_q8_1);
  case act_kind::q8_k: return sizeof(act_q8_k);
  }
  return 0;
}

//! Most tokens a kernel handles per call (the token tile). 4 keeps a tile's accumulators and the
//! unpacked weight block in the 16 AVX2 registers.
inline constexpr int max_tile_tokens = 4;

//! out[t] = dot(weight row `w` of `nb` blocks, quantized token row at xq + t * xs), t < NT.
using vec_dot_fn = void (*)(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                            float *out) noexcept;
//! Quantizes `n` floats (a whole number of blocks) into activation blocks at `out`.
using quantize_act_fn = void (*)(const float *x, std::size_t n, std::byte *out) noexcept;
//! out[t] = sum_c w[c] * x[t * ldx + c], t < NT, in f32 (dense weights and dequantized tiles).
using dot_f32_fn = void (*)(const float *w, const float *x, std::size_t ldx, std::size_t n, float *out) noexcept;

DMS_ALWAYS_INLINE float load_f32(const std::byte *p) noexcept {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
DMS_ALWAYS_INLINE float load_f16(const std::byte *p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return to_f32(f16_bits{h});
}

//! 127 / amax, or 0 for an all-zero block (its q are then 0 and its d is 0).
DMS_ALWAYS_INLINE float act_inverse_scale(float amax) noexcept { return amax > 0.0f ? 127.0f / amax : 0.0f; }

//! v rounded to the nearest f16 value (ggml stores the scales of Q8_0/Q8_1 blocks in f16).
DMS_ALWAYS_INLINE float act_f16_round(float v) noexcept { return to_f32(to_f16(v)); }

//! round-to-nearest-even of v (|v| <= 127 for finite input), as an int8; NaN (from non-finite
//! activations) gives 0 rather than undefined behavior, and d carries the NaN/inf to the output.
DMS_ALWAYS_INLINE std::int8_t act_round(float v) noexcept {
  const float r = std::nearbyint(v);
  return r >= -127.0f && r <= 127.0f ? static_cast<std::int8_t>(r) : std::int8_t{0};
}

inline namespace DMS_CPU_ABI_TAG {
namespace vec_dot_portable {

// --- activation quantization -------------------------------------------------------------------------

template <act_kind K> void quantize_act(const float *x, std::size_t n, std::byte *out) noexcept {
  constexpr std::size_t bs = act_block_elems(K);
  for (std::size_t b = 0; b < n / bs; ++b, x += bs, out += act_block_bytes(K)) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = act_inverse_scale(amax);
    std::int8_t q[bs];
    int sum = 0;
    for (std::size_t j = 0; j < bs; ++j) {
      q[j] = act_round(x[j] * id);
      sum += q[j];
    }
    if constexpr (K == act_kind::q8_0) {
      act_q8_0 a;
      a.d = act_f16_round(d);
      std::memcpy(a.qs, q, bs);
      std::memcpy(out, &a, sizeof a);
    } else if constexpr (K == act_kind::q8_1) {
      act_q8_1 a;
      a.d = act_f16_round(d);
      a.s = act_f16_round(d * static_cast<float>(sum));
      std::memcpy(a.qs, q, bs);
      std::memcpy(out, &a, sizeof a);
    } else {
      act_q8_k a;
      a.d = d;
      std::memcpy(a.qs, q, bs);
      for (std::size_t k = 0; k < bs / 16; ++k) {
        int s = 0;
        for (std::size_t j = 0; j < 16; ++j) s += q[16 * k + j];
        a.bsums[k] = static_cast<std::int16_t>(s);
      }
      std::memcpy(out, &a, sizeof a);
    }
  }
}

// --- fused dot kernels ----------------------------------------------------------------------------------
// Integer sums per block, then one f32 multiply-add per block in block order.

template <int NT>
void q4_0_q8_0(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb, float *out) noexcept {
  float acc[NT] = {};
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_0);
    const float dw = load_f16(b);
    int q[32];
    for (int j = 0; j < 16; ++j) {
      const auto v = static_cast<int>(b[2 + j]);
      q[j] = (v & 0xF) - 8;
      q[j + 16] = (v >> 4) - 8;
    }
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_0);
      const auto *qa = reinterpret_cast<const std::int8_t *>(a + offsetof(act_q8_0, qs));
      int s = 0;
      for (int j = 0; j < 32; ++j) s += q[j] * qa[j];
      acc[t] += dw * load_f32(a) * static_cast<float>(s);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

template <int NT>
void q4_1_q8_1(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb, float *out) noexcept {
  float acc[NT] = {}, mins[NT] = {};
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_1);
    const float dw = load_f16(b), mw = load_f16(b + 2);
    int q[32];
    for (int j = 0; j < 16; ++j) {
      const auto v = static_cast<int>(b[4 + j]);
      q[j] = v & 0xF;
      q[j + 16] = v >> 4;
    }
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_1);
      const auto *qa = reinterpret_cast<const std::int8_t *>(a + offsetof(act_q8_1, qs));
      int s = 0;
      for (int j = 0; j < 32; ++j) s += q[j] * qa[j];
      acc[t] += dw * load_f32(a) * static_cast<float>(s);
      mins[t] += mw * load_f32(a + offsetof(act_q8_1, s));
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = acc[t] + mins[t];
}

template <int NT>
void q8_0_q8_0(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb, float *out) noexcept {
  float acc[NT] = {};
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q8_0);
    const float dw = load_f16(b);
    const auto *qw = reinterpret_cast<const std::int8_t *>(b + 2);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_0);
      const auto *qa = reinterpret_cast<const std::int8_t *>(a + offsetof(act_q8_0, qs));
      int s = 0;
      for (int j = 0; j < 32; ++j) s += qw[j] * qa[j];
      acc[t] += dw * load_f32(a) * static_cast<float>(s);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

//! Q4_K: sum over the 8 sub-blocks of 32 of d * sc_j * <q_j, qa_j> - dmin * m_j * sum(qa_j).
template <int NT>
void q4_k_q8_k(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb, float *out) noexcept {
  float acc[NT] = {};
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_k);
    const float dw = load_f16(b), dminw = load_f16(b + 2);
    std::uint8_t scales[12], sc[8], mn[8];
    std::memcpy(scales, b + offsetof(block_q4_k, scales), 12);
    for (int j = 0; j < 8; ++j) ::dms::detail::scale_min_k4(j, scales, sc[j], mn[j]);
    const auto *qs = reinterpret_cast<const std::uint8_t *>(b + offsetof(block_q4_k, qs));
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_k);
      const auto *qa = reinterpret_cast<const std::int8_t *>(a + offsetof(act_q8_k, qs));
      std::int16_t bsums[16];
      std::memcpy(bsums, a + offsetof(act_q8_k, bsums), sizeof bsums);
      int sumi = 0, summ = 0;
      for (int j = 0; j < 8; ++j) {
        const std::uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j & 1);
        int s = 0;
        for (int l = 0; l < 32; ++l) s += ((q[l] >> shift) & 0xF) * qa[32 * j + l];
        sumi += sc[j] * s;
        summ += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
      }
      const float dx = load_f32(a);
      acc[t] += dx * dw * static_cast<float>(sumi) - dx * dminw * static_cast<float>(summ);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

//! Q6_K: d * sum over the 16 sub-blocks of 16 of sc_k * <q_k - 32, qa_k>.
template <int NT>
void q6_k_q8_k(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb, float *out) noexcept {
  float acc[NT] = {};
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q6_k);
    const float dw = load_f16(b + offsetof(block_q6_k, d));
    const auto *sc = reinterpret_cast<const std::int8_t *>(b + offsetof(block_q6_k, scales));
    // Element order as in dequantize_block(block_q6_k): q[e] for e < 256.
    std::int8_t q[qk_k];
    const auto *ql = reinterpret_cast<const std::uint8_t *>(b + offsetof(block_q6_k, ql));
    const auto *qh = reinterpret_cast<const std::uint8_t *>(b + offsetof(block_q6_k, qh));
    for (int n = 0; n < 2; ++n, ql += 64, qh += 32) {
      std::int8_t *y = q + 128 * n;
      for (int l = 0; l < 32; ++l) {
        y[l] = static_cast<std::int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
        y[l + 32] = static_cast<std::int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        y[l + 64] = static_cast<std::int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        y[l + 96] = static_cast<std::int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_k);
      const auto *qa = reinterpret_cast<const std::int8_t *>(a + offsetof(act_q8_k, qs));
      int sumi = 0;
      for (int k = 0; k < 16; ++k) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += q[16 * k + l] * qa[16 * k + l];
        // Element l + 32 j of half n has scale sc[8 n + l / 16 + 2 j]: sub-block k of 16 in element
        // order has scale sc[k].
        sumi += sc[k] * s;
      }
      acc[t] += dw * load_f32(a) * static_cast<float>(sumi);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = acc[t];
}

// --- dense f32 -------------------------------------------------------------------------------------------

//! Two accumulators per token over alternate vectors (enough to overlap the adds of one token
//! with its loads; a tile of tokens gives the core more independent chains).
template <int NT>
void dot_f32(const float *w, const float *x, std::size_t ldx, std::size_t n, float *out) noexcept {
  using vec = simd::float_vec<isa_level::baseline>;
  constexpr std::size_t vw = vec::width;
  typename vec::reg a0[NT], a1[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) a0[t] = a1[t] = vec::zero();
  std::size_t i = 0;
  for (; i + 2 * vw <= n; i += 2 * vw) {
    const typename vec::reg w0 = vec::load(w + i), w1 = vec::load(w + i + vw);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      a0[t] = vec::fmadd(w0, vec::load(x + t * ldx + i), a0[t]);
      a1[t] = vec::fmadd(w1, vec::load(x + t * ldx + i + vw), a1[t]);
    }
  }
  for (; i + vw <= n; i += vw) {
    const typename vec::reg w0 = vec::load(w + i);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) a0[t] = vec::fmadd(w0, vec::load(x + t * ldx + i), a0[t]);
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) {
    float s = vec::reduce_add(vec::add(a0[t], a1[t]));
    for (std::size_t j = i; j < n; ++j) s += w[j] * x[t * ldx + j];
    out[t] = s;
  }
}

} // namespace vec_dot_portable
} // namespace DMS_CPU_ABI_TAG
} // namespace detail
} // namespace cpu
DMS_NAMESPACE_END
