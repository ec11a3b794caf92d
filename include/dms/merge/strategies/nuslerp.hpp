// dms/merge/strategies/nuslerp.hpp: SLERP between two models, weighted, per row or whole tensor,
// optionally on task vectors (mergekit 0.1.5 `nuslerp`, merge_methods/nuslerp.py).
//
// t = w_1 / (w_0 + w_1) (0.5 when the weights sum to less than 1e-6 in magnitude). With a base,
// the two task vectors v_k = theta_k - base are interpolated and the base added back; without
// one, the models themselves. The vectors interpolated are:
//   nuslerp_flatten: true (default)   the whole tensor as one vector;
//   otherwise, nuslerp_row_wise: false  each line along the last axis (rows of a 2-D tensor);
//              nuslerp_row_wise: true   each line along the first axis (columns), as mergekit's
//                                       dim = 0 (the names are mergekit's).
// For each pair: u_k = v_k / max(|v_k|, 1e-7); cos = <u_0, u_1> clamped to [-1, 1];
// collinear when 1 - cos^2 <= 1e-16 (evaluated in fp32, as mergekit does): (1 - t) v_0 + t v_1;
// else theta = acos(cos), (sin((1 - t) theta) v_0 + sin(t theta) v_1) / sin(theta).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies/common.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr merge_parameter_info nuslerp_parameters[] = {
    {"weight", merge_parameter_scope::per_model, true, std::nullopt,
     "relative weight of each of the two models: t = w_1 / (w_0 + w_1)"},
    {"nuslerp_flatten", merge_parameter_scope::global, false, 1.0,
     "interpolate the whole tensor as one vector (true by default)"},
    {"nuslerp_row_wise", merge_parameter_scope::global, false, 0.0,
     "without flatten: interpolate lines along the first axis instead of the last"},
};

struct nuslerp_merge {
  static constexpr std::string_view name = "nuslerp";
  static constexpr merge_method_info info{name, merge_base_policy::optional, 2, 2, false, nuslerp_parameters,
                                          "mergekit merge_methods/nuslerp.py"};

  thread_pool *pool = nullptr; //!< optional: lines are interpolated in parallel on it

  bool needs_base() const noexcept { return false; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 2, 2, merge_base_policy::optional);
    const detail::param_reader p(name, in);
    const auto w0 = static_cast<double>(static_cast<float>(p.required("weight", 0)));
    const auto w1 = static_cast<double>(static_cast<float>(p.required("weight", 1)));
    const double total = w0 + w1;
    const double t = std::abs(total) < 1e-6 ? 0.5 : w1 / total;
    const std::size_t n = out.size();
    detail::tensor_lines lines = detail::tensor_lines::whole(n);
    if (!p.flag("nuslerp_flatten", true)) {
      detail::check_shape(name, in, n);
      lines = p.flag("nuslerp_row_wise", false) ? detail::tensor_lines::along_first_axis(in.shape, n)
                                                : detail::tensor_lines::along_last_axis(in.shape, n);
    }
    const std::span<const float> m0 = in.models[0], m1 = in.models[1], base = in.base;
    const bool has_base = !base.empty();
    auto run = [&](std::size_t begin, std::size_t end) {
      for (std::size_t k = begin; k < end; ++k) {
        const std::size_t s = lines.start(k), st = lines.stride;
        double aa = 0.0, bb = 0.0, ab = 0.0;
        for (std::size_t l = 0; l < lines.length; ++l) {
          const std::size_t i = s + l * st;
          const auto x = static_cast<double>(has_base ? m0[i] - base[i] : m0[i]);
          const auto y = static_cast<double>(has_base ? m1[i] - base[i] : m1[i]);
          aa += x * x;
          bb += y * y;
          ab += x * y;
        }
        const double na = std::max(std::sqrt(aa), 1e-7), nb = std::max(std::sqrt(bb), 1e-7);
        const double cos = std::clamp(ab / (na * nb), -1.0, 1.0);
        const auto cf = static_cast<float>(cos);
        double ca = 1.0 - t, cb = t;
        if (!(1.0f - cf * cf <= 1e-16f)) {
          const double theta = std::acos(cos), sn = std::sin(theta);
          ca = std::sin((1.0 - t) * theta) / sn;
          cb = std::sin(t * theta) / sn;
        }
        for (std::size_t l = 0; l < lines.length; ++l) {
          const std::size_t i = s + l * st;
          const double b0 = has_base ? static_cast<double>(base[i]) : 0.0;
          const auto x = static_cast<double>(has_base ? m0[i] - base[i] : m0[i]);
          const auto y = static_cast<double>(has_base ? m1[i] - base[i] : m1[i]);
          out[i] = static_cast<float>(b0 + ca * x + cb * y);
        }
      }
    };
    if (pool != nullptr && lines.count > 1) pool->parallel_for(lines.count, 64, run);
    else run(0, lines.count);
  }
};
static_assert(merge_strategy<nuslerp_merge>);

DMS_NAMESPACE_END
