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
#include "dms/core/thread_pool.hpp"

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

//! Rows [i_begin, i_end) of the Gram matrix g = z z^T (n x n, row-major; each element computed
//! once, written to both triangles, so chunks of rows may run concurrently) of n rows of d
//! doubles, in TA x TB tiles of rows with one vector accumulator each: every vector of a row
//! loaded feeds TA or TB multiply-adds. Exact up to the double rounding of the sums (products of
//! floats are exact in double), and the same whatever the chunks.
template <class V, std::size_t TA, std::size_t TB>
DMS_ALWAYS_INLINE void gram_rows_body(const double *z, std::size_t n, std::size_t d, double *g, std::size_t i_begin,
                                      std::size_t i_end) noexcept {
  constexpr std::size_t L = lanes_of<V>;
  for (std::size_t i0 = i_begin; i0 < i_end; i0 += TA)
    for (std::size_t j0 = i0; j0 < n; j0 += TB) {
      const double *a[TA], *b[TB];
      for (std::size_t r = 0; r < TA; ++r) a[r] = z + std::min(i0 + r, i_end - 1) * d; // past the end: not stored
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
          if (i >= i_end || j >= n || j < i) continue;
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

// Cholesky factorization H = U^T U of a symmetric positive-definite H (D x D, row-major with rows
// ld >= D apart, only the upper triangle read), U written over the upper triangle, the strict
// lower triangle and the columns past D used as scratch. Right-looking in panels of 8 rows: each
// panel is factored (cholesky_panel), then updates the trailing rows (cholesky_trailing_body) R
// at a time, every panel vector loaded feeding R multiply-adds (no dot products, whose horizontal
// sums would dominate at a few hundred rows). The trailing rows are independent of one another,
// so chunks of them may run concurrently, and the factor is the same whatever the chunks. Rows
// padded to a whole number of vectors leave no scalar remainder.
inline constexpr std::size_t cholesky_panel_rows = 8;

//! Factors panel rows k0..k1-1 (already updated by the panels above); false if H is not
//! positive definite.
template <class T>
DMS_ALWAYS_INLINE bool cholesky_panel_body(T *h, std::size_t D, std::size_t ld, std::size_t k0, std::size_t k1) noexcept {
  for (std::size_t k = k0; k < k1; ++k) {
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
  return true;
}

//! Rows [i_begin, i_end) (all below the panel k0..k0+nb-1):
//! h[i][j] -= sum_p U[p][i] U[p][j] for j >= i (the columns left of a row's diagonal are its
//! scratch). A row past the end repeats the last one and is not stored; a short last panel
//! repeats its last row with weight 0.
template <class V, std::size_t R, class T>
DMS_ALWAYS_INLINE void cholesky_trailing_body(T *h, std::size_t ld, std::size_t k0, std::size_t nb, std::size_t i_begin,
                                              std::size_t i_end) noexcept {
  constexpr std::size_t B = cholesky_panel_rows, L = lanes_of<V>;
  const T *u[B];
  for (std::size_t p = 0; p < B; ++p) u[p] = &h[(k0 + std::min(p, nb - 1)) * ld];
  for (std::size_t i = i_begin; i < i_end; i += R) {
    T c[R][B];
    T *hr[R];
    for (std::size_t r = 0; r < R; ++r) {
      const std::size_t row = std::min(i + r, i_end - 1);
      hr[r] = &h[row * ld];
      for (std::size_t p = 0; p < B; ++p) c[r][p] = p < nb ? u[p][row] : T(0);
    }
    const std::size_t rows = std::min(R, i_end - i);
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

// --- run-time choice of the kernels' compilation (the CPU levels are probed once per process) --
// AVX-512 and AVX2 variants, each with tile shapes that fit its register file: 4 x 4 Gram
// accumulators in AVX-512's 32 registers, 5 x 2 in AVX2's 16; the portable one for the baseline.
#if defined(DMS_X86_DISPATCH)
#define DMS_PROBE_DISPATCH(NAME, PARAMS, ARGS, AVX512, AVX2, PORTABLE)                                     \
  DMS_TARGET("avx512f,fma") inline void NAME##_avx512 PARAMS noexcept { AVX512; }                         \
  DMS_TARGET("avx2,fma") inline void NAME##_avx2 PARAMS noexcept { AVX2; }                                \
  inline void NAME PARAMS noexcept {                                                                      \
    if (half_isa_supported(half_isa::avx512)) {                                                           \
      NAME##_avx512 ARGS;                                                                                 \
    } else if (half_isa_supported(half_isa::avx2)) {                                                      \
      NAME##_avx2 ARGS;                                                                                   \
    } else {                                                                                              \
      PORTABLE;                                                                                           \
    }                                                                                                     \
  }
#else
#define DMS_PROBE_DISPATCH(NAME, PARAMS, ARGS, AVX512, AVX2, PORTABLE)                                     \
  inline void NAME PARAMS noexcept { PORTABLE; }
#endif
DMS_PROBE_DISPATCH(rows_dot, (const float *z, std::size_t n, std::size_t d, const double *v, double *out), (z, n, d, v, out),
                   (rows_dot_body(z, n, d, v, out)), (rows_dot_body(z, n, d, v, out)), (rows_dot_body(z, n, d, v, out)))
DMS_PROBE_DISPATCH(rows_dot, (const double *z, std::size_t n, std::size_t d, const double *v, double *out), (z, n, d, v, out),
                   (rows_dot_body(z, n, d, v, out)), (rows_dot_body(z, n, d, v, out)), (rows_dot_body(z, n, d, v, out)))
DMS_PROBE_DISPATCH(rows_axpy, (const float *z, std::size_t n, std::size_t d, const double *w, double *y), (z, n, d, w, y),
                   (rows_axpy_body(z, n, d, w, y)), (rows_axpy_body(z, n, d, w, y)), (rows_axpy_body(z, n, d, w, y)))
DMS_PROBE_DISPATCH(rows_dot2,
                   (const double *z, std::size_t n, std::size_t d, const double *a, const double *b, double *out_a,
                    double *out_b), (z, n, d, a, b, out_a, out_b),
                   (rows_dot2_body<simd<double, 8>>(z, n, d, a, b, out_a, out_b)),
                   (rows_dot2_body<simd<double, 4>>(z, n, d, a, b, out_a, out_b)),
                   (rows_dot2_body<simd<double, 2>>(z, n, d, a, b, out_a, out_b)))
DMS_PROBE_DISPATCH(gram_rows,
                   (const double *z, std::size_t n, std::size_t d, double *g, std::size_t i_begin, std::size_t i_end), (z, n, d, g, i_begin, i_end),
                   (gram_rows_body<simd<double, 8>, 4, 4>(z, n, d, g, i_begin, i_end)),
                   (gram_rows_body<simd<double, 4>, 5, 2>(z, n, d, g, i_begin, i_end)),
                   (gram_rows_body<simd<double, 2>, 2, 2>(z, n, d, g, i_begin, i_end)))
DMS_PROBE_DISPATCH(cholesky_trailing,
                   (float *h, std::size_t ld, std::size_t k0, std::size_t nb, std::size_t i_begin, std::size_t i_end), (h, ld, k0, nb, i_begin, i_end),
                   (cholesky_trailing_body<simd<float, 16>, 8>(h, ld, k0, nb, i_begin, i_end)),
                   (cholesky_trailing_body<simd<float, 8>, 4>(h, ld, k0, nb, i_begin, i_end)),
                   (cholesky_trailing_body<simd<float, 4>, 2>(h, ld, k0, nb, i_begin, i_end)))
DMS_PROBE_DISPATCH(cholesky_trailing,
                   (double *h, std::size_t ld, std::size_t k0, std::size_t nb, std::size_t i_begin, std::size_t i_end), (h, ld, k0, nb, i_begin, i_end),
                   (cholesky_trailing_body<simd<double, 8>, 8>(h, ld, k0, nb, i_begin, i_end)),
                   (cholesky_trailing_body<simd<double, 4>, 4>(h, ld, k0, nb, i_begin, i_end)),
                   (cholesky_trailing_body<simd<double, 2>, 2>(h, ld, k0, nb, i_begin, i_end)))
DMS_PROBE_DISPATCH(cholesky_panel_into,
                   (float *h, std::size_t D, std::size_t ld, std::size_t k0, std::size_t k1, bool *ok), (h, D, ld, k0, k1, ok),
                   (*ok = cholesky_panel_body(h, D, ld, k0, k1)), (*ok = cholesky_panel_body(h, D, ld, k0, k1)),
                   (*ok = cholesky_panel_body(h, D, ld, k0, k1)))
DMS_PROBE_DISPATCH(cholesky_panel_into,
                   (double *h, std::size_t D, std::size_t ld, std::size_t k0, std::size_t k1, bool *ok), (h, D, ld, k0, k1, ok),
                   (*ok = cholesky_panel_body(h, D, ld, k0, k1)), (*ok = cholesky_panel_body(h, D, ld, k0, k1)),
                   (*ok = cholesky_panel_body(h, D, ld, k0, k1)))
DMS_PROBE_DISPATCH(cholesky_substitute2,
                   (const float *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[2]), (u, D, ld, rhs),
                   (cholesky_substitute_body<2>(u, D, ld, rhs)), (cholesky_substitute_body<2>(u, D, ld, rhs)), (cholesky_substitute_body<2>(u, D, ld, rhs)))
DMS_PROBE_DISPATCH(cholesky_substitute1,
                   (const double *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[1]), (u, D, ld, rhs),
                   (cholesky_substitute_body<1>(u, D, ld, rhs)), (cholesky_substitute_body<1>(u, D, ld, rhs)), (cholesky_substitute_body<1>(u, D, ld, rhs)))
#undef DMS_PROBE_DISPATCH

// --- drivers: the kernels above over the rows, on a thread pool when one is given ---------------

//! Factors panel rows k0..k1-1 (see cholesky_panel_body); false if H is not positive definite.
template <class T> bool cholesky_panel(T *h, std::size_t D, std::size_t ld, std::size_t k0, std::size_t k1) noexcept {
  bool ok = false;
  cholesky_panel_into(h, D, ld, k0, k1, &ok);
  return ok;
}

//! f(begin, end) over [0, n): in chunks of `grain` on `pool`, or in one call without one (or
//! when there is only one chunk). The kernels give the same bits whatever the chunks.
template <class F> void over_rows(thread_pool *pool, std::size_t n, std::size_t grain, F &&f) {
  if (pool != nullptr && pool->size() > 1 && n > grain) {
    pool->parallel_for(n, grain, f);
  } else if (n > 0) {
    f(std::size_t{0}, n);
  }
}

//! g = z z^T for n rows of d doubles (n x n, both triangles).
inline void gram(const double *z, std::size_t n, std::size_t d, double *g, thread_pool *pool = nullptr) {
  // 20 rows: whole tiles of 4, 5 and 2; the later rows' chunks are shorter (fewer columns right of
  // the diagonal) and the pool hands out chunks as threads free up.
  over_rows(pool, n, 20, [&](std::size_t b, std::size_t e) { gram_rows(z, n, d, g, b, e); });
}

//! out = g v, out_b = g b for a square n x n g, rows on the pool.
inline void symmetric_products(const double *g, std::size_t n, const double *a, const double *b, double *out_a,
                               double *out_b, thread_pool *pool = nullptr) {
  over_rows(pool, n, 64, [&](std::size_t lo, std::size_t hi) {
    rows_dot2(g + lo * n, hi - lo, n, a, b, out_a + lo, out_b + lo);
  });
}
inline void symmetric_product(const double *g, std::size_t n, const double *v, double *out, thread_pool *pool = nullptr) {
  over_rows(pool, n, 64, [&](std::size_t lo, std::size_t hi) { rows_dot(g + lo * n, hi - lo, n, v, out + lo); });
}

//! Cholesky factorization of H (see above: D x D, rows ld apart, upper triangle); false when H is
//! not positive definite. With a pool, the trailing updates of the larger panels run on it.
template <class T> bool cholesky_factor(T *h, std::size_t D, std::size_t ld, thread_pool *pool = nullptr) {
  for (std::size_t k0 = 0; k0 < D; k0 += cholesky_panel_rows) {
    const std::size_t k1 = std::min(D, k0 + cholesky_panel_rows), rows = D - k1;
    if (!cholesky_panel(h, D, ld, k0, k1)) return false;
    // Below ~96 trailing rows a panel's update is a few microseconds: not worth a hand-off.
    over_rows(rows >= 96 ? pool : nullptr, rows, 32, [&](std::size_t b, std::size_t e) {
      cholesky_trailing(h, ld, k0, k1 - k0, k1 + b, k1 + e);
    });
  }
  return true;
}

//! rhs <- (U^T U)^{-1} rhs for U from cholesky_factor (double), or two right-hand sides at once
//! (float).
inline void cholesky_substitute(const double *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[1]) noexcept {
  cholesky_substitute1(u, D, ld, rhs);
}
inline void cholesky_substitute(const float *u, std::size_t D, std::size_t ld, std::span<double> const (&rhs)[2]) noexcept {
  cholesky_substitute2(u, D, ld, rhs);
}

inline double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

} // namespace detail
DMS_NAMESPACE_END
