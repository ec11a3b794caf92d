// dms/steer/conditional_policy.hpp: IBM's Conditional Activation Steering (CAST), and how to
// pick its threshold.
//
// CAST steers only prompts that match a condition. The condition is a direction c in activation
// space; with the projector P = c c^T / (c . c), a prompt's hidden state h (at the condition
// hook point) is compared with its own squashed projection:
//   sim = cos(h, tanh(P h))
// and the sequence is steered (h <- h + coefficient * v at the steering point, for every later
// token and, when the steering point comes after the condition point, for the prompt itself) when
// sim lies above (or below, configurable) a threshold. h is the mean of the prompt's rows
// (`prompt_mean`, CAST's default aggregation) or its last row (`last_token`).
//
// The decision is made once per sequence, in the first forward step that contains it (the prompt
// prefill), and kept in the state: prefill each prompt in one step. The mean is computed without
// a buffer (column by column over the sequence's rows), so apply() allocates nothing.
//
// The threshold comes from labelled calibration prompts: `choose_threshold` evaluates the F1 score
// of "steer" against the labels at every cut between consecutive distinct similarities (or a grid
// the caller gives) and for each direction, and returns the best: CAST's grid search, exact.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/hook_names.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

//! Which rows of the prompt make the condition's hidden state.
enum class condition_mode : std::uint8_t {
  prompt_mean, //!< the mean of the prompt's rows
  last_token,  //!< the prompt's last row (highest position)
};

//! When the condition holds.
enum class condition_compare : std::uint8_t {
  above, //!< sim > threshold
  below, //!< sim < threshold
};

constexpr bool condition_holds(float sim, float threshold, condition_compare cmp) noexcept {
  return cmp == condition_compare::above ? sim > threshold : sim < threshold;
}

//! cos(h, tanh(P h)) with P = c c^T / (c . c), for one row h; 0 when either side is zero.
inline double cast_similarity(std::span<const float> h, std::span<const float> c) {
  require(h.size() == c.size(), errc::shape_mismatch, [&] {
    return "cast_similarity: row width " + std::to_string(h.size()) + ", condition vector " + std::to_string(c.size());
  });
  double ch = 0, cc = 0;
  for (std::size_t j = 0; j < h.size(); ++j) {
    ch += static_cast<double>(c[j]) * h[j];
    cc += static_cast<double>(c[j]) * c[j];
  }
  require(cc > 0, errc::invalid_argument, [] { return std::string("cast_similarity: zero condition vector"); });
  const double s = ch / cc;
  double hu = 0, hh = 0, uu = 0;
  for (std::size_t j = 0; j < h.size(); ++j) {
    const double u = std::tanh(c[j] * s);
    hu += h[j] * u;
    hh += static_cast<double>(h[j]) * h[j];
    uu += u * u;
  }
  return hh > 0 && uu > 0 ? hu / std::sqrt(hh * uu) : 0.0;
}

class conditional_policy {
public:
  struct state_type {
    enum class decision : std::uint8_t { undecided, steer, skip };
    decision decided = decision::undecided;
    float similarity = 0.0f; //!< the prompt's sim, once decided
  };

  //! Steers with coefficient * vector.values at vector.at() the sequences whose prompt, read at
  //! `condition_at`, satisfies `condition_holds(sim, threshold, compare)`.
  conditional_policy(hook_point condition_at, std::vector<float> condition_vector, float threshold,
                     condition_compare compare, steering_vector vector, float coefficient,
                     condition_mode mode = condition_mode::prompt_mean)
      : cond_at_(condition_at), c_(std::move(condition_vector)), threshold_(threshold), compare_(compare),
        mode_(mode), steer_at_(vector.at()), v_(std::move(vector.values)), coefficient_(coefficient) {
    require(std::isfinite(coefficient_), errc::numeric,
            [] { return std::string("conditional_policy: coefficient is not finite"); });
    require(std::isfinite(threshold_), errc::numeric,
            [] { return std::string("conditional_policy: threshold is not finite"); });
    detail::check_steering_values(v_, "conditional_policy");
    require(c_.size() == v_.size(), errc::shape_mismatch, [&] {
      return "conditional_policy: condition vector has width " + std::to_string(c_.size()) +
             ", steering vector " + std::to_string(v_.size());
    });
    double cc = 0;
    for (std::size_t j = 0; j < c_.size(); ++j) {
      require(std::isfinite(c_[j]), errc::numeric,
              [&] { return "conditional_policy: condition vector element " + std::to_string(j) + " is not finite"; });
      cc += static_cast<double>(c_[j]) * c_[j];
    }
    require(cc > 0, errc::invalid_argument, [] { return std::string("conditional_policy: zero condition vector"); });
    cc_ = cc;
    require(hook_rank(cond_at_) <= hook_rank(steer_at_), errc::invalid_argument, [&] {
      return "conditional_policy: the condition point " + to_string(cond_at_) + " comes after the steering point " +
             to_string(steer_at_);
    });
  }

