// dms/backend/cpu/dequant.hpp: SIMD dequantization of ggml storage types to f32.
//
// Loading a GGUF checkpoint, merging two of them or steering a quantized model dequantizes every
// weight once, so this runs over hundreds of MB to GBs and should run at memory speed rather than
// at the pace of the scalar reference (dms/formats/quant.hpp). The kernels here give exactly the
// bits of that reference: every product in ggml's formulas is exact in f32 (see quant.hpp), so a
// fused multiply-add, used freely below, rounds exactly like the reference's separate multiply
// and add.
//
// Levels (dms/backend/cpu/dispatch.hpp; the active one is read per call, so scoped_isa_level and
// DMS_CPU_ISA force one for tests and benchmarks):
//   avx512    AVX-512F: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; 16 lanes
//             (Q2_K and Q3_K, rare in practice, run their AVX2 kernels)
//   avx2      AVX2 + FMA + F16C: the same types and Q2_K, Q3_K, 8 lanes (every AVX2 CPU has F16C;
//             one that somehow lacks it runs the baseline instead)
//   baseline  the scalar reference for the block types, the portable half kernels for F16/BF16
// F32 is a memcpy at every level.
// Kernels work block by block with unaligned loads and stores: neither pointer needs alignment.
// Single-threaded and allocation-free; callers split large tensors over threads by whole blocks.
//
// @code
//   std::span<const std::byte> raw = ...;             // a Q4_1 tensor's bytes, n elements
//   std::vector<float> w(n);
//   dms::cpu::dequantize(dms::ggml_type::q4_1, raw, w); // same contract as dms::dequantize
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "dms/backend/cpu/dispatch.hpp"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/quant.hpp"

#if defined(DMS_X86_DISPATCH)
#include <immintrin.h>
#endif

DMS_NAMESPACE_BEGIN
namespace cpu {
namespace detail {
// Tagged (see DMS_SIMD_BASELINE_TAG in simd.hpp): the baseline path compiles to different code
// under different -m flags.
inline namespace DMS_CPU_ABI_TAG {

//! Converts `n` halves stored at `src` with half.hpp's kernel family `isa` (which must be
//! supported). The kernels read whole `Half` objects in their tails, so an odd address (a tensor
//! at an odd offset of some buffer) goes through an aligned copy on the stack, a few KB at a time.
template <class Half>
void run_half_kernel(::dms::detail::half_isa isa, const std::byte *src, float *dst, std::size_t n) {
  if (reinterpret_cast<std::uintptr_t>(src) % alignof(Half) == 0) {
    ::dms::detail::convert(std::span<const Half>(reinterpret_cast<const Half *>(src), n), std::span<float>(dst, n),
                           isa);
    return;
  }
  constexpr std::size_t chunk = 2048; // 4 KiB of halves: stays in L1 next to the output
  Half buf[chunk];
  for (std::size_t i = 0; i < n; i += chunk) {
    const std::size_t m = n - i < chunk ? n - i : chunk;
    std::memcpy(buf, src + i * sizeof(Half), m * sizeof(Half));
    ::dms::detail::convert(std::span<const Half>(buf, m), std::span<float>(dst + i, m), isa);
  }
}

//! The baseline level: the scalar reference, and the portable half kernels.
inline void dequantize_baseline(ggml_type type, const std::byte *src, float *dst, std::size_t n) {
  switch (type) {
  case ggml_type::f32:
    if (n != 0) std::memcpy(dst, src, n * sizeof(float));
    return;
  case ggml_type::f16: return run_half_kernel<f16_bits>(::dms::detail::half_isa::portable, src, dst, n);
  case ggml_type::bf16: return run_half_kernel<bf16_bits>(::dms::detail::half_isa::portable, src, dst, n);
  default:
    ::dms::visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
      ::dms::detail::dequantize_bytes<Block>(src, dst, n / ggml_block_traits<Block>::block_size);
    });
  }
}

#if defined(DMS_X86_DISPATCH)

//! The AVX kernels convert block scales with F16C (VCVTPH2PS), which every AVX2 and AVX-512 CPU
//! has; checked anyway, so a CPU without it runs the baseline rather than faulting. half.hpp's
//! "avx2" family is exactly AVX2 + F16C, probed once per process (and portably: clang 14's
//! __builtin_cpu_supports does not know "f16c").
inline bool cpu_has_f16c() noexcept {
  return ::dms::detail::half_isa_supported(::dms::detail::half_isa::avx2);
}

#define DMS_DEQUANT_AVX2 DMS_TARGET("avx2,fma,f16c")
#define DMS_DEQUANT_AVX512 DMS_TARGET("avx512f,avx2,fma,f16c")

// Byte offsets of the fields, from the block structs (which the kernels never dereference: the
// source may be at any address).
#define DMS_DQ_OFF(Block, field) offsetof(::dms::Block, field)

DMS_ALWAYS_INLINE std::uint16_t load_u16(const std::byte *p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
DMS_ALWAYS_INLINE std::uint32_t load_u32(const std::byte *p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// --- AVX2: 8 lanes ----------------------------------------------------------------------------------
namespace dequant_avx2 {

DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE float f16_at(const std::byte *p) noexcept {
  return _cvtsh_ss(load_u16(p));
}
//! Bytes p[0..7], zero-extended to 8 int32 lanes.
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE __m256i u8x8(const std::byte *p) noexcept {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
}
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE __m256 to_ps(__m256i v) noexcept { return _mm256_cvtepi32_ps(v); }

DMS_DEQUANT_AVX2 inline void q8_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q8_0), y += 32) {
    const __m256 d = _mm256_set1_ps(f16_at(src));
    const std::byte *q = src + DMS_DQ_OFF(block_q8_0, qs);
    for (int k = 0; k < 4; ++k) {
      const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(q + 8 * k)));
      _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(to_ps(v), d));
    }
  }
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 share the nibble layout: byte j holds element j (low) and j + 16 (high).
// `Offset` is the integer subtracted before scaling (8, 16; 0 for the _1 types, which add m).
template <int Offset, bool HasMin>
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE void nibbles_block(const __m256i (&q)[4], __m256 d, __m256 m,
                                                      float *y) noexcept {
  for (int k = 0; k < 4; ++k) {
    __m256i v = q[k];
    if constexpr (Offset != 0) v = _mm256_sub_epi32(v, _mm256_set1_epi32(Offset));
    if constexpr (HasMin) _mm256_storeu_ps(y + 8 * k, _mm256_fmadd_ps(to_ps(v), d, m));
    else _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(to_ps(v), d));
  }
}

