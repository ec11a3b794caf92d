// dms/probe/detail/row_space_newton.hpp: Newton's method for the logistic probe when there are
// fewer training rows than features (a few hundred activations of a wide model), carried out in
// the span of the rows.
//
// The penalty is on w only, so the minimizer's w is a combination of the standardized rows,
// w = Z^T alpha (the representer theorem), and so is every Newton step taken from w = 0: the
// gradient is Z^T gamma + (g_b), gamma = r + lambda alpha (r_i = sw_i (p_i - y_i) / S), and the
// Woodbury form of the inverse Hessian maps the span of the rows onto itself. With the Gram matrix
// G = Z Z^T computed once (exactly, in double), every quantity of a step is then an n-vector:
//   margins m = G alpha + b,   ||w||^2 = alpha^T G alpha,   g_w . Z^T v = gamma^T G v,
// and, with C = diag(c), c_i = sw_i p_i (1 - p_i) / S, R = C^(1/2), K = lambda I + R G R and
// s = sum c, the step solves the Hessian system [[M, u], [u^T, s]] (M = Z^T C Z + lambda I,
// u = Z^T c) through
//   M^{-1} Z^T x = Z^T (x - R K^{-1} R G x) / lambda,
//   q = (g_b - c^T G a) / (s - c^T G a_c),   step = -(a - a_c q, q),
// where a, a_c are the coefficients of M^{-1} g_w and M^{-1} u. A step costs one n x n Cholesky
// (n^3 / 6) and three products with G (n^2 each), never a pass over the d-wide rows; the line
// search moves the margins along G step in O(n) per trial. Only the convergence test reads the
// rows again, and only once the cheap bound ||g_w||_2 = sqrt(gamma^T G gamma) says the largest
// gradient component may be below tol.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/probe/detail/logistic_objective.hpp"
#include "dms/probe/detail/solver_kernels.hpp"

DMS_NAMESPACE_BEGIN
namespace detail {

class row_space_newton {
public:
  //! Computes G for `obj`'s rows (n x n doubles; the rows are read once more in double). With a
  //! pool, G, the products with it and the Cholesky updates run on it (same result without).
  explicit row_space_newton(const logistic_objective &obj, thread_pool *pool = nullptr)
      : obj_(obj), pool_(pool), n_(obj.n_rows()), d_(obj.n_features()), g_(n_ * n_), ld_((n_ + 15) / 16 * 16) {
    // The rows in double for the Gram kernel. A buffer kept per thread: a fresh megabyte per fit
    // was page-faulted and zero-filled each time (an eighth of a fit on SmolLM2's 233 x 576 rows,
    // and a layer sweep fits 30 of them in a row).
    thread_local std::vector<double> z;
    z.resize(n_ * d_);
    const float *rows = obj.row(0);
    for (std::size_t k = 0; k < n_ * d_; ++k) z[k] = rows[k];
    gram(z.data(), n_, d_, g_.data(), pool_);
  }