  bool wants(hook_point p) const noexcept { return p == cond_at_ || p == steer_at_; }

  void validate(std::int32_t n_layers, std::int64_t n_embd) const {
    detail::check_layer(cond_at_, n_layers, "conditional_policy", "condition");
    detail::check_layer(steer_at_, n_layers, "conditional_policy", "steering");
    require(static_cast<std::int64_t>(v_.size()) == n_embd, errc::shape_mismatch, [&] {
      return "conditional_policy: vectors have width " + std::to_string(v_.size()) + ", model has n_embd " +
             std::to_string(n_embd);
    });
  }

  void apply(activation_block &block, std::span<state_type> states, std::span<float>) const {
    detail::require_host(block, "conditional_policy");
    require(block.rows.cols == static_cast<std::int64_t>(v_.size()), errc::shape_mismatch, [&] {
      return "conditional_policy: rows at " + to_string(block.at) + " have width " +
             std::to_string(block.rows.cols) + ", the vectors " + std::to_string(v_.size());
    });
    const std::int64_t n = block.rows.rows;
    if (block.at == cond_at_)
      for (std::int64_t r = 0; r < n; ++r) {
        const std::int32_t seq = block.slots[static_cast<std::size_t>(r)].seq;
        state_type &s = states[static_cast<std::size_t>(seq)];
        if (s.decided != state_type::decision::undecided) continue;
        s.similarity = static_cast<float>(prompt_similarity(block, seq));
        s.decided = condition_holds(s.similarity, threshold_, compare_) ? state_type::decision::steer
                                                                        : state_type::decision::skip;
      }
    if (block.at == steer_at_)
      for (std::int64_t r = 0; r < n; ++r) {
        const state_type &s = states[static_cast<std::size_t>(block.slots[static_cast<std::size_t>(r)].seq)];
        if (s.decided != state_type::decision::steer) continue;
        float *h = block.rows.row(r);
        for (std::int64_t i = 0; i < block.rows.cols; ++i) h[i] += coefficient_ * v_[static_cast<std::size_t>(i)];
      }
  }

  //! sim of sequence `seq`'s rows in `block` (mean or last row, per the mode).
  double prompt_similarity(const activation_block &block, std::int32_t seq) const {
    const std::int64_t n = block.rows.rows, d = block.rows.cols;
    auto of_seq = [&](std::int64_t r) { return block.slots[static_cast<std::size_t>(r)].seq == seq; };
    if (mode_ == condition_mode::last_token) {
      std::int64_t last = -1;
      for (std::int64_t r = 0; r < n; ++r)
        if (of_seq(r) && (last < 0 || block.slots[static_cast<std::size_t>(r)].pos >=
                                          block.slots[static_cast<std::size_t>(last)].pos))
          last = r;
      return cast_similarity(block.rows.row_span(last), c_);
    }
    std::int64_t m = 0;
    for (std::int64_t r = 0; r < n; ++r) m += of_seq(r);
    auto column_mean = [&](std::int64_t j) {
      double s = 0;
      for (std::int64_t r = 0; r < n; ++r)
        if (of_seq(r)) s += block.rows(r, j);
      return s / static_cast<double>(m);
    };
    double ch = 0;
    for (std::int64_t j = 0; j < d; ++j) ch += c_[static_cast<std::size_t>(j)] * column_mean(j);
    const double s = ch / cc_;
    double hu = 0, hh = 0, uu = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double h = column_mean(j), u = std::tanh(c_[static_cast<std::size_t>(j)] * s);
      hu += h * u;
      hh += h * h;
      uu += u * u;
    }
    return hh > 0 && uu > 0 ? hu / std::sqrt(hh * uu) : 0.0;
  }

  hook_point condition_at() const noexcept { return cond_at_; }
  hook_point steer_at() const noexcept { return steer_at_; }
  float threshold() const noexcept { return threshold_; }
  condition_compare compare() const noexcept { return compare_; }
  condition_mode mode() const noexcept { return mode_; }

