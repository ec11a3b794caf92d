// dms/merge/config.hpp: mergekit YAML merge configs (mergekit/config.py's MergeConfiguration).
//
// `dms merge` takes the configs people already have for mergekit-yaml, so this reads the same
// schema:
//   merge_method: ties                    # required
//   base_model: path                      # a model reference, see below
//   models:                               # either models ...
//     - model: path
//       parameters: {weight: 0.5, density: [1, 0.7, 0.1]}
//   slices:                               # ... or slices (exactly one of the two)
//     - sources:
//         - model: path
//           layer_range: [0, 16]          # [begin, end): end exclusive, as in mergekit
//           parameters: {...}
//       parameters: {...}                 # per-slice settings
//   parameters: {...}                     # global settings (see dms/merge/parameters.hpp)
//   dtype: float32                        # mergekit's compute dtype; dms computes in f32 always and
//   out_dtype: bfloat16                   # uses it as the output type when out_dtype is absent
//   tokenizer_source: base                # copy the base model's tokenizer files
//   trim_scope: model                     # dms only: TIES trimming per whole model (see below)
// A model reference is a path (a Hugging Face directory of safetensors, a .safetensors file or a
// .gguf file) or `base+adapter` (a PEFT LoRA adapter directory applied to `base`, as mergekit
// writes it). Relative paths are relative to the working directory, as with mergekit-yaml.
//
// Strictness: a typo in a merge config silently changes the merge, so every key is checked. A key
// dms does not know, anywhere, is an error naming the key and its line; so is a mergekit feature
// dms does not implement (`modules`, `tokenizer`, `chat_template`, `residual_weight`, a
// per-slice `base_model` other than the global one, `tokenizer_source: union`), instead of a merge
// that quietly differs from mergekit's.
//
// `trim_scope` is dms's own key (mergekit does not know it): `tensor` (the default) trims each
// task vector tensor by tensor, as mergekit does; `model` trims each model's task vector over all
// of its tensors at once, as the original TIES code does (github.com/prateeky2806/ties-merging:
// one top-k over the flattened model). It needs a method with a per-model `trim_threshold`
// parameter (`ties`); the engine finds each model's threshold in a first streaming pass.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/merge/parameters.hpp"

DMS_NAMESPACE_BEGIN

//! Over which entries TIES keeps the top `density` fraction of a task vector.
enum class magnitude_trim_scope : std::uint8_t {
  tensor, //!< each tensor on its own (mergekit)
  model,  //!< all of a model's tensors together (the original TIES code)
};

//! A model as a config names it: a checkpoint, optionally with a LoRA adapter applied on it.
struct model_reference {
  std::filesystem::path path;                //!< checkpoint directory or file
  std::optional<std::filesystem::path> lora; //!< PEFT adapter directory applied to `path`
  //! As written in the config ("base+adapter").
  std::string text() const { return path.string() + (lora ? "+" + lora->string() : std::string()); }
  friend bool operator==(const model_reference &, const model_reference &) = default;

  //! Parses "path" or "path+adapter".
  static model_reference parse(std::string_view s) {
    model_reference r;
    const auto plus = s.find('+');
    r.path = std::string(s.substr(0, plus));
    if (plus != std::string_view::npos) r.lora = std::string(s.substr(plus + 1));
    return r;
  }
};

//! An entry of `models:`.
struct input_model_definition {
  model_reference model;
  parameter_map parameters;
  int line = 0; //!< 1-based line in the config, for messages
};

//! One source of an output slice.
struct input_slice_definition {
  model_reference model;
  std::int64_t layer_begin = 0; //!< first layer taken
  std::int64_t layer_end = 0;   //!< one past the last layer taken
  parameter_map parameters;
  int line = 0;
};

//! An entry of `slices:`.
struct output_slice_definition {
  std::vector<input_slice_definition> sources;
  parameter_map parameters;
  int line = 0;
};

//! A parsed merge config.
struct merge_config {
  std::string file; //!< where it was read from (labels errors)
  std::string merge_method;
  std::optional<model_reference> base_model;
  std::vector<input_model_definition> models; //!< empty when `slices` is used
  std::vector<output_slice_definition> slices; //!< empty when `models` is used
  parameter_map parameters;
  std::optional<std::string> dtype;
  std::optional<std::string> out_dtype;
  std::optional<std::string> tokenizer_source; //!< "base" (the only value dms implements)
  magnitude_trim_scope trim_scope = magnitude_trim_scope::tensor; //!< dms's `trim_scope` key

  //! Every distinct model the config names (base first), in order of appearance.
  std::vector<model_reference> referenced_models() const {
    std::vector<model_reference> out;
    auto add = [&](const model_reference &m) {
      if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
    };
    if (base_model) add(*base_model);
    for (const auto &m : models) add(m.model);
    for (const auto &s : slices)
      for (const auto &src : s.sources) add(src.model);
    return out;
  }
};

