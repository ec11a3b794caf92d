// dms/formats/hf_checkpoint.hpp: Hugging Face model directories (safetensors, sharded or not,
// and the hyper-parameters in config.json).
//
// A transformers checkpoint is either one `model.safetensors` or shards named
// `model-0000i-of-0000N.safetensors` listed by `model.safetensors.index.json`:
//   {"metadata": {"total_size": <bytes>}, "weight_map": {"<tensor>": "<shard file>", ...}}
// hf_checkpoint opens either (the single file wins when both exist, as in transformers), maps
// every shard once, and checks what a loader would otherwise discover halfway through a merge:
// every listed shard exists, is a plain file name inside the directory (no path can escape it),
// and holds every tensor the map assigns to it. Tensors present in a shard but absent from the
// map are ignored, as transformers ignores them. Lookups then go to the right shard by name.
//
// hf_checkpoint_writer writes a directory the same way transformers' save_pretrained does: tensors
// are split greedily, in the order they were added, into shards of at most `max_shard_bytes` of
// tensor data (huggingface_hub's split_torch_state_dict_into_shards: a tensor larger than the limit
// gets a shard of its own), and the index is printed as json.dumps(index, indent=2,
// sort_keys=True). The directory appears atomically (dms::atomic_directory): a failed merge leaves
// nothing behind.
//
// hf_model_config reads the Llama / Qwen2 hyper-parameters of config.json with transformers'
// defaults for absent keys; a missing required key or a value of the wrong type is an error that
// names the key.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! A shard name from an index must name a file directly inside the checkpoint directory.
inline bool is_plain_file_name(std::string_view s) noexcept {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string_view::npos &&
         s.find('\\') == std::string_view::npos && s.find('\0') == std::string_view::npos;
}
} // namespace detail

//! A model directory: one safetensors file, or shards with an index.
class hf_checkpoint {
public:
  static constexpr std::string_view single_file_name = "model.safetensors";
  static constexpr std::string_view index_file_name = "model.safetensors.index.json";

  explicit hf_checkpoint(std::filesystem::path dir) : dir_(std::move(dir)) {
    namespace fs = std::filesystem;
    const fs::path single = dir_ / single_file_name;
    const fs::path index = dir_ / index_file_name;
    if (fs::is_regular_file(single)) {
      shards_.push_back(std::make_unique<safetensors_file>(single.string()));
      for (const auto &t : shards_[0]->tensors())
        where_.emplace(t.name, 0);
      return;
    }
    require(fs::is_regular_file(index), errc::io,
            [] { return "no model.safetensors or model.safetensors.index.json in this directory"; },
            {dir_.string()});
    open_index(index);
  }

  const std::filesystem::path &directory() const noexcept { return dir_; }
  //! True when the checkpoint came with an index (even if it names one shard).
  bool sharded() const noexcept { return sharded_; }
  std::size_t shard_count() const noexcept { return shards_.size(); }
  const safetensors_file &shard(std::size_t i) const { return *shards_.at(i); }

  std::size_t size() const noexcept { return where_.size(); }
  bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }
  //! Every tensor name, sorted.
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    names.reserve(where_.size());
    for (const auto &kv : where_)
      names.push_back(kv.first);
    return names;
  }
  //! The shard holding `name`; errc::invalid_argument when absent.
  const safetensors_file &file_of(std::string_view name) const {
    auto it = where_.find(name);
    require(it != where_.end(), errc::invalid_argument,
            [&] { return "no tensor named '" + std::string(name) + "' in the checkpoint"; }, {dir_.string()});
    return *shards_[it->second];
  }
  const safetensors_tensor &at(std::string_view name) const { return file_of(name).at(name); }
  const safetensors_tensor *find(std::string_view name) const {
    auto it = where_.find(name);
    return it == where_.end() ? nullptr : shards_[it->second]->find(name);
  }
  const_tensor_view view(std::string_view name) const { return file_of(name).view(name); }
  std::span<const std::byte> raw(std::string_view name) const { return file_of(name).raw(name); }
  std::vector<float> to_f32(std::string_view name) const { return file_of(name).to_f32(name); }

  //! The index's "metadata" object (null without an index).
  const ordered_json &index_metadata() const noexcept { return index_metadata_; }
  //! metadata.total_size of the index when it is a non-negative integer.
  std::optional<std::uint64_t> total_size() const {
    if (!index_metadata_.is_object()) return std::nullopt;
    const ordered_json *t = json_find(index_metadata_, "total_size");
    if (t && t->is_number_unsigned()) return t->get<std::uint64_t>();
    if (t && t->is_number_integer() && t->get<std::int64_t>() >= 0)
      return static_cast<std::uint64_t>(t->get<std::int64_t>());
    return std::nullopt;
  }

