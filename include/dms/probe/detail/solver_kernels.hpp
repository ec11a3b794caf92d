// dms/probe/detail/solver_kernels.hpp: the dense kernels of the logistic probe's solvers
// (dms/probe/logistic.hpp): dot products and row sweeps over the float training rows, the Gram
// matrix of the rows, a Cholesky factorization and its substitution.
//
// Independent accumulators in fixed-size blocks: compilers vectorize them without -ffast-math
// (one accumulator is a serial chain of dependent adds) and even under GCC's -O2 cost model,
// which only vectorizes loops of a known trip count without alias checks. Each kernel is
// compiled once more for AVX2 and AVX-512 and chosen at run time (last-bit rounding may then
// differ between CPUs; never between runs or thread counts).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

#include "dms/config.hpp"
#include "dms/core/half.hpp" // half_isa_supported: the CPU levels, probed once per process

DMS_NAMESPACE_BEGIN
namespace detail {

template <class A, class B> DMS_ALWAYS_INLINE double dot8(const A *a, const B *b, std::size_t n) noexcept {
  double s[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (std::size_t k = 0; k < 8; ++k) s[k] += static_cast<double>(a[i + k]) * static_cast<double>(b[i + k]);
  double t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return t;
}

//! out[i] = z_i . v for n rows of d floats (row-major).
template <class T>
DMS_ALWAYS_INLINE void rows_dot_body(const T *z, std::size_t n, std::size_t d, const double *v, double *out) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = dot8(z + i * d, v, d);
}

//! y += sum_i w_i z_i over n rows of d floats (rows with w_i = 0 skipped).
DMS_ALWAYS_INLINE void rows_axpy_body(const float *z, std::size_t n, std::size_t d, const double *w, double *y) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const double wi = w[i];
    if (wi == 0) continue;
    const float *zi = z + i * d;
    std::size_t j = 0;
    for (; j + 8 <= d; j += 8)
      for (std::size_t q = 0; q < 8; ++q) y[j + q] += wi * static_cast<double>(zi[j + q]);
    for (; j < d; ++j) y[j] += wi * static_cast<double>(zi[j]);
  }
}

// Vector types for the kernels below: GCC/Clang's vector extensions, lowered to the registers of
// the target a kernel is compiled for (one lane: the scalar itself, for other compilers). The
// kernels never pass them by value, so no ABI depends on the target.
template <class T, std::size_t Lanes> struct simd_of {
  using type = T;
};
#if defined(__GNUC__) || defined(__clang__)
template <class T, std::size_t Lanes>
  requires(Lanes > 1)
struct simd_of<T, Lanes> {
  typedef T type __attribute__((vector_size(Lanes * sizeof(T))));
};
#endif
template <class T, std::size_t Lanes> using simd = typename simd_of<T, Lanes>::type;
template <class V> struct lane_of {
  using type = std::remove_cvref_t<decltype(std::declval<V>()[0])>;
};
template <class V>
  requires std::is_arithmetic_v<V>
struct lane_of<V> {
  using type = V;
};
template <class V> constexpr std::size_t lanes_of = sizeof(V) / sizeof(typename lane_of<V>::type);

template <class V> DMS_ALWAYS_INLINE typename lane_of<V>::type lane_sum(const V &v) noexcept {
  if constexpr (std::is_arithmetic_v<V>) {
    return v;
  } else {
    typename lane_of<V>::type s = 0;
    for (std::size_t q = 0; q < lanes_of<V>; ++q) s += v[q];
    return s;
  }
}

