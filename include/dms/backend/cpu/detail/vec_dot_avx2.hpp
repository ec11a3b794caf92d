// dms/backend/cpu/detail/vec_dot_avx2.hpp: AVX2 versions of the row-dot kernels and activation
// quantizers of detail/vec_dot_blocks.hpp (same contracts, same token-tile structure).
//
// The integer products use the VPMADDUBSW idiom of ggml: unsigned bytes times signed bytes,
// adjacent pairs summed to int16 (no overflow: at most 2 * 128 * 127 = 32512 for Q8_0, whose
// weights may be -128; the sign of a signed weight is moved onto the activation with VPSIGNB),
// then VPMADDWD against ones (or the sub-block scales) to int32 and one f32 FMA per block.
// Every function needs AVX2, FMA and F16C (the block scales are f16): matmul.hpp only calls
// them after cpu_supports(avx2) and cpu_has_f16c(). The AVX-512 level uses them as well: the
// weight stream, not the vector width, bounds a mat-vec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dms/backend/cpu/detail/vec_dot_blocks.hpp"

#if defined(DMS_X86_DISPATCH)
#include <immintrin.h>

DMS_NAMESPACE_BEGIN
namespace cpu {
namespace detail {
inline namespace DMS_CPU_ABI_TAG {
namespace vec_dot_avx2 {

#define DMS_VD_AVX2 DMS_TARGET("avx2,fma,f16c")

DMS_VD_AVX2 DMS_ALWAYS_INLINE float f16_at(const std::byte *p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE __m256i load256(const std::byte *p) noexcept {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE __m128i load128(const std::byte *p) noexcept {
  return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE float hsum(__m256 a) noexcept {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE float hsum128(__m128 s) noexcept {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE float hmax(__m256 a) noexcept {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
//! The 16 bytes at qs as 32 nibbles in element order: low nibbles (elements 0..15) in the low
//! 128-bit lane, high nibbles (16..31) in the high lane.
DMS_VD_AVX2 DMS_ALWAYS_INLINE __m256i nibbles32(const std::byte *qs) noexcept {
  const __m128i v = load128(qs);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
}
//! sum of u[j] * s[j] (u unsigned, s signed bytes) in 8 int32 lanes.
DMS_VD_AVX2 DMS_ALWAYS_INLINE __m256i dot_us8(__m256i u, __m256i s) noexcept {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// --- activation quantization ------------------------------------------------------------------------------

//! One block of 32: the int8 values (same rounding as the portable version: x * id, nearest even)
//! and, when wanted, their sum.
DMS_VD_AVX2 DMS_ALWAYS_INLINE __m256i quantize32(const float *x, float id, int *sum) noexcept {
  const __m256 m = _mm256_set1_ps(id);
  constexpr int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), m), rnd));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), m), rnd));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 16), m), rnd));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 24), m), rnd));
  // NaN converts to INT_MIN, which the saturating packs turn into -128; the portable version
  // gives 0. Either way d is NaN/inf and so is the result.
  if (sum) {
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    const __m128i h2 = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    *sum = _mm_cvtsi128_si32(_mm_add_epi32(h2, _mm_shuffle_epi32(h2, _MM_SHUFFLE(2, 3, 0, 1))));
  }
  // packs work within 128-bit lanes: the result holds dwords in order 0 4 1 5 2 6 3 7.
  i0 = _mm256_packs_epi32(i0, i1);
  i2 = _mm256_packs_epi32(i2, i3);
  i0 = _mm256_packs_epi16(i0, i2);
  return _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
DMS_VD_AVX2 DMS_ALWAYS_INLINE float amax_of(const float *x, std::size_t n) noexcept {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps();
  for (std::size_t j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask));
  return hmax(m);
}

