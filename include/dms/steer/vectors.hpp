// dms/steer/vectors.hpp: steering vectors, and the three ways DMS builds one from activations.
//
// The DMS paper does not publish how its generalization-steering vector is made, so dms offers
// the three constructions the steering literature uses, on rows of activations read at one hook
// point (one row per example, n_embd wide), "positives" being the mode to steer towards
// (generalization for DMS) and "negatives" the mode to steer away from (memorization):
// - mean_difference: v = mean(positives) - mean(negatives) (ActAdd / CAA).
// - pca_direction: the first principal component of the paired differences d_i = pos_i - neg_i
//   (repeng's pca_diff; centered like scikit-learn's PCA unless `center` is false, which is
//   llama.cpp cvector-generator's uncentered variant). A principal component has no sign; dms
//   fixes it so that the positives project higher on average (mean_i d_i . v > 0; on an exact tie,
//   the majority of pairs). llama.cpp skips that step and its vectors come out randomly inverted
//   (ggml-org/llama.cpp#8724).
// - probe_direction: the logistic probe's weights mapped back to raw activation space,
//   w_raw = w / scale (elementwise, the scaler's standard deviations): the gradient of the probe's
//   logit with respect to the raw activation h, i.e. the normal of its decision hyperplane. Adding
//   t * w_raw moves the logit by t * ||w_raw||^2 (not w itself: w lives in standardized space,
//   where a unit step means one standard deviation of each feature). The direction points towards
//   the probe's class 1; negate it (`towards_class = 0`) to steer away from it.
// Each result is either `raw` (its natural length: the mean gap; for PCA the unit component times
// the mean projection of the differences, mean_i d_i . v; for the probe, w_raw) or `unit` (L2 norm 1,
// the strength then lives entirely in the policy's alpha or coefficient).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/rng.hpp"
#include "dms/probe/logistic.hpp"

DMS_NAMESPACE_BEGIN

//! A vector to add to the residual stream at one hook point.
struct steering_vector {
  std::int32_t layer = 0;              //!< the block it belongs to (-1 for model-level sites)
  site where = site::resid_post;       //!< where in the block
  std::vector<float> values;           //!< n_embd values
  hook_point at() const noexcept { return {layer, where}; }
};

//! How long a built vector is.
enum class vector_scale : std::uint8_t {
  raw,  //!< its natural length (see the header comment)
  unit, //!< L2 norm 1
};

namespace detail {
inline void check_rows(matrix_view<const float> x, const char *fn, const char *what) {
  require(x.rows > 0 && x.cols > 0, errc::invalid_argument, [&] {
    return std::string(fn) + ": no " + what + " rows (" + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ")";
  });
  for (std::int64_t i = 0; i < x.rows; ++i)
    for (std::int64_t j = 0; j < x.cols; ++j)
      require(std::isfinite(x(i, j)), errc::numeric, [&] {
        return std::string(fn) + ": " + what + " row " + std::to_string(i) + ", column " + std::to_string(j) +
               " is not finite";
      });
}
inline std::vector<float> to_float(const std::vector<double> &v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}
inline double norm2(std::span<const double> v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}
inline void scale_to_unit(std::vector<double> &v, const char *fn) {
  const double n = norm2(v);
  require(n > 0, errc::numeric,
          [&] { return std::string(fn) + ": the vector is zero and cannot be scaled to unit norm"; });
  for (double &x : v) x /= n;
}
} // namespace detail

//! mean(positives) - mean(negatives); the two sets may differ in size but not in width.
inline std::vector<float> mean_difference(matrix_view<const float> positives, matrix_view<const float> negatives,
                                          vector_scale scale = vector_scale::raw) {
  detail::check_rows(positives, "mean_difference", "positive");
  detail::check_rows(negatives, "mean_difference", "negative");
  require(positives.cols == negatives.cols, errc::shape_mismatch, [&] {
    return "mean_difference: positives have width " + std::to_string(positives.cols) + ", negatives " +
           std::to_string(negatives.cols);
  });
  const auto d = static_cast<std::size_t>(positives.cols);
  std::vector<double> v(d, 0.0);
  auto add_mean = [&](matrix_view<const float> x, double sign) {
    std::vector<double> s(d, 0.0);
    for (std::int64_t i = 0; i < x.rows; ++i)
      for (std::size_t j = 0; j < d; ++j) s[j] += x(i, static_cast<std::int64_t>(j));
    for (std::size_t j = 0; j < d; ++j) v[j] += sign * s[j] / static_cast<double>(x.rows);
  };
  add_mean(positives, 1.0);
  add_mean(negatives, -1.0);
  if (scale == vector_scale::unit) detail::scale_to_unit(v, "mean_difference");
  return detail::to_float(v);
}

struct pca_options {
  bool center = true;          //!< subtract the mean difference first (repeng, scikit-learn PCA)
  vector_scale scale = vector_scale::unit;
  int max_iter = 5000;         //!< power iterations
  double tol = 1e-12;          //!< stop when 1 - |v_k . v_{k-1}| <= tol
  std::uint64_t seed = 0;      //!< the (Philox) start vector, so results repeat exactly
};

