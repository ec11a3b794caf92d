// dms/merge/strategies/linear.hpp: linear merging (model soup / model interpolation).
//
// out = sum_i w_i theta_i / sum_i w_i (mergekit `linear`, Wortsman et al. 2022,
// https://arxiv.org/abs/2203.05482); with `normalize: false` the plain weighted sum. Model
// interpolation lambda theta_T + (1 - lambda) theta_I is the two-model case with weights lambda
// and 1 - lambda. The base model is not special here: a config's base_model, if listed among the
// models, is an input like the others (mergekit ignores it too).
//
// Weights summing to (almost) zero under normalize would divide by zero: mergekit writes inf/NaN;
// dms refuses, naming the tensor, since no output would be meaningful.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies/common.hpp"
#include "dms/merge/strategies/weighted_sum.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr merge_parameter_info linear_parameters[] = {
    {"weight", merge_parameter_scope::per_model, true, std::nullopt, "the model's weight in the sum"},
    {"normalize", merge_parameter_scope::global, false, 1.0,
     "divide by the sum of the weights (true by default)"},
};

//! mergekit's `linear`. Elementwise: the engine may chunk tensors.
struct linear_merge {
  static constexpr std::string_view name = "linear";
  static constexpr bool elementwise = true;
  static constexpr merge_method_info info{name, merge_base_policy::ignored, 1, 0, true,
                                          linear_parameters, "https://arxiv.org/abs/2203.05482"};

  //! Optional: parallelize each tensor's merge over this pool (same bits on any pool size).
  thread_pool *pool = nullptr;

  bool needs_base() const noexcept { return false; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 1, 0, merge_base_policy::ignored);
    const detail::param_reader p(name, in);
    const std::size_t n_models = in.models.size();
    std::vector<double> coef(n_models);
    double total = 0.0;
    for (std::size_t i = 0; i < n_models; ++i) {
      // mergekit holds weights in fp32: round them the same way before summing.
      coef[i] = static_cast<double>(static_cast<float>(p.required("weight", static_cast<std::int32_t>(i))));
      total += coef[i];
    }
    if (p.flag("normalize", true)) {
      p.fail_unless(std::abs(total) >= 1e-8, "weight", merge_parameters::global,
                    "values sum to " + std::to_string(total) +
                        ": normalize would divide by zero (set normalize: false or change the weights)");
      for (double &c : coef) c /= total;
    }
    detail::for_each_chunk(pool, out.size(), [&](std::size_t begin, std::size_t end) {
      detail::weighted_sum(in.models, coef, out, begin, end);
    });
  }
};
static_assert(merge_strategy<linear_merge> && is_elementwise<linear_merge>);

DMS_NAMESPACE_END