template <act_kind K> DMS_VD_AVX2 void quantize_act(const float *x, std::size_t n, std::byte *out) noexcept {
  constexpr std::size_t bs = act_block_elems(K);
  for (std::size_t b = 0; b < n / bs; ++b, x += bs, out += act_block_bytes(K)) {
    const float amax = amax_of(x, bs);
    const float d = amax / 127.0f, id = act_inverse_scale(amax);
    if constexpr (K == act_kind::q8_0) {
      const float dh = act_f16_round(d);
      std::memcpy(out, &dh, 4);
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + offsetof(act_q8_0, qs)), quantize32(x, id, nullptr));
    } else if constexpr (K == act_kind::q8_1) {
      int sum = 0;
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + offsetof(act_q8_1, qs)), quantize32(x, id, &sum));
      const float s = act_f16_round(d * static_cast<float>(sum)), dh = act_f16_round(d);
      std::memcpy(out, &dh, 4);
      std::memcpy(out + offsetof(act_q8_1, s), &s, 4);
    } else {
      std::memcpy(out, &d, 4);
      std::int16_t bsums[16];
      for (std::size_t g = 0; g < bs / 32; ++g) {
        const __m256i q = quantize32(x + 32 * g, id, nullptr);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + offsetof(act_q8_k, qs) + 32 * g), q);
        // Sums of 16 bytes: widen to int16, add pairs to int32, then fold within each 128-bit lane.
        const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
        const __m256i s2 = _mm256_add_epi32(s32, _mm256_shuffle_epi32(s32, _MM_SHUFFLE(1, 0, 3, 2)));
        const __m256i s4 = _mm256_add_epi32(s2, _mm256_shuffle_epi32(s2, _MM_SHUFFLE(2, 3, 0, 1)));
        bsums[2 * g] = static_cast<std::int16_t>(_mm256_extract_epi32(s4, 0));
        bsums[2 * g + 1] = static_cast<std::int16_t>(_mm256_extract_epi32(s4, 4));
      }
      std::memcpy(out + offsetof(act_q8_k, bsums), bsums, sizeof bsums);
    }
  }
}

// --- fused dot kernels ---------------------------------------------------------------------------------------

template <int NT>
DMS_VD_AVX2 void q4_0_q8_0(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                           float *out) noexcept {
  __m256 acc[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_0);
    const float dw = f16_at(b);
    const __m256i qw = _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
    const __m256i aw = _mm256_sign_epi8(qw, qw);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_0);
      const __m256i sx = _mm256_sign_epi8(load256(a + offsetof(act_q8_0, qs)), qw);
      const __m256 p = _mm256_cvtepi32_ps(dot_us8(aw, sx));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * load_f32(a)), p, acc[t]);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

template <int NT>
DMS_VD_AVX2 void q4_1_q8_1(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                           float *out) noexcept {
  __m256 acc[NT];
  float mins[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm256_setzero_ps();
    mins[t] = 0.0f;
  }
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_1);
    const float dw = f16_at(b), mw = f16_at(b + 2);
    const __m256i qw = nibbles32(b + 4);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_1);
      const __m256 p = _mm256_cvtepi32_ps(dot_us8(qw, load256(a + offsetof(act_q8_1, qs))));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * load_f32(a)), p, acc[t]);
      mins[t] += mw * load_f32(a + offsetof(act_q8_1, s));
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) + mins[t];
}

template <int NT>
DMS_VD_AVX2 void q8_0_q8_0(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                           float *out) noexcept {
  __m256 acc[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q8_0);
    const float dw = f16_at(b);
    const __m256i qw = load256(b + 2);
    const __m256i aw = _mm256_sign_epi8(qw, qw);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_0);
      const __m256i sx = _mm256_sign_epi8(load256(a + offsetof(act_q8_0, qs)), qw);
      const __m256 p = _mm256_cvtepi32_ps(dot_us8(aw, sx));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * load_f32(a)), p, acc[t]);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

