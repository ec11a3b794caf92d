// dms/formats/peft.hpp: PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors).
//
// A LoRA adapter stores, for each adapted module, two low-rank factors whose product is an update
// of the module's weight:  W' = W + scale * B A,  A: [r, in], B: [out, r],  scale = alpha / r
// (or alpha / sqrt(r) with rsLoRA). Merging an adapter into a base model, or treating it as a
// task vector, needs that delta per base tensor. This header reads the adapter the way PEFT
// writes it and resolves everything a merge needs up front:
//  * keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` (Linear) and
//    `.lora_embedding_A` / `.lora_embedding_B` (Embedding) are paired and mapped onto the base
//    tensor `<module>.weight`; keys of modules listed in `modules_to_save` are full replacement
//    tensors for `<module>.<param>`;
//  * r and alpha per module come from `rank_pattern` / `alpha_pattern`, matched as PEFT's
//    get_pattern_key does (the first pattern p, in file order, with re.match(r"(.*\.)?(p)$", module));
//    every adapted module must match `target_modules` (a list: equal or ending in ".<name>"; a
//    string: a regex that must match the whole module name; "all-linear": anything);
//  * `fan_in_fan_out` (GPT-2 style Conv1D weights stored [in, out]) and Embedding adapters give
//    the transposed product, as PEFT's get_delta_weight does.
// Anything else is an error naming the key: A without B, factor shapes that disagree (both
// tensors and shapes are named), an unknown key, or features dms does not implement (DoRA,
// trained biases, non-LORA PEFT types). Regexes are compiled with std::regex (ECMAScript), which
// accepts the patterns PEFT users write; a Python-only construct is reported, not misread.
//
// The delta is computed in f32 with a plain loop ordered for contiguous inner access (out x in x r
// multiply-adds; a 4096 x 4096 rank-16 module is ~0.3 GFLOP, well under a second). A BLAS sgemm
// can replace it later without changing the interface.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! Compiles a pattern from an adapter config, reporting a syntax std::regex rejects.
inline std::regex compile_peft_regex(const std::string &pattern, std::string_view what,
                                     const error_context &where) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error &e) {
    throw error(errc::unsupported,
                std::string(what) + ": cannot compile regular expression '" + pattern +
                    "' (ECMAScript syntax expected): " + e.what(),
                where);
  }
}
} // namespace detail

//! The LoRA fields of adapter_config.json (PEFT's LoraConfig), with PEFT's defaults.
struct lora_config {
  std::int64_t r = 8;
  double lora_alpha = 8.0;
  //! target_modules as a list of names (nullopt when it is a regex, "all-linear" or absent).
  std::optional<std::vector<std::string>> target_modules;
  //! target_modules as a regex string that must match the whole module name.
  std::optional<std::string> target_modules_regex;
  bool fan_in_fan_out = false;
  bool use_rslora = false; //!< scale = alpha / sqrt(r) instead of alpha / r
  std::vector<std::pair<std::string, std::int64_t>> rank_pattern; //!< in file order
  std::vector<std::pair<std::string, double>> alpha_pattern;      //!< in file order
  std::vector<std::string> modules_to_save;
  std::string base_model_name_or_path;

  //! The pattern of `patterns` that applies to `module` (PEFT's get_pattern_key), or nullptr.
  template <class V>
  static const std::pair<std::string, V> *match(const std::vector<std::pair<std::string, V>> &patterns,
                                                std::string_view module) {
    for (const auto &p : patterns) {
      const std::regex re = detail::compile_peft_regex("(.*\\.)?(" + p.first + ")", "pattern", {});
      if (std::regex_match(module.begin(), module.end(), re)) return &p;
    }
    return nullptr;
  }
  std::int64_t rank_for(std::string_view module) const {
    const auto *p = match(rank_pattern, module);
    return p ? p->second : r;
  }
  double alpha_for(std::string_view module) const {
    const auto *p = match(alpha_pattern, module);
    return p ? p->second : lora_alpha;
  }
  //! The factor of B A for `module`.
  double scale_for(std::string_view module) const {
    const double rank = static_cast<double>(rank_for(module));
    return alpha_for(module) / (use_rslora ? std::sqrt(rank) : rank);
  }
  //! Whether `module` is one target_modules selects (true when target_modules is absent or
  //! "all-linear": the adapter's own keys then say what was adapted).
  bool targets(std::string_view module) const {
    if (target_modules_regex) {
      const std::regex re = detail::compile_peft_regex(*target_modules_regex, "target_modules", {});
      return std::regex_match(module.begin(), module.end(), re);
    }
    if (!target_modules) return true;
    for (const auto &t : *target_modules) {
      if (module == t) return true;
      if (module.size() > t.size() && module.ends_with(t) && module[module.size() - t.size() - 1] == '.')
        return true;
    }
    return false;
  }
};

