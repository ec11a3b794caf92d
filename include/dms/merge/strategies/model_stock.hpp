// dms/merge/strategies/model_stock.hpp: Model Stock (Jang et al. 2024,
// https://arxiv.org/abs/2403.19522), as mergekit 0.1.5 `model_stock` computes it.
//
// With the base w_0 and N >= 2 fine-tuned models w_i, offsets o_i = w_i - w_0:
//   cos = mean over pairs i < j of <o_i, o_j> / max(|o_i| |o_j|, 1e-6), each clamped to [-1, 1];
//   t = N cos / (1 + (N - 1) cos), or 0 where |1 + (N - 1) cos| < 1e-6 (no finite estimate: keep
//   the base rather than amplify opposing updates);
//   out = t * mean_i(w_i) + (1 - t) * w_0.
// Per whole tensor by default; with `filter_wise: true` per line along the last axis (each row of
// a 2-D weight, i.e. each output filter). Sums accumulate in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies/common.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr merge_parameter_info model_stock_parameters[] = {
    {"filter_wise", merge_parameter_scope::global, false, 0.0,
     "one interpolation factor per row (output filter) instead of per tensor"},
};

struct model_stock_merge {
  static constexpr std::string_view name = "model_stock";
  static constexpr merge_method_info info{name, merge_base_policy::required, 2, 0, false,
                                          model_stock_parameters, "https://arxiv.org/abs/2403.19522"};

  thread_pool *pool = nullptr; //!< optional: rows are merged in parallel on it (filter_wise)

  bool needs_base() const noexcept { return true; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 2, 0, merge_base_policy::required);
    const detail::param_reader p(name, in);
    const std::size_t n = out.size(), n_models = in.models.size();
    detail::tensor_lines lines = detail::tensor_lines::whole(n);
    if (p.flag("filter_wise", false)) {
      detail::check_shape(name, in, n);
      lines = detail::tensor_lines::along_last_axis(in.shape, n);
    }
    const std::span<const float> w0 = in.base;
    const auto count = static_cast<double>(n_models);
    auto run = [&](std::size_t begin, std::size_t end) {
      std::vector<double> gram(n_models * n_models);
      for (std::size_t k = begin; k < end; ++k) {
        const std::size_t s = lines.start(k), len = lines.length;
        std::fill(gram.begin(), gram.end(), 0.0);
        for (std::size_t l = 0; l < len; ++l) {
          const std::size_t e = s + l;
          for (std::size_t i = 0; i < n_models; ++i) {
            const auto oi = static_cast<double>(in.models[i][e] - w0[e]);
            for (std::size_t j = i; j < n_models; ++j)
              gram[i * n_models + j] += oi * static_cast<double>(in.models[j][e] - w0[e]);
          }
        }
        double cos_sum = 0.0;
        for (std::size_t i = 0; i < n_models; ++i)
          for (std::size_t j = i + 1; j < n_models; ++j) {
            const double norms = std::sqrt(gram[i * n_models + i]) * std::sqrt(gram[j * n_models + j]);
            cos_sum += std::clamp(gram[i * n_models + j] / std::max(norms, 1e-6), -1.0, 1.0);
          }
        const double cos = cos_sum / (count * (count - 1.0) / 2.0);
        const double denominator = 1.0 + (count - 1.0) * cos;
        const double t = std::abs(denominator) < 1e-6 ? 0.0 : count * cos / denominator;
        for (std::size_t l = 0; l < len; ++l) {
          const std::size_t e = s + l;
          double sum = 0.0;
          for (std::size_t i = 0; i < n_models; ++i) sum += static_cast<double>(in.models[i][e]);
          out[e] = static_cast<float>(t * (sum / count) + (1.0 - t) * static_cast<double>(w0[e]));
        }
      }
    };
    if (pool != nullptr && lines.count > 1) pool->parallel_for(lines.count, 64, run);
    else run(0, lines.count);
  }
};
static_assert(merge_strategy<model_stock_merge>);

DMS_NAMESPACE_END
