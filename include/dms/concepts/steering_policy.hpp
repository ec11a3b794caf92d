// dms/concepts/steering_policy.hpp: a steering policy decides, per token, what to add to the
// residual stream.
//
// A policy is called at the hook points it wants with the activations of the current step. It
// may read them (a probe at the probe layer), write them (add c * v at the steering layer), and
// keep per-sequence state across steps (the last memorization score, a CAST trigger). The policy
// object itself is immutable while it steers, so one policy can serve many sequences and threads;
// what changes lives in `state_type`, one per sequence, owned by the caller.
//
// Between hook points of the same forward step a policy passes per-row values (Dynamic Mode
// Steering's probe score p_t, read at the probe layer and used at the later steering layer)
// through `row_scores`, a scratch span with one float per row of the step. Its content at the
// first hook point of a step is unspecified: a policy writes a row's score before reading it.
// A policy that needs several values per row (a composite of policies that each carry a score
// from their probe layer to their steering layer) says so with `row_score_lanes()`: it then gets
// lanes * rows floats, lane k of row r at [k * rows + r], and the caller sizes the scratch with
// dms::row_score_lanes(policy).
//
// @code
//   struct nudge {                               // a user policy: add v at one layer, always
//     struct state_type {};
//     std::int32_t layer; std::vector<float> v;
//     bool wants(dms::hook_point p) const noexcept {
//       return p == dms::hook_point{layer, dms::site::resid_post};
//     }
//     void apply(dms::activation_block &b, std::span<state_type>, std::span<float>) const {
//       for (std::int64_t r = 0; r < b.rows.rows; ++r)
//         for (std::int64_t c = 0; c < b.rows.cols; ++c) b.rows(r, c) += v[c];
//     }
//   };
//   static_assert(dms::steering_policy<nudge>);
// @endcode
//
// Members:
// - `P::state_type`: per-sequence state, default-constructed when a sequence starts.
// - `p.wants(point)`: whether apply() must be called at this hook point (asked at every hook
//   point of every step: keep it a comparison or a mask).
// - `p.apply(block, states, row_scores)`: acts on `block`. `states[s]` is the state of sequence
//   s (block.slots[r].seq indexes it); `row_scores.size() == block.rows.rows * lanes`.
// - optional `p.row_score_lanes()`: floats per row the policy keeps in `row_scores` (default 1);
//   constant for the policy's lifetime.
// - optional `p.validate(n_layers, n_embd)`: throws dms::error when the policy cannot run on a
//   model of that shape (vector width, layer out of range); called once before steering.
// Threads: wants/apply are const and may run concurrently for different steps; a state element
// is touched only by the thread running its sequence's step. Allocation: none in apply().
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

template <class P>
concept steering_policy =
    std::default_initializable<typename P::state_type> &&
    requires(const P &p, hook_point hp, activation_block &blk, std::span<typename P::state_type> states,
             std::span<float> row_scores) {
      { p.wants(hp) } -> std::same_as<bool>;
      p.apply(blk, states, row_scores);
    };

namespace detail {
template <class P> concept has_state_type = requires { typename P::state_type; };
template <class P> concept has_wants = requires(const P &p, hook_point hp) {
  { p.wants(hp) } -> std::same_as<bool>;
};
template <class P>
concept has_apply = requires(const P &p, activation_block &blk, std::span<typename P::state_type> states,
                             std::span<float> row_scores) { p.apply(blk, states, row_scores); };
template <class P> concept has_validate = requires(const P &p, std::int32_t n_layers, std::int64_t n_embd) {
  p.validate(n_layers, n_embd);
};
template <class P> concept has_row_score_lanes = requires(const P &p) {
  { p.row_score_lanes() } -> std::convertible_to<std::size_t>;
};
} // namespace detail

//! Floats per row of a step that `p` needs in `row_scores`: p.row_score_lanes() if it says, else 1.
template <class P> std::size_t row_score_lanes(const P &p) {
  if constexpr (detail::has_row_score_lanes<P>) return static_cast<std::size_t>(p.row_score_lanes());
  else return 1;
}

//! Names the first missing member of a would-be policy: `static_assert(diagnose_steering_policy<P>())`.
template <class P> consteval bool diagnose_steering_policy() {
  static_assert(detail::has_state_type<P>,
                "dms::steering_policy: needs a nested `state_type` (per-sequence state; an empty "
                "struct if none)");
  if constexpr (detail::has_state_type<P>) {
    static_assert(std::default_initializable<typename P::state_type>,
                  "dms::steering_policy: `state_type` must be default-constructible");
    static_assert(detail::has_wants<P>, "dms::steering_policy: needs `bool wants(dms::hook_point) const`");
    static_assert(detail::has_apply<P>,
                  "dms::steering_policy: needs `void apply(dms::activation_block &, "
                  "std::span<state_type> states, std::span<float> row_scores) const`");
  }
  return steering_policy<P>;
}

//! Checks a policy against a model's shape, if the policy says how.
template <steering_policy P> void validate_policy(const P &p, std::int32_t n_layers, std::int64_t n_embd) {
  if constexpr (detail::has_validate<P>) p.validate(n_layers, n_embd);
}

namespace archetypes {
//! The least a steering policy provides.
struct steering_policy {
  struct state_type {};
  bool wants(hook_point) const noexcept { return false; }
  void apply(activation_block &, std::span<state_type>, std::span<float>) const noexcept {}
};
} // namespace archetypes

DMS_NAMESPACE_END
