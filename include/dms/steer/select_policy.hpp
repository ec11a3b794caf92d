// dms/steer/select_policy.hpp: each sequence of a batch with its own steering configuration.
//
// A server batches requests that want different things: one user asked for DMS with alpha 1.4,
// another for alpha 0.8, a third for no steering at all. select_policy holds several
// configurations of one policy type and a choice per sequence id (an index, or none); at every
// hook point it hands each configuration the rows of the sequences that chose it, as contiguous
// sub-blocks (runs of consecutive rows with the same choice), so rows of unsteered sequences are
// never touched. The configurations share the state type, so each gets the caller's state array
// as is; row scores get max(lanes) per row, each run using its own slice, the same at every hook
// point of a step.
//
// Choices are set between steps (`choose`), not while a step runs: like any policy, the object
// is read-only during forward().
//
// @code
//   dms::select_policy<dms::dms_policy<>> sel({dms_strong, dms_mild});
//   sel.choose(/*seq=*/0, 0); sel.choose(1, dms::select_policy<dms::dms_policy<>>::none); sel.choose(2, 1);
// @endcode
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

template <steering_policy Policy> class select_policy {
public:
  using state_type = typename Policy::state_type;
  static constexpr std::int32_t none = -1; //!< the sequence is not steered

  explicit select_policy(std::vector<Policy> configs, std::vector<std::int32_t> choices = {})
      : configs_(std::move(configs)) {
    require(!configs_.empty(), errc::invalid_argument,
            [] { return std::string("select_policy: needs at least one configuration"); });
    for (const auto &c : configs_) lanes_ = std::max(lanes_, dms::row_score_lanes(c));
    for (std::size_t s = 0; s < choices.size(); ++s) choose(static_cast<std::int32_t>(s), choices[s]);
  }

  //! Sequence `seq` uses configuration `config` (or `none`) from the next step on.
  void choose(std::int32_t seq, std::int32_t config) {
    require(seq >= 0, errc::invalid_argument, [&] { return "select_policy: sequence " + std::to_string(seq); });
    require(config == none || (config >= 0 && static_cast<std::size_t>(config) < configs_.size()),
            errc::invalid_argument, [&] {
              return "select_policy: configuration " + std::to_string(config) + " for sequence " +
                     std::to_string(seq) + " (expected none or [0, " + std::to_string(configs_.size()) + "))";
            });
    if (static_cast<std::size_t>(seq) >= choice_.size()) choice_.resize(static_cast<std::size_t>(seq) + 1, none);
    choice_[static_cast<std::size_t>(seq)] = config;
  }
  //! The configuration of `seq` (none when never chosen).
  std::int32_t choice(std::int32_t seq) const noexcept {
    return seq >= 0 && static_cast<std::size_t>(seq) < choice_.size() ? choice_[static_cast<std::size_t>(seq)] : none;
  }

  bool wants(hook_point p) const noexcept {
    for (const auto &c : configs_)
      if (c.wants(p)) return true;
    return false;
  }
  std::size_t row_score_lanes() const noexcept { return lanes_; }
  void validate(std::int32_t n_layers, std::int64_t n_embd) const {
    for (const auto &c : configs_) validate_policy(c, n_layers, n_embd);
  }

  void apply(activation_block &block, std::span<state_type> states, std::span<float> row_scores) const {
    const auto n = static_cast<std::size_t>(block.rows.rows);
    for (std::size_t r0 = 0; r0 < n;) {
      const std::int32_t k = choice(block.slots[r0].seq);
      std::size_t r1 = r0 + 1;
      while (r1 < n && choice(block.slots[r1].seq) == k) ++r1;
      if (k != none) {
        const Policy &c = configs_[static_cast<std::size_t>(k)];
        if (c.wants(block.at)) {
          const std::size_t m = r1 - r0;
          activation_block sub{block.at,
                               {block.rows.row(static_cast<std::int64_t>(r0)), static_cast<std::int64_t>(m),
                                block.rows.cols, block.rows.row_stride},
                               block.slots.subspan(r0, m),
                               block.space,
                               block.stream};
          c.apply(sub, states, row_scores.subspan(r0 * lanes_, m * dms::row_score_lanes(c)));
        }
      }
      r0 = r1;
    }
  }

  std::span<const Policy> configs() const noexcept { return configs_; }

private:
  std::vector<Policy> configs_;
  std::vector<std::int32_t> choice_;
  std::size_t lanes_ = 1;
};

DMS_NAMESPACE_END
