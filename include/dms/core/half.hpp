// dms/core/half.hpp: exact conversion between f32 and the 16-bit float formats (f16, bf16).
//
// Checkpoints store weights as f16 or bf16 while dms computes in f32, so every tensor that is
// read or written passes through these conversions; they must be exact (a merge written back
// must round-trip bit for bit) and fast enough to run at memory bandwidth.
//
// Two layers:
//  * scalar functions `to_f32`, `to_f16`, `to_bf16`: constexpr, DMS_HOST_DEVICE, built from
//    integer operations and exact float operations only, so neither the rounding mode nor
//    FTZ/DAZ (fast-math) can change a result and a CUDA kernel produces the CPU's bits;
//  * bulk `convert(src, dst)` over spans: an x86 kernel chosen once at run time (F16C + AVX2, or
//    AVX-512F) and a portable branch-free kernel for every other machine. Every kernel gives
//    exactly the bits of the scalar functions (tests compare all 65536 f16 inputs on each).
//
// Semantics (identical on every path):
//  * f16 -> f32 and bf16 -> f32 are exact. An f16 NaN becomes a quiet f32 NaN with the same sign
//    and payload (the quiet bit is set, as x86's VCVTPH2PS does); a bf16 NaN is passed through
//    unchanged (bf16 -> f32 is a plain shift).
//  * f32 -> f16 rounds to nearest, ties to even; magnitudes >= 65520 become infinity, results
//    below 2^-14 become exact subnormals (or zero). A NaN stays a NaN: sign kept, quiet bit set,
//    the top 9 payload bits kept (as VCVTPS2PH does).
//  * f32 -> bf16 rounds to nearest, ties to even, overflow to infinity; every NaN becomes the
//    canonical 0x7fc0, exactly as PyTorch's c10::BFloat16 does, so dms writes the same bytes.
//
// Source and destination of a bulk conversion must not overlap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>

#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"

#if defined(DMS_X86_DISPATCH)
#include <cpuid.h>
#include <immintrin.h>
#endif

#if !defined(__has_builtin)
#define DMS_HALF_HAS_BUILTIN(x) 0
#else
#define DMS_HALF_HAS_BUILTIN(x) __has_builtin(x)
#endif
#if !DMS_HALF_HAS_BUILTIN(__builtin_bit_cast) && !defined(_MSC_VER)
#include <bit>
#endif

DMS_NAMESPACE_BEGIN

