// dms/merge/parameters.hpp: merge parameters as mergekit configs write them, resolved per tensor.
//
// A mergekit config gives each parameter (weight, density, t, lambda, ...) as one of
//  * a scalar: `weight: 0.5` (booleans count as 1 and 0: `normalize: true`);
//  * a gradient: `t: [0, 0.5, 1]`, interpolated piecewise-linearly over t in [0, 1];
//  * name filters: a list of `{filter: self_attn, value: ...}` entries whose value is a scalar or a
//    gradient; the first entry whose filter is a substring of the tensor name wins, an entry
//    without a filter (or with filter "*") matches every tensor. When none matches, the parameter
//    is unset at this level and the lookup falls through to the next level.
// `t` for a tensor is mergekit's (plan.py): inside an output slice of n layers, layer i has
// t = i / (n - 1) (t = 1 when the slice has a single layer); tensors outside the blocks (token
// embedding, final norm, lm_head) have t = 0, as in mergekit 0.1.5 (older versions gave the
// tensors after the blocks t = 1).
//
// Lookup order (mergekit's ConfigReader.parameter): for input model m, m's own `parameters` in
// the slice, then the slice's `parameters`, then the config's global `parameters`; a global lookup
// skips the first level. resolve_parameters() turns that into a dms::merge_parameters whose
// per-model entries hold the first level and whose global entries hold the rest, which is exactly
// merge_parameters::find(key, model)'s fallback.
//
// Filters are matched against Hugging Face names (`model.layers.3.self_attn.q_proj.weight`), also
// when dms merges GGUF files in GGUF naming: the engine passes the HF alias of a GGUF name, so a
// config works unchanged on either format.
//
// @code
//   dms::parameter_setting t = dms::parameter_setting::gradient({0, 0.5, 1});
//   t.evaluate("model.layers.7.mlp.up_proj.weight", 0.25);   // 0.5 * 0.5 = 0.25
// @endcode
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! A scalar or a gradient: what a filter entry's `value` may be.
using scalar_or_gradient = std::variant<double, std::vector<double>>;

//! One `{filter, value}` entry of a filtered parameter.
struct conditional_parameter {
  std::optional<std::string> filter; //!< substring of the tensor name; nullopt or "*": every tensor
  scalar_or_gradient value;
};

//! Evaluates a scalar or gradient at `t` in [0, 1] (mergekit's evaluate_setting for numbers):
//! with n points, position t (n - 1) between points i0 = floor and i0 + 1, linearly.
inline double evaluate_gradient(const scalar_or_gradient &v, double t) {
  if (const double *s = std::get_if<double>(&v)) return *s;
  const auto &g = std::get<std::vector<double>>(v);
  require(!g.empty(), errc::invalid_argument, [] { return std::string("empty gradient"); });
  const double scaled = std::clamp(t, 0.0, 1.0) * static_cast<double>(g.size() - 1);
  const auto i0 = static_cast<std::size_t>(scaled);
  const std::size_t i1 = std::min(g.size() - 1, i0 + 1);
  const double frac = scaled - static_cast<double>(i0);
  return (1 - frac) * g[i0] + frac * g[i1];
}

//! One parameter's setting at one level of a config.
class parameter_setting {
public:
  parameter_setting() : v_(0.0) {}
  static parameter_setting scalar(double x) { return parameter_setting(scalar_or_gradient(x)); }
  static parameter_setting gradient(std::vector<double> points) {
    require(!points.empty(), errc::invalid_argument, [] { return std::string("a gradient needs at least one value"); });
    return parameter_setting(scalar_or_gradient(std::move(points)));
  }
  static parameter_setting filtered(std::vector<conditional_parameter> entries) {
    parameter_setting p;
    p.v_ = std::move(entries);
    return p;
  }

  //! The value for tensor `tensor_name` at gradient position `t`; nullopt when no filter matches.
  std::optional<double> evaluate(std::string_view tensor_name, double t) const {
    if (const auto *sg = std::get_if<scalar_or_gradient>(&v_)) return evaluate_gradient(*sg, t);
    for (const auto &c : std::get<std::vector<conditional_parameter>>(v_))
      if (!c.filter || *c.filter == "*" || (!tensor_name.empty() && tensor_name.find(*c.filter) != std::string_view::npos))
        return evaluate_gradient(c.value, t);
    return std::nullopt;
  }