//! Q4_K: 4 chunks of 64 elements, each 32 bytes of nibbles (low: sub-block 2j, high: 2j + 1).
//! The sub-block scales multiply the int16 pair sums inside VPMADDWD; the mins meet the
//! activation's 32-element sums (from bsums) once per super-block.
template <int NT>
DMS_VD_AVX2 void q4_k_q8_k(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                           float *out) noexcept {
  __m256 acc[NT];
  __m128 accm[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm256_setzero_ps();
    accm[t] = _mm_setzero_ps();
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q4_k);
    const float dw = f16_at(b), dminw = f16_at(b + 2);
    // The 12 packed bytes to 8 scales (utmp[0..1]) and 8 mins (utmp[2..3]), as scale_min_k4.
    std::uint32_t utmp[4];
    std::memcpy(utmp, b + offsetof(block_q4_k, scales), 12);
    constexpr std::uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const std::uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
    const __m256i mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
        static_cast<int>(utmp[3]), static_cast<int>(utmp[2]), static_cast<int>(utmp[1]), static_cast<int>(utmp[0])));
    const __m128i mins = _mm256_extracti128_si256(mins_and_scales, 1);
    const __m128i sc128 = _mm256_castsi256_si128(mins_and_scales);
    const __m256i scales = _mm256_set_m128i(sc128, sc128);

    __m256i sumi[NT];
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
    const std::byte *q4 = b + offsetof(block_q4_k, qs);
    for (int j = 0; j < 4; ++j, q4 += 32) {
      // int16 scale 2j (and 2j + 1) broadcast to every lane: bytes 4j, 4j + 1 (4j + 2, 4j + 3).
      const __m256i scale_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(0x0100 * (4 * j + 1) + 4 * j)));
      const __m256i scale_h =
          _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<short>(0x0100 * (4 * j + 3) + 4 * j + 2)));
      const __m256i bits = load256(q4);
      const __m256i q4l = _mm256_and_si256(bits, m4);
      const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
      DMS_VD_UNROLL
      for (int t = 0; t < NT; ++t) {
        const std::byte *q8 = xq + t * xs + i * sizeof(act_q8_k) + offsetof(act_q8_k, qs) + 64 * j;
        const __m256i pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, load256(q8)));
        const __m256i ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, load256(q8 + 32)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
      }
    }
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const std::byte *a = xq + t * xs + i * sizeof(act_q8_k);
      const float dx = load_f32(a);
      const __m256i bs = load256(a + offsetof(act_q8_k, bsums));
      const __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
      const __m128i prod = _mm_madd_epi16(mins, s32);
      accm[t] = _mm_fmadd_ps(_mm_set1_ps(-dx * dminw), _mm_cvtepi32_ps(prod), accm[t]);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dw), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) + hsum128(accm[t]);
}

//! Q6_K: 2 halves of 128 elements; per half, 64 bytes of low nibbles, 32 bytes of 2-bit pairs
//! and 8 signed scales, one per 16 elements. The bias 32 is subtracted as 32 * sum(q8) per pair.
template <int NT>
DMS_VD_AVX2 void q6_k_q8_k(const std::byte *w, const std::byte *xq, std::size_t xs, std::size_t nb,
                           float *out) noexcept {
  __m256 acc[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), m32s = _mm256_set1_epi8(32);
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte *b = w + i * sizeof(block_q6_k);
    const float dw = f16_at(b + offsetof(block_q6_k, d));
    const __m128i scales = load128(b + offsetof(block_q6_k, scales));
    const std::byte *ql = b + offsetof(block_q6_k, ql);
    const std::byte *qh = b + offsetof(block_q6_k, qh);
    __m256i sumi[NT];
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
    for (int j = 0; j < 2; ++j, ql += 64, qh += 32) {
      const __m256i bits1 = load256(ql), bits2 = load256(ql + 32), bitsh = load256(qh);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(bits1, m4), _mm256_slli_epi16(_mm256_and_si256(bitsh, m2), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(bits2, m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bitsh, 2), m2), 4));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bitsh, 4), m2), 4));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bitsh, 6), m2), 4));
      for (int k = 0; k < 4; ++k) {
        // Elements 32 k .. 32 k + 31 of this half: scale 8 j + 2 k for the first 16, 8 j + 2 k + 1 after.
        const int is = 8 * j + 2 * k;
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
            scales, _mm_set_epi64x(0x0101010101010101LL * (is + 1), 0x0101010101010101LL * is)));
        DMS_VD_UNROLL
        for (int t = 0; t < NT; ++t) {
          const __m256i q8 =
              load256(xq + t * xs + i * sizeof(act_q8_k) + offsetof(act_q8_k, qs) + 128 * j + 32 * k);
          const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], q8), _mm256_maddubs_epi16(m32s, q8));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sc, p16));
        }
      }
    }
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const float dx = load_f32(xq + t * xs + i * sizeof(act_q8_k));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dw), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

