// dms/merge/plan.hpp: what a merge will do, tensor by tensor, decided before any weight is read.
//
// A merge plan lists every output tensor with its inputs (which source, which tensor name), the
// strategy's parameters resolved for it, its gradient position t, and its output type. Building
// it opens only the headers of the inputs, so every config mistake a merge could hit — a missing
// tensor, mismatched shapes, a layer range past the end of a model, a misspelled parameter, a
// missing required one — is reported before the first byte is written, naming the tensor and the
// files. `dms merge --dry-run` prints it (merge_plan::describe).
//
// Layout of the output, as mergekit's MergePlanner builds it:
//  * `models:` is one output slice whose sources are every model, layers [0, n_layers);
//  * each output slice contributes (layer_end - layer_begin) layers, numbered after those of the
//    previous slices: the output depth is the sum (passthrough frankenmerges stack slices);
//  * tensors outside the blocks come from the first slice's sources (those before the blocks: the
//    token embedding) or the last slice's (final norm, lm_head), all with t = 0 (mergekit 0.1.5's
//    plan_module; earlier mergekit versions used t = 1 after the blocks).
// The first source of a slice defines which tensors a layer has; every other input must have the
// same set with the same shapes. Embedding and lm_head rows may differ between models (added
// tokens): vocab_policy::truncate keeps the rows all inputs share (what mergekit 0.1.5 does with
// --unsafe-truncate-embeddings; token ids must agree, as they do for fine-tunes of one base),
// vocab_policy::error refuses, as mergekit does by default.
//
// Inputs of the strategy follow strategies/common.hpp: `models` are the non-base inputs in config
// order (every listed model for a method whose base policy is `ignored`), `base` is the base
// model's tensor when the method uses one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/concepts/merge_strategy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/merge/config.hpp"
#include "dms/merge/parameters.hpp"
#include "dms/merge/sources.hpp"
#include "dms/merge/strategy_handle.hpp"

DMS_NAMESPACE_BEGIN

//! Storage types a merge writes.
enum class output_type : std::uint8_t { f32, f16, bf16, q8_0 };

constexpr std::string_view name_of(output_type t) noexcept {
  switch (t) {
  case output_type::f32: return "f32";
  case output_type::f16: return "f16";
  case output_type::bf16: return "bf16";
  case output_type::q8_0: return "q8_0";
  }
  return "?";
}

//! Parses mergekit and dms spellings: float32/fp32/f32, float16/fp16/f16/half, bfloat16/bf16, q8_0.
inline std::optional<output_type> parse_output_type(std::string_view s) {
  if (s == "float32" || s == "fp32" || s == "f32") return output_type::f32;
  if (s == "float16" || s == "fp16" || s == "f16" || s == "half") return output_type::f16;
  if (s == "bfloat16" || s == "bf16") return output_type::bf16;
  if (s == "q8_0" || s == "Q8_0") return output_type::q8_0;
  return std::nullopt;
}

//! Output file formats.
enum class output_format : std::uint8_t { safetensors, gguf };

//! What to do when embedding / lm_head row counts differ between inputs.
enum class vocab_policy : std::uint8_t {
  truncate, //!< keep the rows every input has (mergekit's --unsafe-truncate-embeddings)
  error,    //!< refuse, naming the tensor and both files
};

//! One input tensor of a planned merge.
struct plan_input {
  std::size_t source = 0; //!< index into the engine's sources
  std::string name;       //!< tensor name in that source
};

//! One output tensor.
struct planned_tensor {
  std::string name;                //!< output name (in the merge's naming)
  std::vector<std::int64_t> shape; //!< output shape (vocab rows possibly truncated)
  std::int32_t layer = -1;         //!< output block index, -1 outside the blocks
  double t = 0;                    //!< gradient position (see dms/merge/parameters.hpp)
  std::vector<plan_input> models;  //!< the strategy's `models`
  std::optional<plan_input> base;  //!< the strategy's `base`
  merge_parameters params;
  output_type type = output_type::f32;
  std::uint64_t read_bytes = 0;    //!< stored bytes of all inputs (progress)

  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (auto e : shape) n *= static_cast<std::uint64_t>(e);
    return n;
  }
};