//! The 4 groups of 8 nibbles of a 16-byte qs: elements 0..7, 8..15, 16..23, 24..31.
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE void unpack_nibbles(const std::byte *qs, __m256i (&q)[4]) noexcept {
  const __m256i low4 = _mm256_set1_epi32(0x0F);
  const __m256i a = u8x8(qs), b = u8x8(qs + 8);
  q[0] = _mm256_and_si256(a, low4);
  q[1] = _mm256_and_si256(b, low4);
  q[2] = _mm256_srli_epi32(a, 4);
  q[3] = _mm256_srli_epi32(b, 4);
}

//! ORs the 5th bit (bit j of qh for element j) into each group as value 16.
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE void add_high_bits(std::uint32_t qh, __m256i (&q)[4]) noexcept {
  // Element j's bit moves to bit 4: shift (qh << 4) right by j for j < 8, qh right by j - 4 after.
  const __m256i sixteen = _mm256_set1_epi32(16);
  const __m256i h4 = _mm256_set1_epi32(static_cast<int>(qh << 4));
  const __m256i h = _mm256_set1_epi32(static_cast<int>(qh));
  q[0] = _mm256_or_si256(q[0], _mm256_and_si256(_mm256_srlv_epi32(h4, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), sixteen));
  q[1] = _mm256_or_si256(q[1], _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_setr_epi32(4, 5, 6, 7, 8, 9, 10, 11)), sixteen));
  q[2] = _mm256_or_si256(q[2], _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_setr_epi32(12, 13, 14, 15, 16, 17, 18, 19)), sixteen));
  q[3] = _mm256_or_si256(q[3], _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_setr_epi32(20, 21, 22, 23, 24, 25, 26, 27)), sixteen));
}

