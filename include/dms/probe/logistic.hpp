// dms/probe/logistic.hpp: the logistic-regression probe of Dynamic Mode Steering, and its fit.
//
// DMS reads, token by token, p_t = sigmoid(w . norm(h_t) + b): a linear probe on the residual
// stream, trained on rows labelled memorization (1) or generalization (0). Here norm() is the
// probe's own standardization, z_j = (h_j - mean_j) / scale_j, fitted on the training rows (as
// scikit-learn's StandardScaler, population variance; a constant feature gets scale 1 so it maps
// to 0 instead of dividing by zero). The probe folds that standardization into raw-space weights
// once, w_raw = w / scale and b_raw = b - sum_j w_j mean_j / scale_j, so scoring a token is one
// dot product and one sigmoid, no allocation.
//
// The fit minimizes scikit-learn's objective for LogisticRegression(penalty="l2", C):
//   C * sum_i sw_i * logloss_i + 0.5 * ||w||^2        (the intercept is not penalized)
// with sw_i = 1, or n / (2 n_class(i)) for class_weight="balanced". dms divides it by C * sum(sw)
// (as scikit-learn's solvers do internally; the minimizer is the same) so that `tol`, a bound on
// the largest gradient component, means the same for any C and n. Two solvers:
// - newton: IRLS with the exact Hessian, Cholesky, and a backtracking line search; converges in
//   a handful of iterations. Costs n d^2 / 2 per iteration and (d+1)^2 doubles: fine up to
//   d ~ 2048 (the automatic choice).
// - lbfgs: limited-memory BFGS (10 pairs) with an Armijo backtracking line search; n d per
//   iteration and O(d) memory, for wider activations.
// Both work in double on a float copy of the standardized rows. The objective is strictly convex
// (L2 on w, and the intercept's curvature is positive whenever both classes occur), so both reach
// the same minimum; separable data stays bounded thanks to the penalty.
//
// @code
//   auto fit = dms::fit_logistic(train_rows, train_labels, {.C = 1.0, .at = {12, dms::site::resid_post}});
//   float p = fit.probe.score(row);                    // memorization score in [0, 1]
//   auto m = dms::evaluate(fit.probe, heldout_rows, heldout_labels);   // accuracy, AUC, log-loss
// @endcode
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/probe.hpp"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp" // half_isa_supported: the CPU levels, probed once per process
#include "dms/probe/metrics.hpp"

DMS_NAMESPACE_BEGIN

enum class class_weight_mode : std::uint8_t {
  none,     //!< every row weighs 1
  balanced, //!< rows of class c weigh n / (2 n_c) (scikit-learn's "balanced")
};
constexpr std::string_view name_of(class_weight_mode m) noexcept {
  return m == class_weight_mode::balanced ? "balanced" : "none";
}

enum class logistic_solver : std::uint8_t {
  automatic, //!< newton when n_features <= 2048, else lbfgs
  newton,    //!< IRLS with Cholesky
  lbfgs,     //!< limited-memory BFGS
};

//! Where a probe was trained and how; saved with it.
struct probe_info {
  hook_point at{0, site::resid_post}; //!< the hook point whose activations it reads
  double C = 1.0;                     //!< inverse L2 strength it was fitted with
  class_weight_mode class_weight = class_weight_mode::none;
  bool standardized = true; //!< false: mean 0, scale 1 (the fit ran on raw activations)
};

struct logistic_options {
  double C = 1.0; //!< inverse regularization strength (scikit-learn's C), > 0
  class_weight_mode class_weight = class_weight_mode::none;
  bool standardize = true;
  logistic_solver solver = logistic_solver::automatic;
  //! Stop when the largest gradient component of the scaled objective is <= tol. scikit-learn
  //! defaults to 1e-4; Newton reaches 1e-8 in one or two more steps, so dms asks for it.
  double tol = 1e-8;
  int max_iter = 0;         //!< 0: 100 for newton, 2000 for lbfgs
  int lbfgs_memory = 10;    //!< (s, y) pairs kept by lbfgs
  hook_point at{0, site::resid_post}; //!< recorded in the probe's info (not used by the fit)
};

//! How a fit went.
struct fit_report {
  logistic_solver solver = logistic_solver::newton; //!< the one that ran
  int iterations = 0;       //!< Newton steps or L-BFGS iterations taken
  bool converged = false;   //!< gradient_max <= tol was reached
  double gradient_max = 0;  //!< largest |gradient component| at the end (scaled objective)
  double objective = 0;     //!< scaled objective at the end
};

