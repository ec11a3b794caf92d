// dms/merge/builtin_strategies.hpp: the engine's handle for each merge method dms ships.
//
// The engine (dms/merge/engine.hpp) runs any strategy_handle; this header connects it to the
// registry of built-in methods (dms/merge/strategies.hpp), so that a config's `merge_method`
// picks one by name, with its contract (base policy, model count, parameters) for the planner.
// Kept apart from engine.hpp so that a program embedding the engine with its own strategies does
// not compile every built-in one.
#pragma once

#include <memory>
#include <string_view>

#include "dms/config.hpp"
#include "dms/merge/strategies.hpp"
#include "dms/merge/strategy_handle.hpp"

DMS_NAMESPACE_BEGIN

//! The built-in method `method` (mergekit's spelling); errc::unsupported listing the known ones.
inline strategy_handle builtin_strategy(std::string_view method) {
  std::shared_ptr<any_merge_strategy> s = make_merge_strategy(method);
  const merge_method_info &info = s->info();
  strategy_handle h;
  h.name = std::string(info.name);
  h.base = info.base;
  h.min_models = info.min_models;
  h.max_models = info.max_models;
  h.elementwise = info.elementwise;
  h.parameters.assign(info.parameters.begin(), info.parameters.end());
  h.declares_parameters = true;
  h.merge = [s](const merge_inputs &in, std::span<float> out) { s->merge(in, out); };
  h.set_thread_pool = [s](thread_pool *pool) { s->set_thread_pool(pool); };
  return h;
}

DMS_NAMESPACE_END