//! Parses adapter_config.json text; `file` labels errors.
inline lora_config parse_lora_config(std::string_view text, const std::string &file) {
  const json_document doc = parse_json(text, file);
  const ordered_json &j = doc.value;
  json_require_object(j, "adapter config", {file, 0});
  auto where = [&](std::string_view key) { return error_context{file, doc.offset_of(key, 0)}; };
  auto present = [&](std::string_view key) -> const ordered_json * {
    const ordered_json *v = json_find(j, key);
    return v && !v->is_null() ? v : nullptr;
  };
  auto key_name = [](std::string_view key) { return "key '" + std::string(key) + "'"; };
  lora_config c;

  if (const ordered_json *t = present("peft_type")) {
    const std::string type = json_as_string(*t, key_name("peft_type"), where("peft_type"));
    require(
        type == "LORA", errc::unsupported,
        [&] { return "peft_type '" + type + "': dms reads LoRA adapters (expected 'LORA')"; },
        where("peft_type"));
  }
  if (const ordered_json *d = present("use_dora"))
    require(
        !json_as_bool(*d, key_name("use_dora"), where("use_dora")), errc::unsupported,
        [] { return std::string("use_dora: DoRA adapters are not supported (expected false)"); },
        where("use_dora"));
  if (const ordered_json *b = present("bias")) {
    const std::string bias = json_as_string(*b, key_name("bias"), where("bias"));
    require(
        bias == "none", errc::unsupported,
        [&] {
          return "bias '" + bias + "': adapters with trained biases are not supported (expected 'none')";
        },
        where("bias"));
  }
  if (const ordered_json *r = present("r")) c.r = json_as_int(*r, key_name("r"), where("r"), 1);
  if (const ordered_json *a = present("lora_alpha"))
    c.lora_alpha = json_as_number(*a, key_name("lora_alpha"), where("lora_alpha"));
  if (const ordered_json *f = present("fan_in_fan_out"))
    c.fan_in_fan_out = json_as_bool(*f, key_name("fan_in_fan_out"), where("fan_in_fan_out"));
  if (const ordered_json *u = present("use_rslora"))
    c.use_rslora = json_as_bool(*u, key_name("use_rslora"), where("use_rslora"));
  if (const ordered_json *b = present("base_model_name_or_path"))
    c.base_model_name_or_path =
        json_as_string(*b, key_name("base_model_name_or_path"), where("base_model_name_or_path"));
  if (const ordered_json *t = present("target_modules")) {
    const error_context at = where("target_modules");
    if (t->is_string()) {
      std::string s = t->get<std::string>();
      if (s != "all-linear") {
        detail::compile_peft_regex(s, key_name("target_modules"), at); // report bad syntax now
        c.target_modules_regex = std::move(s);
      }
    } else if (t->is_array()) {
      std::vector<std::string> names;
      for (std::size_t i = 0; i < t->size(); ++i)
        names.push_back(json_as_string((*t)[i], "target_modules[" + std::to_string(i) + "]", at));
      c.target_modules = std::move(names);
    } else {
      json_type_error(key_name("target_modules"), "a list of module names or a regex string", *t, at);
    }
  }
  if (const ordered_json *m = present("modules_to_save")) {
    const error_context at = where("modules_to_save");
    if (!m->is_array()) json_type_error(key_name("modules_to_save"), "a list of module names", *m, at);
    for (std::size_t i = 0; i < m->size(); ++i)
      c.modules_to_save.push_back(json_as_string((*m)[i], "modules_to_save[" + std::to_string(i) + "]", at));
  }
  if (const ordered_json *p = present("rank_pattern")) {
    const error_context at = where("rank_pattern");
    json_require_object(*p, key_name("rank_pattern"), at);
    for (auto it = p->begin(); it != p->end(); ++it) {
      detail::compile_peft_regex(it.key(), "rank_pattern key", at);
      c.rank_pattern.emplace_back(it.key(),
                                  json_as_int(it.value(), "rank_pattern['" + it.key() + "']", at, 1));
    }
  }
  if (const ordered_json *p = present("alpha_pattern")) {
    const error_context at = where("alpha_pattern");
    json_require_object(*p, key_name("alpha_pattern"), at);
    for (auto it = p->begin(); it != p->end(); ++it) {
      detail::compile_peft_regex(it.key(), "alpha_pattern key", at);
      c.alpha_pattern.emplace_back(it.key(),
                                   json_as_number(it.value(), "alpha_pattern['" + it.key() + "']", at));
    }
  }
  return c;
}