struct pca_result {
  std::vector<float> direction; //!< sign-fixed: positives project higher
  double eigenvalue = 0;        //!< variance of the differences along it (1/n normalization)
  double explained = 0;         //!< eigenvalue / total variance, in [0, 1]
  int iterations = 0;
  bool converged = false;
};

//! First principal component of the paired differences positives[i] - negatives[i] (same number
//! of rows, row i of each forming a pair), by power iteration on the covariance without forming
//! it (two passes over the differences per iteration). Throws when the differences have no
//! variance (all equal with `center`, or all zero).
inline pca_result pca_direction(matrix_view<const float> positives, matrix_view<const float> negatives,
                                const pca_options &opt = {}) {
  detail::check_rows(positives, "pca_direction", "positive");
  detail::check_rows(negatives, "pca_direction", "negative");
  require(positives.rows == negatives.rows && positives.cols == negatives.cols, errc::shape_mismatch, [&] {
    return "pca_direction: pairs need equal shapes, got positives " + std::to_string(positives.rows) + " x " +
           std::to_string(positives.cols) + " and negatives " + std::to_string(negatives.rows) + " x " +
           std::to_string(negatives.cols);
  });
  const auto n = static_cast<std::size_t>(positives.rows), d = static_cast<std::size_t>(positives.cols);
  std::vector<double> diff(n * d), mean(d, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) {
      const auto r = static_cast<std::int64_t>(i), c = static_cast<std::int64_t>(j);
      diff[i * d + j] = static_cast<double>(positives(r, c)) - negatives(r, c);
      mean[j] += diff[i * d + j] / static_cast<double>(n);
    }
  std::vector<double> centered = diff;
  if (opt.center)
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j) centered[i * d + j] -= mean[j];
  double total = 0, second_moment = 0;
  for (double x : centered) total += x * x;
  for (double x : diff) second_moment += x * x;
  total /= static_cast<double>(n);
  second_moment /= static_cast<double>(n);
  // Variance at the level of float rounding (1e-10 of the raw second moment) is no direction.
  require(total > 1e-10 * second_moment && total > 0, errc::numeric, [] {
    return std::string("pca_direction: the paired differences have no variance (use mean_difference)");
  });

  // C v = (1/n) X^T (X v), X the (centered) differences.
  std::vector<double> v(d), w(d), proj(n);
  const philox_stream rng(key_for(opt.seed, "pca_direction", 0), 0);
  for (std::size_t j = 0; j < d; ++j) v[j] = static_cast<double>(rng.uniform(j)) - 0.5;
  detail::scale_to_unit(v, "pca_direction");
  pca_result res;
  double lambda = 0;
  for (res.iterations = 1; res.iterations <= opt.max_iter; ++res.iterations) {
    for (std::size_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::size_t j = 0; j < d; ++j) s += centered[i * d + j] * v[j];
      proj[i] = s;
    }
    std::fill(w.begin(), w.end(), 0.0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j) w[j] += proj[i] * centered[i * d + j];
    for (double &x : w) x /= static_cast<double>(n);
    lambda = detail::norm2(w); // = v . C v at convergence (C is positive semi-definite)
    require(lambda > 0, errc::numeric, [] { return std::string("pca_direction: power iteration collapsed"); });
    double dot = 0;
    for (std::size_t j = 0; j < d; ++j) {
      w[j] /= lambda;
      dot += w[j] * v[j];
    }
    v.swap(w);
    if (1 - std::abs(dot) <= opt.tol) {
      res.converged = true;
      break;
    }
  }
  res.iterations = std::min(res.iterations, opt.max_iter);
  res.eigenvalue = lambda;
  res.explained = std::min(1.0, lambda / total);

  // Sign: positives project higher on average; on an exact tie, in most pairs.
  double gap = 0;
  std::int64_t above = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += diff[i * d + j] * v[j];
    gap += s / static_cast<double>(n);
    above += s > 0 ? 1 : (s < 0 ? -1 : 0);
  }
  if (gap < 0 || (gap == 0 && above < 0)) {
    for (double &x : v) x = -x;
    gap = -gap;
  }
  if (opt.scale == vector_scale::raw)
    for (double &x : v) x *= gap;
  res.direction = detail::to_float(v);
  return res;
}

//! The probe's raw-space weights w / scale, pointing to class `towards_class` (1: the class the
//! probe scores; 0: away from it).
inline std::vector<float> probe_direction(const logistic_probe &p, vector_scale scale = vector_scale::raw,
                                          int towards_class = 1) {
  require(p.n_features() > 0, errc::invalid_argument, [] { return std::string("probe_direction: empty probe"); });
  require(towards_class == 0 || towards_class == 1, errc::invalid_argument,
          [&] { return "probe_direction: towards_class " + std::to_string(towards_class) + " (expected 0 or 1)"; });
  std::vector<double> v(p.raw_weight().begin(), p.raw_weight().end());
  if (towards_class == 0)
    for (double &x : v) x = -x;
  if (scale == vector_scale::unit) detail::scale_to_unit(v, "probe_direction");
  return detail::to_float(v);
}

DMS_NAMESPACE_END
