// dms/steer/policy_hooks.hpp: runs a steering policy inside any model backend.
//
// A backend calls hooks; a policy wants per-sequence state and a per-row scratch. This adapter
// owns neither: the caller provides the state array (indexed by sequence id) and the scratch
// (at least dms::row_score_lanes(policy) floats per row of the largest step, see
// `scratch_floats`), allocated once, so steering allocates nothing per token. It is a
// `hook_set`, so it goes straight into `backend.forward(batch, hooks)`.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

template <steering_policy Policy> class policy_hooks {
public:
  using state_type = typename Policy::state_type;

  policy_hooks(const Policy &policy, std::span<state_type> states, std::span<float> row_scratch)
      : policy_(&policy), states_(states), scratch_(row_scratch), lanes_(row_score_lanes(policy)) {}

  //! Scratch floats `policy` needs for steps of up to `max_rows` tokens.
  static std::size_t scratch_floats(const Policy &policy, std::size_t max_rows) {
    return max_rows * row_score_lanes(policy);
  }

  bool wants(hook_point p) const { return policy_->wants(p); }

  void operator()(activation_block &block) {
    const auto n = static_cast<std::size_t>(block.rows.rows);
    require(n * lanes_ <= scratch_.size(), errc::invalid_argument, [&] {
      return "policy_hooks: step has " + std::to_string(n) + " rows x " + std::to_string(lanes_) +
             " score lanes, scratch holds " + std::to_string(scratch_.size()) + " floats";
    });
    for (const auto &slot : block.slots)
      require(slot.seq >= 0 && static_cast<std::size_t>(slot.seq) < states_.size(), errc::invalid_argument,
              [&] {
                return "policy_hooks: sequence " + std::to_string(slot.seq) + " has no state (" +
                       std::to_string(states_.size()) + " states given)";
              });
    policy_->apply(block, states_, scratch_.first(n * lanes_));
  }

private:
  const Policy *policy_;
  std::span<state_type> states_;
  std::span<float> scratch_;
  std::size_t lanes_;
};

static_assert(hook_set<policy_hooks<archetypes::steering_policy>>);

DMS_NAMESPACE_END
