// dms/steer/dms_policy.hpp: Dynamic Mode Steering, h_t <- h_t + alpha * p_t * v.
//
// The paper's inference-time algorithm: a probe reads, for every token t, how much the model is
// reciting from memory, p_t = sigmoid(w . norm(h_t) + b) (norm: the probe's standardization), at
// the probe's hook point; at the steering hook point, in the same forward pass, the
// generalization-steering vector v is added with strength alpha * p_t (alpha = 1.4, the paper's
// best). A token the probe finds generalizing (p_t ~ 0) passes untouched; one it finds reciting
// gets close to the full alpha * v. Unlike a constant policy this costs the model nothing when it
// already generalizes.
//
// The probe point must come no later than the steering point in the forward pass (hook_rank);
// at the same point the probe reads the row before the vector is added. p_t travels from the
// probe point to the steering point in `row_scores` (one float per row of the step), so nothing
// is re-planned or allocated per token. Per sequence, the state keeps the last score, the count
// and sum of scores (for a mean), and optionally writes every score into a caller-owned `trace`
// span at the token's position, for reports.
//
// @code
//   dms::dms_policy policy(probe, {12, dms::site::resid_post}, vec /* {16, resid_post, v} */);
//   policy.validate(model.n_layers(), model.n_embd());
//   std::vector<decltype(policy)::state_type> states(n_seq);
//   std::vector<float> trace(n_ctx); states[0].trace = trace;     // optional per-token record
//   std::vector<float> scratch(max_step_rows);
//   dms::policy_hooks hooks(policy, std::span(states), std::span(scratch));
//   model.forward(batch, hooks);
// @endcode
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/probe.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/steer/hook_names.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
inline void check_layer(hook_point p, std::int32_t n_layers, const char *policy, const char *what) {
  require(is_model_level(p.where) || (p.layer >= 0 && p.layer < n_layers), errc::invalid_argument, [&] {
    return std::string(policy) + ": " + what + " layer " + std::to_string(p.layer) + " is out of range [0, " +
           std::to_string(n_layers) + ")";
  });
}
inline void check_steering_values(std::span<const float> v, const char *policy) {
  require(!v.empty(), errc::invalid_argument, [&] { return std::string(policy) + ": empty steering vector"; });
  for (std::size_t i = 0; i < v.size(); ++i)
    require(std::isfinite(v[i]), errc::numeric, [&] {
      return std::string(policy) + ": steering vector element " + std::to_string(i) + " is not finite";
    });
}
inline void require_host(const activation_block &b, const char *policy) {
  require(b.space == memory_space::host, errc::unsupported, [&] {
    return std::string(policy) + " runs on host memory; use the device backend's policy";
  });
}
} // namespace detail

template <probe Probe = logistic_probe> class dms_policy {
public:
  //! Per-sequence record of the probe's scores.
  struct state_type {
    float last_score = 0.0f;   //!< p of the sequence's most recent scored token
    std::int64_t n_scored = 0; //!< tokens scored so far
    double score_sum = 0.0;    //!< sum of their scores
    //! Optional, caller-owned: trace[pos] = p_t for every scored token with pos < trace.size().
    std::span<float> trace;
    double mean_score() const noexcept { return n_scored ? score_sum / static_cast<double>(n_scored) : 0.0; }
  };

  static constexpr float default_alpha = 1.4f; //!< the DMS paper's best alpha

  //! Reads `probe` at `probe_at`, adds alpha * p_t * vector.values at vector.at().
  dms_policy(Probe probe, hook_point probe_at, steering_vector vector, float alpha = default_alpha)
      : probe_(std::move(probe)), probe_at_(probe_at), steer_at_(vector.at()), v_(std::move(vector.values)),
        alpha_(alpha) {
    require(std::isfinite(alpha_), errc::numeric, [] { return std::string("dms_policy: alpha is not finite"); });
    detail::check_steering_values(v_, "dms_policy");
    require(static_cast<std::int64_t>(probe_.n_features()) == static_cast<std::int64_t>(v_.size()),
            errc::shape_mismatch, [&] {
              return "dms_policy: the probe reads rows of width " + std::to_string(probe_.n_features()) +
                     ", the steering vector has width " + std::to_string(v_.size());
            });
    require(hook_rank(probe_at_) <= hook_rank(steer_at_), errc::invalid_argument, [&] {
      return "dms_policy: the probe point " + to_string(probe_at_) + " comes after the steering point " +
             to_string(steer_at_) + " (the score must be read before it is used, in the same forward pass)";
    });
  }

  bool wants(hook_point p) const noexcept { return p == probe_at_ || p == steer_at_; }

  void validate(std::int32_t n_layers, std::int64_t n_embd) const {
    detail::check_layer(probe_at_, n_layers, "dms_policy", "probe");
    detail::check_layer(steer_at_, n_layers, "dms_policy", "steering");
    require(static_cast<std::int64_t>(v_.size()) == n_embd, errc::shape_mismatch, [&] {
      return "dms_policy: steering vector has width " + std::to_string(v_.size()) + ", model has n_embd " +
             std::to_string(n_embd);
    });
  }

  void apply(activation_block &block, std::span<state_type> states, std::span<float> row_scores) const {
    detail::require_host(block, "dms_policy");
    const std::int64_t n = block.rows.rows;
    require(block.rows.cols == static_cast<std::int64_t>(v_.size()), errc::shape_mismatch, [&] {
      return "dms_policy: rows at " + to_string(block.at) + " have width " + std::to_string(block.rows.cols) +
             ", the steering vector " + std::to_string(v_.size());
    });
    if (block.at == probe_at_) {
      const std::span<float> p = row_scores.first(static_cast<std::size_t>(n));
      score_rows(probe_, matrix_view<const float>(block.rows), p);
      for (std::int64_t r = 0; r < n; ++r) {
        const token_slot &slot = block.slots[static_cast<std::size_t>(r)];
        state_type &s = states[static_cast<std::size_t>(slot.seq)];
        const float pr = p[static_cast<std::size_t>(r)];
        s.last_score = pr;
        ++s.n_scored;
        s.score_sum += pr;
        if (slot.pos >= 0 && static_cast<std::size_t>(slot.pos) < s.trace.size())
          s.trace[static_cast<std::size_t>(slot.pos)] = pr;
      }
    }
    if (block.at == steer_at_) {
      const float *v = v_.data();
      for (std::int64_t r = 0; r < n; ++r) {
        const float c = alpha_ * row_scores[static_cast<std::size_t>(r)];
        float *h = block.rows.row(r);
        for (std::int64_t i = 0; i < block.rows.cols; ++i) h[i] += c * v[i];
      }
    }
  }

  const Probe &probe_model() const noexcept { return probe_; }
  hook_point probe_at() const noexcept { return probe_at_; }
  hook_point steer_at() const noexcept { return steer_at_; }
  std::span<const float> vector() const noexcept { return v_; }
  float alpha() const noexcept { return alpha_; }

private:
  Probe probe_;
  hook_point probe_at_, steer_at_;
  std::vector<float> v_;
  float alpha_;
};

static_assert(steering_policy<dms_policy<>>);

DMS_NAMESPACE_END
