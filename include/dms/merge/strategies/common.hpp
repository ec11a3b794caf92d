// dms/merge/strategies/common.hpp: what every merge strategy checks before it computes.
//
// A merge runs for hours over thousands of tensors; a config mistake (a density of 1.5, a NaN
// weight, three models given to SLERP) must stop it at the first tensor with a message that names
// the tensor and the parameter, not produce a silently broken checkpoint. These helpers read the
// resolved parameters of one tensor with their domain checks, and check the shape of the inputs
// against the method's contract, all with the tensor's name in the error context.
//
// Input convention (the engine and every strategy rely on it):
//  * `in.models` are the non-base inputs, in config order; the model index used for per-model
//    parameters and random keys is the position in `in.models`.
//  * `in.base` is the base model's tensor when the method uses one (base_policy required or
//    optional and the config names a base_model); a method whose base_policy is `ignored` treats
//    every listed model, the base_model included, as an ordinary input (mergekit's linear).
//  * Booleans (normalize, rescale, ...) are parameters like any other: 0 is false, anything else true.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! Whether a method takes task vectors against a base model.
enum class merge_base_policy : std::uint8_t {
  ignored,  //!< no base: every listed model is an input (linear, passthrough)
  optional, //!< uses the base when the config names one (nuslerp)
  required, //!< task vectors are taken against it (task_arithmetic, ties, slerp, model_stock, ...)
};

//! Where a parameter may be given: once for the whole merge (mergekit's top-level `parameters:`,
//! SHARED scope) or per input model (a model's own `parameters:`; the global value, if any, is
//! the fallback).
enum class merge_parameter_scope : std::uint8_t { global, per_model };

//! One parameter a method accepts, so the engine can reject misspelled or misplaced ones by name.
struct merge_parameter_info {
  std::string_view name;
  merge_parameter_scope scope;
  bool required;                      //!< the merge fails when it is not set
  std::optional<double> default_value; //!< used when not set; nullopt for required ones and for
                                       //!< parameters whose absence means something (passthrough scale)
  std::string_view description;
};

//! A method's contract: its name, base, number of models and parameters.
struct merge_method_info {
  std::string_view name;
  merge_base_policy base;
  std::size_t min_models;                          //!< non-base inputs, at least
  std::size_t max_models;                          //!< non-base inputs, at most; 0 = unbounded
  bool elementwise;                                //!< output element i depends on element i only,
                                                   //!< whatever the parameters (safe to chunk)
  std::span<const merge_parameter_info> parameters;
  std::string_view reference;                      //!< the paper or definition it follows

  //! The parameter named `key`, or null.
  constexpr const merge_parameter_info *find(std::string_view key) const noexcept {
    for (const auto &p : parameters)
      if (p.name == key) return &p;
    return nullptr;
  }
};

namespace detail {

//! The error context naming the tensor being merged.
inline error_context merge_where(const merge_inputs &in) {
  return error_context(std::string(), std::nullopt, std::string(in.name));
}

//! The parameters of `in`, or an empty set when the caller passed none (dms never does).
inline const merge_parameters &merge_params(const merge_inputs &in) {
  static const merge_parameters empty;
  return in.params ? *in.params : empty;
}

inline std::string model_suffix(std::int32_t model) {
  return model == merge_parameters::global ? std::string() : " (model " + std::to_string(model) + ")";
}

//! Checks the number of models, their sizes, and the base, against a method's contract.
//! `max_models` 0 means unbounded.
inline void check_merge_inputs(std::string_view method, const merge_inputs &in, std::size_t out_size,
                               std::size_t min_models, std::size_t max_models,
                               merge_base_policy base) {
  const auto where = merge_where(in);
  const std::size_t n = in.models.size();
  require(n >= min_models && (max_models == 0 || n <= max_models), errc::invalid_argument,
          [&] {
            std::string want = max_models == min_models ? "exactly " + std::to_string(min_models)
                               : max_models == 0        ? "at least " + std::to_string(min_models)
                                                        : std::to_string(min_models) + " to " +
                                                              std::to_string(max_models);
            return std::string(method) + " needs " + want + " input model" +
                   (max_models == 1 && min_models == 1 ? "" : "s") +
                   (base == merge_base_policy::ignored ? "" : " besides the base") + ", got " +
                   std::to_string(n);
          },
          where);
  for (std::size_t i = 0; i < n; ++i)
    require(in.models[i].size() == out_size, errc::shape_mismatch,
            [&] {
              return std::string(method) + ": model " + std::to_string(i) + " has " +
                     std::to_string(in.models[i].size()) + " elements, the output " +
                     std::to_string(out_size);
            },
            where);
  if (base == merge_base_policy::required)
    require(!in.base.empty() || out_size == 0, errc::invalid_argument,
            [&] { return std::string(method) + " needs a base model (base_model in the config)"; }, where);
  if (base != merge_base_policy::ignored && !in.base.empty())
    require(in.base.size() == out_size, errc::shape_mismatch,
            [&] {
              return std::string(method) + ": the base has " + std::to_string(in.base.size()) +
                     " elements, the output " + std::to_string(out_size);
            },
            where);
}

//! A parameter read with its domain check: `value(key, model)` and friends throw dms::error
//! (errc::invalid_argument) naming the method, the parameter, the model and the tensor.
class param_reader {
public:
  param_reader(std::string_view method, const merge_inputs &in)
      : method_(method), in_(in), params_(merge_params(in)) {}

