// dms/merge/strategies.hpp: every merge method dms ships, and a registry that finds one by the
// name a config spells (mergekit's `merge_method`).
//
// Each strategy is a plain type modeling dms::merge_strategy (dms/concepts/merge_strategy.hpp),
// usable directly with no virtual call. The merge engine reads configs, so it needs them by name
// at run time: make_merge_strategy() returns a type-erased any_merge_strategy (one virtual call
// per tensor, nothing per element) together with the method's contract (merge_method_info): base
// policy, number of models, whether it is elementwise, and every parameter it accepts with its
// scope (global or per model), whether it is required and its default, so the engine can reject
// an unknown or misplaced parameter by name before it reads a byte of weights.
//
// How the engine calls a strategy (the input convention of dms/merge/strategies/common.hpp):
// `in.models` are the non-base inputs in config order (for base policy `ignored`, every listed
// model); `in.base` is the base model's tensor when the policy is required, or optional and the
// config names a base model. Per-model parameters are set with the model's index in `in.models`.
// @code
//   auto s = dms::make_merge_strategy("ties");           // throws for an unknown name
//   for (const auto &e : params.entries())
//     if (!s->info().find(e.key)) throw ...;             // "ties has no parameter 'densty'"
//   s->merge(inputs, out);
// @endcode
//
// Whole-model TIES (the original paper's trimming): run kth_magnitude_finder (dms/merge/sparsify.hpp)
// over each model's task vectors first and pass the result as the per-model `trim_threshold`.
#pragma once

#include <array>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/consensus.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies/common.hpp"
#include "dms/merge/strategies/linear.hpp"
#include "dms/merge/strategies/model_stock.hpp"
#include "dms/merge/strategies/nuslerp.hpp"
#include "dms/merge/strategies/passthrough.hpp"
#include "dms/merge/strategies/slerp.hpp"
#include "dms/merge/strategies/task_arithmetic.hpp"

DMS_NAMESPACE_BEGIN

//! A merge strategy chosen at run time. Type erasure at the plugin edge: one virtual call per
//! tensor (or chunk).
class any_merge_strategy {
public:
  virtual ~any_merge_strategy() = default;

  //! The method's contract: name, base policy, model count, parameters.
  virtual const merge_method_info &info() const noexcept = 0;
  //! Merges one tensor (or, when elementwise(), one chunk): see dms::merge_strategy.
  virtual void merge(const merge_inputs &in, std::span<float> out) const = 0;
  //! Lets the strategy split each tensor's work over `pool` (null: run on the caller). Results
  //! are the same bits on any pool size. The pool must outlive the merges.
  virtual void set_thread_pool(thread_pool *pool) noexcept = 0;

  std::string_view name() const noexcept { return info().name; }
  //! The base is required (task vectors are taken against it).
  bool needs_base() const noexcept { return info().base == merge_base_policy::required; }
  merge_base_policy base_policy() const noexcept { return info().base; }
  //! Output element i depends on element i only: the engine may merge a tensor in chunks.
  bool elementwise() const noexcept { return info().elementwise; }
  std::span<const merge_parameter_info> parameters() const noexcept { return info().parameters; }
  //! The parameter named `key`, or null when the method has no such parameter.
  const merge_parameter_info *find_parameter(std::string_view key) const noexcept { return info().find(key); }

protected:
  any_merge_strategy() = default;
  any_merge_strategy(const any_merge_strategy &) = default;
  any_merge_strategy &operator=(const any_merge_strategy &) = default;
};

namespace detail {
template <class S> class merge_strategy_model final : public any_merge_strategy {
public:
  const merge_method_info &info() const noexcept override { return S::info; }
  void merge(const merge_inputs &in, std::span<float> out) const override { strategy_.merge(in, out); }
  void set_thread_pool(thread_pool *pool) noexcept override { strategy_.pool = pool; }

private:
  S strategy_;
};

template <class... S> struct strategy_list {
  static constexpr std::array<std::string_view, sizeof...(S)> names{S::name...};
  static std::unique_ptr<any_merge_strategy> make(std::string_view name) {
    std::unique_ptr<any_merge_strategy> r;
    ((r == nullptr && name == S::name ? (r = std::make_unique<merge_strategy_model<S>>(), 0) : 0), ...);
    return r;
  }
};
using builtin_strategies =
    strategy_list<linear_merge, task_arithmetic_merge, ties_merge, dare_ties_merge, dare_linear_merge,
                  breadcrumbs_merge, breadcrumbs_ties_merge, della_merge, della_linear_merge, slerp_merge,
                  nuslerp_merge, model_stock_merge, passthrough_merge>;
} // namespace detail

//! The names make_merge_strategy() knows, in a fixed order.
inline std::span<const std::string_view> merge_method_names() noexcept {
  return detail::builtin_strategies::names;
}

//! A new strategy for `method_name` (mergekit's merge_method spelling); throws
//! errc::unsupported naming the method and listing the known ones.
inline std::unique_ptr<any_merge_strategy> make_merge_strategy(std::string_view method_name) {
  auto s = detail::builtin_strategies::make(method_name);
  if (!s) {
    std::string known;
    for (std::string_view n : merge_method_names()) known += (known.empty() ? "" : ", ") + std::string(n);
    throw error(errc::unsupported,
                "unknown merge method '" + std::string(method_name) + "' (dms knows: " + known + ")");
  }
  return s;
}

DMS_NAMESPACE_END