//! The Gram matrix g = z z^T (n x n, row-major, both triangles) of n rows of d doubles, in
//! TA x TB tiles of rows with one vector accumulator each: every vector of a row loaded feeds TA
//! or TB multiply-adds. Exact up to the double rounding of the sums (products of floats are exact
//! in double).
template <class V, std::size_t TA, std::size_t TB>
DMS_ALWAYS_INLINE void gram_tiles(const double *z, std::size_t n, std::size_t d, double *g) noexcept {
  constexpr std::size_t L = lanes_of<V>;
  for (std::size_t i0 = 0; i0 < n; i0 += TA)
    for (std::size_t j0 = i0 / TB * TB; j0 < n; j0 += TB) {
      const double *a[TA], *b[TB];
      for (std::size_t r = 0; r < TA; ++r) a[r] = z + std::min(i0 + r, n - 1) * d; // past the end: not stored
      for (std::size_t c = 0; c < TB; ++c) b[c] = z + std::min(j0 + c, n - 1) * d;
      V acc[TA][TB] = {};
      std::size_t k = 0;
      for (; k + L <= d; k += L) {
        V bv[TB];
        for (std::size_t c = 0; c < TB; ++c) std::memcpy(&bv[c], b[c] + k, sizeof(V));
        for (std::size_t r = 0; r < TA; ++r) {
          V av;
          std::memcpy(&av, a[r] + k, sizeof(V));
          for (std::size_t c = 0; c < TB; ++c) acc[r][c] += av * bv[c];
        }
      }
      for (std::size_t r = 0; r < TA; ++r)
        for (std::size_t c = 0; c < TB; ++c) {
          const std::size_t i = i0 + r, j = j0 + c;
          if (i >= n || j >= n || j < i) continue;
          double s = lane_sum(acc[r][c]);
          for (std::size_t kk = k; kk < d; ++kk) s += a[r][kk] * b[c][kk];
          g[i * n + j] = g[j * n + i] = s;
        }
    }
}

//! out_a[i] = z_i . a and out_b[i] = z_i . b for n rows of d doubles: each row read once for both.
template <class V>
DMS_ALWAYS_INLINE void rows_dot2_body(const double *z, std::size_t n, std::size_t d, const double *a, const double *b,
                                      double *out_a, double *out_b) noexcept {
  constexpr std::size_t L = lanes_of<V>;
  for (std::size_t i = 0; i < n; ++i) {
    const double *zi = z + i * d;
    V sa[2] = {}, sb[2] = {};
    std::size_t k = 0;
    for (; k + 2 * L <= d; k += 2 * L)
      for (std::size_t h = 0; h < 2; ++h) {
        V zv, av, bv;
        std::memcpy(&zv, zi + k + h * L, sizeof(V));
        std::memcpy(&av, a + k + h * L, sizeof(V));
        std::memcpy(&bv, b + k + h * L, sizeof(V));
        sa[h] += zv * av;
        sb[h] += zv * bv;
      }
    double ta = lane_sum(sa[0]) + lane_sum(sa[1]), tb = lane_sum(sb[0]) + lane_sum(sb[1]);
    for (; k < d; ++k) {
      ta += zi[k] * a[k];
      tb += zi[k] * b[k];
    }
    out_a[i] = ta;
    out_b[i] = tb;
  }
}

//! Cholesky factorization H = U^T U of a symmetric positive-definite H (D x D, row-major with
//! rows ld >= D apart, only the upper triangle read), U written over the upper triangle, the
//! strict lower triangle and the columns past D used as scratch; false when H is not positive
//! definite. (Rows padded to a whole number of vectors leave no scalar remainder.) Right-looking in panels of B rows: each
//! panel is factored, then updates the trailing rows R at a time, every panel vector loaded
//! feeding R multiply-adds (no dot products, whose horizontal sums would dominate at a few
//! hundred rows).
template <class V, std::size_t B, std::size_t R, class T>
DMS_ALWAYS_INLINE bool cholesky_panels(T *h, std::size_t D, std::size_t ld) noexcept {
  constexpr std::size_t L = lanes_of<V>;
  for (std::size_t k0 = 0; k0 < D; k0 += B) {
    const std::size_t k1 = std::min(D, k0 + B);
    for (std::size_t k = k0; k < k1; ++k) { // the panel: rows k0..k1-1, updated by the ones above
      T *uk = &h[k * ld];
      for (std::size_t p = k0; p < k; ++p) {
        const T *up = &h[p * ld];
        const T c = up[k];
        for (std::size_t j = k; j < D; ++j) uk[j] -= c * up[j];
      }
      if (!(uk[k] > 0)) return false;
      const T ukk = std::sqrt(uk[k]), inv = T(1) / ukk;
      uk[k] = ukk;
      for (std::size_t j = k + 1; j < D; ++j) uk[j] *= inv;
    }
    const std::size_t nb = k1 - k0;
    const T *u[B];
    for (std::size_t p = 0; p < B; ++p) u[p] = &h[(k0 + std::min(p, nb - 1)) * ld];
    // Trailing rows i..i+R-1: h[i+r][j] -= sum_p U[p][i+r] U[p][j] for j >= i (the columns left of
    // a row's diagonal are its scratch). A row past the end repeats row D-1 and is not stored; a
    // short last panel repeats its last row with weight 0.
    for (std::size_t i = k1; i < D; i += R) {
      T c[R][B];
      T *hr[R];
      for (std::size_t r = 0; r < R; ++r) {
        const std::size_t row = std::min(i + r, D - 1);
        hr[r] = &h[row * ld];
        for (std::size_t p = 0; p < B; ++p) c[r][p] = p < nb ? u[p][row] : T(0);
      }
      const std::size_t rows = std::min(R, D - i);
      std::size_t j = i;
      for (; j + L <= ld; j += L) {
        V t[R];
        for (std::size_t r = 0; r < R; ++r) std::memcpy(&t[r], hr[r] + j, sizeof(V));
        for (std::size_t p = 0; p < B; ++p) {
          V up;
          std::memcpy(&up, u[p] + j, sizeof(V));
          for (std::size_t r = 0; r < R; ++r) t[r] -= c[r][p] * up;
        }
        for (std::size_t r = 0; r < rows; ++r) std::memcpy(hr[r] + j, &t[r], sizeof(V));
      }
      for (; j < ld; ++j)
        for (std::size_t r = 0; r < rows; ++r) {
          T t = hr[r][j];
          for (std::size_t p = 0; p < B; ++p) t -= c[r][p] * u[p][j];
          hr[r][j] = t;
        }
    }
  }
  return true;
}