//! The whole plan.
struct merge_plan {
  std::string method;
  tensor_naming naming = tensor_naming::hf;
  output_format format = output_format::safetensors;
  std::vector<std::string> sources;    //!< labels, by source index
  std::optional<std::size_t> base;     //!< source index of base_model
  std::int64_t n_layers = 0;           //!< output depth
  std::vector<planned_tensor> tensors; //!< in model order
  std::vector<std::string> warnings;   //!< things the user should know (printed by the CLI)
  //! TIES trimming per tensor or per whole model; with `model`, the engine sets each tensor's
  //! per-model `trim_threshold` in a first pass (merge_engine::prepare_trim_thresholds).
  magnitude_trim_scope trim_scope = magnitude_trim_scope::tensor;
  bool trims_by_magnitude = false;     //!< the method accepts trim_threshold (ties)

  std::uint64_t read_bytes() const noexcept {
    std::uint64_t n = 0;
    for (const auto &t : tensors) n += t.read_bytes;
    return n;
  }

  //! Human-readable plan: what `dms merge --dry-run` prints.
  std::string describe() const {
    std::string s = "merge plan: method " + method + ", " + std::to_string(tensors.size()) + " tensors, " +
                    std::to_string(n_layers) + " layers, naming " + (naming == tensor_naming::hf ? "hf" : "gguf") +
                    ", output " + (format == output_format::gguf ? "gguf" : "safetensors") + ", reads " +
                    format_bytes(read_bytes()) + "\nsources:\n";
    for (std::size_t i = 0; i < sources.size(); ++i)
      s += "  [" + std::to_string(i) + "] " + sources[i] + (base && *base == i ? "  (base)" : "") + "\n";
    for (const auto &w : warnings) s += "warning: " + w + "\n";
    if (trim_scope == magnitude_trim_scope::model)
      s += "trim scope: model (each model's task vector is trimmed over all of its tensors, as the original TIES "
           "code does; a first streaming pass finds each model's trim_threshold before merging)\n";
    else if (trims_by_magnitude)
      s += "trim scope: tensor (each tensor's task vectors are trimmed on their own, as mergekit does)\n";
    s += "tensors:\n";
    for (const auto &t : tensors) {
      s += "  " + t.name + " " + detail::shape_string(t.shape) + " " + std::string(name_of(t.type));
      if (t.layer >= 0) s += " layer " + std::to_string(t.layer);
      s += " t=" + parameter_setting::number(t.t) + " <-";
      for (std::size_t i = 0; i < t.models.size(); ++i)
        s += (i ? ", [" : " [") + std::to_string(t.models[i].source) + "] " + t.models[i].name;
      if (t.base) s += "; base [" + std::to_string(t.base->source) + "] " + t.base->name;
      if (!t.params.entries().empty()) {
        s += ";";
        for (const auto &e : t.params.entries())
          s += " " + e.key + (e.model == merge_parameters::global ? "" : "[" + std::to_string(e.model) + "]") + "=" +
               parameter_setting::number(e.value);
      }
      s += "\n";
    }
    return s;
  }
};

//! Options of build_merge_plan.
struct plan_options {
  output_format format = output_format::safetensors;
  std::optional<output_type> out_type{}; //!< overrides the config's out_dtype / dtype
  vocab_policy vocab = vocab_policy::truncate;
};

namespace detail {

//! `name` with its block index replaced by `layer` ("model.layers.3.x" -> "model.layers.7.x").
inline std::string with_layer(std::string_view name, std::int64_t layer) {
  for (std::string_view prefix : {std::string_view("model.layers."), std::string_view("blk.")}) {
    if (!name.starts_with(prefix)) continue;
    const auto dot = name.find('.', prefix.size());
    return std::string(prefix) + std::to_string(layer) + std::string(name.substr(dot));
  }
  return std::string(name);
}

//! Tensors before the blocks (token embeddings); other non-block tensors come after them.
inline bool is_pre_block(std::string_view name) {
  return name.find("embed") != std::string_view::npos || name.starts_with("token_embd");
}
//! Tensors with one row per vocabulary entry.
inline bool is_vocab_tensor(std::string_view name) {
  return name.find("embed_tokens") != std::string_view::npos || name.find("lm_head") != std::string_view::npos ||
         name.starts_with("token_embd.") || name == "output.weight";
}

//! The name filters see: the HF spelling of a GGUF name when the Llama table knows it.
inline std::string filter_name(std::string_view name, tensor_naming naming) {
  if (naming == tensor_naming::gguf)
    if (auto hf = gguf_to_hf_name(name)) return *hf;
  return std::string(name);
}

//! One source of an output slice, resolved to a source index.
struct slice_source {
  std::size_t source;
  std::int64_t begin, end;
  const parameter_map *params; //!< may be null
};

struct slice_plan {
  std::vector<slice_source> sources;
  const parameter_map *params = nullptr;
  int line = 0;
};

} // namespace detail