DMS_DEQUANT_AVX2 inline void q4_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_0), y += 32) {
    __m256i q[4];
    unpack_nibbles(src + DMS_DQ_OFF(block_q4_0, qs), q);
    nibbles_block<8, false>(q, _mm256_set1_ps(f16_at(src)), _mm256_setzero_ps(), y);
  }
}
DMS_DEQUANT_AVX2 inline void q4_1(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_1), y += 32) {
    __m256i q[4];
    unpack_nibbles(src + DMS_DQ_OFF(block_q4_1, qs), q);
    nibbles_block<0, true>(q, _mm256_set1_ps(f16_at(src)),
                              _mm256_set1_ps(f16_at(src + DMS_DQ_OFF(block_q4_1, m))), y);
  }
}
DMS_DEQUANT_AVX2 inline void q5_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_0), y += 32) {
    __m256i q[4];
    unpack_nibbles(src + DMS_DQ_OFF(block_q5_0, qs), q);
    add_high_bits(load_u32(src + DMS_DQ_OFF(block_q5_0, qh)), q);
    nibbles_block<16, false>(q, _mm256_set1_ps(f16_at(src)), _mm256_setzero_ps(), y);
  }
}
DMS_DEQUANT_AVX2 inline void q5_1(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_1), y += 32) {
    __m256i q[4];
    unpack_nibbles(src + DMS_DQ_OFF(block_q5_1, qs), q);
    add_high_bits(load_u32(src + DMS_DQ_OFF(block_q5_1, qh)), q);
    nibbles_block<0, true>(q, _mm256_set1_ps(f16_at(src)),
                              _mm256_set1_ps(f16_at(src + DMS_DQ_OFF(block_q5_1, m))), y);
  }
}

//! Q4_K and Q5_K: 4 chunks of 64 elements; chunk c reads 32 bytes of qs (low nibbles: elements
//! 0..31 with scale/min 2c, high nibbles: 32..63 with 2c + 1) and, for Q5_K, bits 2c and 2c + 1 of
//! the 32 qh bytes.
template <bool HasHigh>
DMS_DEQUANT_AVX2 DMS_ALWAYS_INLINE void k4_block(const std::byte *b, const std::byte *qs, const std::byte *qh,
                                                 float *y) noexcept {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  std::uint8_t scales[12];
  std::memcpy(scales, b + 4, 12);
  const __m256i low4 = _mm256_set1_epi32(0x0F);
  for (int c = 0; c < 4; ++c, qs += 32, y += 64) {
    std::uint8_t sc, m;
    ::dms::detail::scale_min_k4(2 * c, scales, sc, m);
    const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(dmin * m);
    ::dms::detail::scale_min_k4(2 * c + 1, scales, sc, m);
    const __m256 d2 = _mm256_set1_ps(d * sc), m2 = _mm256_set1_ps(dmin * m);
    for (int g = 0; g < 4; ++g) {
      const __m256i v = u8x8(qs + 8 * g);
      __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_srli_epi32(v, 4);
      if constexpr (HasHigh) {
        // bit 2c of qh[l] -> 16 on the low element, bit 2c + 1 -> 16 on the high one
        const __m256i h = u8x8(qh + 8 * g);
        const __m128i s_lo = _mm_cvtsi32_si128(2 * c), s_hi = _mm_cvtsi32_si128(2 * c + 1);
        const __m256i one = _mm256_set1_epi32(1);
        lo = _mm256_or_si256(lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(h, s_lo), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(h, s_hi), one), 4));
      }
      _mm256_storeu_ps(y + 8 * g, _mm256_fmsub_ps(to_ps(lo), d1, m1));
      _mm256_storeu_ps(y + 32 + 8 * g, _mm256_fmsub_ps(to_ps(hi), d2, m2));
    }
  }
}

DMS_DEQUANT_AVX2 inline void q4_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_k), y += qk_k)
    k4_block<false>(src, src + DMS_DQ_OFF(block_q4_k, qs), nullptr, y);
}
DMS_DEQUANT_AVX2 inline void q5_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_k), y += qk_k)
    k4_block<true>(src, src + DMS_DQ_OFF(block_q5_k, qs), src + DMS_DQ_OFF(block_q5_k, qh), y);
}