//! One adapted module: its factors, where the delta goes, and how it is scaled.
struct lora_module {
  std::string module;      //!< "model.layers.0.self_attn.q_proj"
  std::string base_tensor; //!< "model.layers.0.self_attn.q_proj.weight": the tensor the delta updates
  std::string a_name;      //!< adapter tensor A: [rank, in] (Embedding: [rank, num_embeddings])
  std::string b_name;      //!< adapter tensor B: [out, rank] (Embedding: [embedding_dim, rank])
  std::int64_t rank = 0;
  double alpha = 0;
  double scale = 0;        //!< alpha / rank, or alpha / sqrt(rank) with rsLoRA
  bool transposed = false; //!< delta = (B A)^T: fan_in_fan_out, or an Embedding adapter
  std::int64_t rows = 0;   //!< shape of the delta and of the base tensor: [rows, cols]
  std::int64_t cols = 0;
};

//! A full tensor from `modules_to_save` that replaces a base tensor.
struct lora_replacement {
  std::string base_tensor;    //!< "lm_head.weight"
  std::string adapter_tensor; //!< "base_model.model.lm_head.weight"
};

//! A PEFT LoRA adapter, validated; computes per-module deltas in f32.
//! @code
//!   dms::lora_adapter lora("my-adapter");              // adapter_config.json + adapter_model.safetensors
//!   for (const auto &m : lora.modules()) {
//!     std::vector<float> w = base.to_f32(m.base_tensor);
//!     lora.apply(m, w);                                // w += scale * B A
//!   }
//! @endcode
class lora_adapter {
public:
  static constexpr std::string_view config_file_name = "adapter_config.json";
  static constexpr std::string_view weights_file_name = "adapter_model.safetensors";
  static constexpr std::string_view key_prefix = "base_model.model.";

  //! Reads `dir`/adapter_config.json and `dir`/adapter_model.safetensors.
  explicit lora_adapter(const std::filesystem::path &dir)
      : lora_adapter(read_config(dir / config_file_name),
                     safetensors_file((dir / weights_file_name).string())) {}
  //! From a parsed config and an opened weights file.
  lora_adapter(lora_config config, safetensors_file weights)
      : config_(std::move(config)), weights_(std::move(weights)) {
    pair_up();
  }

  const lora_config &config() const noexcept { return config_; }
  const safetensors_file &weights() const noexcept { return weights_; }
  //! Adapted modules, sorted by base tensor name.
  std::span<const lora_module> modules() const noexcept { return modules_; }
  //! The module updating `base_tensor`, or nullptr.
  const lora_module *find(std::string_view base_tensor) const {
    auto it = std::lower_bound(modules_.begin(), modules_.end(), base_tensor,
                               [](const lora_module &m, std::string_view n) { return m.base_tensor < n; });
    return it != modules_.end() && it->base_tensor == base_tensor ? &*it : nullptr;
  }
  //! Replacement tensors from modules_to_save.
  std::span<const lora_replacement> replacements() const noexcept { return replacements_; }

