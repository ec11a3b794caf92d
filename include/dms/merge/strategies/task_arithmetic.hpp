// dms/merge/strategies/task_arithmetic.hpp: mergekit's generalized task arithmetic family:
// task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear.
//
// Every member computes task vectors d_i = theta_i - base, sparsifies each (dms/merge/sparsify.hpp),
// weights them and mixes them with or without TIES's sign election (dms/merge/consensus.hpp):
//   out = base + lambda * mix(w_i * sparsify(d_i)).
// The members differ only in the sparsification, the consensus and two defaults, exactly as
// mergekit 0.1.5 registers them (merge_methods/registry.py):
//
//   method            sparsification       consensus  normalize  rescale
//   task_arithmetic   -                    -          false      false
//   ties              magnitude (top-k)    sum        true       false
//   dare_ties         random (DARE)        sum        false      true
//   dare_linear       random (DARE)        -          false      true
//   breadcrumbs       magnitude_outliers   -          false      false
//   breadcrumbs_ties  magnitude_outliers   sum        false      false
//   della             della_magprune       sum        true       true
//   della_linear      della_magprune       -          false      true
//
// `rescale: true` matches L1 norms as mergekit 0.1.5 does; `rescale_by_density: true` divides by
// the keep probability instead (original DARE / PEFT, and the DELLA paper's 1 / p_i).
// ties also takes `trim_threshold` per model: keep |d| >= threshold instead of a per-tensor top-k,
// for TIES over the whole model as in the original TIES code (kth_magnitude_finder computes it).
//
// Memory: one fp32 task vector per model while a tensor is merged (mergekit holds the same);
// task_arithmetic needs none and streams like linear. With a thread pool, models are sparsified
// in parallel and the mix runs in chunks; results do not depend on the pool.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/rng.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/merge/consensus.hpp"
#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies/common.hpp"
#include "dms/merge/strategies/weighted_sum.hpp"

DMS_NAMESPACE_BEGIN

//! Which sparsification a task-arithmetic method applies to each task vector.
enum class sparsification_method : std::uint8_t {
  none,               //!< dense task vectors
  magnitude,          //!< top-k magnitudes (TIES)
  random,             //!< Bernoulli(density) drop (DARE)
  magnitude_outliers, //!< drop the gamma largest and the smallest (Model Breadcrumbs)
  della_magprune,     //!< rank-dependent Bernoulli drop per row (DELLA)
};

namespace detail {

// Parameter lists, as mergekit 0.1.5's GeneralizedTaskArithmeticMerge.spec declares them, plus
// dms's own (rescale_by_density, trim_threshold).
#define DMS_GTA_COMMON_PARAMETERS(normalize_default, rescale_default)                                        \
  {"weight", merge_parameter_scope::per_model, true, std::nullopt, "the task vector's weight"},             \
      {"density", merge_parameter_scope::per_model, false, 1.0,                                              \
       "fraction of the task vector kept by sparsification, in (0, 1]"},                                     \
      {"lambda", merge_parameter_scope::global, false, 1.0, "scales the mixed task vector"},                 \
      {"normalize", merge_parameter_scope::global, false, normalize_default,                                 \
       "divide the mix by the summed weights"},                                                              \
      {"rescale", merge_parameter_scope::global, false, rescale_default,                                     \
       "restore the magnitude sparsification removed (L1-norm matching, as mergekit)"},                      \
      {"int8_mask", merge_parameter_scope::global, false, 0.0,                                               \
       "mergekit's memory option for the sign mask; accepted, no effect (dms masks are exact either way)"}
#define DMS_GTA_RESCALE_BY_DENSITY                                                                           \
  {"rescale_by_density", merge_parameter_scope::global, false, 0.0,                                          \
   "with rescale: divide survivors by their keep probability (original DARE / PEFT / DELLA paper) "          \
   "instead of matching L1 norms"}

inline constexpr merge_parameter_info task_arithmetic_parameters[] = {DMS_GTA_COMMON_PARAMETERS(0.0, 0.0)};
inline constexpr merge_parameter_info ties_parameters[] = {
    DMS_GTA_COMMON_PARAMETERS(1.0, 0.0), DMS_GTA_RESCALE_BY_DENSITY,
    {"trim_threshold", merge_parameter_scope::per_model, false, std::nullopt,
     "keep |d| >= this instead of the per-tensor top-k (whole-model TIES; see kth_magnitude_finder)"}};
inline constexpr merge_parameter_info dare_parameters[] = {DMS_GTA_COMMON_PARAMETERS(0.0, 1.0),
                                                           DMS_GTA_RESCALE_BY_DENSITY};
inline constexpr merge_parameter_info breadcrumbs_parameters[] = {
    DMS_GTA_COMMON_PARAMETERS(0.0, 0.0), DMS_GTA_RESCALE_BY_DENSITY,
    {"gamma", merge_parameter_scope::per_model, false, 0.01,
     "fraction of the largest magnitudes dropped as outliers, in [0, 1]"}};
inline constexpr merge_parameter_info della_parameters[] = {
    DMS_GTA_COMMON_PARAMETERS(1.0, 1.0), DMS_GTA_RESCALE_BY_DENSITY,
    {"epsilon", merge_parameter_scope::per_model, false, 0.15,
     "spread of the keep probabilities around density: density +/- epsilon must stay in (0, 1)"}};
inline constexpr merge_parameter_info della_linear_parameters[] = {
    DMS_GTA_COMMON_PARAMETERS(0.0, 1.0), DMS_GTA_RESCALE_BY_DENSITY,
    {"epsilon", merge_parameter_scope::per_model, false, 0.15,
     "spread of the keep probabilities around density: density +/- epsilon must stay in (0, 1)"}};

#undef DMS_GTA_COMMON_PARAMETERS
#undef DMS_GTA_RESCALE_BY_DENSITY

} // namespace detail