//! Q6_K: per half of 128 elements, element l + 32 k (l < 32) combines a nibble of ql[l] (k even)
//! or ql[l + 32] (k odd) with bits 2k, 2k + 1 of qh[l]; scale sc[l / 16 + 2 k].
DMS_DEQUANT_AVX2 inline void q6_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  const __m256i low4 = _mm256_set1_epi32(0x0F), top2 = _mm256_set1_epi32(0x30);
  const __m256i bias = _mm256_set1_epi32(32);
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q6_k)) {
    const float d = f16_at(src + DMS_DQ_OFF(block_q6_k, d));
    std::int8_t sc[16];
    std::memcpy(sc, src + DMS_DQ_OFF(block_q6_k, scales), 16);
    const std::byte *ql = src + DMS_DQ_OFF(block_q6_k, ql);
    const std::byte *qh = src + DMS_DQ_OFF(block_q6_k, qh);
    for (int n = 0; n < 2; ++n, ql += 64, qh += 32, y += 128) {
      for (int g = 0; g < 4; ++g) { // l = 8 g .. 8 g + 7
        const int is = 8 * n + g / 2;
        const __m256i a = u8x8(ql + 8 * g), b = u8x8(ql + 32 + 8 * g), h = u8x8(qh + 8 * g);
        const __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, low4), _mm256_and_si256(_mm256_slli_epi32(h, 4), top2));
        const __m256i q2 = _mm256_or_si256(_mm256_and_si256(b, low4), _mm256_and_si256(_mm256_slli_epi32(h, 2), top2));
        const __m256i q3 = _mm256_or_si256(_mm256_srli_epi32(a, 4), _mm256_and_si256(h, top2));
        const __m256i q4 = _mm256_or_si256(_mm256_srli_epi32(b, 4), _mm256_and_si256(_mm256_srli_epi32(h, 2), top2));
        float *yl = y + 8 * g;
        _mm256_storeu_ps(yl + 0, _mm256_mul_ps(to_ps(_mm256_sub_epi32(q1, bias)), _mm256_set1_ps(d * sc[is + 0])));
        _mm256_storeu_ps(yl + 32, _mm256_mul_ps(to_ps(_mm256_sub_epi32(q2, bias)), _mm256_set1_ps(d * sc[is + 2])));
        _mm256_storeu_ps(yl + 64, _mm256_mul_ps(to_ps(_mm256_sub_epi32(q3, bias)), _mm256_set1_ps(d * sc[is + 4])));
        _mm256_storeu_ps(yl + 96, _mm256_mul_ps(to_ps(_mm256_sub_epi32(q4, bias)), _mm256_set1_ps(d * sc[is + 6])));
      }
    }
  }
}

//! Q2_K: per half of 128 elements, 32 bytes of qs; element 32 j + l of the half is bits 2j, 2j + 1
//! of q[l], and each 16 elements have a scale/min byte (scale: low nibble, min: high nibble).
DMS_DEQUANT_AVX2 inline void q2_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  const __m256i three = _mm256_set1_epi32(3);
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q2_k)) {
    const float d = f16_at(src + DMS_DQ_OFF(block_q2_k, d));
    const float dmin = f16_at(src + DMS_DQ_OFF(block_q2_k, dmin));
    std::uint8_t scales[16];
    std::memcpy(scales, src + DMS_DQ_OFF(block_q2_k, scales), 16);
    const std::byte *q = src + DMS_DQ_OFF(block_q2_k, qs);
    for (int n = 0; n < 2; ++n, q += 32, y += 128) {
      for (int half = 0; half < 2; ++half) {
        for (int g = 0; g < 2; ++g) {
          const int l = 16 * half + 8 * g;
          const __m256i v = u8x8(q + l);
          for (int j = 0; j < 4; ++j) {
            const std::uint8_t sc = scales[8 * n + 2 * j + half];
            const __m256 dl = _mm256_set1_ps(d * static_cast<float>(sc & 0xF));
            const __m256 ml = _mm256_set1_ps(dmin * static_cast<float>(sc >> 4));
            const __m256i qv = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(2 * j)), three);
            _mm256_storeu_ps(y + 32 * j + l, _mm256_fmsub_ps(to_ps(qv), dl, ml));
          }
        }
      }
    }
  }
}