namespace detail {

class yaml_reader {
public:
  explicit yaml_reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node &at, const std::string &message, errc code = errc::invalid_format) const {
    const YAML::Mark m = at.Mark();
    throw error(code, "line " + std::to_string(m.line + 1) + ", column " + std::to_string(m.column + 1) + ": " + message,
                {file_});
  }
  static int line(const YAML::Node &n) { return n.Mark().line + 1; }

  //! Checks that `n` is a mapping whose keys are all in `allowed`, each at most once.
  void check_keys(const YAML::Node &n, std::string_view what, std::initializer_list<std::string_view> allowed) const {
    if (!n.IsMap()) fail(n, std::string(what) + " must be a mapping");
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) fail(it->first, "keys of " + std::string(what) + " must be plain names");
      const std::string key = it->first.Scalar();
      if (!seen.insert(key).second) fail(it->first, "duplicate key '" + key + "' in " + std::string(what));
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        fail(it->first, "unknown key '" + key + "' in " + std::string(what) + " (expected one of: " + list + ")");
      }
    }
  }

  std::string string(const YAML::Node &n, std::string_view what) const {
    if (!n.IsScalar()) fail(n, std::string(what) + " must be a string");
    return n.Scalar();
  }

  double number(const YAML::Node &n, std::string_view what) const {
    if (!n.IsScalar()) fail(n, std::string(what) + " must be a number");
    const std::string s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return 1;
    if (s == "false" || s == "False" || s == "FALSE") return 0;
    double v = 0;
    if (!YAML::convert<double>::decode(n, v))
      fail(n, std::string(what) + ": expected a number or a boolean, got '" + s + "'" +
                  " (dms implements numeric parameters only)");
    return v;
  }

  std::int64_t integer(const YAML::Node &n, std::string_view what) const {
    std::int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<std::int64_t>::decode(n, v))
      fail(n, std::string(what) + " must be an integer");
    return v;
  }

  model_reference model(const YAML::Node &n, std::string_view what) const {
    if (n.IsMap())
      fail(n, std::string(what) + ": the mapping form of a model reference (path/revision/lora) is not supported; "
                                  "write 'path' or 'base_path+adapter_path'",
           errc::unsupported);
    const std::string s = string(n, what);
    if (s.empty()) fail(n, std::string(what) + " is empty");
    model_reference r = model_reference::parse(s);
    if (r.path.empty() || (r.lora && r.lora->empty()))
      fail(n, std::string(what) + ": '" + s + "' (expected 'path' or 'base_path+adapter_path')");
    return r;
  }

  scalar_or_gradient scalar_or_gradient_value(const YAML::Node &n, std::string_view what) const {
    if (n.IsSequence()) {
      std::vector<double> g;
      for (const auto &e : n) g.push_back(number(e, what));
      if (g.empty()) fail(n, std::string(what) + ": an empty gradient");
      return g;
    }
    return number(n, what);
  }

  parameter_setting setting(const YAML::Node &n, const std::string &what) const {
    auto conditional = [&](const YAML::Node &c) {
      check_keys(c, "a filtered value of " + what, {"filter", "value"});
      if (!c["value"]) fail(c, what + ": a filter entry needs 'value'");
      conditional_parameter p;
      if (const YAML::Node f = c["filter"]; f && !f.IsNull()) p.filter = string(f, what + ".filter");
      p.value = scalar_or_gradient_value(c["value"], what + ".value");
      return p;
    };
    if (n.IsMap()) return parameter_setting::filtered({conditional(n)});
    if (n.IsSequence() && n.size() > 0 && n[0].IsMap()) {
      std::vector<conditional_parameter> entries;
      for (const auto &c : n) {
        if (!c.IsMap()) fail(c, what + ": mixes filter entries and plain values");
        entries.push_back(conditional(c));
      }
      return parameter_setting::filtered(std::move(entries));
    }
    const scalar_or_gradient v = scalar_or_gradient_value(n, what);
    if (const double *s = std::get_if<double>(&v)) return parameter_setting::scalar(*s);
    return parameter_setting::gradient(std::get<std::vector<double>>(v));
  }

  parameter_map parameters(const YAML::Node &n, const std::string &where) const {
    parameter_map out;
    if (!n || n.IsNull()) return out;
    if (!n.IsMap()) fail(n, where + " must be a mapping of parameter names to values");
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string key = string(it->first, "a parameter name");
      if (!seen.insert(key).second) fail(it->first, "duplicate parameter '" + key + "' in " + where);
      out.set(key, setting(it->second, "parameter '" + key + "'"));
    }
    return out;
  }

private:
  std::string file_;
};

} // namespace detail