// --- dense f32 ------------------------------------------------------------------------------------------------

//! As vec_dot_portable::dot_f32, 8 lanes.
template <int NT>
DMS_VD_AVX2 void dot_f32(const float *w, const float *x, std::size_t ldx, std::size_t n, float *out) noexcept {
  __m256 a0[NT], a1[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * ldx + i), a0[t]);
      a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * ldx + i + 8), a1[t]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 w0 = _mm256_loadu_ps(w + i);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * ldx + i), a0[t]);
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) {
    float s = hsum(_mm256_add_ps(a0[t], a1[t]));
    for (std::size_t j = i; j < n; ++j) s += w[j] * x[t * ldx + j];
    out[t] = s;
  }
}

// --- prefill: f32 panels ------------------------------------------------------------------------------------
// With many tokens the work is compute-bound and each weight is used once per token, so it pays to
// dequantize a panel of 16 rows once into f32 and run an outer-product kernel over it: per column,
// two vectors of 16 weights meet NT broadcast activations in 2 NT independent FMA chains, which
// keeps both FMA ports busy (the int8 kernels spend about 5 instructions per block and token on
// scales and conversions, and measured ~1.6x slower at 512 tokens).

//! Rows per panel: two AVX2 vectors.
inline constexpr std::size_t panel_rows = 16;
//! Tokens per outer-product tile: 2 * 6 accumulators + 2 weight vectors + 1 broadcast = 15 of the
//! 16 ymm registers.
inline constexpr int panel_tokens = 6;

//! panel[c * 16 + j] = rows[j * cols + c] for j < n_rows, 0 for n_rows <= j < 16.
inline void pack_panel16(const float *rows, std::size_t n_rows, std::size_t cols, float *panel) noexcept {
  for (std::size_t c = 0; c < cols; ++c) {
    float *p = panel + c * panel_rows;
    for (std::size_t j = 0; j < n_rows; ++j) p[j] = rows[j * cols + c];
    for (std::size_t j = n_rows; j < panel_rows; ++j) p[j] = 0.0f;
  }
}

//! y[t * ldy + j] = sum_c panel[c * 16 + j] * x[t * ldx + c] for t < NT, j < n_rows: one FMA chain
//! per output in column order, whatever NT.
template <int NT>
DMS_VD_AVX2 void gemm_panel16(const float *panel, const float *x, std::size_t ldx, std::size_t cols, float *y,
                              std::size_t ldy, std::size_t n_rows) noexcept {
  __m256 lo[NT], hi[NT];
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
  for (std::size_t c = 0; c < cols; ++c) {
    const __m256 w0 = _mm256_loadu_ps(panel + c * panel_rows), w1 = _mm256_loadu_ps(panel + c * panel_rows + 8);
    DMS_VD_UNROLL
    for (int t = 0; t < NT; ++t) {
      const __m256 xb = _mm256_broadcast_ss(x + t * ldx + c);
      lo[t] = _mm256_fmadd_ps(w0, xb, lo[t]);
      hi[t] = _mm256_fmadd_ps(w1, xb, hi[t]);
    }
  }
  DMS_VD_UNROLL
  for (int t = 0; t < NT; ++t) {
    if (n_rows == panel_rows) {
      _mm256_storeu_ps(y + t * ldy, lo[t]);
      _mm256_storeu_ps(y + t * ldy + 8, hi[t]);
    } else {
      float tmp[panel_rows];
      _mm256_storeu_ps(tmp, lo[t]);
      _mm256_storeu_ps(tmp + 8, hi[t]);
      for (std::size_t j = 0; j < n_rows; ++j) y[t * ldy + j] = tmp[j];
    }
  }
}

#undef DMS_VD_AVX2

} // namespace vec_dot_avx2
} // namespace DMS_CPU_ABI_TAG
} // namespace detail
} // namespace cpu
DMS_NAMESPACE_END

#endif // DMS_X86_DISPATCH
