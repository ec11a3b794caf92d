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
// - newton: IRLS with the exact Hessian, Cholesky, and a backtracking line search (extended
//   past a full step while that keeps decreasing F); converges in a handful of iterations. With
//   n >= d + 1 rows it costs n d^2 / 2 per iteration and (d+1)^2 doubles, fine up to d ~ 2048
//   (the automatic choice); with fewer rows than features, the usual shape of a probe on a wide
//   model, it runs in the span of the rows (detail/row_space_newton.hpp): n^2 d / 2 once for the
//   Gram matrix, then n^3 / 6 per iteration, whatever d.
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
#include "dms/probe/detail/logistic_objective.hpp"
#include "dms/probe/detail/row_space_newton.hpp"
#include "dms/probe/detail/solver_kernels.hpp"
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
  //! Threads for the row-space Newton solver (fewer rows than features): its Gram matrix,
  //! products and Cholesky updates split by rows; the fit is the same bits with or without.
  thread_pool *pool = nullptr;
};

//! How a fit went.
struct fit_report {
  logistic_solver solver = logistic_solver::newton; //!< the one that ran
  int iterations = 0;       //!< Newton steps or L-BFGS iterations taken
  bool converged = false;   //!< gradient_max <= tol was reached
  double gradient_max = 0;  //!< largest |gradient component| at the end (scaled objective)
  double objective = 0;     //!< scaled objective at the end
};


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
    // v * 0 is 0 when v is finite and NaN otherwise: sixteen independent sums of them vectorize
    // (a single &= chain did not), and the element is named only on failure.
    float zero[16] = {};
    std::int64_t k = 0;
    for (; k + 16 <= x.cols; k += 16)
      for (std::int64_t q = 0; q < 16; ++q) zero[q] += row[k + q] * 0.0f;
    for (; k < x.cols; ++k) zero[0] += row[k] * 0.0f;
    float all = 0;
    for (float v : zero) all += v;
    if (all == 0.0f) continue;
    for (std::int64_t j = 0; j < x.cols; ++j)
      require(std::isfinite(row[j]), errc::numeric, [&] {
        return w + ": value " + std::to_string(row[j]) + " at row " + std::to_string(i) + ", column " +
               std::to_string(j) + " is not finite";
      });
  }
}


//! The Newton direction -(H + ridge I)^{-1} g of a logistic_objective through its (d + 1) x (d + 1)
//! Hessian, for at least as many rows as features (fewer: row_space_newton); false if not positive
//! definite.
inline bool hessian_step(const logistic_objective &obj, std::span<const double> g, std::span<double> step,
                         double ridge, std::vector<double> &h, std::vector<double> &row) {
  const std::size_t n = obj.n_rows(), d = obj.n_features(), D = d + 1;
  // Upper triangle of sum_i c_i a_i a_i^T, a_i = (z_i, 1), row by row over contiguous suffixes.
  h.assign(D * D, 0.0);
  row.resize(D);
  for (std::size_t i = 0; i < n; ++i) {
    const double c = obj.curvature(i);
    if (c == 0) continue;
    const float *zi = obj.row(i);
    for (std::size_t j = 0; j < d; ++j) row[j] = zi[j];
    row[d] = 1.0;
    for (std::size_t a = 0; a < D; ++a) {
      const double ca = c * row[a];
      double *ha = &h[a * D];
      for (std::size_t b = a; b < D; ++b) ha[b] += ca * row[b];
    }
  }
  for (std::size_t j = 0; j < D; ++j) h[j * D + j] += (j < d ? obj.l2() : 0.0) + ridge;
  if (!cholesky_factor(h.data(), D, D)) return false;
  for (std::size_t j = 0; j < D; ++j) step[j] = -g[j];
  cholesky_substitute(h.data(), D, D, {step});
  return true;
}

//! Newton's method from beta = 0 (IRLS with the exact Hessian and a backtracking line search):
//! in the span of the rows when there are fewer rows than features, else on the Hessian.
inline fit_report newton_fit(logistic_objective &obj, std::vector<double> &beta, double tol, int max_iter,
                             thread_pool *pool) {
  const std::size_t D = obj.dim();
  std::vector<double> g(D), step(D), trial(D), h, row;
  fit_report rep{logistic_solver::newton};
  if (obj.n_rows() < D) { // the report comes from the exact objective at the result
    rep.iterations = row_space_newton(obj, pool).run(beta, tol, max_iter);
    rep.objective = obj.value(beta);
    obj.gradient(beta, g);
    rep.gradient_max = max_abs(g);
    rep.converged = rep.gradient_max <= tol;
    return rep;
  }
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
    for (double ridge = 0; !ok && ridge <= 1e-2; ridge = ridge == 0 ? 1e-12 : ridge * 100)
      ok = hessian_step(obj, g, step, ridge, h, row);
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
    for (std::size_t i = 0; i < n; ++i) {
      const float *row = x.row(static_cast<std::int64_t>(i));
      for (std::size_t j = 0; j < d; ++j) mean[j] += row[j];
    }
    for (auto &m : mean) m /= static_cast<double>(n);
    std::vector<double> var(d, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      const float *row = x.row(static_cast<std::int64_t>(i));
      for (std::size_t j = 0; j < d; ++j) {
        const double c = row[j] - mean[j];
        var[j] += c * c;
      }
    }
    constexpr double eps = std::numeric_limits<double>::epsilon();
    const double nd = static_cast<double>(n);
    for (std::size_t j = 0; j < d; ++j) {
      var[j] /= nd;
      const double bound = nd * eps * var[j] + (nd * mean[j] * eps) * (nd * mean[j] * eps);
      scale[j] = var[j] <= bound ? 1.0 : std::sqrt(var[j]);
    }
  }
  std::vector<double> inv_scale(d);
  for (std::size_t j = 0; j < d; ++j) inv_scale[j] = 1.0 / scale[j]; // a product per element, not a division
  std::vector<float> z(n * d);
  for (std::size_t i = 0; i < n; ++i) {
    const float *row = x.row(static_cast<std::int64_t>(i));
    for (std::size_t j = 0; j < d; ++j) z[i * d + j] = static_cast<float>((row[j] - mean[j]) * inv_scale[j]);
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
  fit_report rep = newton ? detail::newton_fit(obj, beta, opt.tol, opt.max_iter ? opt.max_iter : 100, opt.pool)
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