namespace detail {
inline double sigmoid(double z) noexcept {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}
//! log(1 + exp(z)) without overflow.
inline double softplus(double z) noexcept { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

} // namespace detail

//! A fitted logistic-regression probe: score(h) = sigmoid(w . ((h - mean) / scale) + b).
//! Models dms::probe.
class logistic_probe {
public:
  logistic_probe() = default;
  //! `weight` lives in standardized space; `mean` and `scale` are the standardization (scale > 0).
  logistic_probe(std::vector<float> weight, float bias, std::vector<float> mean, std::vector<float> scale,
                 probe_info info = {})
      : weight_(std::move(weight)), mean_(std::move(mean)), scale_(std::move(scale)), bias_(bias),
        info_(info) {
    const auto d = weight_.size();
    require(d > 0, errc::invalid_argument, [] { return std::string("logistic_probe: empty weight vector"); });
    require(mean_.size() == d && scale_.size() == d, errc::shape_mismatch, [&] {
      return "logistic_probe: weight has " + std::to_string(d) + " features, mean " +
             std::to_string(mean_.size()) + ", scale " + std::to_string(scale_.size());
    });
    require(std::isfinite(bias_), errc::numeric, [] { return std::string("logistic_probe: bias is not finite"); });
    for (std::size_t j = 0; j < d; ++j) {
      require(std::isfinite(weight_[j]) && std::isfinite(mean_[j]), errc::numeric, [&] {
        return "logistic_probe: weight or mean of feature " + std::to_string(j) + " is not finite";
      });
      require(std::isfinite(scale_[j]) && scale_[j] > 0, errc::numeric, [&] {
        return "logistic_probe: scale of feature " + std::to_string(j) + " is " + std::to_string(scale_[j]) +
               " (expected finite and > 0)";
      });
    }
    raw_weight_.resize(d);
    double b = bias_;
    for (std::size_t j = 0; j < d; ++j) {
      const double wr = static_cast<double>(weight_[j]) / scale_[j];
      raw_weight_[j] = static_cast<float>(wr);
      b -= wr * mean_[j];
    }
    raw_bias_ = static_cast<float>(b);
  }

  std::int64_t n_features() const noexcept { return static_cast<std::int64_t>(weight_.size()); }

  //! w_raw . h + b_raw: the log-odds of class 1.
  float logit(std::span<const float> h) const {
    require(h.size() == weight_.size(), errc::shape_mismatch, [&] {
      return "logistic_probe expects rows of width " + std::to_string(weight_.size()) + ", got " +
             std::to_string(h.size());
    });
    float acc = 0.0f;
    const float *w = raw_weight_.data();
    for (std::size_t j = 0; j < h.size(); ++j) acc += w[j] * h[j];
    return acc + raw_bias_;
  }
  //! The probability of class 1 (memorization, in DMS).
  float score(std::span<const float> h) const { return static_cast<float>(detail::sigmoid(logit(h))); }
  //! Scores of many rows (out.size() == rows.rows); no allocation.
  void score_rows(matrix_view<const float> rows, std::span<float> out) const {
    for (std::int64_t r = 0; r < rows.rows; ++r) out[static_cast<std::size_t>(r)] = score(rows.row_span(r));
  }