//! Q3_K: as Q2_K for the low 2 bits, with 16 signed 6-bit scales (biased by 32) and the 3rd bit of
//! element 32 k + l (k < 8) in bit k of hmask[l]; a clear bit subtracts 4.
DMS_DEQUANT_AVX2 inline void q3_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  const __m256i three = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1), four = _mm256_set1_epi32(4);
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q3_k)) {
    const float d_all = f16_at(src + DMS_DQ_OFF(block_q3_k, d));
    std::uint8_t packed[12];
    std::memcpy(packed, src + DMS_DQ_OFF(block_q3_k, scales), 12);
    std::int8_t scales[16];
    ::dms::detail::unpack_q3_k_scales(packed, scales);
    const std::byte *hm = src + DMS_DQ_OFF(block_q3_k, hmask);
    const std::byte *q = src + DMS_DQ_OFF(block_q3_k, qs);
    for (int n = 0; n < 2; ++n, q += 32, y += 128) {
      for (int half = 0; half < 2; ++half) {
        for (int g = 0; g < 2; ++g) {
          const int l = 16 * half + 8 * g;
          const __m256i v = u8x8(q + l), h = u8x8(hm + l);
          for (int j = 0; j < 4; ++j) {
            const __m256 dl = _mm256_set1_ps(d_all * static_cast<float>(scales[8 * n + 2 * j + half] - 32));
            const __m256i low = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(2 * j)), three);
            const __m256i hbit = _mm256_and_si256(_mm256_srl_epi32(h, _mm_cvtsi32_si128(4 * n + j)), one);
            // low - (hbit ? 0 : 4) = low - 4 + 4 hbit
            const __m256i qv = _mm256_add_epi32(_mm256_sub_epi32(low, four), _mm256_slli_epi32(hbit, 2));
            _mm256_storeu_ps(y + 32 * j + l, _mm256_mul_ps(to_ps(qv), dl));
          }
        }
      }
    }
  }
}

} // namespace dequant_avx2