//! Parses YAML text; `file` labels errors.
inline merge_config parse_merge_config(std::string_view text, std::string file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception &e) {
    throw error(errc::invalid_format,
                "line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1) +
                    ": YAML syntax error: " + e.msg,
                {file});
  }
  const detail::yaml_reader r(file);
  require(root.IsMap(), errc::invalid_format, [] { return std::string("a merge config must be a YAML mapping"); },
          {file});
  r.check_keys(root, "the config",
               {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
                "tokenizer_source", "trim_scope", "modules", "tokenizer", "chat_template"});
  for (std::string_view k : {"modules", "tokenizer", "chat_template"})
    if (const YAML::Node n = root[std::string(k)]; n && !n.IsNull())
      r.fail(n, "'" + std::string(k) + "' is a mergekit feature dms does not implement", errc::unsupported);

  merge_config c;
  c.file = file;
  const YAML::Node method = root["merge_method"];
  if (!method) r.fail(root, "missing key 'merge_method'");
  c.merge_method = r.string(method, "merge_method");
  if (const YAML::Node b = root["base_model"]; b && !b.IsNull()) c.base_model = r.model(b, "base_model");
  c.parameters = r.parameters(root["parameters"], "parameters");
  auto dtype_name = [&](const char *key) -> std::optional<std::string> {
    const YAML::Node n = root[key];
    if (!n || n.IsNull()) return std::nullopt;
    return r.string(n, key);
  };
  c.dtype = dtype_name("dtype");
  c.out_dtype = dtype_name("out_dtype");
  if (const YAML::Node t = root["tokenizer_source"]; t && !t.IsNull()) {
    c.tokenizer_source = r.string(t, "tokenizer_source");
    if (*c.tokenizer_source != "base")
      r.fail(t, "tokenizer_source '" + *c.tokenizer_source +
                    "' is not implemented (dms copies the base model's tokenizer: use 'base')",
             errc::unsupported);
  }

  if (const YAML::Node t = root["trim_scope"]; t && !t.IsNull()) {
    const std::string v = r.string(t, "trim_scope");
    if (v == "model") c.trim_scope = magnitude_trim_scope::model;
    else if (v != "tensor")
      r.fail(t, "trim_scope '" + v + "' (expected 'tensor', mergekit's per-tensor trimming, or 'model', the "
                "original TIES code's trimming over the whole model)");
  }

  const YAML::Node models = root["models"], slices = root["slices"];
  const bool has_models = models && !models.IsNull(), has_slices = slices && !slices.IsNull();
  if (has_models == has_slices) r.fail(root, "exactly one of 'models' or 'slices' must be present");
  if (has_models) {
    if (!models.IsSequence() || models.size() == 0) r.fail(models, "'models' must be a non-empty list");
    for (const auto &m : models) {
      r.check_keys(m, "a 'models' entry", {"model", "parameters"});
      if (!m["model"]) r.fail(m, "a 'models' entry needs 'model'");
      input_model_definition d;
      d.model = r.model(m["model"], "model");
      d.parameters = r.parameters(m["parameters"], "parameters of " + d.model.text());
      d.line = r.line(m);
      c.models.push_back(std::move(d));
    }
  } else {
    if (!slices.IsSequence() || slices.size() == 0) r.fail(slices, "'slices' must be a non-empty list");
    for (const auto &s : slices) {
      r.check_keys(s, "a slice", {"sources", "parameters", "base_model", "residual_weight"});
      if (const YAML::Node rw = s["residual_weight"]; rw && !rw.IsNull())
        r.fail(rw, "'residual_weight' is a mergekit feature dms does not implement", errc::unsupported);
      if (const YAML::Node b = s["base_model"]; b && !b.IsNull()) {
        const model_reference sb = r.model(b, "base_model");
        if (!c.base_model || !(*c.base_model == sb))
          r.fail(b, "a per-slice base_model different from the global one is not implemented", errc::unsupported);
      }
      const YAML::Node sources = s["sources"];
      if (!sources || !sources.IsSequence() || sources.size() == 0) r.fail(s, "a slice needs a non-empty 'sources' list");
      output_slice_definition out;
      out.line = r.line(s);
      out.parameters = r.parameters(s["parameters"], "slice parameters");
      for (const auto &src : sources) {
        r.check_keys(src, "a slice source", {"model", "layer_range", "parameters"});
        if (!src["model"]) r.fail(src, "a slice source needs 'model'");
        const YAML::Node range = src["layer_range"];
        if (!range || !range.IsSequence() || range.size() != 2)
          r.fail(range ? range : src, "a slice source needs 'layer_range: [begin, end]'");
        input_slice_definition d;
        d.model = r.model(src["model"], "model");
        d.layer_begin = r.integer(range[0], "layer_range[0]");
        d.layer_end = r.integer(range[1], "layer_range[1]");
        if (d.layer_begin < 0 || d.layer_end <= d.layer_begin)
          r.fail(range, "layer_range [" + std::to_string(d.layer_begin) + ", " + std::to_string(d.layer_end) +
                            "] (expected 0 <= begin < end; end is exclusive)");
        d.parameters = r.parameters(src["parameters"], "parameters of " + d.model.text());
        d.line = r.line(src);
        out.sources.push_back(std::move(d));
      }
      c.slices.push_back(std::move(out));
    }
  }
  return c;
}

//! Reads and parses the config file at `path`.
inline merge_config read_merge_config(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), errc::io, [] { return std::string("cannot open the merge config"); }, {path.string()});
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_merge_config(ss.str(), path.string());
}

DMS_NAMESPACE_END