  //! out += scale * B A (or its transpose), out holding rows * cols floats.
  void accumulate(const lora_module &m, std::span<float> out) const {
    require(out.size() == static_cast<std::uint64_t>(m.rows) * static_cast<std::uint64_t>(m.cols),
            errc::shape_mismatch,
            [&] {
              return "output holds " + std::to_string(out.size()) + " floats, the delta is [" +
                     std::to_string(m.rows) + ", " + std::to_string(m.cols) + "]";
            },
            {weights_.path(), std::nullopt, m.base_tensor});
    const std::vector<float> a = weights_.to_f32(m.a_name); // [rank, inner]
    const std::vector<float> b = weights_.to_f32(m.b_name); // [outer, rank]
    const auto r = static_cast<std::size_t>(m.rank);
    const float s = static_cast<float>(m.scale);
    if (!m.transposed) {
      // D[i, j] += s * sum_k B[i, k] A[k, j]; the inner loop runs along a row of A and of D.
      const auto rows = static_cast<std::size_t>(m.rows), cols = static_cast<std::size_t>(m.cols);
      for (std::size_t i = 0; i < rows; ++i) {
        float *d = out.data() + i * cols;
        for (std::size_t k = 0; k < r; ++k) {
          const float bik = s * b[i * r + k];
          const float *ak = a.data() + k * cols;
          for (std::size_t j = 0; j < cols; ++j)
            d[j] += bik * ak[j];
        }
      }
    } else {
      // D^T[j, i] += s * sum_k A[k, j] B[i, k], with D^T: [inner, outer]. B is transposed once
      // (rank x outer floats) so that the inner loop is contiguous too.
      const auto rows = static_cast<std::size_t>(m.rows), cols = static_cast<std::size_t>(m.cols);
      std::vector<float> bt(r * cols);
      for (std::size_t i = 0; i < cols; ++i)
        for (std::size_t k = 0; k < r; ++k)
          bt[k * cols + i] = b[i * r + k];
      for (std::size_t j = 0; j < rows; ++j) {
        float *d = out.data() + j * cols;
        for (std::size_t k = 0; k < r; ++k) {
          const float akj = s * a[k * rows + j];
          const float *btk = bt.data() + k * cols;
          for (std::size_t i = 0; i < cols; ++i)
            d[i] += akj * btk[i];
        }
      }
    }
  }
  //! The delta of `m` as a new [rows, cols] buffer.
  std::vector<float> delta(const lora_module &m) const {
    std::vector<float> d(static_cast<std::size_t>(m.rows * m.cols), 0.0f);
    accumulate(m, d);
    return d;
  }
  //! weight += delta (weight is the base tensor in f32, [rows, cols]).
  void apply(const lora_module &m, std::span<float> weight) const { accumulate(m, weight); }

  static lora_config read_config(const std::filesystem::path &file) {
    mapped_file f(file.string());
    const auto bytes = f.bytes();
    return parse_lora_config({reinterpret_cast<const char *>(bytes.data()), bytes.size()}, f.path());
  }

private:
  struct factor_pair {
    const safetensors_tensor *a = nullptr;
    const safetensors_tensor *b = nullptr;
    bool embedding = false;
  };