// --- AVX-512F: 16 lanes ------------------------------------------------------------------------------
namespace dequant_avx512 {

DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE float f16_at(const std::byte *p) noexcept {
  return _cvtsh_ss(load_u16(p));
}
// GCC 12's unmasked AVX-512 conversions and shifts pass _mm512_undefined_*() as the merge source
// and then trip -Wmaybe-uninitialized wherever they are inlined; the zero-masking forms with an
// all-ones mask are the same instructions without the warning.
inline constexpr __mmask16 all_lanes = 0xFFFF;
//! Bytes p[0..15], zero-extended to 16 int32 lanes.
DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE __m512i u8x16(const std::byte *p) noexcept {
  return _mm512_maskz_cvtepu8_epi32(all_lanes, _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
//! Bytes p[0..15], sign-extended to 16 int32 lanes.
DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE __m512i i8x16(const std::byte *p) noexcept {
  return _mm512_maskz_cvtepi8_epi32(all_lanes, _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE __m512 to_ps(__m512i v) noexcept {
  return _mm512_maskz_cvtepi32_ps(all_lanes, v);
}
template <unsigned N> DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE __m512i srli(__m512i v) noexcept {
  return _mm512_maskz_srli_epi32(all_lanes, v, N);
}
template <unsigned N> DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE __m512i slli(__m512i v) noexcept {
  return _mm512_maskz_slli_epi32(all_lanes, v, N);
}

DMS_DEQUANT_AVX512 inline void q8_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q8_0), y += 32) {
    const __m512 d = _mm512_set1_ps(f16_at(src));
    const std::byte *q = src + DMS_DQ_OFF(block_q8_0, qs);
    for (int k = 0; k < 2; ++k) {
      _mm512_storeu_ps(y + 16 * k, _mm512_mul_ps(to_ps(i8x16(q + 16 * k)), d));
    }
  }
}

//! Q4_0/Q4_1/Q5_0/Q5_1: the 16 qs bytes give elements 0..15 (low nibbles) and 16..31 (high);
//! for the 5-bit types, bits 0..15 and 16..31 of qh are lane masks for adding 16.
template <bool HasHigh, int Offset, bool HasMin>
DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE void nibbles_block(const std::byte *qs, std::uint32_t qh, __m512 d,
                                                        __m512 m, float *y) noexcept {
  const __m512i v = u8x16(qs);
  __m512i q[2] = {_mm512_and_si512(v, _mm512_set1_epi32(0x0F)), srli<4>(v)};
  if constexpr (HasHigh) {
    const __m512i sixteen = _mm512_set1_epi32(16);
    q[0] = _mm512_mask_or_epi32(q[0], static_cast<__mmask16>(qh & 0xFFFFu), q[0], sixteen);
    q[1] = _mm512_mask_or_epi32(q[1], static_cast<__mmask16>(qh >> 16), q[1], sixteen);
  }
  for (int k = 0; k < 2; ++k) {
    __m512i w = q[k];
    if constexpr (Offset != 0) w = _mm512_sub_epi32(w, _mm512_set1_epi32(Offset));
    if constexpr (HasMin) _mm512_storeu_ps(y + 16 * k, _mm512_fmadd_ps(to_ps(w), d, m));
    else _mm512_storeu_ps(y + 16 * k, _mm512_mul_ps(to_ps(w), d));
  }
}

DMS_DEQUANT_AVX512 inline void q4_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_0), y += 32)
    nibbles_block<false, 8, false>(src + DMS_DQ_OFF(block_q4_0, qs), 0, _mm512_set1_ps(f16_at(src)),
                                   _mm512_setzero_ps(), y);
}
DMS_DEQUANT_AVX512 inline void q4_1(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_1), y += 32)
    nibbles_block<false, 0, true>(src + DMS_DQ_OFF(block_q4_1, qs), 0, _mm512_set1_ps(f16_at(src)),
                                  _mm512_set1_ps(f16_at(src + DMS_DQ_OFF(block_q4_1, m))), y);
}
DMS_DEQUANT_AVX512 inline void q5_0(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_0), y += 32)
    nibbles_block<true, 16, false>(src + DMS_DQ_OFF(block_q5_0, qs), load_u32(src + DMS_DQ_OFF(block_q5_0, qh)),
                                   _mm512_set1_ps(f16_at(src)), _mm512_setzero_ps(), y);
}
DMS_DEQUANT_AVX512 inline void q5_1(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_1), y += 32)
    nibbles_block<true, 0, true>(src + DMS_DQ_OFF(block_q5_1, qs), load_u32(src + DMS_DQ_OFF(block_q5_1, qh)),
                                 _mm512_set1_ps(f16_at(src)),
                                 _mm512_set1_ps(f16_at(src + DMS_DQ_OFF(block_q5_1, m))), y);
}

//! Q4_K and Q5_K, as the AVX2 version with 16 lanes.
template <bool HasHigh>
DMS_DEQUANT_AVX512 DMS_ALWAYS_INLINE void k4_block(const std::byte *b, const std::byte *qs, const std::byte *qh,
                                                   float *y) noexcept {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  std::uint8_t scales[12];
  std::memcpy(scales, b + 4, 12);
  const __m512i low4 = _mm512_set1_epi32(0x0F);
  for (int c = 0; c < 4; ++c, qs += 32, y += 64) {
    std::uint8_t sc, m;
    ::dms::detail::scale_min_k4(2 * c, scales, sc, m);
    const __m512 d1 = _mm512_set1_ps(d * sc), m1 = _mm512_set1_ps(dmin * m);
    ::dms::detail::scale_min_k4(2 * c + 1, scales, sc, m);
    const __m512 d2 = _mm512_set1_ps(d * sc), m2 = _mm512_set1_ps(dmin * m);
    for (int g = 0; g < 2; ++g) {
      const __m512i v = u8x16(qs + 16 * g);
      __m512i lo = _mm512_and_si512(v, low4), hi = srli<4>(v);
      if constexpr (HasHigh) {
        const __m512i h = u8x16(qh + 16 * g);
        const __m512i one = _mm512_set1_epi32(1);
        const __m128i s_lo = _mm_cvtsi32_si128(2 * c), s_hi = _mm_cvtsi32_si128(2 * c + 1);
        lo = _mm512_or_si512(lo, slli<4>(_mm512_and_si512(_mm512_maskz_srl_epi32(all_lanes, h, s_lo), one)));
        hi = _mm512_or_si512(hi, slli<4>(_mm512_and_si512(_mm512_maskz_srl_epi32(all_lanes, h, s_hi), one)));
      }
      _mm512_storeu_ps(y + 16 * g, _mm512_fmsub_ps(to_ps(lo), d1, m1));
      _mm512_storeu_ps(y + 32 + 16 * g, _mm512_fmsub_ps(to_ps(hi), d2, m2));
    }
  }
}