  //! Weights in standardized space (what the fit produced; scikit-learn's coef_ on scaled data).
  std::span<const float> weight() const noexcept { return weight_; }
  float bias() const noexcept { return bias_; }
  std::span<const float> mean() const noexcept { return mean_; }
  std::span<const float> scale() const noexcept { return scale_; }
  //! Weights on raw activations, w / scale: the gradient of the logit with respect to h, i.e. the
  //! normal of the decision hyperplane in activation space (dms::probe_direction uses it).
  std::span<const float> raw_weight() const noexcept { return raw_weight_; }
  float raw_bias() const noexcept { return raw_bias_; }
  const probe_info &info() const noexcept { return info_; }

private:
  std::vector<float> weight_, mean_, scale_, raw_weight_;
  float bias_ = 0.0f, raw_bias_ = 0.0f;
  probe_info info_;
};

static_assert(probe<logistic_probe>);

//! The fitted probe and how the fit went.
struct logistic_fit {
  logistic_probe probe;
  fit_report report;
};

namespace detail {

//! Validates a training or evaluation set: non-empty, widths agree, labels 0/1, values finite.
inline void check_labelled_rows(matrix_view<const float> x, std::span<const int> y, std::string_view what,
                                std::int64_t expected_width = -1) {
  const std::string w(what);
  require(x.rows > 0 && x.cols > 0, errc::invalid_argument, [&] {
    return w + ": no data (" + std::to_string(x.rows) + " rows of width " + std::to_string(x.cols) + ")";
  });
  require(static_cast<std::int64_t>(y.size()) == x.rows, errc::shape_mismatch, [&] {
    return w + ": " + std::to_string(x.rows) + " rows but " + std::to_string(y.size()) + " labels";
  });
  require(expected_width < 0 || x.cols == expected_width, errc::shape_mismatch, [&] {
    return w + ": rows have width " + std::to_string(x.cols) + ", the probe expects " +
           std::to_string(expected_width);
  });
  for (std::int64_t i = 0; i < x.rows; ++i) {
    require(y[static_cast<std::size_t>(i)] == 0 || y[static_cast<std::size_t>(i)] == 1, errc::invalid_argument,
            [&] {
              return w + ": label " + std::to_string(y[static_cast<std::size_t>(i)]) + " at row " +
                     std::to_string(i) + " (expected 0 or 1)";
            });
    const float *row = x.row(i);
    for (std::int64_t j = 0; j < x.cols; ++j)
      require(std::isfinite(row[j]), errc::numeric, [&] {
        return w + ": value " + std::to_string(row[j]) + " at row " + std::to_string(i) + ", column " +
               std::to_string(j) + " is not finite";
      });
  }
}

// --- the solver's kernels ------------------------------------------------------------------------
// Independent accumulators in fixed-size blocks: compilers vectorize them without -ffast-math
// (one accumulator is a serial chain of dependent adds) and even under GCC's -O2 cost model,
// which only vectorizes loops of a known trip count without alias checks. Each kernel is
// compiled once more for AVX2 and AVX-512 and chosen at run time (last-bit rounding may then
// differ between CPUs; never between runs or thread counts).

template <class A, class B> DMS_ALWAYS_INLINE double dot8(const A *a, const B *b, std::size_t n) noexcept {
  double s[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (std::size_t k = 0; k < 8; ++k) s[k] += static_cast<double>(a[i + k]) * static_cast<double>(b[i + k]);
  double t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return t;
}

//! Float dot product in float (for the Gram matrix: see newton_system).
DMS_ALWAYS_INLINE float dot32f(const float *a, const float *b, std::size_t n) noexcept {
  float s[32] = {};
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (std::size_t k = 0; k < 32; ++k) s[k] += a[i + k] * b[i + k];
  float t = 0;
  for (float v : s) t += v;
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

//! out[i] = z_i . v for n rows of d floats (row-major).
DMS_ALWAYS_INLINE void rows_dot_body(const float *z, std::size_t n, std::size_t d, const double *v, double *out) noexcept {
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

//! Upper triangle of the Gram matrix g = z z^T of n rows of d floats (row-major).
DMS_ALWAYS_INLINE void gram_upper_body(const float *z, std::size_t n, std::size_t d, float *g) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i; j < n; ++j) g[i * n + j] = dot32f(z + i * d, z + j * d, d);
}

//! Cholesky factorization H = U^T U of a symmetric positive-definite H (D x D, row-major, only
//! the upper triangle read), U written over the upper triangle; false when H is not positive
//! definite. Right-looking in panels of 8 rows: each panel is factored, then updates the trailing
//! rows with 8 multiply-adds per element loaded and stored (no dot products, whose horizontal
//! sums would dominate at a few hundred rows; one row at a time would be bound by the cache).
DMS_ALWAYS_INLINE bool cholesky_factor_raw_body(double *h, std::size_t D) noexcept {
  constexpr std::size_t B = 8, W = 8; // panel rows (spelled out in `updated`), elements per inner block
  for (std::size_t k0 = 0; k0 < D; k0 += B) {
    const std::size_t k1 = std::min(D, k0 + B);
    for (std::size_t k = k0; k < k1; ++k) { // the panel: rows k0..k1-1, updated by the ones above
      double *uk = &h[k * D];
      for (std::size_t p = k0; p < k; ++p) {
        const double *up = &h[p * D];
        const double c = up[k];
        for (std::size_t j = k; j < D; ++j) uk[j] -= c * up[j];
      }
      if (!(uk[k] > 0)) return false;
      const double ukk = std::sqrt(uk[k]), inv = 1.0 / ukk;
      uk[k] = ukk;
      for (std::size_t j = k + 1; j < D; ++j) uk[j] *= inv;
    }
    const std::size_t nb = k1 - k0;
    double c[B] = {};
    const double *u[B];
    for (std::size_t p = 0; p < B; ++p) u[p] = &h[(k0 + (p < nb ? p : 0)) * D];
    for (std::size_t i = k1; i < D; ++i) { // trailing rows: h[i][j] -= sum_p U[p][i] U[p][j], j >= i
      double *hi = &h[i * D];
      for (std::size_t p = 0; p < B; ++p) c[p] = p < nb ? u[p][i] : 0.0; // a short last panel adds zeros
      // One expression per element, the 8 panel rows spelled out, a block of W elements read into
      // temporaries before any is stored: straight-line code the compiler vectorizes along j
      // without alias checks (hi and the panel rows share one buffer).
      auto updated = [&](std::size_t j) {
        return hi[j] - (((c[0] * u[0][j] + c[1] * u[1][j]) + (c[2] * u[2][j] + c[3] * u[3][j])) +
                        ((c[4] * u[4][j] + c[5] * u[5][j]) + (c[6] * u[6][j] + c[7] * u[7][j])));
      };
      std::size_t j = i;
      for (; j + W <= D; j += W) {
        double t[W];
        for (std::size_t q = 0; q < W; ++q) t[q] = updated(j + q);
        for (std::size_t q = 0; q < W; ++q) hi[j + q] = t[q];
      }
      for (; j < D; ++j) hi[j] = updated(j);
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
DMS_PROBE_KERNEL(void, rows_axpy, (const float *z, std::size_t n, std::size_t d, const double *w, double *y), (z, n, d, w, y))
DMS_PROBE_KERNEL(void, gram_upper, (const float *z, std::size_t n, std::size_t d, float *g), (z, n, d, g))
DMS_PROBE_KERNEL(bool, cholesky_factor_raw, (double *h, std::size_t D), (h, D))
#undef DMS_PROBE_KERNEL

inline bool cholesky_factor(std::span<double> h, std::size_t D) noexcept { return cholesky_factor_raw(h.data(), D); }

//! The scaled objective F(beta) = (1/S) sum sw_i logloss_i + ||w||^2 / (2 C S) on standardized
//! rows z (n x d, row-major) and its derivatives; beta = (w_0 .. w_{d-1}, b).
class logistic_objective {
public:
  logistic_objective(const std::vector<float> &z, std::span<const int> y, std::vector<double> sw, std::size_t d,
                     double C)
      : z_(z), y_(y), sw_(std::move(sw)), n_(y.size()), d_(d), margin_(y.size()), residual_(y.size()) {
    double s = 0;
    for (double v : sw_) s += v;
    inv_s_ = 1.0 / s;
    l2_ = 1.0 / (C * s);
  }
  std::size_t dim() const noexcept { return d_ + 1; }

  //! Fills margin_ = z beta and returns F(beta).
  double value(std::span<const double> beta) {
    rows_dot(z_.data(), n_, d_, beta.data(), margin_.data());
    double f = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      const double m = margin_[i] += beta[d_];
      f += sw_[i] * (softplus(m) - (y_[i] == 1 ? m : 0.0));
    }
    double ww = 0;
    for (std::size_t j = 0; j < d_; ++j) ww += beta[j] * beta[j];
    return f * inv_s_ + 0.5 * l2_ * ww;
  }
  //! Gradient at the beta of the last value() call.
  void gradient(std::span<const double> beta, std::span<double> g) {
    std::fill(g.begin(), g.end(), 0.0);
    for (std::size_t i = 0; i < n_; ++i) {
      residual_[i] = sw_[i] * (sigmoid(margin_[i]) - (y_[i] == 1 ? 1.0 : 0.0)) * inv_s_;
      g[d_] += residual_[i];
    }
    rows_axpy(z_.data(), n_, d_, residual_.data(), g.data());
    for (std::size_t j = 0; j < d_; ++j) g[j] += l2_ * beta[j];
  }
  std::size_t n_rows() const noexcept { return n_; }
  std::size_t n_features() const noexcept { return d_; }
  const float *row(std::size_t i) const noexcept { return &z_[i * d_]; }
  double l2() const noexcept { return l2_; }
  //! Row i's weight in the Hessian, sw_i p_i (1 - p_i) / S, at the beta of the last value() call.
  double curvature(std::size_t i) const noexcept {
    const double p = sigmoid(margin_[i]);
    return sw_[i] * p * (1 - p) * inv_s_;
  }

private:
  const std::vector<float> &z_;
  std::span<const int> y_;
  std::vector<double> sw_;
  std::size_t n_, d_;
  double inv_s_ = 1, l2_ = 0;
  std::vector<double> margin_, residual_;
};

inline double max_abs(std::span<const double> v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

//! rhs <- (U^T U)^{-1} rhs for the factor U of cholesky_factor.
inline void cholesky_substitute(std::span<const double> u, std::size_t D, std::span<double> rhs) {
  for (std::size_t i = 0; i < D; ++i) { // U^T y = rhs, by rows of U
    const double *ui = &u[i * D];
    rhs[i] /= ui[i];
    for (std::size_t j = i + 1; j < D; ++j) rhs[j] -= ui[j] * rhs[i];
  }
  for (std::size_t i = D; i-- > 0;) // U x = y
    rhs[i] = (rhs[i] - dot8(&u[i * D + i + 1], &rhs[i + 1], D - i - 1)) / u[i * D + i];
}

//! The Newton direction -H^{-1} g of a logistic_objective, solved in whichever space is smaller.
//! With at least as many rows as features: the (d + 1) x (d + 1) Hessian. With fewer rows, as for
//! probes fitted on a few hundred activations of a wide model, an n x n system instead (the
//! Woodbury identity, the intercept eliminated by its Schur complement): with
//! M = Z^T C Z + lambda I, u = Z^T c, s = sum c (C = diag(c), c_i = curvature(i)),
//!   H = [[M, u], [u^T, s]],   M^{-1} v = (v - Z^T R K^{-1} R Z v) / lambda,
//!   K = lambda I + R G R,  R = diag(sqrt(c)),  G = Z Z^T (computed once),
//! then q = (g_b - u.M^{-1}g_w) / (s - u.M^{-1}u) and p = M^{-1}(g_w - u q). That costs n^3 / 6
//! instead of (d^3 / 6 + n d^2 / 2) per step. G is accumulated in float (relative error ~1e-6):
//! Newton's convergence only needs an approximate Hessian, the gradient stays exact, and the
//! line search guards every step.
class newton_system {
public:
  explicit newton_system(const logistic_objective &obj) : obj_(obj) {}

  bool dual() const noexcept { return obj_.n_rows() < obj_.dim(); }

  //! step = -(H + ridge I)^{-1} g at the objective's current beta; false if not positive definite.
  bool solve(std::span<const double> g, std::span<double> step, double ridge) {
    return dual() ? solve_dual(g, step, ridge) : solve_primal(g, step, ridge);
  }

private:
  bool solve_primal(std::span<const double> g, std::span<double> step, double ridge) {
    const std::size_t n = obj_.n_rows(), d = obj_.n_features(), D = d + 1;
    // Upper triangle of sum_i c_i a_i a_i^T, a_i = (z_i, 1), row by row over contiguous suffixes.
    h_.assign(D * D, 0.0);
    row_.resize(D);
    for (std::size_t i = 0; i < n; ++i) {
      const double c = obj_.curvature(i);
      if (c == 0) continue;
      const float *zi = obj_.row(i);
      for (std::size_t j = 0; j < d; ++j) row_[j] = zi[j];
      row_[d] = 1.0;
      for (std::size_t a = 0; a < D; ++a) {
        const double ca = c * row_[a];
        double *ha = &h_[a * D];
        for (std::size_t b = a; b < D; ++b) ha[b] += ca * row_[b];
      }
    }
    for (std::size_t j = 0; j < D; ++j) h_[j * D + j] += (j < d ? obj_.l2() : 0.0) + ridge;
    if (!cholesky_factor(h_, D)) return false;
    for (std::size_t j = 0; j < D; ++j) step[j] = -g[j];
    cholesky_substitute(h_, D, step);
    return true;
  }

  bool solve_dual(std::span<const double> g, std::span<double> step, double ridge) {
    const std::size_t n = obj_.n_rows(), d = obj_.n_features();
    if (gram_.empty()) {
      gram_.resize(n * n);
      gram_upper(obj_.row(0), n, d, gram_.data());
    }
    const double lambda = obj_.l2() + ridge;
    r_.resize(n);
    c_.resize(n);
    double s = ridge;
    for (std::size_t i = 0; i < n; ++i) {
      c_[i] = obj_.curvature(i);
      r_[i] = std::sqrt(c_[i]);
      s += c_[i];
    }
    u_.assign(d, 0.0);
    rows_axpy(obj_.row(0), n, d, c_.data(), u_.data());
    h_.resize(n * n);
    for (std::size_t i = 0; i < n; ++i) {
      h_[i * n + i] = lambda + r_[i] * r_[i] * gram_[i * n + i];
      for (std::size_t j = i + 1; j < n; ++j) h_[i * n + j] = r_[i] * r_[j] * gram_[i * n + j];
    }
    if (!(lambda > 0) || !cholesky_factor(h_, n)) return false;
    a_.assign(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(d));
    apply_m_inverse(a_, lambda);
    b_ = u_;
    apply_m_inverse(b_, lambda);
    const double den = s - dot8(u_.data(), b_.data(), d);
    if (!(den > 0)) return false;
    const double q = (g[d] - dot8(u_.data(), a_.data(), d)) / den;
    for (std::size_t j = 0; j < d; ++j) step[j] = -(a_[j] - b_[j] * q);
    step[d] = -q;
    return true;
  }

  //! v <- M^{-1} v = (v - Z^T R K^{-1} R Z v) / lambda, with K's factor in h_.
  void apply_m_inverse(std::vector<double> &v, double lambda) {
    const std::size_t n = obj_.n_rows(), d = obj_.n_features();
    t_.resize(n);
    rows_dot(obj_.row(0), n, d, v.data(), t_.data());
    for (std::size_t i = 0; i < n; ++i) t_[i] *= r_[i];
    cholesky_substitute(h_, n, t_);
    for (std::size_t i = 0; i < n; ++i) t_[i] *= -r_[i];
    rows_axpy(obj_.row(0), n, d, t_.data(), v.data());
    for (double &x : v) x /= lambda;
  }

  const logistic_objective &obj_;
  std::vector<float> gram_; //!< upper triangle of Z Z^T (dual only)
  std::vector<double> h_, row_, r_, c_, u_, a_, b_, t_;
};

//! Backtracking (Armijo, c1 = 1e-4) along `dir` from beta with value f and slope g.dir < 0.
//! On return beta holds the accepted point and the objective's cache matches it; returns the new
//! value, or NaN when no step of size >= 2^-40 decreases f (converged to rounding).
inline double line_search(logistic_objective &obj, std::vector<double> &beta, std::span<const double> dir,
                          double f, double slope, double t0, std::vector<double> &trial) {
  double t = t0;
  for (int k = 0; k < 60; ++k, t *= 0.5) {
    for (std::size_t j = 0; j < beta.size(); ++j) trial[j] = beta[j] + t * dir[j];
    const double ft = obj.value(trial);
    if (std::isfinite(ft) && ft <= f + 1e-4 * t * slope) {
      beta.swap(trial);
      return ft;
    }
  }
  obj.value(beta); // restore the cache
  return std::numeric_limits<double>::quiet_NaN();
}

inline fit_report newton_fit(logistic_objective &obj, std::vector<double> &beta, double tol, int max_iter) {
  const std::size_t D = obj.dim();
  std::vector<double> g(D), step(D), trial(D);
  newton_system system(obj);
  fit_report rep{logistic_solver::newton};
  double f = obj.value(beta);
  for (;;) {
    obj.gradient(beta, g);
    rep.gradient_max = max_abs(g);
    rep.objective = f;
    if (rep.gradient_max <= tol) {
      rep.converged = true;
      break;
    }
    if (rep.iterations >= max_iter) break;
    // The Hessian is positive definite in exact arithmetic; if rounding says otherwise (p(1-p)
    // underflowing on saturated rows), a tiny ridge restores it.
    bool ok = false;
    for (double ridge = 0; !ok && ridge <= 1e-2; ridge = ridge == 0 ? 1e-12 : ridge * 100) ok = system.solve(g, step, ridge);
    require(ok, errc::numeric, [] { return std::string("fit_logistic: the Hessian is not positive definite"); });
    double slope = 0;
    for (std::size_t j = 0; j < D; ++j) slope += g[j] * step[j];
    ++rep.iterations;
    const double fn = line_search(obj, beta, step, f, slope, 1.0, trial);
    if (std::isnan(fn)) { // no decrease possible: at the minimum to rounding
      obj.gradient(beta, g);
      rep.gradient_max = max_abs(g);
      rep.converged = rep.gradient_max <= tol;
      break;
    }
    f = fn;
  }
  return rep;
}

inline fit_report lbfgs_fit(logistic_objective &obj, std::vector<double> &beta, double tol, int max_iter,
                            int memory) {
  const std::size_t D = obj.dim();
  const std::size_t m = static_cast<std::size_t>(std::max(1, memory));
  std::vector<std::vector<double>> s(m, std::vector<double>(D)), yv(m, std::vector<double>(D));
  std::vector<double> rho(m), alpha(m), g(D), g_new(D), dir(D), trial(D), beta_old(D);
  std::size_t stored = 0, head = 0; // ring buffer of the last `stored` pairs; head = next slot
  fit_report rep{logistic_solver::lbfgs};
  double f = obj.value(beta);
  obj.gradient(beta, g);
  for (;;) {
    rep.gradient_max = max_abs(g);
    rep.objective = f;
    if (rep.gradient_max <= tol) {
      rep.converged = true;
      break;
    }
    if (rep.iterations >= max_iter) break;
    // Two-loop recursion: dir = -H g.
    for (std::size_t j = 0; j < D; ++j) dir[j] = -g[j];
    for (std::size_t k = 0; k < stored; ++k) {
      const std::size_t i = (head + m - 1 - k) % m;
      double a = 0;
      for (std::size_t j = 0; j < D; ++j) a += s[i][j] * dir[j];
      alpha[i] = rho[i] * a;
      for (std::size_t j = 0; j < D; ++j) dir[j] -= alpha[i] * yv[i][j];
    }
    if (stored > 0) {
      const std::size_t i = (head + m - 1) % m;
      double sy = 0, yy = 0;
      for (std::size_t j = 0; j < D; ++j) {
        sy += s[i][j] * yv[i][j];
        yy += yv[i][j] * yv[i][j];
      }
      for (std::size_t j = 0; j < D; ++j) dir[j] *= sy / yy;
    }
    for (std::size_t k = stored; k-- > 0;) {
      const std::size_t i = (head + m - 1 - k) % m;
      double b = 0;
      for (std::size_t j = 0; j < D; ++j) b += yv[i][j] * dir[j];
      b *= rho[i];
      for (std::size_t j = 0; j < D; ++j) dir[j] += s[i][j] * (alpha[i] - b);
    }
    double slope = 0;
    for (std::size_t j = 0; j < D; ++j) slope += g[j] * dir[j];
    if (!(slope < 0)) { // not a descent direction (rounding): restart from steepest descent
      stored = 0;
      for (std::size_t j = 0; j < D; ++j) dir[j] = -g[j];
      slope = 0;
      for (std::size_t j = 0; j < D; ++j) slope -= g[j] * g[j];
    }
    double gn = 0;
    for (double v : g) gn += v * v;
    const double t0 = stored == 0 ? std::min(1.0, 1.0 / std::sqrt(gn)) : 1.0;
    beta_old = beta;
    ++rep.iterations;
    const double fn = line_search(obj, beta, dir, f, slope, t0, trial);
    if (std::isnan(fn)) {
      rep.converged = rep.gradient_max <= tol;
      break;
    }
    f = fn;
    obj.gradient(beta, g_new);
    double sy = 0;
    for (std::size_t j = 0; j < D; ++j) {
      s[head][j] = beta[j] - beta_old[j];
      yv[head][j] = g_new[j] - g[j];
      sy += s[head][j] * yv[head][j];
    }
    if (sy > 1e-16) { // keep only pairs with positive curvature
      rho[head] = 1.0 / sy;
      head = (head + 1) % m;
      stored = std::min(stored + 1, m);
    }
    g.swap(g_new);
  }
  return rep;
}

} // namespace detail

//! Fits a logistic-regression probe to rows `x` (n x d) with labels `y` (0 or 1). Throws
//! dms::error on empty data, a label count that differs from the row count, labels other than 0/1,
//! a single class, a non-finite value (naming its row and column) or C <= 0.
inline logistic_fit fit_logistic(matrix_view<const float> x, std::span<const int> y,
                                 const logistic_options &opt = {}) {
  detail::check_labelled_rows(x, y, "fit_logistic");
  require(std::isfinite(opt.C) && opt.C > 0, errc::invalid_argument,
          [&] { return "fit_logistic: C = " + std::to_string(opt.C) + " (expected finite and > 0)"; });
  require(opt.tol >= 0 && opt.max_iter >= 0, errc::invalid_argument,
          [] { return std::string("fit_logistic: tol and max_iter must be >= 0"); });
  const auto n = static_cast<std::size_t>(x.rows), d = static_cast<std::size_t>(x.cols);
  std::size_t n_pos = 0;
  for (int v : y) n_pos += v == 1;
  require(n_pos > 0 && n_pos < n, errc::invalid_argument, [&] {
    return "fit_logistic: needs both classes, got " + std::to_string(n_pos) + " rows of class 1 and " +
           std::to_string(n - n_pos) + " of class 0";
  });

  // Standardization (two passes in double; scikit-learn's test for a constant feature).
  std::vector<double> mean(d, 0.0), scale(d, 1.0);
  if (opt.standardize) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j) mean[j] += x(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j));
    for (auto &m : mean) m /= static_cast<double>(n);
    std::vector<double> var(d, 0.0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j) {
        const double c = x(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)) - mean[j];
        var[j] += c * c;
      }
    constexpr double eps = std::numeric_limits<double>::epsilon();
    const double nd = static_cast<double>(n);
    for (std::size_t j = 0; j < d; ++j) {
      var[j] /= nd;
      const double bound = nd * eps * var[j] + (nd * mean[j] * eps) * (nd * mean[j] * eps);
      scale[j] = var[j] <= bound ? 1.0 : std::sqrt(var[j]);
    }
  }
  std::vector<float> z(n * d);
  for (std::size_t i = 0; i < n; ++i) {
    const float *row = x.row(static_cast<std::int64_t>(i));
    for (std::size_t j = 0; j < d; ++j) z[i * d + j] = static_cast<float>((row[j] - mean[j]) / scale[j]);
  }

