// dms/patch/hooks.hpp: the small hook-set building blocks that activation recording and patching
// are made of.
//
// Recording activations and patching them are both hook sets handed to a backend's forward(). A
// caller often wants its own hooks in the same pass (a steering policy while collecting the
// activations of steered runs, a logger), so `chained_hooks` runs two hook sets one after the
// other at every hook point either wants; the second sees the rows as the first left them.
// `hook_point_table` answers `wants()` with one array lookup: a backend asks at every hook point
// of every step, so a linear scan over the requested points would cost layers x sites x points.
//
// @code
//   dms::policy_hooks steer(policy, states, scratch);
//   my_recorder rec;
//   dms::chained_hooks both(steer, rec);      // steer first, then record the steered rows
//   backend.forward(batch, both);
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! Two hook sets in sequence: at each hook point, `first` runs if it wants the point, then
//! `second` if it wants it. Holds references: both must outlive the chain.
template <hook_set First, hook_set Second> class chained_hooks {
public:
  chained_hooks(First &first, Second &second) noexcept : first_(&first), second_(&second) {}

  bool wants(hook_point p) const { return first_->wants(p) || second_->wants(p); }

  void operator()(activation_block &block) {
    if (first_->wants(block.at)) (*first_)(block);
    if (second_->wants(block.at)) (*second_)(block);
  }

private:
  First *first_;
  Second *second_;
};

static_assert(hook_set<chained_hooks<no_hooks, archetypes::hook_set>>);

//! Number of distinct sites (the size of dms::all_sites).
inline constexpr std::size_t hook_site_count = std::size(all_sites);

//! The layer a hook point is stored under: its own for per-layer sites, -1 for model-level ones
//! (backends report final_norm and logits with layer -1, whatever the caller wrote).
constexpr hook_point canonical_hook_point(hook_point p) noexcept {
  if (is_model_level(p.where)) p.layer = -1;
  return p;
}

//! Maps each hook point of a model with `n_layers` layers to a small index (or -1): a dense table
//! of (n_layers + 1) x hook_site_count entries, the extra row for the model-level sites.
class hook_point_table {
public:
  hook_point_table() = default;
  explicit hook_point_table(std::int32_t n_layers)
      : n_layers_(n_layers), index_(static_cast<std::size_t>(n_layers + 1) * hook_site_count, -1) {}

  //! Whether `p` names a hook point of this model (per-layer sites need 0 <= layer < n_layers).
  bool valid(hook_point p) const noexcept {
    return is_model_level(p.where) || (p.layer >= 0 && p.layer < n_layers_);
  }
  //! Gives `p` the index `i` (>= 0). Errors: a hook point outside the model.
  void set(hook_point p, std::int32_t i) {
    require(valid(p), errc::invalid_argument, [&] {
      return "hook point " + to_string(p) + ": layer " + std::to_string(p.layer) + " is out of range [0, " +
             std::to_string(n_layers_) + ")";
    });
    index_[slot(p)] = i;
  }
  //! The index given to `p`, or -1 (also for points outside the model).
  std::int32_t operator[](hook_point p) const noexcept { return valid(p) ? index_[slot(p)] : -1; }
  bool contains(hook_point p) const noexcept { return (*this)[p] >= 0; }

private:
  std::size_t slot(hook_point p) const noexcept {
    const std::int32_t row = is_model_level(p.where) ? n_layers_ : p.layer;
    return static_cast<std::size_t>(row) * hook_site_count + static_cast<std::size_t>(p.where);
  }
  std::int32_t n_layers_ = 0;
  std::vector<std::int32_t> index_;
};

DMS_NAMESPACE_END