namespace detail {

//! std::bit_cast that is also usable in CUDA device code (where <bit> is host-only).
template <class To, class From> DMS_HOST_DEVICE constexpr To half_bit_cast(From from) noexcept {
  static_assert(sizeof(To) == sizeof(From));
#if DMS_HALF_HAS_BUILTIN(__builtin_bit_cast) || defined(_MSC_VER)
  return __builtin_bit_cast(To, from);
#else
  return std::bit_cast<To>(from);
#endif
}

//! `c ? a : b` written with masks: it compiles to the same instructions on scalars, and GCC's
//! vectorizer turns it into vector blends where nested ?: defeat if-conversion.
DMS_HOST_DEVICE constexpr std::uint32_t half_select(bool c, std::uint32_t a, std::uint32_t b) noexcept {
  const std::uint32_t m = 0u - static_cast<std::uint32_t>(c);
  return (a & m) | (b & ~m);
}

//! Bits of the f32 equal to the f16 with bits `h` (upper 16 bits of `h` ignored).
DMS_HOST_DEVICE constexpr std::uint32_t f16_to_f32_bits(std::uint32_t h) noexcept {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu; // exponent and mantissa
  // Normal: move the 10-bit mantissa to the top of the 23-bit one and rebias the exponent from
  // 15 to 127 (add 112 to the exponent field).
  const std::uint32_t normal = (em << 13) + (112u << 23);
  // Subnormal (exponent field 0): the value is m * 2^-24; the int -> float conversion and the
  // scaling are both exact (m < 2^10, and the result is a normal f32), so no rounding happens.
  // (Converted through int32 because SSE2 has only a signed int -> float instruction.)
  const std::uint32_t subnormal = half_bit_cast<std::uint32_t>(
      static_cast<float>(static_cast<std::int32_t>(em & 0x3ffu)) * 0x1p-24f);
  // Infinity and NaN (exponent field 31): exponent 255, payload moved up, quiet bit (bit 22) set
  // for a NaN so the result matches the hardware conversion.
  const std::uint32_t mant = em & 0x3ffu;
  const std::uint32_t special = 0x7f800000u | (mant << 13) | half_select(mant != 0, 0x00400000u, 0u);
  return sign | half_select(em >= 0x7c00u, special, half_select(em < 0x0400u, subnormal, normal));
}

//! Bits of the f16 nearest (ties to even) to the f32 with bits `f`.
DMS_HOST_DEVICE constexpr std::uint16_t f32_to_f16_bits(std::uint32_t f) noexcept {
  const std::uint32_t sign = (f >> 16) & 0x8000u;
  const std::uint32_t a = f & 0x7fffffffu; // |x|
  // NaN: quiet bit set, top 9 payload bits kept (what VCVTPS2PH does).
  const std::uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  // |x| in [2^-14, 2^16): rebias the exponent (127 -> 15, i.e. subtract 112 from the field) and
  // round the 23-bit mantissa to 10 bits: adding 0xfff plus the lowest kept bit, then dropping 13
  // bits, rounds to nearest with ties to even. A carry out of the mantissa correctly bumps the
  // exponent, and values >= 65520 (halfway from 65504, the largest f16, to 2^16) carry into
  // exponent 31 with mantissa 0, which is infinity.
  const std::uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // |x| < 2^-14: the result is the subnormal m = round(|x| * 2^24), at most 1024 (which is the
  // bit pattern of 2^-14, so rounding up into the normals is right). Every step is exact, so no
  // rounding mode or FTZ/DAZ setting can change it: the scaling by 2^24 (the product is >= 2^-125,
  // a normal f32), the truncation to an integer t < 1024, and y - t (both within one unit). The
  // tie goes to the even t. Other inputs are replaced by 0 first so the conversion stays in range.
  const float y = half_bit_cast<float>(half_select(a < 0x38800000u, a, 0u)) * 0x1p24f;
  const std::int32_t t = static_cast<std::int32_t>(y);
  const float frac = y - static_cast<float>(t);
  const auto tu = static_cast<std::uint32_t>(t);
  const std::uint32_t round_up = half_select(frac > 0.5f, 1u, 0u) | (half_select(frac == 0.5f, 1u, 0u) & tu);
  const std::uint32_t sub = tu + round_up;
  const std::uint32_t mag =
      half_select(a > 0x7f800000u, nan,
             half_select(a >= 0x47800000u, 0x7c00u, // |x| >= 2^16, infinity included: overflow
                    half_select(a >= 0x38800000u, normal, sub))); // 2^-14: the smallest normal f16
  return static_cast<std::uint16_t>(sign | mag);
}

//! Bits of the bf16 nearest (ties to even) to the f32 with bits `f`; NaN -> 0x7fc0.
DMS_HOST_DEVICE constexpr std::uint16_t f32_to_bf16_bits(std::uint32_t f) noexcept {
  // Adding 0x7fff plus the lowest kept bit, then dropping 16 bits, rounds to nearest with ties
  // to even; a carry into the exponent is the correct result, up to infinity for the largest
  // finite values. PyTorch's round_to_nearest_even is the same formula.
  const std::uint32_t rounded = (f + 0x7fffu + ((f >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>(half_select((f & 0x7fffffffu) > 0x7f800000u, 0x7fc0u, rounded));
}

} // namespace detail

//! The f32 equal to an f16 (exact; NaN made quiet).
DMS_HOST_DEVICE constexpr float to_f32(f16_bits h) noexcept {
  return detail::half_bit_cast<float>(detail::f16_to_f32_bits(h.bits));
}
//! The f32 equal to a bf16 (exact).
DMS_HOST_DEVICE constexpr float to_f32(bf16_bits h) noexcept {
  return detail::half_bit_cast<float>(static_cast<std::uint32_t>(h.bits) << 16);
}
//! The nearest f16 (ties to even; overflow to infinity; NaN stays a quiet NaN).
DMS_HOST_DEVICE constexpr f16_bits to_f16(float x) noexcept {
  return f16_bits{detail::f32_to_f16_bits(detail::half_bit_cast<std::uint32_t>(x))};
}
//! The nearest bf16 (ties to even; overflow to infinity; every NaN becomes 0x7fc0).
DMS_HOST_DEVICE constexpr bf16_bits to_bf16(float x) noexcept {
  return bf16_bits{detail::f32_to_bf16_bits(detail::half_bit_cast<std::uint32_t>(x))};
}

namespace detail {

//! The kernel families of the bulk conversions. Public code uses the best one the CPU supports;
//! tests and benchmarks pass one explicitly to cover each.
enum class half_isa : std::uint8_t {
  portable, //!< branch-free C++ the compiler vectorizes for the baseline ISA (SSE2, NEON, ...)
  avx2,     //!< x86 F16C + AVX2, 8 lanes (Haswell, Zen and later)
  avx512,   //!< x86 AVX-512F, 16 lanes (Skylake-SP, Ice Lake, Zen 4 and later)
};
inline constexpr half_isa all_half_isas[] = {half_isa::portable, half_isa::avx2, half_isa::avx512};

constexpr std::string_view name_of(half_isa isa) noexcept {
  switch (isa) {
  case half_isa::portable: return "portable";
  case half_isa::avx2: return "avx2";
  case half_isa::avx512: return "avx512";
  }
  return "?";
}

namespace half_detect {
//! Probes the CPU. CPUID traps to the hypervisor in a virtual machine (microseconds), so this
//! runs once per process (see half_isa_supported), never per conversion.
inline bool probe(half_isa isa) noexcept {
  switch (isa) {
  case half_isa::portable: return true;
#if defined(DMS_X86_DISPATCH)
  case half_isa::avx2: {
    __builtin_cpu_init(); // required before __builtin_cpu_supports during static initialization
    // clang 14 does not know "f16c" in __builtin_cpu_supports, so F16C is read from CPUID leaf 1
    // (ECX bit 29); "avx2" also checks that the OS saves the YMM registers.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
    return f16c && __builtin_cpu_supports("avx2");
  }
  case half_isa::avx512: __builtin_cpu_init(); return __builtin_cpu_supports("avx512f");
#else
  case half_isa::avx2:
  case half_isa::avx512: return false;
#endif
  }
  return false;
}
} // namespace half_detect

//! Whether this build and this CPU (and its OS, which must save the wide registers) can run `isa`.
//! Probed once per process.
inline bool half_isa_supported(half_isa isa) noexcept {
  static const bool supported[] = {half_detect::probe(half_isa::portable),
                                   half_detect::probe(half_isa::avx2),
                                   half_detect::probe(half_isa::avx512)};
  const auto i = static_cast<std::size_t>(isa);
  return i < std::size(supported) && supported[i];
}

//! The widest supported kernel family.
inline half_isa best_half_isa() noexcept {
  if (half_isa_supported(half_isa::avx512)) return half_isa::avx512;
  if (half_isa_supported(half_isa::avx2)) return half_isa::avx2;
  return half_isa::portable;
}

// --- portable kernels ---------------------------------------------------------------------------
// Fixed-size inner blocks: GCC's -O2 cost model ("very cheap") only vectorizes loops whose trip
// count is a known multiple of the vector width, so a block of 16 vectorizes for SSE2 (4 lanes),
// AVX (8) and NEON alike, and the remainder runs through the same scalar function.
inline constexpr std::size_t portable_block = 16;

inline void f16_to_f32_portable(const f16_bits *src, float *dst, std::size_t n) noexcept {
  const std::size_t full = n - n % portable_block;
  for (std::size_t i = 0; i < full; i += portable_block)
    for (std::size_t j = 0; j < portable_block; ++j) dst[i + j] = to_f32(src[i + j]);
  for (std::size_t i = full; i < n; ++i) dst[i] = to_f32(src[i]);
}
inline void f32_to_f16_portable(const float *src, f16_bits *dst, std::size_t n) noexcept {
  const std::size_t full = n - n % portable_block;
  for (std::size_t i = 0; i < full; i += portable_block)
    for (std::size_t j = 0; j < portable_block; ++j) dst[i + j] = to_f16(src[i + j]);
  for (std::size_t i = full; i < n; ++i) dst[i] = to_f16(src[i]);
}
inline void bf16_to_f32_portable(const bf16_bits *src, float *dst, std::size_t n) noexcept {
  const std::size_t full = n - n % portable_block;
  for (std::size_t i = 0; i < full; i += portable_block)
    for (std::size_t j = 0; j < portable_block; ++j) dst[i + j] = to_f32(src[i + j]);
  for (std::size_t i = full; i < n; ++i) dst[i] = to_f32(src[i]);
}
inline void f32_to_bf16_portable(const float *src, bf16_bits *dst, std::size_t n) noexcept {
  const std::size_t full = n - n % portable_block;
  for (std::size_t i = 0; i < full; i += portable_block)
    for (std::size_t j = 0; j < portable_block; ++j) dst[i + j] = to_bf16(src[i + j]);
  for (std::size_t i = full; i < n; ++i) dst[i] = to_bf16(src[i]);
}

#if defined(DMS_X86_DISPATCH)
// --- x86 kernels ---------------------------------------------------------------------------------
// Each runs whole vectors, then converts the remainder through a zero-padded vector on the stack,
// so every element of a buffer goes through the same instruction. The rounding mode is encoded in
// the instruction (imm8), never read from MXCSR.

// imm8 of VCVTPS2PH: round to nearest even regardless of MXCSR, no precision exception.
inline constexpr int half_round_imm = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

DMS_TARGET("avx2,f16c")
inline void f16_to_f32_avx2(const f16_bits *src, float *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i + 8));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
  }
  for (; i < n; i += 8) {
    const std::size_t m = n - i < 8 ? n - i : 8;
    alignas(32) std::uint16_t in[8] = {};
    alignas(32) float out[8];
    for (std::size_t j = 0; j < m; ++j) in[j] = src[i + j].bits;
    _mm256_store_ps(out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i *>(in))));
    for (std::size_t j = 0; j < m; ++j) dst[i + j] = out[j];
  }
}