  //! A finite value, required.
  double required(std::string_view key, std::int32_t model = merge_parameters::global) const {
    const auto v = params_.find(key, model);
    fail_unless(v.has_value(), key, model, "is not set (the method requires it)");
    return finite(key, model, *v);
  }
  //! A finite value, or `fallback` when not set.
  double get(std::string_view key, double fallback,
             std::int32_t model = merge_parameters::global) const {
    const auto v = params_.find(key, model);
    return v ? finite(key, model, *v) : fallback;
  }
  std::optional<double> find(std::string_view key, std::int32_t model = merge_parameters::global) const {
    const auto v = params_.find(key, model);
    if (v) finite(key, model, *v);
    return v;
  }
  bool flag(std::string_view key, bool fallback) const { return get(key, fallback ? 1.0 : 0.0) != 0.0; }

  //! A density: the kept fraction, in (0, 1].
  double density(std::int32_t model, double fallback = 1.0) const {
    const double d = get("density", fallback, model);
    fail_unless(d > 0.0 && d <= 1.0, "density", model,
                "must be in (0, 1], got " + std::to_string(d));
    return d;
  }
  //! A value in [lo, hi].
  double in_range(std::string_view key, double v, double lo, double hi,
                  std::int32_t model = merge_parameters::global) const {
    fail_unless(v >= lo && v <= hi, key, model,
                "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                    std::to_string(v));
    return v;
  }

  [[noreturn]] void fail(std::string_view key, std::int32_t model, const std::string &what) const {
    throw error(errc::invalid_argument,
                std::string(method_) + ": parameter '" + std::string(key) + "'" + model_suffix(model) +
                    " " + what,
                merge_where(in_));
  }
  void fail_unless(bool ok, std::string_view key, std::int32_t model, const std::string &what) const {
    if (DMS_UNLIKELY(!ok)) fail(key, model, what);
  }

private:
  double finite(std::string_view key, std::int32_t model, double v) const {
    fail_unless(std::isfinite(v), key, model, "must be a finite number, got " + std::to_string(v));
    return v;
  }

  std::string_view method_;
  const merge_inputs &in_;
  const merge_parameters &params_;
};

//! The vectors a tensor is cut into by methods that work per row or per filter (nuslerp,
//! model_stock): `count` lines of `length` elements, line k starting at start(k), its elements
//! `stride` apart.
struct tensor_lines {
  std::size_t count = 1, length = 0, stride = 1;
  bool along_first = false;
  std::size_t start(std::size_t k) const noexcept { return along_first ? k : k * length; }

  //! One line: the whole tensor.
  static tensor_lines whole(std::size_t n) noexcept { return {1, n, 1, false}; }
  //! Lines along the last axis (rows of a 2-D tensor; the whole tensor if it is 1-D).
  static tensor_lines along_last_axis(std::span<const std::int64_t> shape, std::size_t n) noexcept {
    if (shape.size() < 2 || shape.back() <= 0) return whole(n);
    const auto len = static_cast<std::size_t>(shape.back());
    return {n / len, len, 1, false};
  }
  //! Lines along the first axis (columns of a 2-D tensor; the whole tensor if it is 1-D).
  static tensor_lines along_first_axis(std::span<const std::int64_t> shape, std::size_t n) noexcept {
    if (shape.size() < 2 || shape.front() <= 0) return whole(n);
    const auto len = static_cast<std::size_t>(shape.front());
    return {n / len, len, n / len, true};
  }
};

//! Checks that `shape` describes `n` elements (methods that cut tensors into lines need it).
inline void check_shape(std::string_view method, const merge_inputs &in, std::size_t n) {
  std::size_t total = 1;
  for (std::int64_t d : in.shape) total *= static_cast<std::size_t>(d < 0 ? 0 : d);
  require(in.shape.empty() || total == n, errc::shape_mismatch,
          [&] {
            return std::string(method) + ": the shape holds " + std::to_string(total) +
                   " elements, the tensor " + std::to_string(n) + " (merge whole tensors, not chunks)";
          },
          merge_where(in));
}

} // namespace detail

DMS_NAMESPACE_END