  bool is_filtered() const noexcept { return std::holds_alternative<std::vector<conditional_parameter>>(v_); }
  //! The setting as mergekit YAML would spell it (for plans and messages).
  std::string to_string() const {
    auto sg = [](const scalar_or_gradient &x) {
      if (const double *s = std::get_if<double>(&x)) return number(*s);
      std::string out = "[";
      for (double d : std::get<std::vector<double>>(x)) out += (out.size() > 1 ? ", " : "") + number(d);
      return out + "]";
    };
    if (const auto *x = std::get_if<scalar_or_gradient>(&v_)) return sg(*x);
    std::string out = "[";
    for (const auto &c : std::get<std::vector<conditional_parameter>>(v_))
      out += std::string(out.size() > 1 ? ", " : "") + "{filter: " + c.filter.value_or("*") + ", value: " + sg(c.value) + "}";
    return out + "]";
  }

  //! Shortest decimal text that reads back as the same double.
  static std::string number(double d) {
    char buf[32];
    for (int precision = 6; precision <= 17; ++precision) {
      std::snprintf(buf, sizeof buf, "%.*g", precision, d);
      if (std::strtod(buf, nullptr) == d) break;
    }
    return buf;
  }

private:
  explicit parameter_setting(scalar_or_gradient v) : v_(std::move(v)) {}
  std::variant<scalar_or_gradient, std::vector<conditional_parameter>> v_;
};

//! Named settings of one level (global, slice, or one input model), in config order.
class parameter_map {
public:
  void set(std::string name, parameter_setting s) {
    for (auto &e : entries_)
      if (e.first == name) {
        e.second = std::move(s);
        return;
      }
    entries_.emplace_back(std::move(name), std::move(s));
  }
  const parameter_setting *find(std::string_view name) const {
    for (const auto &e : entries_)
      if (e.first == name) return &e.second;
    return nullptr;
  }
  bool empty() const noexcept { return entries_.empty(); }
  const std::vector<std::pair<std::string, parameter_setting>> &entries() const noexcept { return entries_; }

private:
  std::vector<std::pair<std::string, parameter_setting>> entries_;
};

//! The gradient position of layer `index` inside an output slice of `slice_layers` layers.
constexpr double slice_gradient_t(std::int64_t index, std::int64_t slice_layers) noexcept {
  return slice_layers > 1 ? static_cast<double>(index) / static_cast<double>(slice_layers - 1) : 1.0;
}

//! One input model's view of a tensor for resolve_parameters: its own settings and the name of
//! the tensor it contributes (filters match input names, as in mergekit: slices may take layer 7
//! of a model for output layer 2).
struct model_parameter_source {
  const parameter_map *own = nullptr; //!< the model's `parameters` (may be null)
  std::string_view tensor_name;       //!< this model's tensor name, HF spelling
};

//! Resolves every parameter named at any level for one tensor: `levels` are the global-chain
//! maps, most specific first (slice, then config); `models[i]` gives model i's own settings.
//! Global entries use `tensor_name` (the output name) for filters.
inline merge_parameters resolve_parameters(std::string_view tensor_name, double t,
                                           std::span<const parameter_map *const> levels,
                                           std::span<const model_parameter_source> models) {
  merge_parameters out;
  std::vector<std::string> names;
  auto add_names = [&](const parameter_map *m) {
    if (!m) return;
    for (const auto &e : m->entries())
      if (std::find(names.begin(), names.end(), e.first) == names.end()) names.push_back(e.first);
  };
  for (const auto *m : levels) add_names(m);
  for (const auto &name : names)
    for (const auto *m : levels) {
      const parameter_setting *s = m ? m->find(name) : nullptr;
      if (!s) continue;
      if (auto v = s->evaluate(tensor_name, t)) {
        out.set(name, *v);
        break;
      }
    }
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (!models[i].own) continue;
    for (const auto &e : models[i].own->entries())
      if (auto v = e.second.evaluate(models[i].tensor_name, t))
        out.set(e.first, static_cast<std::int32_t>(i), *v);
  }
  return out;
}

DMS_NAMESPACE_END