DMS_TARGET("avx2,f16c")
inline void f32_to_f16_avx2(const float *src, f16_bits *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), half_round_imm);
    const __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), half_round_imm);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i), a);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i + 8), b);
  }
  for (; i < n; i += 8) {
    const std::size_t m = n - i < 8 ? n - i : 8;
    alignas(32) float in[8] = {};
    alignas(32) std::uint16_t out[8];
    for (std::size_t j = 0; j < m; ++j) in[j] = src[i + j];
    _mm_store_si128(reinterpret_cast<__m128i *>(out),
                    _mm256_cvtps_ph(_mm256_load_ps(in), half_round_imm));
    for (std::size_t j = 0; j < m; ++j) dst[i + j] = f16_bits{out[j]};
  }
}

DMS_TARGET("avx2")
inline __m256i f32_to_bf16_lanes_avx2(__m256 x) noexcept {
  // Same formula as f32_to_bf16_bits, 8 lanes at a time; results are in [0, 0xffff] per lane.
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000)); // both >= 0
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc0), is_nan);
}

DMS_TARGET("avx2")
inline void f32_to_bf16_avx2(const float *src, bf16_bits *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m256i a = f32_to_bf16_lanes_avx2(_mm256_loadu_ps(src + i));
    const __m256i b = f32_to_bf16_lanes_avx2(_mm256_loadu_ps(src + i + 8));
    // packus interleaves 128-bit halves (a.lo b.lo a.hi b.hi); the permute restores the order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = to_bf16(src[i]); // integer formula: identical to the vector lanes
}