private:
  void open_index(const std::filesystem::path &index) {
    sharded_ = true;
    const std::string file = index.string();
    const json_document doc = read_json_file(index);
    json_require_object(doc.value, "index", {file, 0});
    if (const ordered_json *m = json_find(doc.value, "metadata"); m && !m->is_null()) {
      json_require_object(*m, "key 'metadata'", {file, doc.offset_of("metadata", 0)});
      index_metadata_ = *m;
    }
    const error_context map_at{file, doc.offset_of("weight_map", 0)};
    const ordered_json &map = json_at(doc.value, "weight_map", {file, 0});
    json_require_object(map, "key 'weight_map'", map_at);

    std::map<std::string, std::size_t, std::less<>> shard_index;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string shard_name = json_as_string(it.value(), "weight_map['" + it.key() + "']", map_at);
      require(
          detail::is_plain_file_name(shard_name), errc::invalid_format,
          [&] {
            return "weight_map['" + it.key() + "'] = '" + shard_name +
                   "': expected a file name inside the checkpoint directory";
          },
          map_at);
      auto [pos, inserted] = shard_index.emplace(shard_name, shards_.size());
      if (inserted) {
        const std::filesystem::path p = dir_ / shard_name;
        require(
            std::filesystem::is_regular_file(p), errc::io,
            [&] {
              return "shard '" + shard_name + "' (listed for tensor '" + it.key() + "') does not exist in " +
                     dir_.string();
            },
            map_at);
        shards_.push_back(std::make_unique<safetensors_file>(p.string()));
      }
      const safetensors_file &shard = *shards_[pos->second];
      require(shard.contains(it.key()), errc::invalid_format,
              [&] {
                return "listed in " + std::string(index_file_name) +
                       " for this shard, but the shard has "
                       "no such tensor";
              },
              {shard.path(), std::nullopt, it.key()});
      where_.emplace(it.key(), pos->second);
    }
  }

  std::filesystem::path dir_;
  bool sharded_ = false;
  // unique_ptr: a safetensors_file owns a mapping and is not cheap to move around in a vector.
  std::vector<std::unique_ptr<safetensors_file>> shards_;
  std::map<std::string, std::size_t, std::less<>> where_;
  ordered_json index_metadata_;
};

//! Options of hf_checkpoint_writer.
struct hf_writer_options {
  //! Maximum tensor bytes per shard: transformers' default max_shard_size, "5GB" (5 * 10^9).
  std::uint64_t max_shard_bytes = 5'000'000'000;
  //! Order of tensors inside each shard (the split itself follows the order of add()).
  tensor_order order = tensor_order::canonical;
  //! With one shard, write `model.safetensors` and no index, as save_pretrained does. When false
  //! the output is always `model-00001-of-0000N.safetensors` plus the index.
  bool single_file_if_one_shard = true;
};

//! Collects tensors and writes a (possibly sharded) checkpoint directory atomically. As with
//! safetensors_writer, spans must stay valid until write() returns, and producers run then.
//! @code
//!   dms::hf_checkpoint_writer w({.max_shard_bytes = 2'000'000'000});
//!   w.set_metadata("format", "pt");
//!   for (auto &name : base.tensor_names())
//!     w.add(name, dms::dtype::bf16, shape_of(name), [&, name](dms::tensor_sink &s) { merge(name, s); });
//!   w.add_file("config.json", config_text);
//!   w.write("merged-model");   // must not exist yet
//! @endcode
class hf_checkpoint_writer {
public:
  explicit hf_checkpoint_writer(hf_writer_options options = {}) : options_(options) {
    require(options_.max_shard_bytes > 0, errc::invalid_argument,
            [] { return std::string("max_shard_bytes must be positive"); });
  }

