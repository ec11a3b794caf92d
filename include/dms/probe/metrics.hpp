// dms/probe/metrics.hpp: how well scores separate two classes (accuracy, ROC-AUC, log-loss).
//
// A memorization probe is only worth steering with if it generalizes, so every fitted probe is
// judged on a held-out split with the three numbers scikit-learn users expect, computed the way
// scikit-learn computes them:
// - accuracy: the fraction of rows whose score is on the side of `threshold` (0.5) of its label
//   (score >= threshold predicts 1; sklearn's predict() picks 1 only when the logit is > 0, which
//   differs only for a score of exactly 0.5);
// - ROC-AUC: the Mann-Whitney U statistic over (positive, negative) pairs, a tie counting one
//   half, which is the area under the ROC curve with ties drawn as diagonal steps
//   (sklearn.metrics.roc_auc_score). Computed from average ranks in O(n log n);
// - log-loss: the mean negative log-likelihood, with probabilities clipped to [eps, 1 - eps],
//   eps = 1e-15, so that a confident wrong answer costs 34.5 nats instead of infinity.
// Labels are 0 or 1; scores are probabilities in [0, 1] (AUC accepts any real scores).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! The three held-out numbers of a probe.
struct probe_metrics {
  double accuracy = 0; //!< fraction in [0, 1]
  double roc_auc = 0;  //!< in [0, 1]; 0.5 is chance
  double log_loss = 0; //!< nats per row
  std::int64_t n = 0;  //!< rows evaluated
};

namespace detail {
inline void check_scored(std::span<const float> scores, std::span<const int> labels, const char *what) {
  require(scores.size() == labels.size(), errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::to_string(scores.size()) + " scores but " +
           std::to_string(labels.size()) + " labels";
  });
  require(!scores.empty(), errc::invalid_argument, [&] { return std::string(what) + ": no rows"; });
  for (std::size_t i = 0; i < labels.size(); ++i) {
    require(labels[i] == 0 || labels[i] == 1, errc::invalid_argument, [&] {
      return std::string(what) + ": label " + std::to_string(labels[i]) + " at row " + std::to_string(i) +
             " (expected 0 or 1)";
    });
    require(std::isfinite(scores[i]), errc::numeric,
            [&] { return std::string(what) + ": score at row " + std::to_string(i) + " is not finite"; });
  }
}
} // namespace detail

//! Fraction of rows with (score >= threshold) == label.
inline double accuracy(std::span<const float> scores, std::span<const int> labels, float threshold = 0.5f) {
  detail::check_scored(scores, labels, "accuracy");
  std::size_t right = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) right += (scores[i] >= threshold) == (labels[i] == 1);
  return static_cast<double>(right) / static_cast<double>(scores.size());
}

//! Area under the ROC curve, ties counting one half. Needs both classes present.
inline double roc_auc(std::span<const float> scores, std::span<const int> labels) {
  detail::check_scored(scores, labels, "roc_auc");
  const std::size_t n = scores.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  // Sum of the (1-based, tie-averaged) ranks of the positives: U = R+ - n+(n+ + 1)/2.
  double rank_sum = 0;
  std::size_t n_pos = 0;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double avg_rank = 0.5 * static_cast<double>(i + 1 + j); // mean of ranks i+1 .. j
    for (std::size_t k = i; k < j; ++k)
      if (labels[order[k]] == 1) {
        rank_sum += avg_rank;
        ++n_pos;
      }
    i = j;
  }
  const std::size_t n_neg = n - n_pos;
  require(n_pos > 0 && n_neg > 0, errc::invalid_argument, [&] {
    return "roc_auc: needs both classes, got " + std::to_string(n_pos) + " positives and " +
           std::to_string(n_neg) + " negatives";
  });
  const double np = static_cast<double>(n_pos), nn = static_cast<double>(n_neg);
  return (rank_sum - np * (np + 1) / 2) / (np * nn);
}

//! Mean negative log-likelihood of the labels under probabilities `scores` (clipped to
//! [1e-15, 1 - 1e-15]).
inline double log_loss(std::span<const float> scores, std::span<const int> labels) {
  detail::check_scored(scores, labels, "log_loss");
  constexpr double eps = 1e-15;
  double sum = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const double p = std::clamp(static_cast<double>(scores[i]), eps, 1 - eps);
    sum -= labels[i] == 1 ? std::log(p) : std::log1p(-p);
  }
  return sum / static_cast<double>(scores.size());
}

//! All three at once (AUC needs both classes in `labels`).
inline probe_metrics evaluate_scores(std::span<const float> scores, std::span<const int> labels) {
  return {accuracy(scores, labels), roc_auc(scores, labels), log_loss(scores, labels),
          static_cast<std::int64_t>(scores.size())};
}

DMS_NAMESPACE_END