  std::vector<double> sw(n, 1.0);
  if (opt.class_weight == class_weight_mode::balanced) {
    const double w1 = static_cast<double>(n) / (2.0 * static_cast<double>(n_pos));
    const double w0 = static_cast<double>(n) / (2.0 * static_cast<double>(n - n_pos));
    for (std::size_t i = 0; i < n; ++i) sw[i] = y[i] == 1 ? w1 : w0;
  }

  detail::logistic_objective obj(z, y, std::move(sw), d, opt.C);
  std::vector<double> beta(d + 1, 0.0);
  const bool newton = opt.solver == logistic_solver::newton ||
                      (opt.solver == logistic_solver::automatic && d <= 2048);
  fit_report rep = newton ? detail::newton_fit(obj, beta, opt.tol, opt.max_iter ? opt.max_iter : 100)
                          : detail::lbfgs_fit(obj, beta, opt.tol, opt.max_iter ? opt.max_iter : 2000,
                                              opt.lbfgs_memory);

  std::vector<float> w(d), mf(d), sf(d);
  for (std::size_t j = 0; j < d; ++j) {
    w[j] = static_cast<float>(beta[j]);
    mf[j] = static_cast<float>(mean[j]);
    sf[j] = static_cast<float>(scale[j]);
  }
  probe_info info{opt.at, opt.C, opt.class_weight, opt.standardize};
  return {logistic_probe(std::move(w), static_cast<float>(beta[d]), std::move(mf), std::move(sf), info), rep};
}

//! Accuracy, ROC-AUC and log-loss of `p` on labelled rows (both classes needed for the AUC).
template <probe P>
probe_metrics evaluate(const P &p, matrix_view<const float> x, std::span<const int> y) {
  detail::check_labelled_rows(x, y, "evaluate", static_cast<std::int64_t>(p.n_features()));
  std::vector<float> scores(static_cast<std::size_t>(x.rows));
  score_rows(p, x, scores);
  return evaluate_scores(scores, y);
}

DMS_NAMESPACE_END