  //! Metadata written into every shard ("format": "pt" is what transformers writes).
  void set_metadata(std::string key, std::string value) {
    probe_.set_metadata(key, value);
    metadata_[std::move(key)] = std::move(value);
  }
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    add_entry(name, safetensors_dtype_of(type).name, std::move(shape), bytes, {});
  }
  void add(std::string name, const const_tensor_view &v) {
    require(v.space == memory_space::host && v.is_contiguous(), errc::invalid_argument,
            [&] { return "tensor '" + name + "': the writer takes contiguous host views"; });
    add(std::move(name), v.type, std::vector<std::int64_t>(v.extents.begin(), v.extents.begin() + v.rank),
        std::span<const std::byte>(v.data, v.size_bytes()));
  }
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, tensor_producer produce) {
    require(static_cast<bool>(produce), errc::invalid_argument,
            [&] { return "tensor '" + name + "': empty producer"; });
    add_entry(name, safetensors_dtype_of(type).name, std::move(shape), {}, std::move(produce));
  }
  void add_raw(std::string name, std::string_view dtype_name, std::vector<std::int64_t> shape,
               std::span<const std::byte> bytes) {
    add_entry(name, dtype_name, std::move(shape), bytes, {});
  }
  //! An extra file for the directory (config.json, tokenizer files, a README).
  void add_file(std::string file_name, std::string contents) {
    require(detail::is_plain_file_name(file_name), errc::invalid_argument,
            [&] { return "'" + file_name + "' is not a plain file name"; });
    files_[std::move(file_name)] = std::move(contents);
  }

  std::size_t size() const noexcept { return entries_.size(); }
  //! Sum of all tensor bytes (the index's metadata.total_size).
  std::uint64_t total_size() const noexcept { return total_; }

  //! The split: entry indices (in add() order) of each shard, in shard order.
  std::vector<std::vector<std::size_t>> plan() const {
    std::vector<std::vector<std::size_t>> shards;
    std::vector<std::size_t> current;
    std::uint64_t current_bytes = 0;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const std::uint64_t n = entries_[i].nbytes;
      if (n > options_.max_shard_bytes) { // its own shard, placed before the one being filled
        shards.push_back({i});
        continue;
      }
      if (current_bytes + n > options_.max_shard_bytes && !current.empty()) {
        shards.push_back(std::move(current));
        current.clear();
        current_bytes = 0;
      }
      current.push_back(i);
      current_bytes += n;
    }
    if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
    return shards;
  }

  //! Shard file name i (0-based) of n, as transformers names them.
  static std::string shard_name(std::size_t i, std::size_t n) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    return buf;
  }

  //! Writes the directory `target` (which must not exist) atomically.
  void write(const std::filesystem::path &target) const {
    const auto shards = plan();
    atomic_directory dir(target);
    const bool single = shards.size() == 1 && options_.single_file_if_one_shard;
    ordered_json weight_map = ordered_json::object();
    std::map<std::string, std::string> sorted_map;
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const std::string file =
          single ? std::string(hf_checkpoint::single_file_name) : shard_name(s, shards.size());
      safetensors_writer w;
      for (const auto &[k, v] : metadata_)
        w.set_metadata(k, v);
      for (std::size_t i : shards[s]) {
        const entry &e = entries_[i];
        if (e.produce)
          w.add(e.name, *find_safetensors_dtype(e.dtype_name)->type, e.shape,
                [&e](tensor_sink &sink) { e.produce(sink); });
        else
          w.add_raw(e.name, e.dtype_name, e.shape, e.bytes);
        sorted_map.emplace(e.name, file);
      }
      w.write(dir.path() / file, options_.order);
    }
    if (!single) {
      // json.dumps(index, indent=2, sort_keys=True) + "\n": nlohmann::json keeps keys sorted.
      nlohmann::json index;
      index["metadata"]["total_size"] = total_;
      index["weight_map"] = nlohmann::json::object();
      for (const auto &[k, v] : sorted_map)
        index["weight_map"][k] = v;
      write_text(dir.path() / hf_checkpoint::index_file_name, index.dump(2, ' ', true) + "\n");
    }
    for (const auto &[name, contents] : files_)
      write_text(dir.path() / name, contents);
    dir.commit();
  }