private:
  hook_point cond_at_;
  std::vector<float> c_;
  double cc_ = 1;
  float threshold_;
  condition_compare compare_;
  condition_mode mode_;
  hook_point steer_at_;
  std::vector<float> v_;
  float coefficient_;
};

static_assert(steering_policy<conditional_policy>);

//! The result of a threshold search.
struct threshold_choice {
  float threshold = 0;
  condition_compare compare = condition_compare::above;
  double f1 = 0, precision = 0, recall = 0;
};

//! The threshold and direction maximizing F1 of "condition holds" against `should_steer` (1 for
//! prompts that must be steered) over calibration similarities. Candidates: `grid` if given, else
//! every midpoint between consecutive distinct similarities plus one value beyond each end; both
//! directions unless `compare` fixes one. Ties keep the first candidate (ascending threshold,
//! `above` before `below`). Needs at least one positive label.
inline threshold_choice choose_threshold(std::span<const float> similarities, std::span<const int> should_steer,
                                         std::optional<condition_compare> compare = std::nullopt,
                                         std::span<const float> grid = {}) {
  require(similarities.size() == should_steer.size(), errc::shape_mismatch, [&] {
    return "choose_threshold: " + std::to_string(similarities.size()) + " similarities but " +
           std::to_string(should_steer.size()) + " labels";
  });
  require(!similarities.empty(), errc::invalid_argument, [] { return std::string("choose_threshold: no data"); });
  std::size_t positives = 0;
  for (std::size_t i = 0; i < similarities.size(); ++i) {
    require(std::isfinite(similarities[i]), errc::numeric,
            [&] { return "choose_threshold: similarity " + std::to_string(i) + " is not finite"; });
    require(should_steer[i] == 0 || should_steer[i] == 1, errc::invalid_argument, [&] {
      return "choose_threshold: label " + std::to_string(should_steer[i]) + " at " + std::to_string(i) +
             " (expected 0 or 1)";
    });
    positives += should_steer[i] == 1;
  }
  require(positives > 0, errc::invalid_argument,
          [] { return std::string("choose_threshold: no positive label, F1 is undefined"); });

  std::vector<float> candidates;
  if (!grid.empty()) {
    candidates.assign(grid.begin(), grid.end());
  } else {
    std::vector<float> u(similarities.begin(), similarities.end());
    std::sort(u.begin(), u.end());
    u.erase(std::unique(u.begin(), u.end()), u.end());
    candidates.push_back(u.front() - std::max(1.0f, std::abs(u.front())));
    for (std::size_t i = 0; i + 1 < u.size(); ++i)
      candidates.push_back(static_cast<float>(0.5 * (static_cast<double>(u[i]) + u[i + 1])));
    candidates.push_back(u.back() + std::max(1.0f, std::abs(u.back())));
  }
  threshold_choice best;
  bool found = false;
  for (float t : candidates) {
    for (condition_compare cmp : {condition_compare::above, condition_compare::below}) {
      if (compare && *compare != cmp) continue;
      std::size_t tp = 0, fp = 0;
      for (std::size_t i = 0; i < similarities.size(); ++i)
        if (condition_holds(similarities[i], t, cmp)) (should_steer[i] == 1 ? tp : fp) += 1;
      const double precision = tp + fp ? static_cast<double>(tp) / static_cast<double>(tp + fp) : 0.0;
      const double recall = static_cast<double>(tp) / static_cast<double>(positives);
      const double f1 = tp ? 2 * precision * recall / (precision + recall) : 0.0;
      if (!found || f1 > best.f1) {
        best = {t, cmp, f1, precision, recall};
        found = true;
      }
    }
  }
  return best;
}

DMS_NAMESPACE_END