// Run-time choice of the kernels' compilation (the CPU levels are probed once per process).
#if defined(DMS_X86_DISPATCH)
#define DMS_PROBE_KERNEL(RET, NAME, PARAMS, ARGS)                                                          \
  DMS_TARGET("avx512f,fma") inline RET NAME##_avx512 PARAMS noexcept { return NAME##_body ARGS; }         \
  DMS_TARGET("avx2,fma") inline RET NAME##_avx2 PARAMS noexcept { return NAME##_body ARGS; }              \
  inline RET NAME PARAMS noexcept {                                                                       \
    if (half_isa_supported(half_isa::avx512)) return NAME##_avx512 ARGS;                                  \
    if (half_isa_supported(half_isa::avx2)) return NAME##_avx2 ARGS;                                      \
    return NAME##_body ARGS;                                                                              \
  }
#else
#define DMS_PROBE_KERNEL(RET, NAME, PARAMS, ARGS)                                                          \
  inline RET NAME PARAMS noexcept { return NAME##_body ARGS; }
#endif
DMS_PROBE_KERNEL(void, rows_dot, (const float *z, std::size_t n, std::size_t d, const double *v, double *out), (z, n, d, v, out))
DMS_PROBE_KERNEL(void, rows_dot, (const double *z, std::size_t n, std::size_t d, const double *v, double *out), (z, n, d, v, out))
DMS_PROBE_KERNEL(void, rows_axpy, (const float *z, std::size_t n, std::size_t d, const double *w, double *y), (z, n, d, w, y))
#undef DMS_PROBE_KERNEL

// Tile shapes that fit the register file: 4 x 4 Gram accumulators in AVX-512's 32 registers,
// 5 x 2 in AVX2's 16. The Cholesky factor is taken in float (see row_space_newton): twice the
// lanes of double.
#if defined(DMS_X86_DISPATCH)
DMS_TARGET("avx512f,fma") inline void gram_avx512(const double *z, std::size_t n, std::size_t d, double *g) noexcept {
  gram_tiles<simd<double, 8>, 4, 4>(z, n, d, g);
}
DMS_TARGET("avx2,fma") inline void gram_avx2(const double *z, std::size_t n, std::size_t d, double *g) noexcept {
  gram_tiles<simd<double, 4>, 5, 2>(z, n, d, g);
}
DMS_TARGET("avx512f,fma") inline bool cholesky_avx512(float *h, std::size_t D, std::size_t ld) noexcept {
  return cholesky_panels<simd<float, 16>, 8, 8>(h, D, ld);
}
DMS_TARGET("avx2,fma") inline bool cholesky_avx2(float *h, std::size_t D, std::size_t ld) noexcept {
  return cholesky_panels<simd<float, 8>, 8, 4>(h, D, ld);
}
#endif
#if defined(DMS_X86_DISPATCH)
DMS_TARGET("avx512f,fma")
inline void rows_dot2_avx512(const double *z, std::size_t n, std::size_t d, const double *a, const double *b, double *out_a,
                             double *out_b) noexcept {
  rows_dot2_body<simd<double, 8>>(z, n, d, a, b, out_a, out_b);
}
DMS_TARGET("avx2,fma")
inline void rows_dot2_avx2(const double *z, std::size_t n, std::size_t d, const double *a, const double *b, double *out_a,
                           double *out_b) noexcept {
  rows_dot2_body<simd<double, 4>>(z, n, d, a, b, out_a, out_b);
}
#endif
inline void rows_dot2(const double *z, std::size_t n, std::size_t d, const double *a, const double *b, double *out_a,
                      double *out_b) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx512)) return rows_dot2_avx512(z, n, d, a, b, out_a, out_b);
  if (half_isa_supported(half_isa::avx2)) return rows_dot2_avx2(z, n, d, a, b, out_a, out_b);