//! Builds the plan. `refs[i]` and `sources[i]` describe source i; `strategy` decides how the base
//! is used and which parameters exist.
inline merge_plan build_merge_plan(const merge_config &config, std::span<const model_reference> refs,
                                   std::span<const model_source *const> sources, const strategy_handle &strategy,
                                   tensor_naming naming, const plan_options &opt) {
  const error_context at_config{config.file};
  auto index_of = [&](const model_reference &r) {
    for (std::size_t i = 0; i < refs.size(); ++i)
      if (refs[i] == r) return i;
    throw error(errc::invalid_argument, "model '" + r.text() + "' was not opened", at_config);
  };
  merge_plan plan;
  plan.method = config.merge_method;
  plan.naming = naming;
  plan.format = opt.format;
  for (const auto *s : sources) plan.sources.push_back(s->label());
  if (config.base_model) plan.base = index_of(*config.base_model);

  // --- parameters the method accepts, where it accepts them --------------------------------------
  auto check_names = [&](const parameter_map &m, bool per_model, const std::string &where) {
    if (!strategy.declares_parameters) return;
    for (const auto &[key, setting] : m.entries()) {
      const merge_parameter_info *p = strategy.find_parameter(key);
      if (!p) {
        std::string known;
        for (const auto &q : strategy.parameters) known += (known.empty() ? "" : ", ") + std::string(q.name);
        throw error(errc::invalid_argument,
                    "merge method '" + strategy.name + "' has no parameter '" + key + "' (in " + where +
                        "; it accepts: " + (known.empty() ? "none" : known) + ")",
                    at_config);
      }
      require(!per_model || p->scope == merge_parameter_scope::per_model, errc::invalid_argument, [&] {
        return "parameter '" + key + "' of '" + strategy.name + "' is global: give it in the top-level (or slice) " +
               "parameters, not in " + where;
      }, at_config);
    }
  };
  check_names(config.parameters, false, "the global parameters");
  for (const auto &m : config.models) check_names(m.parameters, true, "the parameters of " + m.model.text());
  for (const auto &s : config.slices) {
    check_names(s.parameters, false, "slice parameters (line " + std::to_string(s.line) + ")");
    for (const auto &src : s.sources) check_names(src.parameters, true, "the parameters of " + src.model.text());
  }
  if (!strategy.declares_parameters)
    plan.warnings.push_back("merge method '" + strategy.name + "' does not declare its parameters: names are not checked");

  // --- output slices ------------------------------------------------------------------------------
  std::vector<detail::slice_plan> slices;
  if (!config.models.empty()) {
    detail::slice_plan s;
    for (const auto &m : config.models) {
      const std::size_t i = index_of(m.model);
      s.sources.push_back({i, 0, sources[i]->n_layers(), &m.parameters});
    }
    for (const auto &src : s.sources)
      require(sources[src.source]->n_layers() == sources[s.sources[0].source]->n_layers(), errc::shape_mismatch, [&] {
        return sources[src.source]->label() + " has " + std::to_string(sources[src.source]->n_layers()) + " layers, " +
               sources[s.sources[0].source]->label() + " has " +
               std::to_string(sources[s.sources[0].source]->n_layers()) +
               " (models of a `models:` merge must have the same depth; use slices to mix depths)";
      }, at_config);
    slices.push_back(std::move(s));
  } else {
    for (const auto &os : config.slices) {
      detail::slice_plan s;
      s.params = &os.parameters;
      s.line = os.line;
      for (const auto &src : os.sources) {
        const std::size_t i = index_of(src.model);
        require(src.layer_end <= sources[i]->n_layers(), errc::invalid_argument, [&] {
          return "slice at line " + std::to_string(os.line) + ": layer_range [" + std::to_string(src.layer_begin) +
                 ", " + std::to_string(src.layer_end) + "] of " + sources[i]->label() + ", which has " +
                 std::to_string(sources[i]->n_layers()) + " layers";
        }, at_config);
        s.sources.push_back({i, src.layer_begin, src.layer_end, &src.parameters});
      }
      for (const auto &src : s.sources)
        require(src.end - src.begin == s.sources[0].end - s.sources[0].begin, errc::invalid_argument, [&] {
          return "slice at line " + std::to_string(os.line) + ": all sources must take the same number of layers";
        }, at_config);
      slices.push_back(std::move(s));
    }
  }

  const bool base_separate =
      plan.base && strategy.base != merge_base_policy::ignored; // base passed as `base`, not in models
  require(strategy.base != merge_base_policy::required || plan.base.has_value(), errc::invalid_argument,
          [&] { return "merge method '" + strategy.name + "' needs base_model"; }, at_config);

  // Non-block tensor names and per-layer tensor names of each source.
  struct name_index {
    std::vector<std::string> outside;                          // sorted
    std::map<std::int64_t, std::vector<std::string>> by_layer; // names, sorted
  };
  std::map<std::size_t, name_index> names;
  auto names_of = [&](std::size_t src) -> const name_index & {
    auto it = names.find(src);
    if (it != names.end()) return it->second;
    name_index ni;
    for (const auto &t : sources[src]->tensors()) {
      if (auto l = layer_index(t.name)) ni.by_layer[*l].push_back(t.name);
      else ni.outside.push_back(t.name);
    }
    return names.emplace(src, std::move(ni)).first->second;
  };

  // The inputs of one output tensor: each listed input (and the base) reads `ref_name` moved to its
  // own layer. Checks presence and shapes.
  struct input_layer {
    std::size_t source;
    std::int64_t layer; // -1 outside the blocks
    const parameter_map *params;
    bool is_base;
  };
  std::int64_t out_layer_base = 0;
  std::int64_t total_layers = 0;
  for (const auto &s : slices) total_layers += s.sources[0].end - s.sources[0].begin;
  plan.n_layers = total_layers;

  auto plan_tensor = [&](const std::string &ref_name, const detail::slice_plan &slice,
                         const std::vector<input_layer> &inputs, std::int64_t out_layer, double t) {
    planned_tensor pt;
    pt.name = out_layer >= 0 ? detail::with_layer(ref_name, out_layer) : ref_name;
    pt.layer = static_cast<std::int32_t>(out_layer);
    pt.t = t;
    const source_tensor *ref = nullptr;
    const model_source *ref_src = nullptr;
    std::vector<std::pair<plan_input, const source_tensor *>> all;
    std::vector<model_parameter_source> model_params;
    for (const auto &in : inputs) {
      const model_source &src = *sources[in.source];
      const std::string name = in.layer >= 0 ? detail::with_layer(ref_name, in.layer) : ref_name;
      const source_tensor *st = src.find(name);
      require(st != nullptr, errc::shape_mismatch, [&] {
        return "missing from " + src.label() + " (present in " + sources[inputs[0].source]->label() + ")";
      }, {src.label(), std::nullopt, name});
      if (!ref) {
        ref = st;
        ref_src = &src;
        pt.shape = st->shape;
      }
      const bool vocab = detail::is_vocab_tensor(name);
      const bool same_but_rows = st->shape.size() == ref->shape.size() && !st->shape.empty() &&
                                 std::equal(st->shape.begin() + 1, st->shape.end(), ref->shape.begin() + 1);
      require(st->shape == ref->shape || (vocab && same_but_rows), errc::shape_mismatch, [&] {
        return "shape " + detail::shape_string(st->shape) + " in " + src.label() + " but " +
               detail::shape_string(ref->shape) + " in " + ref_src->label();
      }, {src.label(), std::nullopt, name});
      if (st->shape != ref->shape) {
        require(opt.vocab == vocab_policy::truncate, errc::shape_mismatch, [&] {
          return "vocabulary rows differ: " + detail::shape_string(st->shape) + " in " + src.label() + " but " +
                 detail::shape_string(ref->shape) + " in " + ref_src->label() +
                 " (--vocab-policy truncate keeps the common rows)";
        }, {src.label(), std::nullopt, name});
        pt.shape[0] = std::min(pt.shape[0], st->shape[0]);
      }
      pt.read_bytes += st->stored_bytes;
      all.push_back({plan_input{in.source, name}, st});
      if (in.is_base && base_separate) {
        pt.base = plan_input{in.source, name};
      } else {
        pt.models.push_back({in.source, name});
        model_params.push_back({in.params, {}});
      }
    }
    // Filters match input names (HF spelling); keep the strings alive for resolve_parameters.
    std::vector<std::string> filter_names;
    filter_names.reserve(pt.models.size());
    for (std::size_t i = 0; i < pt.models.size(); ++i) {
      filter_names.push_back(detail::filter_name(pt.models[i].name, naming));
      model_params[i].tensor_name = filter_names.back();
    }
    const std::string out_filter = detail::filter_name(pt.name, naming);
    const parameter_map *levels[] = {slice.params, &config.parameters};
    pt.params = resolve_parameters(out_filter, t, levels, model_params);

    // Model count and required parameters, now that the inputs are known.
    require(pt.models.size() >= strategy.min_models &&
                (strategy.max_models == 0 || pt.models.size() <= strategy.max_models),
            errc::invalid_argument, [&] {
              return "merge method '" + strategy.name + "' takes " + std::to_string(strategy.min_models) +
                     (strategy.max_models == strategy.min_models ? ""
                      : strategy.max_models == 0                 ? " or more"
                                                                 : " to " + std::to_string(strategy.max_models)) +
                     " models besides the base, the config gives " + std::to_string(pt.models.size());
            }, at_config);
    for (const auto &p : strategy.parameters) {
      if (!p.required) continue;
      if (p.scope == merge_parameter_scope::global) {
        require(pt.params.find(p.name).has_value(), errc::invalid_argument, [&] {
          return "merge method '" + strategy.name + "' needs parameter '" + std::string(p.name) + "'";
        }, {config.file, std::nullopt, pt.name});
      } else {
        for (std::size_t i = 0; i < pt.models.size(); ++i)
          require(pt.params.find(p.name, static_cast<std::int32_t>(i)).has_value(), errc::invalid_argument, [&] {
            return "merge method '" + strategy.name + "' needs parameter '" + std::string(p.name) + "' for " +
                   sources[pt.models[i].source]->label();
          }, {config.file, std::nullopt, pt.name});
      }
    }

    // Output type: --out-type, else out_dtype, else dtype, else the first input's float type.
    std::optional<output_type> want = opt.out_type;
    for (const auto *key : {&config.out_dtype, &config.dtype}) {
      if (want || !*key) continue;
      want = parse_output_type(**key);
      require(want.has_value(), errc::invalid_argument, [&] {
        return "dtype '" + **key + "' (expected float32, float16, bfloat16, or q8_0 for GGUF output)";
      }, at_config);
    }
    if (!want) {
      want = output_type::f32;
      if (ref->float_type == dtype::f16) want = output_type::f16;
      if (ref->float_type == dtype::bf16) want = output_type::bf16;
    }
    if (opt.format == output_format::safetensors) {
      require(*want != output_type::q8_0, errc::invalid_argument,
              [] { return std::string("q8_0 is a GGUF type: use --format gguf or another dtype"); }, at_config);
    } else if (pt.shape.size() < 2) {
      want = output_type::f32; // norms and biases: llama.cpp keeps them F32
    } else if (*want == output_type::q8_0 && pt.shape.back() % 32 != 0) {
      want = output_type::f16; // Q8_0 needs rows of whole 32-element blocks
    }
    pt.type = *want;
    plan.tensors.push_back(std::move(pt));
  };

  // Which inputs a slice feeds the strategy: its sources, plus the base when the method uses it
  // and it is not among them (the `models:` form adds it the way mergekit does).
  auto slice_inputs = [&](const detail::slice_plan &s, std::int64_t offset, bool outside) {
    std::vector<input_layer> in;
    bool base_listed = false;
    for (const auto &src : s.sources) {
      const bool is_base = plan.base && *plan.base == src.source;
      base_listed = base_listed || is_base;
      in.push_back({src.source, outside ? -1 : src.begin + offset, src.params, is_base});
    }
    if (base_separate && !base_listed) {
      require(!config.models.empty() || outside, errc::invalid_argument, [&] {
        return "slice at line " + std::to_string(s.line) + ": base_model " + sources[*plan.base]->label() +
               " must be one of the slice's sources (it says which layers the base contributes)";
      }, at_config);
      in.push_back({*plan.base, outside ? -1 : offset, nullptr, true});
    }
    return in;
  };

  // The same tensor set in every input of a layer (or outside the blocks).
  auto check_same_names = [&](const std::vector<input_layer> &in, const std::vector<std::string> &ref_names,
                              std::int64_t ref_layer, bool pre) {
    for (const auto &i : in) {
      const name_index &ni = names_of(i.source);
      std::vector<std::string> mine;
      if (i.layer < 0) {
        for (const auto &n : ni.outside)
          if (detail::is_pre_block(n) == pre) mine.push_back(n);
      } else if (auto it = ni.by_layer.find(i.layer); it != ni.by_layer.end()) {
        for (const auto &n : it->second) mine.push_back(detail::with_layer(n, ref_layer));
      }
      std::sort(mine.begin(), mine.end());
      for (const auto &n : mine)
        require(std::binary_search(ref_names.begin(), ref_names.end(), n), errc::shape_mismatch, [&] {
          return "present in " + sources[i.source]->label() + " but not in " + sources[in[0].source]->label() +
                 " (inputs must have the same tensors)";
        }, {sources[i.source]->label(), std::nullopt, i.layer < 0 ? n : detail::with_layer(n, i.layer)});
    }
  };

  auto plan_outside = [&](const detail::slice_plan &s, bool pre) {
    const auto in = slice_inputs(s, 0, true);
    std::vector<std::string> ref_names;
    for (const auto &n : names_of(in[0].source).outside)
      if (detail::is_pre_block(n) == pre) ref_names.push_back(n);
    check_same_names(in, ref_names, -1, pre);
    for (const auto &n : ref_names) plan_tensor(n, s, in, -1, 0.0);
  };

  plan_outside(slices.front(), true);
  for (const auto &s : slices) {
    const std::int64_t len = s.sources[0].end - s.sources[0].begin;
    for (std::int64_t idx = 0; idx < len; ++idx) {
      const auto in = slice_inputs(s, idx, false);
      const name_index &ni = names_of(in[0].source);
      std::vector<std::string> ref_names;
      if (auto it = ni.by_layer.find(in[0].layer); it != ni.by_layer.end()) ref_names = it->second;
      std::sort(ref_names.begin(), ref_names.end());
      check_same_names(in, ref_names, in[0].layer, false);
      for (const auto &n : ref_names) {
        // plan_tensor moves the name to each input's layer and to the output layer.
        plan_tensor(n, s, in, out_layer_base + idx, slice_gradient_t(idx, len));
      }
    }
    out_layer_base += len;
  }
  plan_outside(slices.back(), false);

  std::set<std::string> seen;
  for (const auto &t : plan.tensors)
    require(seen.insert(t.name).second, errc::invalid_argument,
            [&] { return "the plan writes this tensor twice"; }, {config.file, std::nullopt, t.name});

  // Whole-model trimming: one threshold per model, so one density per model.
  const merge_parameter_info *threshold = strategy.find_parameter("trim_threshold");
  plan.trims_by_magnitude = threshold && threshold->scope == merge_parameter_scope::per_model;
  plan.trim_scope = config.trim_scope;
  if (config.trim_scope == magnitude_trim_scope::model) {
    require(plan.trims_by_magnitude, errc::invalid_argument, [&] {
      return "trim_scope: model needs a method that trims task vectors by a magnitude threshold (ties); '" +
             strategy.name + "' has no per-model trim_threshold parameter";
    }, at_config);
    std::map<std::size_t, std::pair<double, std::string>> density; // source -> (density, first tensor)
    for (const auto &t : plan.tensors) {
      if (!t.base) continue;
      for (std::size_t i = 0; i < t.models.size(); ++i) {
        const auto m = static_cast<std::int32_t>(i);
        require(!t.params.find("trim_threshold", m).has_value(), errc::invalid_argument, [&] {
          return "trim_threshold is set by the engine under trim_scope: model; remove it from the config";
        }, {config.file, std::nullopt, t.name});
        const double d = t.params.find("density", m).value_or(1.0);
        auto [it, fresh] = density.try_emplace(t.models[i].source, d, t.name);
        require(fresh || it->second.first == d, errc::invalid_argument, [&] {
          return "trim_scope: model keeps one fraction of each model's whole task vector, but the density of " +
                 sources[t.models[i].source]->label() + " is " + parameter_setting::number(d) + " here and " +
                 parameter_setting::number(it->second.first) + " in " + it->second.second +
                 " (give it one density, or use trim_scope: tensor)";
        }, {config.file, std::nullopt, t.name});
      }
    }
  }
  return plan;
}

DMS_NAMESPACE_END