//! One member of the family: `Traits` names it and picks sparsification and consensus.
template <class Traits> struct task_arithmetic_family {
  static constexpr std::string_view name = Traits::name;
  static constexpr sparsification_method sparsification = Traits::sparsification;
  static constexpr consensus_method consensus = Traits::consensus;
  //! Only the dense, election-free member is elementwise (sparsification ranks or rescales over
  //! the whole tensor).
  static constexpr bool elementwise =
      sparsification == sparsification_method::none && consensus == consensus_method::none;
  static constexpr merge_method_info info{name,        merge_base_policy::required, 1, 0, elementwise,
                                          Traits::parameters, Traits::reference};

  //! Optional: parallelize each tensor's merge over this pool (same bits on any pool size).
  thread_pool *pool = nullptr;

  bool needs_base() const noexcept { return true; }

  void merge(const merge_inputs &in, std::span<float> out) const {
    detail::check_merge_inputs(name, in, out.size(), 1, 0, merge_base_policy::required);
    const detail::param_reader p(name, in);
    const std::size_t n_models = in.models.size(), n = out.size();
    const error_context where = detail::merge_where(in);

    std::vector<double> weights(n_models);
    for (std::size_t i = 0; i < n_models; ++i) // mergekit holds weights in fp32
      weights[i] = static_cast<double>(static_cast<float>(p.required("weight", model(i))));
    mix_options mix;
    mix.consensus = consensus;
    mix.normalize = p.flag("normalize", Traits::normalize);
    mix.lambda = p.get("lambda", 1.0);
    const bool rescale = p.flag("rescale", Traits::rescale);
    const rescale_mode rescale_how = !rescale ? rescale_mode::none
                                     : p.flag("rescale_by_density", false) ? rescale_mode::inverse_density
                                                                           : rescale_mode::l1_norm;
    // Read (and check) every per-model parameter before any work, so a bad value fails fast.
    struct model_params {
      double density = 1.0, gamma = 0.0, epsilon = 0.0;
      std::optional<double> threshold;
    };
    std::vector<model_params> mp(n_models);
    for (std::size_t i = 0; i < n_models; ++i) {
      mp[i].density = p.density(model(i));
      if constexpr (sparsification == sparsification_method::magnitude_outliers)
        mp[i].gamma = p.in_range("gamma", p.get("gamma", 0.01, model(i)), 0.0, 1.0, model(i));
      if constexpr (sparsification == sparsification_method::della_magprune) {
        mp[i].epsilon = p.get("epsilon", 0.15, model(i));
        p.fail_unless(mp[i].density >= 1.0 ||
                          (mp[i].density - mp[i].epsilon > 0.0 && mp[i].density + mp[i].epsilon < 1.0),
                      "epsilon", model(i),
                      "(" + std::to_string(mp[i].epsilon) + ") must leave density +/- epsilon inside (0, 1); density is " +
                          std::to_string(mp[i].density));
      }
      if constexpr (sparsification == sparsification_method::magnitude) {
        mp[i].threshold = p.find("trim_threshold", model(i));
        if (mp[i].threshold)
          p.fail_unless(*mp[i].threshold >= 0.0, "trim_threshold", model(i),
                        "must be >= 0, got " + std::to_string(*mp[i].threshold));
      }
    }

    if constexpr (sparsification == sparsification_method::none && consensus == consensus_method::none) {
      // Dense task arithmetic: one streaming pass, no scratch.
      double total = 0.0;
      for (double w : weights) total += w;
      const double divisor = mix.normalize && std::abs(total) >= 1e-8 ? total : 1.0;
      std::vector<double> coef(n_models);
      for (std::size_t i = 0; i < n_models; ++i) coef[i] = mix.lambda * weights[i] / divisor;
      detail::for_each_chunk(pool, n, [&](std::size_t begin, std::size_t end) {
        detail::weighted_task_sum(in.models, coef, in.base, out, begin, end);
      });
      return;
    }

    std::vector<std::vector<float>> deltas(n_models);
    auto sparsify_model = [&](std::size_t i) {
      std::vector<float> &d = deltas[i];
      d.resize(n);
      const std::span<const float> x = in.models[i];
      for (std::size_t j = 0; j < n; ++j) d[j] = x[j] - in.base[j];
      const philox_stream stream(key_for(in.seed, in.name, static_cast<std::uint32_t>(i)), 0);
      const auto first = static_cast<std::uint64_t>(in.element_offset);
      std::vector<float> scratch;
      const model_params &m = mp[i];
      switch (sparsification) {
      case sparsification_method::none: break;
      case sparsification_method::magnitude:
        if (m.threshold) {
          const double before = rescale_how == rescale_mode::l1_norm ? l1_norm(d) : 0.0;
          trim_below(d, static_cast<float>(*m.threshold));
          if (rescale_how == rescale_mode::l1_norm) rescale_l1(d, before);
          else if (rescale_how == rescale_mode::inverse_density)
            for (float &v : d) v = static_cast<float>(v / m.density);
        } else {
          trim_magnitude(d, m.density, rescale_how, scratch, where);
        }
        break;
      case sparsification_method::random: drop_random(d, m.density, rescale_how, stream, first); break;
      case sparsification_method::magnitude_outliers:
        trim_outliers(d, m.density, m.gamma, rescale_how, scratch, where);
        break;
      case sparsification_method::della_magprune:
        della_magprune(d, in.shape, m.density, m.epsilon, rescale_how, stream, first, where);
        break;
      }
    };
    if (pool != nullptr && n_models > 1)
      pool->parallel_for(n_models, 1, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) sparsify_model(i);
      });
    else
      for (std::size_t i = 0; i < n_models; ++i) sparsify_model(i);

    std::vector<std::span<const float>> views(deltas.begin(), deltas.end());
    detail::for_each_chunk(pool, n, [&](std::size_t begin, std::size_t end) {
      mix_task_vectors(views, weights, in.base, mix, out, begin, end);
    });
  }