#endif
  rows_dot2_body<simd<double, 2>>(z, n, d, a, b, out_a, out_b);
}
inline void gram(const double *z, std::size_t n, std::size_t d, double *g) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx512)) return gram_avx512(z, n, d, g);
  if (half_isa_supported(half_isa::avx2)) return gram_avx2(z, n, d, g);
#endif
  gram_tiles<simd<double, 2>, 2, 2>(z, n, d, g);
}
inline bool cholesky_factor(float *h, std::size_t D, std::size_t ld) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx512)) return cholesky_avx512(h, D, ld);
  if (half_isa_supported(half_isa::avx2)) return cholesky_avx2(h, D, ld);
#endif
  return cholesky_panels<simd<float, 4>, 8, 2>(h, D, ld);
}
#if defined(DMS_X86_DISPATCH)
DMS_TARGET("avx512f,fma") inline bool cholesky_avx512(double *h, std::size_t D, std::size_t ld) noexcept {
  return cholesky_panels<simd<double, 8>, 8, 8>(h, D, ld);
}
DMS_TARGET("avx2,fma") inline bool cholesky_avx2(double *h, std::size_t D, std::size_t ld) noexcept {
  return cholesky_panels<simd<double, 4>, 8, 4>(h, D, ld);
}
#endif
inline bool cholesky_factor(double *h, std::size_t D, std::size_t ld) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx512)) return cholesky_avx512(h, D, ld);
  if (half_isa_supported(half_isa::avx2)) return cholesky_avx2(h, D, ld);
#endif
  return cholesky_panels<simd<double, 2>, 8, 2>(h, D, ld);
}

//! rhs_k <- (U^T U)^{-1} rhs_k for the factor U of cholesky_factor (float or double, rows ld
//! apart) and K right-hand sides at once (each row of U read once for all of them).
template <std::size_t K, class T>
DMS_ALWAYS_INLINE void cholesky_substitute_body(const T *u, std::size_t D, std::size_t ld,
                                                std::span<double> const (&rhs)[K]) noexcept {
  for (std::size_t i = 0; i < D; ++i) { // U^T y = rhs, by rows of U
    const T *ui = &u[i * ld];
    double yi[K];
    for (std::size_t k = 0; k < K; ++k) yi[k] = rhs[k][i] /= static_cast<double>(ui[i]);
    for (std::size_t j = i + 1; j < D; ++j) {
      const double uij = static_cast<double>(ui[j]);
      for (std::size_t k = 0; k < K; ++k) rhs[k][j] -= uij * yi[k];
    }
  }
  for (std::size_t i = D; i-- > 0;) { // U x = y
    const T *ui = &u[i * ld];
    for (std::size_t k = 0; k < K; ++k)
      rhs[k][i] = (rhs[k][i] - dot8(ui + i + 1, &rhs[k][i + 1], D - i - 1)) / static_cast<double>(ui[i]);
  }
}

#if defined(DMS_X86_DISPATCH)
template <std::size_t K, class T>
DMS_TARGET("avx512f,fma")
void cholesky_substitute_avx512(const T *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[K]) noexcept {
  cholesky_substitute_body<K>(u, D, ld, rhs);
}
template <std::size_t K, class T>
DMS_TARGET("avx2,fma")
void cholesky_substitute_avx2(const T *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[K]) noexcept {
  cholesky_substitute_body<K>(u, D, ld, rhs);
}
#endif
template <std::size_t K, class T>
void cholesky_substitute(const T *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[K]) noexcept {
#if defined(DMS_X86_DISPATCH)
  if (half_isa_supported(half_isa::avx512)) return cholesky_substitute_avx512<K>(u, D, ld, rhs);
  if (half_isa_supported(half_isa::avx2)) return cholesky_substitute_avx2<K>(u, D, ld, rhs);
#endif
  cholesky_substitute_body<K>(u, D, ld, rhs);
}

inline double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

} // namespace detail
DMS_NAMESPACE_END