DMS_DEQUANT_AVX512 inline void q4_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q4_k), y += qk_k)
    k4_block<false>(src, src + DMS_DQ_OFF(block_q4_k, qs), nullptr, y);
}
DMS_DEQUANT_AVX512 inline void q5_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q5_k), y += qk_k)
    k4_block<true>(src, src + DMS_DQ_OFF(block_q5_k, qs), src + DMS_DQ_OFF(block_q5_k, qh), y);
}

DMS_DEQUANT_AVX512 inline void q6_k(const std::byte *src, float *y, std::size_t n_blocks) noexcept {
  const __m512i low4 = _mm512_set1_epi32(0x0F), top2 = _mm512_set1_epi32(0x30);
  const __m512i bias = _mm512_set1_epi32(32);
  for (std::size_t i = 0; i < n_blocks; ++i, src += sizeof(block_q6_k)) {
    const float d = f16_at(src + DMS_DQ_OFF(block_q6_k, d));
    std::int8_t sc[16];
    std::memcpy(sc, src + DMS_DQ_OFF(block_q6_k, scales), 16);
    const std::byte *ql = src + DMS_DQ_OFF(block_q6_k, ql);
    const std::byte *qh = src + DMS_DQ_OFF(block_q6_k, qh);
    for (int n = 0; n < 2; ++n, ql += 64, qh += 32, y += 128) {
      for (int g = 0; g < 2; ++g) { // l = 16 g .. 16 g + 15, one scale each
        const int is = 8 * n + g;
        const __m512i a = u8x16(ql + 16 * g), b = u8x16(ql + 32 + 16 * g), h = u8x16(qh + 16 * g);
        const __m512i q1 = _mm512_or_si512(_mm512_and_si512(a, low4), _mm512_and_si512(slli<4>(h), top2));
        const __m512i q2 = _mm512_or_si512(_mm512_and_si512(b, low4), _mm512_and_si512(slli<2>(h), top2));
        const __m512i q3 = _mm512_or_si512(srli<4>(a), _mm512_and_si512(h, top2));
        const __m512i q4 = _mm512_or_si512(srli<4>(b), _mm512_and_si512(srli<2>(h), top2));
        float *yl = y + 16 * g;
        _mm512_storeu_ps(yl + 0, _mm512_mul_ps(to_ps(_mm512_sub_epi32(q1, bias)), _mm512_set1_ps(d * sc[is + 0])));
        _mm512_storeu_ps(yl + 32, _mm512_mul_ps(to_ps(_mm512_sub_epi32(q2, bias)), _mm512_set1_ps(d * sc[is + 2])));
        _mm512_storeu_ps(yl + 64, _mm512_mul_ps(to_ps(_mm512_sub_epi32(q3, bias)), _mm512_set1_ps(d * sc[is + 4])));
        _mm512_storeu_ps(yl + 96, _mm512_mul_ps(to_ps(_mm512_sub_epi32(q4, bias)), _mm512_set1_ps(d * sc[is + 6])));
      }
    }
  }
}

} // namespace dequant_avx512

#undef DMS_DQ_OFF

inline void dequantize_avx2(ggml_type type, const std::byte *src, float *dst, std::size_t n) {
  switch (type) {
  case ggml_type::f16: return run_half_kernel<f16_bits>(::dms::detail::half_isa::avx2, src, dst, n);
  case ggml_type::bf16: return run_half_kernel<bf16_bits>(::dms::detail::half_isa::avx2, src, dst, n);
  case ggml_type::q8_0: return dequant_avx2::q8_0(src, dst, n / 32);
  case ggml_type::q4_0: return dequant_avx2::q4_0(src, dst, n / 32);
  case ggml_type::q4_1: return dequant_avx2::q4_1(src, dst, n / 32);
  case ggml_type::q5_0: return dequant_avx2::q5_0(src, dst, n / 32);
  case ggml_type::q5_1: return dequant_avx2::q5_1(src, dst, n / 32);
  case ggml_type::q4_k: return dequant_avx2::q4_k(src, dst, n / qk_k);
  case ggml_type::q5_k: return dequant_avx2::q5_k(src, dst, n / qk_k);
  case ggml_type::q6_k: return dequant_avx2::q6_k(src, dst, n / qk_k);
  case ggml_type::q2_k: return dequant_avx2::q2_k(src, dst, n / qk_k);
  case ggml_type::q3_k: return dequant_avx2::q3_k(src, dst, n / qk_k);
  default: return dequantize_baseline(type, src, dst, n);
  }
}