private:
  struct entry {
    std::string name;
    std::string dtype_name;
    std::vector<std::int64_t> shape;
    std::uint64_t nbytes;
    std::span<const std::byte> bytes;
    tensor_producer produce;
  };

  void add_entry(const std::string &name, std::string_view dtype_name, std::vector<std::int64_t> shape,
                 std::span<const std::byte> bytes, tensor_producer produce) {
    // Validate through a safetensors_writer, so both writers accept exactly the same tensors.
    if (produce) {
      const safetensors_dtype *dt = find_safetensors_dtype(dtype_name);
      probe_.add(name, *dt->type, shape, [](tensor_sink &) {});
    } else {
      probe_.add_raw(name, dtype_name, shape, bytes);
    }
    const std::uint64_t n = probe_.data_bytes() - total_;
    total_ = probe_.data_bytes();
    entries_.push_back({name, std::string(dtype_name), std::move(shape), n, bytes, std::move(produce)});
  }

  static void write_text(const std::filesystem::path &p, std::string_view text) {
    atomic_file f(p);
    f.write(text);
    f.commit();
  }

  hf_writer_options options_;
  safetensors_writer probe_; // validation and duplicate detection only; never written
  std::vector<entry> entries_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::string> files_;
  std::uint64_t total_ = 0;
};

// --- config.json ---------------------------------------------------------------------------------

//! config.json's "rope_scaling" object.
struct rope_scaling_config {
  std::string rope_type;        //!< "rope_type" (or legacy "type"): linear, dynamic, yarn, llama3, ...
  std::optional<double> factor; //!< "factor"
  std::optional<double> low_freq_factor; //!< llama3
  std::optional<double> high_freq_factor;
  std::optional<std::int64_t> original_max_position_embeddings;
  ordered_json raw; //!< the whole object, for the keys of other rope types (yarn's beta_fast, ...)
};

//! Hyper-parameters of a Llama-family (Llama, Qwen2, Mistral, SmolLM) config.json.
struct hf_model_config {
  std::vector<std::string> architectures; //!< e.g. {"LlamaForCausalLM"}; empty when absent
  std::string model_type;                 //!< "llama", "qwen2", ...; empty when absent
  std::int64_t hidden_size = 0;           //!< width of the residual stream (n_embd)
  std::int64_t intermediate_size = 0;     //!< width of the MLP
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0; //!< default: num_attention_heads (no GQA)
  std::int64_t head_dim = 0;            //!< default: hidden_size / num_attention_heads
  std::int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;                          //!< transformers' default for Llama and Qwen2
  double rope_theta = 10000.0;                         //!< transformers' default
  std::optional<rope_scaling_config> rope_scaling;     //!< nullopt for null or absent
  bool tie_word_embeddings = false;                    //!< transformers' default for Llama and Qwen2
  std::optional<std::int64_t> max_position_embeddings; //!< defaults differ by model: none assumed
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids; //!< eos_token_id may be one id or a list (Llama 3.1)
  std::string hidden_act = "silu";
  std::string torch_dtype; //!< "torch_dtype" (or the newer "dtype"); empty when absent
};

