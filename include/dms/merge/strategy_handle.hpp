// dms/merge/strategy_handle.hpp: a merge strategy chosen at run time, as the engine calls it.
//
// Configs name their method as a string, so the engine cannot be a template over the strategy:
// it holds a strategy_handle, a small type-erased record (one std::function call per tensor or
// chunk, never per element) plus the method's contract (dms/merge/strategies/common.hpp:
// base policy, model count, parameters), which the planner checks before any weight is read.
// make_strategy_handle wraps any dms::merge_strategy, so a user's own method runs in the engine
// exactly like the built-in ones (dms/merge/builtin_strategies.hpp wraps those by name).
//
// @code
//   struct average { ... };                              // models dms::merge_strategy
//   dms::strategy_handle h = dms::make_strategy_handle(average{});
// @endcode
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies/common.hpp"

DMS_NAMESPACE_BEGIN

//! One merge method as the engine sees it.
struct strategy_handle {
  std::string name;                                   //!< as configs spell it
  merge_base_policy base = merge_base_policy::ignored; //!< see strategies/common.hpp
  std::size_t min_models = 1;                          //!< non-base inputs, at least
  std::size_t max_models = 0;                          //!< non-base inputs, at most; 0 = unbounded
  //! May be run on chunks of a tensor, several at once on disjoint chunks (the engine splits a
  //! chunk over its thread pool): merge() must not write shared state.
  bool elementwise = false;
  std::function<void(const merge_inputs &, std::span<float>)> merge;
  //! Parameters the method reads; empty when the strategy does not declare them (then the
  //! planner cannot check names, and says so in the plan's warnings).
  std::vector<merge_parameter_info> parameters;
  bool declares_parameters = false;
  //! Lets the strategy use the engine's threads inside a tensor; may be empty.
  std::function<void(thread_pool *)> set_thread_pool;

  bool needs_base() const noexcept { return base == merge_base_policy::required; }
  const merge_parameter_info *find_parameter(std::string_view key) const noexcept {
    for (const auto &p : parameters)
      if (p.name == key) return &p;
    return nullptr;
  }
};

//! Wraps a strategy (shared by the handle's copies). Takes its contract from `S::info` when the
//! strategy has one, else from needs_base().
template <merge_strategy S> strategy_handle make_strategy_handle(S s) {
  auto p = std::make_shared<S>(std::move(s));
  strategy_handle h;
  h.name = std::string(S::name);
  h.elementwise = is_elementwise<S>;
  if constexpr (requires { S::info.parameters; }) {
    h.base = S::info.base;
    h.min_models = S::info.min_models;
    h.max_models = S::info.max_models;
    h.parameters.assign(S::info.parameters.begin(), S::info.parameters.end());
    h.declares_parameters = true;
  } else {
    h.base = p->needs_base() ? merge_base_policy::required : merge_base_policy::ignored;
  }
  h.merge = [p](const merge_inputs &in, std::span<float> out) { p->merge(in, out); };
  if constexpr (requires { p->pool = static_cast<thread_pool *>(nullptr); })
    h.set_thread_pool = [p](thread_pool *pool) { p->pool = pool; };
  return h;
}

DMS_NAMESPACE_END
