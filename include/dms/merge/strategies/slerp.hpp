// dms/merge/strategies/slerp.hpp: spherical linear interpolation between the base and one model.
//
// mergekit 0.1.5 `slerp` (merge_methods/slerp.py), over the whole tensor as one vector:
//   a = base, b = the other model; dot = <a / |a|, b / |b|> clamped to [-1, 1], where a norm
//   <= 1e-8 counts as 1 (a zero tensor gives dot 0 instead of NaN);
//   |dot| > 0.9995 (nearly collinear or antipodal): out = (1 - t) a + t b, since sin(theta) -> 0
//   makes the spherical formula ill-conditioned;
//   else theta = acos(dot), out = (sin((1 - t) theta) a + sin(t theta) b) / sin(theta),
// on the raw (not normalized) tensors. t = 0 gives the base, t = 1 the model. Norms and the dot
// product accumulate in double; the result is fp32.
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
#include "dms/merge/strategies/weighted_sum.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr merge_parameter_info slerp_parameters[] = {
    {"t", merge_parameter_scope::global, true, std::nullopt,
     "interpolation factor in [0, 1]: 0 = the base, 1 = the other model"},
};

struct slerp_merge {
  static constexpr std::string_view name = "slerp";
  static constexpr merge_method_info info{name, merge_base_policy::required, 1, 1, false, slerp_parameters,
                                          "https://en.wikipedia.org/wiki/Slerp"};
  //! mergekit's threshold on |cos theta| above which slerp falls back to lerp.
  static constexpr double dot_threshold = 0.9995;
  //! Norms at or below this count as 1 (mergekit's eps).
  static constexpr double norm_eps = 1e-8;

  thread_pool *pool = nullptr; //!< optional: the final pass runs in chunks on it

  bool needs_base() const noexcept { return true; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 1, 1, merge_base_policy::required);
    const detail::param_reader p(name, in);
    const double t = p.in_range("t", p.required("t"), 0.0, 1.0);
    const std::span<const float> a = in.base, b = in.models[0];
    const std::size_t n = out.size();
    double aa = 0.0, bb = 0.0, ab = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
      aa += x * x;
      bb += y * y;
      ab += x * y;
    }
    double norm_a = std::sqrt(aa), norm_b = std::sqrt(bb);
    if (!(norm_a > norm_eps)) norm_a = 1.0;
    if (!(norm_b > norm_eps)) norm_b = 1.0;
    const double dot = std::clamp(ab / (norm_a * norm_b), -1.0, 1.0);
    double ca = 1.0 - t, cb = t;
    if (!(std::abs(dot) > dot_threshold)) {
      const double theta = std::acos(dot), s = std::sin(theta);
      ca = std::sin((1.0 - t) * theta) / s;
      cb = std::sin(t * theta) / s;
    }
    const double coef[2] = {ca, cb};
    const std::span<const float> inputs[2] = {a, b};
    detail::for_each_chunk(pool, n, [&](std::size_t begin, std::size_t end) {
      detail::weighted_sum(inputs, coef, out, begin, end);
    });
  }
};
static_assert(merge_strategy<slerp_merge>);

DMS_NAMESPACE_END
