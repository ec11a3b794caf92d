// dms/steer/composite_policy.hpp: several steering policies in sequence, as one.
//
// Steering methods combine: a DMS policy at layer 16 and a constant refusal-suppression vector at
// layer 20, or two DMS policies with different probes. A composite runs its children in order at
// every hook point each of them wants, so a child sees the rows as the children before it left
// them. It models dms::steering_policy itself, so it can be nested and goes into policy_hooks.
//
// Two things children must not share:
// - per-sequence state: the composite's state_type is a tuple of the children's. A child expects
//   a span of its own state type indexed by sequence id, which a tuple array cannot give, so
//   the composite calls each child once per run of consecutive rows of one sequence, with a
//   one-element state span and those rows' slots re-labelled as sequence 0 (positions and
//   want_logits kept). The re-labelled slots live in a per-thread buffer that grows to the
//   largest run seen and is then reused: after warm-up, no allocation. Keep a sequence's rows
//   contiguous within a step (dms's backends and llama.cpp's batches do): a sequence split into
//   two runs looks to a child like two partial blocks.
// - row scores: each child gets its own row_score_lanes() lanes (the composite declares their
//   sum); within the child's region, the rows of each run are laid out lane-major for that run.
//   Runs are the same at every hook point of a step, so what a child writes at its probe point it
//   finds again at its steering point.
//
// @code
//   dms::composite_policy both(dms::dms_policy(probe, {12, dms::site::resid_post}, v16),
//                              dms::constant_policy({20, dms::site::resid_post}, refusal, -2.0f));
//   std::vector<decltype(both)::state_type> states(n_seq);
//   std::vector<float> scratch(dms::row_score_lanes(both) * max_step_rows);   // 1 + 0 lanes here
//   dms::policy_hooks hooks(both, std::span(states), std::span(scratch));
// @endcode
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

template <steering_policy... Policies> class composite_policy {
  static_assert(sizeof...(Policies) > 0, "dms::composite_policy needs at least one policy");

public:
  using state_type = std::tuple<typename Policies::state_type...>;

  explicit composite_policy(Policies... policies) : children_(std::move(policies)...) {
    std::size_t off = 0, k = 0;
    std::apply([&](const auto &...c) { ((lane_offset_[k++] = off, off += dms::row_score_lanes(c)), ...); },
               children_);
    lanes_ = off;
  }

  bool wants(hook_point p) const noexcept {
    return std::apply([&](const auto &...c) { return (c.wants(p) || ...); }, children_);
  }

  std::size_t row_score_lanes() const noexcept { return lanes_; }

  void validate(std::int32_t n_layers, std::int64_t n_embd) const {
    std::apply([&](const auto &...c) { (validate_policy(c, n_layers, n_embd), ...); }, children_);
  }

  void apply(activation_block &block, std::span<state_type> states, std::span<float> row_scores) const {
    apply_children(block, states, row_scores, std::index_sequence_for<Policies...>{});
  }

  template <std::size_t K> const auto &child() const noexcept { return std::get<K>(children_); }

private:
  template <std::size_t... K>
  void apply_children(activation_block &block, std::span<state_type> states, std::span<float> row_scores,
                      std::index_sequence<K...>) const {
    (apply_child<K>(block, states, row_scores), ...);
  }

  static std::vector<token_slot> &relabelled_slots() {
    thread_local std::vector<token_slot> buffer;
    return buffer;
  }

  template <std::size_t K>
  void apply_child(activation_block &block, std::span<state_type> states, std::span<float> row_scores) const {
    const auto &c = std::get<K>(children_);
    if (!c.wants(block.at)) return;
    using child_state = std::tuple_element_t<K, state_type>;
    const auto n = static_cast<std::size_t>(block.rows.rows);
    const std::size_t lanes = dms::row_score_lanes(c);
    const std::span<float> region = row_scores.subspan(lane_offset_[K] * n, lanes * n);
    std::vector<token_slot> &slots = relabelled_slots();
    for (std::size_t r0 = 0; r0 < n;) {
      const std::int32_t seq = block.slots[r0].seq;
      std::size_t r1 = r0 + 1;
      while (r1 < n && block.slots[r1].seq == seq) ++r1;
      const std::size_t m = r1 - r0;
      if (slots.size() < m) slots.resize(m);
      for (std::size_t i = 0; i < m; ++i) {
        slots[i] = block.slots[r0 + i];
        slots[i].seq = 0;
      }
      activation_block sub{block.at,
                           {block.rows.row(static_cast<std::int64_t>(r0)), static_cast<std::int64_t>(m),
                            block.rows.cols, block.rows.row_stride},
                           std::span<const token_slot>(slots.data(), m),
                           block.space,
                           block.stream};
      child_state &s = std::get<K>(states[static_cast<std::size_t>(seq)]);
      c.apply(sub, std::span<child_state>(&s, 1), region.subspan(r0 * lanes, m * lanes));
      r0 = r1;
    }
  }

  std::tuple<Policies...> children_;
  std::size_t lane_offset_[sizeof...(Policies)]{};
  std::size_t lanes_ = 0;
};

DMS_NAMESPACE_END