  void pair_up() {
    static constexpr std::pair<std::string_view, std::pair<bool, bool>> suffixes[] = {
        // suffix, {is B, is embedding}
        {".lora_A.weight", {false, false}},
        {".lora_B.weight", {true, false}},
        {".lora_embedding_A", {false, true}},
        {".lora_embedding_B", {true, true}},
    };
    const std::string &file = weights_.path();
    std::map<std::string, factor_pair, std::less<>> pairs;
    for (const auto &t : weights_.tensors()) {
      const error_context where{file, t.header_offset, t.name};
      std::string_view key = t.name;
      auto unknown = [&] {
        return "unknown key (expected " + std::string(key_prefix) +
               "<module>.lora_A.weight, .lora_B.weight, .lora_embedding_A, .lora_embedding_B, or a "
               "tensor of a module listed in modules_to_save)";
      };
      require(key.starts_with(key_prefix), errc::invalid_format, unknown, where);
      key.remove_prefix(key_prefix.size());
      require(
          key.find("lora_magnitude_vector") == std::string_view::npos, errc::unsupported,
          [] { return std::string("DoRA magnitude vectors are not supported"); }, where);
      require(
          !key.ends_with(".lora_B.bias"), errc::unsupported,
          [] { return std::string("LoRA biases (lora_bias=True) are not supported"); }, where);
      bool matched = false;
      for (const auto &[suffix, kind] : suffixes) {
        if (!key.ends_with(suffix) || key.size() == suffix.size()) continue;
        const std::string module(key.substr(0, key.size() - suffix.size()));
        factor_pair &p = pairs[module];
        const safetensors_tensor *&slot = kind.first ? p.b : p.a;
        const safetensors_tensor *other = kind.first ? p.a : p.b;
        require(
            slot == nullptr && (other == nullptr || p.embedding == kind.second), errc::invalid_format,
            [&] {
              return "module '" + module +
                     "' has both Linear (lora_A/lora_B) and Embedding "
                     "(lora_embedding_A/B) factors (expected one kind)";
            },
            where);
        slot = &t;
        p.embedding = kind.second;
        matched = true;
        break;
      }
      if (matched) continue;
      // modules_to_save: "<module>.<param>" where <module> is or ends with a listed name.
      const auto dot = key.rfind('.');
      const std::string_view owner = dot == std::string_view::npos ? std::string_view{} : key.substr(0, dot);
      const bool saved = std::any_of(config_.modules_to_save.begin(), config_.modules_to_save.end(),
                                     [&](const std::string &m) {
                                       return owner == m || (owner.size() > m.size() && owner.ends_with(m) &&
                                                             owner[owner.size() - m.size() - 1] == '.');
                                     });
      require(saved, errc::invalid_format, unknown, where);
      replacements_.push_back({std::string(key), t.name});
    }

    for (const auto &kv : pairs) { // (no structured binding: clang 14 cannot capture one in a lambda)
      const std::string &module = kv.first;
      const factor_pair &p = kv.second;
      const std::string a_suffix = p.embedding ? ".lora_embedding_A" : ".lora_A.weight";
      const std::string b_suffix = p.embedding ? ".lora_embedding_B" : ".lora_B.weight";
      const safetensors_tensor *present = p.a ? p.a : p.b;
      require(p.a != nullptr && p.b != nullptr, errc::invalid_format,
              [&] {
                return "has no matching '" + std::string(key_prefix) + module + (p.a ? b_suffix : a_suffix) +
                       "' (expected LoRA factors A and B in pairs)";
              },
              {file, present->header_offset, present->name});
      modules_.push_back(resolve(module, *p.a, *p.b, p.embedding));
    }
    std::sort(modules_.begin(), modules_.end(),
              [](const lora_module &x, const lora_module &y) { return x.base_tensor < y.base_tensor; });
  }

  lora_module resolve(const std::string &module, const safetensors_tensor &a, const safetensors_tensor &b,
                      bool embedding) const {
    const std::string &file = weights_.path();
    require(config_.targets(module), errc::invalid_format,
            [&] { return "module '" + module + "' has LoRA factors but does not match target_modules"; },
            {file, a.header_offset, a.name});
    lora_module m;
    m.module = module;
    m.base_tensor = module + ".weight";
    m.a_name = a.name;
    m.b_name = b.name;
    m.rank = config_.rank_for(module);
    m.alpha = config_.alpha_for(module);
    m.scale = config_.scale_for(module);
    m.transposed = embedding || config_.fan_in_fan_out;
    auto shapes = [&] {
      return "'" + a.name + "' " + detail::shape_string(a.shape) + " and '" + b.name + "' " +
             detail::shape_string(b.shape);
    };
    require(a.shape.size() == 2 && b.shape.size() == 2, errc::shape_mismatch,
            [&] { return "LoRA factors must be matrices: " + shapes(); }, {file, a.header_offset, a.name});
    require(a.shape[0] == m.rank && b.shape[1] == m.rank, errc::shape_mismatch,
            [&] {
              return "rank " + std::to_string(m.rank) + " (from the adapter config) disagrees with " +
                     shapes() + " (expected A [r, in] and B [out, r])";
            },
            {file, a.header_offset, a.name});
    for (const auto *t : {&a, &b})
      require(t->type.has_value() && is_floating(*t->type), errc::unsupported,
              [&] { return "LoRA factor of dtype " + t->dtype_name + " (expected F32, F16, BF16 or F64)"; },
              {file, t->header_offset, t->name});
    if (m.transposed) {
      m.rows = a.shape[1];
      m.cols = b.shape[0];
    } else {
      m.rows = b.shape[0];
      m.cols = a.shape[1];
    }
    return m;
  }

  lora_config config_;
  safetensors_file weights_;
  std::vector<lora_module> modules_;
  std::vector<lora_replacement> replacements_;
};

DMS_NAMESPACE_END
