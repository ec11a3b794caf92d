// dms/concepts/merge_strategy.hpp: a merge strategy merges one tensor from N models.
//
// Merging streams a checkpoint tensor by tensor (bounded memory): the engine reads tensor `name`
// from every input (and the base, if the strategy needs one), converts it to f32, and asks the
// strategy for the merged values. Everything a method needs to know about this tensor arrives in
// `merge_inputs`: its name and shape, its layer (for per-layer parameters), the parameters
// already resolved for it (weights, density, lambda, ...: see dms/merge for how YAML configs and
// per-layer gradients resolve), and the seed of its random stream. A strategy never sees files.
//
// @code
//   struct average {                                   // a user strategy: the plain mean
//     static constexpr std::string_view name = "average";
//     bool needs_base() const noexcept { return false; }
//     void merge(const dms::merge_inputs &in, std::span<float> out) const {
//       for (std::size_t i = 0; i < out.size(); ++i) {
//         float s = 0;
//         for (auto m : in.models) s += m[i];
//         out[i] = s / float(in.models.size());
//       }
//     }
//   };
//   static_assert(dms::merge_strategy<average>);
// @endcode
//
// Members:
// - `S::name`: the method's name as configs spell it (mergekit's `merge_method`).
// - `s.needs_base()`: whether `in.base` must be given (task vectors are taken against it).
// - `s.merge(in, out)`: writes the merged tensor into `out` (out.size() == every input's size).
//   Inputs and output are f32 whatever the storage type; `out` does not alias an input.
// - optional `static constexpr bool elementwise = true`: each output element depends only on the
//   same element of the inputs, so the engine may split a huge tensor into chunks
//   (`in.element_offset` then says where the chunk starts; random streams must index by
//   element_offset + i so the result does not depend on the chunking).
// Threads: merge() is const; the engine calls it for different tensors from several threads at
// once. Randomness comes only from `in.seed` through dms's counter-based generator (dms/core/rng.hpp)
// keyed by (seed, tensor name, model index): the same result on any thread count, CPU or GPU.
// Allocation: O(numel) scratch per call is allowed (trimming masks, sorting copies); nothing
// that outlives the call.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! The parameters of one tensor's merge, resolved from the config: named scalars, either global
//! (lambda, normalize, t) or per input model (weight, density, epsilon). A per-model lookup falls
//! back to the global value of the same name.
class merge_parameters {
public:
  //! Model index meaning "global" in set()/entries.
  static constexpr std::int32_t global = -1;

  merge_parameters &set(std::string_view key, double value) { return set(key, global, value); }
  merge_parameters &set(std::string_view key, std::int32_t model, double value) {
    for (auto &e : entries_)
      if (e.key == key && e.model == model) {
        e.value = value;
        return *this;
      }
    entries_.push_back({std::string(key), model, value});
    return *this;
  }
  //! The global value of `key`, if set.
  std::optional<double> find(std::string_view key) const { return lookup(key, global); }
  //! The value of `key` for input `model`, else its global value, if either is set.
  std::optional<double> find(std::string_view key, std::int32_t model) const {
    if (auto v = lookup(key, model)) return v;
    return lookup(key, global);
  }
  double get_or(std::string_view key, double fallback) const { return find(key).value_or(fallback); }
  double get_or(std::string_view key, std::int32_t model, double fallback) const {
    return find(key, model).value_or(fallback);
  }
  //! The value of a parameter the method cannot do without; names it when missing.
  double get(std::string_view key, std::int32_t model = global) const {
    auto v = find(key, model);
    require(v.has_value(), errc::invalid_argument, [&] {
      return "merge parameter '" + std::string(key) + "' is not set" +
             (model == global ? std::string() : " for model " + std::to_string(model));
    });
    return *v;
  }

  struct entry {
    std::string key;
    std::int32_t model;
    double value;
  };
  const std::vector<entry> &entries() const noexcept { return entries_; }

private:
  std::optional<double> lookup(std::string_view key, std::int32_t model) const {
    for (const auto &e : entries_)
      if (e.key == key && e.model == model) return e.value;
    return std::nullopt;
  }
  std::vector<entry> entries_; // a handful per tensor: a linear scan beats a map
};

//! Everything a strategy gets for one tensor (or one chunk of an elementwise tensor).
struct merge_inputs {
  std::string_view name;                      //!< tensor name as stored in the first input
  std::span<const std::int64_t> shape;        //!< full tensor shape (not the chunk's)
  std::int32_t layer = -1;                    //!< block index, -1 for embeddings/norms/head
  std::int32_t n_layers = 0;                  //!< depth of the model, for per-layer parameters
  std::span<const std::span<const float>> models; //!< the N inputs, equal sizes
  std::span<const float> base;                //!< the base model's tensor; empty if not needed
  const merge_parameters *params = nullptr;   //!< resolved parameters (never null from dms)
  std::uint64_t seed = 0;                     //!< user seed; combine with name and model index
  std::int64_t element_offset = 0;            //!< where this chunk starts inside the tensor
};

template <class S>
concept merge_strategy = requires(const S &s, const merge_inputs &in, std::span<float> out) {
  { S::name } -> std::convertible_to<std::string_view>;
  { s.needs_base() } -> std::same_as<bool>;
  s.merge(in, out);
};

namespace detail {
template <class S> concept has_strategy_name = requires {
  { S::name } -> std::convertible_to<std::string_view>;
};
template <class S> concept has_needs_base = requires(const S &s) {
  { s.needs_base() } -> std::same_as<bool>;
};
template <class S> concept has_merge = requires(const S &s, const merge_inputs &in, std::span<float> out) {
  s.merge(in, out);
};
} // namespace detail

//! True when the strategy declared itself elementwise (safe to chunk).
template <merge_strategy S> inline constexpr bool is_elementwise = [] {
  if constexpr (requires { S::elementwise; }) return bool(S::elementwise);
  else return false;
}();

//! Names the first missing member of a would-be strategy: `static_assert(diagnose_merge_strategy<S>())`.
template <class S> consteval bool diagnose_merge_strategy() {
  static_assert(detail::has_strategy_name<S>,
                "dms::merge_strategy: needs `static constexpr std::string_view name`");
  static_assert(detail::has_needs_base<S>, "dms::merge_strategy: needs `bool needs_base() const`");
  static_assert(detail::has_merge<S>,
                "dms::merge_strategy: needs `void merge(const dms::merge_inputs &, std::span<float> out) const`");
  return merge_strategy<S>;
}

namespace archetypes {
//! The least a merge strategy provides.
struct merge_strategy {
  static constexpr std::string_view name = "archetype";
  bool needs_base() const noexcept { return false; }
  void merge(const merge_inputs &, std::span<float>) const noexcept {}
};
} // namespace archetypes

DMS_NAMESPACE_END