  //! Minimizes from w = 0, b = 0 until the largest gradient component is <= tol, no step
  //! decreases the objective, or after max_iter steps; writes (w, b) into beta (size d + 1) and
  //! returns the number of steps. The caller evaluates the objective and its gradient at beta.
  int run(std::vector<double> &beta, double tol, int max_iter) {
    int iterations = 0;
    const std::size_t n = n_;
    alpha_.assign(n, 0.0);
    galpha_.assign(n, 0.0);
    b_ = 0;
    double f = value(galpha_, b_, 0.0);
    std::vector<double> gamma(n), ggamma(n), c(n), gc(n), rt(n), a(n), ac(n), p(n), gp(n), dm(n);
    std::vector<double> gw(d_);
    for (;;) {
      double gb = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const double pi = sigmoid(m_[i]);
        const double r = obj_.row_weight(i) * (pi - (obj_.positive(i) ? 1.0 : 0.0));
        gb += r;
        gamma[i] = r + obj_.l2() * alpha_[i];
        c[i] = obj_.row_weight(i) * pi * (1 - pi);
      }
      product2(gamma, c, ggamma, gc); // G c is only needed for a step: computed here, G read once
      const double norm2 = std::sqrt(std::max(0.0, dot(gamma, ggamma)));
      double gmax = std::max(std::abs(gb), norm2); // bounds the largest component from above
      if (norm2 > tol && norm2 <= tol * std::sqrt(static_cast<double>(d_))) { // maybe: look
        std::fill(gw.begin(), gw.end(), 0.0);
        rows_axpy(obj_.row(0), n, d_, gamma.data(), gw.data());
        gmax = std::max(std::abs(gb), max_abs(gw));
      }
      if (gmax <= tol || iterations >= max_iter) break;

      // The step; if rounding makes K or the Schur complement non-positive (p (1 - p)
      // underflowing on saturated rows), a tiny ridge restores them.
      bool ok = false;
      for (double ridge = 0; !ok && ridge <= 1e-2; ridge = ridge == 0 ? 1e-12 : ridge * 100) {
        const double lambda = obj_.l2() + ridge;
        double s = ridge;
        for (std::size_t i = 0; i < n; ++i) {
          rt[i] = std::sqrt(c[i]);
          s += c[i];
        }
        k_.assign(n * ld_, 0.0f);
        for (std::size_t i = 0; i < n; ++i) {
          const double *gi = &g_[i * n];
          float *ki = &k_[i * ld_];
          ki[i] = static_cast<float>(lambda + c[i] * gi[i]);
          for (std::size_t j = i + 1; j < n; ++j) ki[j] = static_cast<float>(rt[i] * rt[j] * gi[j]);
        }
        if (!(lambda > 0) || !cholesky_factor(k_.data(), n, ld_, pool_)) continue;
        m_inverse({gamma, c}, {ggamma, gc}, rt, lambda, {a, ac}, /*refine=*/gmax < 1e-3);
        const double den = s - dot(gc, ac);
        if (!(den > 0)) continue;
        const double q = (gb - dot(gc, a)) / den;
        for (std::size_t i = 0; i < n; ++i) p[i] = -(a[i] - ac[i] * q);
        pb_ = -q;
        ok = true;
      }
      require(ok, errc::numeric, [] { return std::string("fit_logistic: the Hessian is not positive definite"); });
      product(p, gp);
      const double slope = dot(gamma, gp) + gb * pb_; // g . step
      ++iterations;
      // Backtracking (Armijo, c1 = 1e-4) along the step, the margins moving by t (G p + pb).
      for (std::size_t i = 0; i < n; ++i) dm[i] = gp[i] + pb_;
      const double aga = dot(alpha_, galpha_), pga = dot(p, galpha_), pgp = dot(p, gp);
      double step = 1, fn = std::numeric_limits<double>::quiet_NaN();
      for (int k = 0; k < 60; ++k, step *= 0.5) {
        const double ft = loss(dm, step) + 0.5 * obj_.l2() * (aga + step * (2 * pga + step * pgp));
        if (std::isfinite(ft) && ft <= f + 1e-4 * step * slope) {
          fn = ft;
          break;
        }
      }
      if (std::isnan(fn)) break; // no decrease possible: at the minimum to rounding
      if (step == 1) { // a full step that decreased F: go to F's minimum along it
        const double t = minimize_along(dm, pga, pgp);
        const double ft = loss(dm, t) + 0.5 * obj_.l2() * (aga + t * (2 * pga + t * pgp));
        if (std::isfinite(ft) && ft < fn) fn = ft, step = t;
      }
      for (std::size_t i = 0; i < n; ++i) alpha_[i] += step * p[i];
      b_ += step * pb_;
      product(alpha_, galpha_); // afresh, not accumulated
      f = value(galpha_, b_, dot(alpha_, galpha_));
    }
    std::fill(beta.begin(), beta.end(), 0.0);
    rows_axpy(obj_.row(0), n, d_, alpha_.data(), beta.data());
    beta[d_] = b_;
    return iterations;
  }

private:
  static double dot(std::span<const double> a, std::span<const double> b) noexcept {
    return dot8(a.data(), b.data(), a.size());
  }
  //! out = G v.
  void product(std::span<const double> v, std::span<double> out) const noexcept {
    symmetric_product(g_.data(), n_, v.data(), out.data(), pool_);
  }
  //! out_a = G a, out_b = G b.
  void product2(std::span<const double> a, std::span<const double> b, std::span<double> out_a,
                std::span<double> out_b) const noexcept {
    symmetric_products(g_.data(), n_, a.data(), b.data(), out_a.data(), out_b.data(), pool_);
  }
  //! F at margins G alpha + b, given alpha^T G alpha; sets m_.
  double value(std::span<const double> galpha, double b, double aga) {
    m_.resize(n_);
    for (std::size_t i = 0; i < n_; ++i) m_[i] = galpha[i] + b;
    return loss(std::span<const double>(), 0) + 0.5 * obj_.l2() * aga;
  }
  //! The weighted log-loss at margins m_ + step * dm.
  double loss(std::span<const double> dm, double step) const noexcept {
    double f = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      const double m = dm.empty() ? m_[i] : m_[i] + step * dm[i];
      f += obj_.row_weight(i) * (softplus(m) - (obj_.positive(i) ? m : 0.0));
    }
    return f;
  }
  //! The minimizer t of F along a step whose margins move by dm (penalty: alpha^T G p = pga,
  //! p^T G p = pgp), by Newton's method in one dimension from t = 1 (F is convex in t; each
  //! iterate kept within [t / 2, 4 t]), a few O(n) passes. Far from the minimum the best point
  //! along a Newton step is often 1.5 to 3 steps out: one Newton step fewer on SmolLM2's rows
  //! than doubling the step while F falls (8 -> 7 to reach 1e-8, 5 -> 4 to reach 1e-4).
  double minimize_along(std::span<const double> dm, double pga, double pgp) const noexcept {
    double t = 1;
    for (int k = 0; k < 6; ++k) {
      double d1 = obj_.l2() * (pga + t * pgp), d2 = obj_.l2() * pgp; // F'(t), F''(t)
      for (std::size_t i = 0; i < n_; ++i) {
        const double p = sigmoid(m_[i] + t * dm[i]);
        d1 += obj_.row_weight(i) * (p - (obj_.positive(i) ? 1.0 : 0.0)) * dm[i];
        d2 += obj_.row_weight(i) * p * (1 - p) * dm[i] * dm[i];
      }
      if (!(d2 > 0)) break;
      const double next = std::clamp(t - d1 / d2, 0.5 * t, 4 * t);
      const bool done = std::abs(next - t) <= 1e-3 * t;
      t = next;
      if (done) break;
    }
    return t;
  }

  //! out[k] = (x[k] - R K^{-1} R G x[k]) / lambda, the coefficients of M^{-1} Z^T x[k], for two
  //! right-hand sides; gx[k] = G x[k]. K's factor is in float (half the work of double; K is only
  //! as well conditioned as lambda allows, so that solve alone may be off by ~1e-3); one step of
  //! iterative refinement against K in double, K y = lambda y + R G R y, brings it to ~1e-6, and
  //! Newton's steps stay Newton's. Far from the minimum (largest gradient component >= 1e-3) the
  //! step only has to go downhill, the line search guards it, and the refinement is skipped.
  void m_inverse(const std::span<const double> (&x)[2], const std::span<const double> (&gx)[2],
                 std::span<const double> rt, double lambda, const std::span<double> (&out)[2], bool refine) {
    const std::size_t n = n_;
    for (std::size_t k = 0; k < 2; ++k) {
      y_[k].resize(n), e_[k].resize(n);
      for (std::size_t i = 0; i < n; ++i) y_[k][i] = e_[k][i] = rt[i] * gx[k][i];
    }
    cholesky_substitute(k_.data(), n, ld_, {y_[0], y_[1]});
    if (!refine) {
      for (std::size_t k = 0; k < 2; ++k)
        for (std::size_t i = 0; i < n; ++i) out[k][i] = (x[k][i] - rt[i] * y_[k][i]) / lambda;
      return;
    }
    for (std::size_t k = 0; k < 2; ++k) { // e = R G x - K y
      ry_[k].resize(n), gry_[k].resize(n);
      for (std::size_t i = 0; i < n; ++i) ry_[k][i] = rt[i] * y_[k][i];
    }
    product2(ry_[0], ry_[1], gry_[0], gry_[1]);
    for (std::size_t k = 0; k < 2; ++k)
      for (std::size_t i = 0; i < n; ++i) e_[k][i] -= lambda * y_[k][i] + rt[i] * gry_[k][i];
    cholesky_substitute(k_.data(), n, ld_, {e_[0], e_[1]});
    for (std::size_t k = 0; k < 2; ++k)
      for (std::size_t i = 0; i < n; ++i) out[k][i] = (x[k][i] - rt[i] * (y_[k][i] + e_[k][i])) / lambda;
  }

  const logistic_objective &obj_;
  thread_pool *pool_;
  std::size_t n_, d_;
  std::vector<double> g_; //!< G = Z Z^T, both triangles
  std::size_t ld_;        //!< K's row stride: n rounded up to 16 floats (whole vectors)
  std::vector<float> k_;  //!< K's Cholesky factor (upper triangle)
  std::vector<double> alpha_, galpha_, m_, y_[2], e_[2], ry_[2], gry_[2];
  double b_ = 0, pb_ = 0;
};

} // namespace detail
DMS_NAMESPACE_END
