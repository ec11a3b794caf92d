// dms/backend/cpu/vec.hpp: one float-vector interface per dispatch level.
//
// A kernel body is written once against `float_vec<L>` (zero, set1, load, store, add, mul,
// fmadd, reduce_add; unaligned loads and stores throughout, so callers' pointers need no
// alignment) and compiled per level inside a target region (see dispatch.hpp). The baseline
// vector is an xsimd batch of the translation unit's own architecture, through the compatibility
// layer in simd.hpp; the AVX2 and AVX-512 vectors are raw intrinsics in functions that carry their
// `target` attribute, because xsimd cannot name a wider batch than the compiler flags allow.
//
// The members are always-inline: calling one from a function not compiled for its level is a
// compile error ("target specific option mismatch"), never a silent illegal instruction.
#pragma once

#include <cstddef>

#include "dms/backend/cpu/dispatch.hpp"
#include "dms/backend/cpu/simd.hpp"
#include "dms/config.hpp"

#if defined(DMS_X86_DISPATCH)
#include <immintrin.h>
#endif

DMS_NAMESPACE_BEGIN
namespace simd {

// Inside the ABI tag (see simd.hpp): the baseline member functions compile to different
// instructions under different -m flags.
inline namespace DMS_CPU_ABI_TAG {

template <cpu::isa_level L> struct float_vec;

//! The translation unit's own architecture, via xsimd (4 lanes on a plain x86-64 build).
struct baseline_float_vec {
  using reg = batch<float>;
  static constexpr std::size_t width = simd::width<float>;
  static DMS_ALWAYS_INLINE reg zero() noexcept { return broadcast(0.0f); }
  static DMS_ALWAYS_INLINE reg set1(float v) noexcept { return broadcast(v); }
  static DMS_ALWAYS_INLINE reg load(const float *p) noexcept { return simd::load(p); }
  static DMS_ALWAYS_INLINE void store(float *p, reg v) noexcept { simd::store(p, v); }
  static DMS_ALWAYS_INLINE reg add(reg a, reg b) noexcept { return a + b; }
  static DMS_ALWAYS_INLINE reg mul(reg a, reg b) noexcept { return a * b; }
  //! a * b + c
  static DMS_ALWAYS_INLINE reg fmadd(reg a, reg b, reg c) noexcept { return simd::fma(a, b, c); }
  static DMS_ALWAYS_INLINE float reduce_add(reg a) noexcept { return simd::reduce_add(a); }
};

template <> struct float_vec<cpu::isa_level::baseline> : baseline_float_vec {};

#if defined(DMS_X86_DISPATCH)

#define DMS_VEC_FN(features) static DMS_TARGET(features) DMS_ALWAYS_INLINE

template <> struct float_vec<cpu::isa_level::avx2> {
  using reg = __m256;
  static constexpr std::size_t width = 8;
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg zero() noexcept { return _mm256_setzero_ps(); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg set1(float v) noexcept { return _mm256_set1_ps(v); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg load(const float *p) noexcept { return _mm256_loadu_ps(p); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) void store(float *p, reg v) noexcept { _mm256_storeu_ps(p, v); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg add(reg a, reg b) noexcept { return _mm256_add_ps(a, b); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg mul(reg a, reg b) noexcept { return _mm256_mul_ps(a, b); }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) reg fmadd(reg a, reg b, reg c) noexcept {
    return _mm256_fmadd_ps(a, b, c);
  }
  DMS_VEC_FN(DMS_CPU_AVX2_FEATURES) float reduce_add(reg a) noexcept {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

template <> struct float_vec<cpu::isa_level::avx512> {
  using reg = __m512;
  static constexpr std::size_t width = 16;
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg zero() noexcept { return _mm512_setzero_ps(); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg set1(float v) noexcept { return _mm512_set1_ps(v); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg load(const float *p) noexcept { return _mm512_loadu_ps(p); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) void store(float *p, reg v) noexcept { _mm512_storeu_ps(p, v); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg add(reg a, reg b) noexcept { return _mm512_add_ps(a, b); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg mul(reg a, reg b) noexcept { return _mm512_mul_ps(a, b); }
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) reg fmadd(reg a, reg b, reg c) noexcept {
    return _mm512_fmadd_ps(a, b, c);
  }
  // Not _mm512_reduce_add_ps, the unmasked shuffle or _mm512_castps512_ps128: in GCC 12 they
  // pass an _mm*_undefined_ps() operand that trips -Wuninitialized. The all-ones masked forms
  // with an explicit pass-through are the same instructions. Folds the four 128-bit lanes, then one lane.
  DMS_VEC_FN(DMS_CPU_AVX512_FEATURES) float reduce_add(reg a) noexcept {
    constexpr __mmask16 all = 0xFFFF;
    a = _mm512_add_ps(a, _mm512_mask_shuffle_f32x4(a, all, a, a, _MM_SHUFFLE(1, 0, 3, 2)));
    a = _mm512_add_ps(a, _mm512_mask_shuffle_f32x4(a, all, a, a, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128 s = _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xF, a, 0); // = cast to __m128
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

#undef DMS_VEC_FN

#endif // DMS_X86_DISPATCH

} // namespace DMS_CPU_ABI_TAG
} // namespace simd
DMS_NAMESPACE_END
