// tools/dms/inspect.hpp: `dms inspect FILE`: what is inside a checkpoint.
//
// One table for every format a user hands dms (GGUF, a safetensors file, a sharded Hugging Face
// directory, a PEFT adapter directory): metadata, then one row per tensor with its stored dtype,
// row-major shape, absolute file offset and size. `--json` prints the same as one JSON document
// for scripts; `--dump TENSOR --out F.npy` writes one tensor, dequantized to float32, for numpy.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <dms/backend/cpu/dequant.hpp>
#include <dms/core/progress.hpp>
#include <dms/formats/gguf.hpp>
#include <dms/formats/hf_checkpoint.hpp>
#include <dms/formats/npy.hpp>
#include <dms/formats/peft.hpp>
#include <dms/formats/safetensors.hpp>

#include "args.hpp"

namespace dms::cli {

//! One row of the tensor table, whatever the format.
struct tensor_row {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t offset = 0; //!< absolute offset of the first data byte in its file
  std::uint64_t bytes = 0;
  std::string file;         //!< the shard holding it (sharded checkpoints), else empty
};

struct inspection {
  std::string path;
  std::string format;              //!< "gguf", "safetensors", "hf-checkpoint", "peft-adapter"
  nlohmann::ordered_json summary;  //!< format-specific facts (version, alignment, shards, lora config)
  nlohmann::ordered_json metadata; //!< key -> value
  std::vector<tensor_row> tensors;
};

namespace detail {

inline nlohmann::ordered_json to_json(const gguf_value &v);

inline nlohmann::ordered_json to_json(const gguf_array &a) {
  return std::visit(
      [](const auto &items) {
        nlohmann::ordered_json out = nlohmann::ordered_json::array();
        for (const auto &x : items) {
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, gguf_array>) out.push_back(to_json(x));
          else out.push_back(x);
        }
        return out;
      },
      a.items());
}

inline nlohmann::ordered_json to_json(const gguf_value &v) {
  return std::visit(
      [](const auto &x) -> nlohmann::ordered_json {
        if constexpr (std::is_same_v<std::decay_t<decltype(x)>, gguf_array>) return to_json(x);
        else return x;
      },
      v.raw());
}

inline std::string shape_text(const std::vector<std::int64_t> &shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

//! JSON text that never throws on bytes that are not UTF-8 (file contents are untrusted).
inline std::string dump_json(const nlohmann::ordered_json &j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

//! A metadata value on one line: long arrays (a vocabulary of 49152 tokens) are abbreviated.
inline std::string short_value(const nlohmann::ordered_json &v) {
  constexpr std::size_t shown = 6;     // enough to recognise a vocabulary or a merge list
  constexpr std::size_t max_chars = 160; // one terminal line, roughly
  std::string s;
  if (v.is_array() && v.size() > shown) {
    nlohmann::ordered_json head = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < shown; ++i) head.push_back(v[i]);
    s = dump_json(head);
    s.insert(s.size() - 1, ", ... (" + std::to_string(v.size()) + " items)");
  } else {
    s = dump_json(v);
  }
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "... (" + std::to_string(s.size()) + " chars)";
  return s;
}

inline bool is_gguf(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

inline void add_safetensors(inspection &out, const safetensors_file &f, bool name_file) {
  for (const auto &[k, v] : f.metadata()) out.metadata[k] = v;
  for (const auto &t : f.tensors())
    out.tensors.push_back({t.name, t.dtype_name, t.shape, t.file_offset, t.size_bytes(),
                           name_file ? std::filesystem::path(f.path()).filename().string() : std::string()});
}

} // namespace detail

//! Reads the table of contents of `path` (a file or a directory).
inline inspection inspect_path(const std::filesystem::path &path) {
  namespace fs = std::filesystem;
  inspection out;
  out.path = path.string();
  out.metadata = nlohmann::ordered_json::object();
  require(fs::exists(path), errc::io, [] { return std::string("no such file or directory"); }, {path.string()});
  if (fs::is_directory(path)) {
    if (fs::exists(path / lora_adapter::config_file_name)) {
      lora_adapter a(path);
      out.format = "peft-adapter";
      const auto &c = a.config();
      out.summary["rank"] = c.r;
      out.summary["lora_alpha"] = c.lora_alpha;
      out.summary["modules"] = a.modules().size();
      detail::add_safetensors(out, a.weights(), false);
      return out;
    }
    hf_checkpoint ck(path);
    out.format = "hf-checkpoint";
    out.summary["shards"] = ck.shard_count();
    for (std::size_t i = 0; i < ck.shard_count(); ++i) detail::add_safetensors(out, ck.shard(i), ck.sharded());
    return out;
  }
  if (detail::is_gguf(path)) {
    gguf_file f(path.string());
    out.format = "gguf";
    out.summary["version"] = f.version();
    out.summary["alignment"] = f.alignment();
    out.summary["data_offset"] = f.data_offset();
    for (const auto &kv : f.metadata()) out.metadata[kv.key] = detail::to_json(kv.value);
    for (const auto &t : f.tensors())
      out.tensors.push_back({t.name, std::string(t.traits().name), t.shape(), t.file_offset, t.n_bytes, {}});
    return out;
  }
  safetensors_file f(path.string());
  out.format = "safetensors";
  out.summary["data_offset"] = f.data_offset();
  detail::add_safetensors(out, f, false);
  return out;
}

//! The tensor `name` of `path`, as float32 with its row-major shape.
inline std::vector<float> read_tensor_f32(const std::filesystem::path &path, const std::string &name,
                                          std::vector<std::int64_t> &shape) {
  namespace fs = std::filesystem;
  auto from_safetensors = [&](const safetensors_file &f) {
    const auto &t = f.at(name);
    shape = t.shape;
    std::vector<float> v(t.numel());
    f.to_f32(t, v);
    return v;
  };
  if (fs::is_directory(path)) {
    if (fs::exists(path / lora_adapter::config_file_name)) return from_safetensors(lora_adapter(path).weights());
    hf_checkpoint ck(path);
    return from_safetensors(ck.file_of(name));
  }
  if (detail::is_gguf(path)) {
    gguf_file f(path.string());
    const auto &t = f.tensor(name);
    shape = t.shape();
    std::vector<float> v(t.n_elements);
    cpu::dequantize(t.type, t.raw_bytes(), v, {path.string(), t.file_offset, t.name});
    return v;
  }
  return from_safetensors(safetensors_file(path.string()));
}

inline command_spec inspect_command() {
  command_spec c("dms inspect", "Print a checkpoint's metadata and tensor table (name, dtype, shape, offset). "
                                "PATH is a GGUF file, a safetensors file, a sharded Hugging Face checkpoint "
                                "directory or a PEFT adapter directory.");
  c.positional({"PATH", "the file or directory to inspect", true, false})
      .option({"json", 0, "", "print everything as one JSON document (full metadata values)", ""})
      .option({"dump", 0, "TENSOR", "write this tensor, dequantized to float32, to --out", ""})
      .option({"out", 'o', "FILE", "where --dump writes the .npy file", ""})
      .epilog("Examples:\n  dms inspect model.gguf\n  dms inspect ./Llama-3-8B --json | jq '.tensors | length'\n"
              "  dms inspect model.gguf --dump blk.0.attn_q.weight --out q0.npy");
  return c;
}

inline int run_inspect(const parsed_args &args) {
  const std::filesystem::path path = args.positionals().at(0);
  if (auto tensor = args.find("dump")) {
    const auto out = args.find("out");
    require(out.has_value(), errc::invalid_argument, [] { return std::string("--dump needs --out FILE.npy"); });
    std::vector<std::int64_t> shape;
    const auto values = read_tensor_f32(path, *tensor, shape);
    write_npy(*out, values, shape);
    std::printf("wrote %s: %s float32 %s\n", out->c_str(), tensor->c_str(), detail::shape_text(shape).c_str());
    return 0;
  }
  require(!args.has("out"), errc::invalid_argument, [] { return std::string("--out is only used with --dump"); });
  const inspection info = inspect_path(path);
  if (args.has("json")) {
    nlohmann::ordered_json j;
    j["path"] = info.path;
    j["format"] = info.format;
    j["summary"] = info.summary;
    j["metadata"] = info.metadata;
    j["tensors"] = nlohmann::ordered_json::array();
    for (const auto &t : info.tensors) {
      nlohmann::ordered_json r{{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"offset", t.offset},
                               {"bytes", t.bytes}};
      if (!t.file.empty()) r["file"] = t.file;
      j["tensors"].push_back(std::move(r));
    }
    std::printf("%s\n", detail::dump_json(j, 2).c_str());
    return 0;
  }
  std::uint64_t total = 0;
  for (const auto &t : info.tensors) total += t.bytes;
  std::printf("%s: %s %s, %zu metadata keys, %zu tensors, %s of tensor data\n", info.path.c_str(),
              info.format.c_str(), detail::dump_json(info.summary).c_str(), info.metadata.size(), info.tensors.size(),
              format_bytes(total).c_str());
  if (!info.metadata.empty()) std::printf("\nmetadata:\n");
  for (const auto &[k, v] : info.metadata.items()) std::printf("  %s = %s\n", k.c_str(), detail::short_value(v).c_str());
  std::size_t width = 4;
  for (const auto &t : info.tensors) width = std::max(width, t.name.size());
  std::printf("\n%-*s  %-7s  %-18s  %12s  %10s\n", static_cast<int>(width), "name", "dtype", "shape", "offset", "bytes");
  for (const auto &t : info.tensors)
    std::printf("%-*s  %-7s  %-18s  %12llu  %10llu%s%s\n", static_cast<int>(width), t.name.c_str(), t.dtype.c_str(),
                detail::shape_text(t.shape).c_str(), static_cast<unsigned long long>(t.offset),
                static_cast<unsigned long long>(t.bytes), t.file.empty() ? "" : "  ", t.file.c_str());
  return 0;
}

} // namespace dms::cli