private:
  static std::int32_t model(std::size_t i) noexcept { return static_cast<std::int32_t>(i); }
};

namespace detail {
template <sparsification_method S, consensus_method C, bool Normalize, bool Rescale> struct gta_traits {
  static constexpr sparsification_method sparsification = S;
  static constexpr consensus_method consensus = C;
  static constexpr bool normalize = Normalize;
  static constexpr bool rescale = Rescale;
};
struct task_arithmetic_traits : gta_traits<sparsification_method::none, consensus_method::none, false, false> {
  static constexpr std::string_view name = "task_arithmetic";
  static constexpr std::span<const merge_parameter_info> parameters = task_arithmetic_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2212.04089";
};
struct ties_traits : gta_traits<sparsification_method::magnitude, consensus_method::sum, true, false> {
  static constexpr std::string_view name = "ties";
  static constexpr std::span<const merge_parameter_info> parameters = ties_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2306.01708";
};
struct dare_ties_traits : gta_traits<sparsification_method::random, consensus_method::sum, false, true> {
  static constexpr std::string_view name = "dare_ties";
  static constexpr std::span<const merge_parameter_info> parameters = dare_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2311.03099";
};
struct dare_linear_traits : gta_traits<sparsification_method::random, consensus_method::none, false, true> {
  static constexpr std::string_view name = "dare_linear";
  static constexpr std::span<const merge_parameter_info> parameters = dare_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2311.03099";
};
struct breadcrumbs_traits
    : gta_traits<sparsification_method::magnitude_outliers, consensus_method::none, false, false> {
  static constexpr std::string_view name = "breadcrumbs";
  static constexpr std::span<const merge_parameter_info> parameters = breadcrumbs_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2312.06795";
};
struct breadcrumbs_ties_traits
    : gta_traits<sparsification_method::magnitude_outliers, consensus_method::sum, false, false> {
  static constexpr std::string_view name = "breadcrumbs_ties";
  static constexpr std::span<const merge_parameter_info> parameters = breadcrumbs_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2312.06795";
};
struct della_traits : gta_traits<sparsification_method::della_magprune, consensus_method::sum, true, true> {
  static constexpr std::string_view name = "della";
  static constexpr std::span<const merge_parameter_info> parameters = della_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2406.11617";
};
struct della_linear_traits
    : gta_traits<sparsification_method::della_magprune, consensus_method::none, false, true> {
  static constexpr std::string_view name = "della_linear";
  static constexpr std::span<const merge_parameter_info> parameters = della_linear_parameters;
  static constexpr std::string_view reference = "https://arxiv.org/abs/2406.11617";
};
} // namespace detail

using task_arithmetic_merge = task_arithmetic_family<detail::task_arithmetic_traits>;
using ties_merge = task_arithmetic_family<detail::ties_traits>;
using dare_ties_merge = task_arithmetic_family<detail::dare_ties_traits>;
using dare_linear_merge = task_arithmetic_family<detail::dare_linear_traits>;
using breadcrumbs_merge = task_arithmetic_family<detail::breadcrumbs_traits>;
using breadcrumbs_ties_merge = task_arithmetic_family<detail::breadcrumbs_ties_traits>;
using della_merge = task_arithmetic_family<detail::della_traits>;
using della_linear_merge = task_arithmetic_family<detail::della_linear_traits>;

static_assert(merge_strategy<task_arithmetic_merge> && is_elementwise<task_arithmetic_merge>);
static_assert(merge_strategy<ties_merge> && !is_elementwise<ties_merge>);

DMS_NAMESPACE_END