DMS_TARGET("avx2")
inline void bf16_to_f32_avx2(const bf16_bits *src, float *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m256i a = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i)));
    const __m256i b = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), _mm256_slli_epi32(a, 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i + 8), _mm256_slli_epi32(b, 16));
  }
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
}

// GCC 12.1-12.2 warn "__Y may be used uninitialized" inside its own avx512fintrin.h (GCC bug
// 105593: the unmasked intrinsics pass _mm512_undefined_*() as the merge source). Harmless.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

DMS_TARGET("avx512f")
inline void f16_to_f32_avx512(const f16_bits *src, float *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 32; i += 32) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i + 16));
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(a));
    _mm512_storeu_ps(dst + i + 16, _mm512_cvtph_ps(b));
  }
  for (; i < n; i += 16) {
    const std::size_t m = n - i < 16 ? n - i : 16;
    alignas(64) std::uint16_t in[16] = {};
    alignas(64) float out[16];
    for (std::size_t j = 0; j < m; ++j) in[j] = src[i + j].bits;
    _mm512_store_ps(out, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i *>(in))));
    for (std::size_t j = 0; j < m; ++j) dst[i + j] = out[j];
  }
}

DMS_TARGET("avx512f")
inline void f32_to_f16_avx512(const float *src, f16_bits *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 32; i += 32) {
    const __m256i a = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), half_round_imm);
    const __m256i b = _mm512_cvtps_ph(_mm512_loadu_ps(src + i + 16), half_round_imm);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i + 16), b);
  }
  for (; i < n; i += 16) {
    const std::size_t m = n - i < 16 ? n - i : 16;
    alignas(64) float in[16] = {};
    alignas(64) std::uint16_t out[16];
    for (std::size_t j = 0; j < m; ++j) in[j] = src[i + j];
    _mm256_store_si256(reinterpret_cast<__m256i *>(out),
                       _mm512_cvtps_ph(_mm512_load_ps(in), half_round_imm));
    for (std::size_t j = 0; j < m; ++j) dst[i + j] = f16_bits{out[j]};
  }
}