//! Parses config.json text; `file` labels errors.
inline hf_model_config parse_hf_config(std::string_view text, const std::string &file) {
  const json_document doc = parse_json(text, file);
  const ordered_json &j = doc.value;
  json_require_object(j, "config", {file, 0});
  hf_model_config c;
  auto where = [&](std::string_view key) { return error_context{file, doc.offset_of(key, 0)}; };
  auto present = [&](std::string_view key) -> const ordered_json * {
    const ordered_json *v = json_find(j, key);
    return v && !v->is_null() ? v : nullptr;
  };
  auto positive = [&](std::string_view key) -> std::int64_t {
    return json_as_int(json_at(j, key, {file, 0}), "key '" + std::string(key) + "'", where(key), 1);
  };
  auto key_name = [](std::string_view key) { return "key '" + std::string(key) + "'"; };

  if (const ordered_json *a = present("architectures")) {
    if (!a->is_array())
      json_type_error(key_name("architectures"), "an array of strings", *a, where("architectures"));
    for (std::size_t i = 0; i < a->size(); ++i)
      c.architectures.push_back(
          json_as_string((*a)[i], "architectures[" + std::to_string(i) + "]", where("architectures")));
  }
  if (const ordered_json *m = present("model_type"))
    c.model_type = json_as_string(*m, key_name("model_type"), where("model_type"));
  c.hidden_size = positive("hidden_size");
  c.intermediate_size = positive("intermediate_size");
  c.num_hidden_layers = positive("num_hidden_layers");
  c.num_attention_heads = positive("num_attention_heads");
  c.vocab_size = positive("vocab_size");
  c.num_key_value_heads =
      present("num_key_value_heads") ? positive("num_key_value_heads") : c.num_attention_heads;
  require(
      c.num_attention_heads % c.num_key_value_heads == 0, errc::invalid_format,
      [&] {
        return "num_attention_heads (" + std::to_string(c.num_attention_heads) +
               ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")";
      },
      where("num_key_value_heads"));
  if (present("head_dim")) {
    c.head_dim = positive("head_dim");
  } else {
    require(
        c.hidden_size % c.num_attention_heads == 0, errc::invalid_format,
        [&] {
          return "hidden_size (" + std::to_string(c.hidden_size) +
                 ") is not a multiple of "
                 "num_attention_heads (" +
                 std::to_string(c.num_attention_heads) + ") and head_dim is absent";
        },
        where("hidden_size"));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  auto positive_number = [&](std::string_view key, double &out) {
    if (const ordered_json *v = present(key)) {
      out = json_as_number(*v, key_name(key), where(key));
      require(
          out > 0, errc::invalid_format,
          [&] { return key_name(key) + ": expected a positive number, got " + v->dump(); }, where(key));
    }
  };
  positive_number("rms_norm_eps", c.rms_norm_eps);
  positive_number("rope_theta", c.rope_theta);
  if (const ordered_json *r = present("rope_scaling")) {
    const error_context at = where("rope_scaling");
    json_require_object(*r, key_name("rope_scaling"), at);
    rope_scaling_config rs;
    rs.raw = *r;
    const ordered_json *type = json_find(*r, "rope_type");
    if (!type || type->is_null()) type = json_find(*r, "type");
    require(
        type != nullptr && !type->is_null(), errc::invalid_format,
        [] { return std::string("rope_scaling: missing key 'rope_type' (or 'type')"); }, at);
    rs.rope_type = json_as_string(*type, "rope_scaling.rope_type", at);
    auto number = [&](std::string_view key) -> std::optional<double> {
      const ordered_json *v = json_find(*r, key);
      if (!v || v->is_null()) return std::nullopt;
      return json_as_number(*v, "rope_scaling." + std::string(key), at);
    };
    rs.factor = number("factor");
    rs.low_freq_factor = number("low_freq_factor");
    rs.high_freq_factor = number("high_freq_factor");
    if (const ordered_json *v = json_find(*r, "original_max_position_embeddings"); v && !v->is_null())
      rs.original_max_position_embeddings =
          json_as_int(*v, "rope_scaling.original_max_position_embeddings", at, 1);
    c.rope_scaling = std::move(rs);
  }
  if (const ordered_json *t = present("tie_word_embeddings"))
    c.tie_word_embeddings = json_as_bool(*t, key_name("tie_word_embeddings"), where("tie_word_embeddings"));
  if (present("max_position_embeddings")) c.max_position_embeddings = positive("max_position_embeddings");
  if (const ordered_json *b = present("bos_token_id"))
    c.bos_token_id = json_as_int(*b, key_name("bos_token_id"), where("bos_token_id"), 0);
  if (const ordered_json *e = present("eos_token_id")) {
    if (e->is_array()) {
      for (std::size_t i = 0; i < e->size(); ++i)
        c.eos_token_ids.push_back(
            json_as_int((*e)[i], "eos_token_id[" + std::to_string(i) + "]", where("eos_token_id"), 0));
    } else {
      if (!e->is_number_integer())
        json_type_error(key_name("eos_token_id"), "an integer or an array of integers", *e,
                        where("eos_token_id"));
      c.eos_token_ids.push_back(json_as_int(*e, key_name("eos_token_id"), where("eos_token_id"), 0));
    }
  }
  if (const ordered_json *h = present("hidden_act"))
    c.hidden_act = json_as_string(*h, key_name("hidden_act"), where("hidden_act"));
  if (const ordered_json *d = present("torch_dtype"))
    c.torch_dtype = json_as_string(*d, key_name("torch_dtype"), where("torch_dtype"));
  else if (const ordered_json *d2 = present("dtype"))
    c.torch_dtype = json_as_string(*d2, key_name("dtype"), where("dtype"));
  return c;
}

//! Reads `path`: a config.json, or a directory containing one.
inline hf_model_config read_hf_config(const std::filesystem::path &path) {
  const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  mapped_file f(file.string());
  const auto b = f.bytes();
  return parse_hf_config({reinterpret_cast<const char *>(b.data()), b.size()}, f.path());
}

DMS_NAMESPACE_END