inline void dequantize_avx512(ggml_type type, const std::byte *src, float *dst, std::size_t n) {
  switch (type) {
  case ggml_type::f16: return run_half_kernel<f16_bits>(::dms::detail::half_isa::avx512, src, dst, n);
  case ggml_type::bf16: return run_half_kernel<bf16_bits>(::dms::detail::half_isa::avx512, src, dst, n);
  case ggml_type::q8_0: return dequant_avx512::q8_0(src, dst, n / 32);
  case ggml_type::q4_0: return dequant_avx512::q4_0(src, dst, n / 32);
  case ggml_type::q4_1: return dequant_avx512::q4_1(src, dst, n / 32);
  case ggml_type::q5_0: return dequant_avx512::q5_0(src, dst, n / 32);
  case ggml_type::q5_1: return dequant_avx512::q5_1(src, dst, n / 32);
  case ggml_type::q4_k: return dequant_avx512::q4_k(src, dst, n / qk_k);
  case ggml_type::q5_k: return dequant_avx512::q5_k(src, dst, n / qk_k);
  case ggml_type::q6_k: return dequant_avx512::q6_k(src, dst, n / qk_k);
  // Rare types: the AVX2 kernels (every AVX-512 CPU runs them) rather than a third variant.
  case ggml_type::q2_k: return dequant_avx2::q2_k(src, dst, n / qk_k);
  case ggml_type::q3_k: return dequant_avx2::q3_k(src, dst, n / qk_k);
  default: return dequantize_baseline(type, src, dst, n);
  }
}

#undef DMS_DEQUANT_AVX2
#undef DMS_DEQUANT_AVX512

#endif // DMS_X86_DISPATCH

//! Dequantizes `n` elements of `type` (already checked) at `level`.
inline void dequantize_at(isa_level level, ggml_type type, const std::byte *src, float *dst, std::size_t n) {
#if defined(DMS_X86_DISPATCH)
  if (level != isa_level::baseline && cpu_has_f16c()) {
    if (level == isa_level::avx512) return dequantize_avx512(type, src, dst, n);
    return dequantize_avx2(type, src, dst, n);
  }
#else
  (void)level;
#endif
  dequantize_baseline(type, src, dst, n);
}

} // namespace DMS_CPU_ABI_TAG
} // namespace detail

inline namespace DMS_CPU_ABI_TAG {

//! Whether `type` has a vector kernel at `level` (else that level runs the scalar reference: same
//! results, scalar speed). F32 is a memcpy at every level.
constexpr bool has_simd_dequantize(ggml_type type, isa_level level) noexcept {
  if (level == isa_level::baseline) return false;
  switch (type) {
  case ggml_type::f16:
  case ggml_type::bf16:
  case ggml_type::q8_0:
  case ggml_type::q4_0:
  case ggml_type::q4_1:
  case ggml_type::q5_0:
  case ggml_type::q5_1:
  case ggml_type::q4_k:
  case ggml_type::q5_k:
  case ggml_type::q6_k:
  case ggml_type::q2_k:
  case ggml_type::q3_k: return true;
  default: return false;
  }
}

//! dms::dequantize (same checks, errors and bits) with the kernels of the active isa_level.
//! `src` and `dst` need no alignment and must not overlap.
inline void dequantize(ggml_type type, std::span<const std::byte> src, std::span<float> dst,
                       const error_context &where = {}) {
  ::dms::detail::check_dequantize(type, src.size(), dst.size(), where);
  detail::dequantize_at(active_isa_level(), type, src.data(), dst.data(), dst.size());
}

} // namespace DMS_CPU_ABI_TAG
} // namespace cpu
DMS_NAMESPACE_END