DMS_TARGET("avx512f")
inline void f32_to_bf16_avx512(const float *src, bf16_bits *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + i));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i r = _mm512_mask_mov_epi32(rounded, is_nan, _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), _mm512_cvtepi32_epi16(r));
  }
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

DMS_TARGET("avx512f")
inline void bf16_to_f32_avx512(const bf16_bits *src, float *dst, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; n - i >= 16; i += 16) {
    const __m512i a = _mm512_cvtepu16_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(a, 16));
  }
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif // DMS_X86_DISPATCH

template <class Src, class Dst> void check_convert_sizes(std::span<Src> src, std::span<Dst> dst) {
  require(src.size() == dst.size(), errc::invalid_argument, [&] {
    return "convert: source has " + std::to_string(src.size()) + " elements, destination has " +
           std::to_string(dst.size());
  });
}

[[noreturn]] inline void throw_unsupported_isa(half_isa isa) {
  throw error(errc::unsupported, "half conversion kernel '" + std::string(name_of(isa)) +
                                     "' is not supported by this build or CPU");
}

// The conversions with an explicit kernel family. `isa` must be supported (else errc::unsupported).
inline void convert(std::span<const f16_bits> src, std::span<float> dst, half_isa isa) {
  check_convert_sizes(src, dst);
  if (!half_isa_supported(isa)) throw_unsupported_isa(isa);
  switch (isa) {
#if defined(DMS_X86_DISPATCH)
  case half_isa::avx512: return f16_to_f32_avx512(src.data(), dst.data(), src.size());
  case half_isa::avx2: return f16_to_f32_avx2(src.data(), dst.data(), src.size());
#endif
  default: return f16_to_f32_portable(src.data(), dst.data(), src.size());
  }
}
inline void convert(std::span<const float> src, std::span<f16_bits> dst, half_isa isa) {
  check_convert_sizes(src, dst);
  if (!half_isa_supported(isa)) throw_unsupported_isa(isa);
  switch (isa) {
#if defined(DMS_X86_DISPATCH)
  case half_isa::avx512: return f32_to_f16_avx512(src.data(), dst.data(), src.size());
  case half_isa::avx2: return f32_to_f16_avx2(src.data(), dst.data(), src.size());
#endif
  default: return f32_to_f16_portable(src.data(), dst.data(), src.size());
  }
}
inline void convert(std::span<const bf16_bits> src, std::span<float> dst, half_isa isa) {
  check_convert_sizes(src, dst);
  if (!half_isa_supported(isa)) throw_unsupported_isa(isa);
  switch (isa) {
#if defined(DMS_X86_DISPATCH)
  case half_isa::avx512: return bf16_to_f32_avx512(src.data(), dst.data(), src.size());
  case half_isa::avx2: return bf16_to_f32_avx2(src.data(), dst.data(), src.size());
#endif
  default: return bf16_to_f32_portable(src.data(), dst.data(), src.size());
  }
}
inline void convert(std::span<const float> src, std::span<bf16_bits> dst, half_isa isa) {
  check_convert_sizes(src, dst);
  if (!half_isa_supported(isa)) throw_unsupported_isa(isa);
  switch (isa) {
#if defined(DMS_X86_DISPATCH)
  case half_isa::avx512: return f32_to_bf16_avx512(src.data(), dst.data(), src.size());
  case half_isa::avx2: return f32_to_bf16_avx2(src.data(), dst.data(), src.size());
#endif
  default: return f32_to_bf16_portable(src.data(), dst.data(), src.size());
  }
}

} // namespace detail

//! Converts every element of `src` into `dst` (same size, else errc::invalid_argument), with the
//! widest kernel this CPU supports. The spans must not overlap.
//! @code
//!   std::vector<dms::f16_bits> raw = read_tensor(...);
//!   std::vector<float> w(raw.size());
//!   dms::convert(raw, w);
//! @endcode
inline void convert(std::span<const f16_bits> src, std::span<float> dst) {
  detail::convert(src, dst, detail::best_half_isa());
}
inline void convert(std::span<const float> src, std::span<f16_bits> dst) {
  detail::convert(src, dst, detail::best_half_isa());
}
inline void convert(std::span<const bf16_bits> src, std::span<float> dst) {
  detail::convert(src, dst, detail::best_half_isa());
}
inline void convert(std::span<const float> src, std::span<bf16_bits> dst) {
  detail::convert(src, dst, detail::best_half_isa());
}

DMS_NAMESPACE_END
