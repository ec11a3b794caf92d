// dms/probe/detail/logistic_objective.hpp: the scaled objective of the logistic probe's fit on
// standardized rows, its gradient and curvatures, and the backtracking line search the solvers
// of dms/probe/logistic.hpp share.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/probe/detail/solver_kernels.hpp"

DMS_NAMESPACE_BEGIN
namespace detail {

inline double sigmoid(double z) noexcept {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}
//! log(1 + exp(z)) without overflow.
inline double softplus(double z) noexcept { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

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
  //! Row i's weight in the scaled loss, sw_i / S.
  double row_weight(std::size_t i) const noexcept { return sw_[i] * inv_s_; }
  bool positive(std::size_t i) const noexcept { return y_[i] == 1; }

private:
  const std::vector<float> &z_;
  std::span<const int> y_;
  std::vector<double> sw_;
  std::size_t n_, d_;
  double inv_s_ = 1, l2_ = 0;
  std::vector<double> margin_, residual_;
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

} // namespace detail
DMS_NAMESPACE_END
