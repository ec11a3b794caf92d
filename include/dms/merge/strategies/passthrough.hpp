// dms/merge/strategies/passthrough.hpp: copies a tensor from its single input, optionally scaled
// (mergekit 0.1.5 `passthrough`, used for frankenmerges: stacking layer slices of models).
//
// out = scale * x, or x itself when `scale` is not set (a copy, bit for bit: no multiplication
// by 1 that would turn -0 into +0 or touch NaN payloads).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string_view>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies/common.hpp"
#include "dms/merge/strategies/weighted_sum.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr merge_parameter_info passthrough_parameters[] = {
    {"scale", merge_parameter_scope::per_model, false, std::nullopt,
     "multiplies the tensor; unset copies it unchanged"},
};

struct passthrough_merge {
  static constexpr std::string_view name = "passthrough";
  static constexpr bool elementwise = true;
  static constexpr merge_method_info info{name, merge_base_policy::ignored, 1, 1, true, passthrough_parameters,
                                          "mergekit merge_methods/passthrough.py"};

  thread_pool *pool = nullptr;

  bool needs_base() const noexcept { return false; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 1, 1, merge_base_policy::ignored);
    const detail::param_reader p(name, in);
    const auto scale = p.find("scale", 0);
    const std::span<const float> x = in.models[0];
    if (!scale) {
      std::copy(x.begin(), x.end(), out.begin());
      return;
    }
    const auto s = static_cast<float>(*scale);
    detail::for_each_chunk(pool, out.size(), [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) out[i] = x[i] * s;
    });
  }
};
static_assert(merge_strategy<passthrough_merge> && is_elementwise<passthrough_merge>);

DMS_NAMESPACE_END
