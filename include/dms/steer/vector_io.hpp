// dms/steer/vector_io.hpp: steering vectors on disk: safetensors (dms's own) and llama.cpp
// control-vector GGUF (needs dms::io for safetensors).
//
// safetensors: one F32 tensor [n_embd] per vector, named by its hook point as TransformerLens
// names it ("blocks.12.hook_resid_post"), plus "__metadata__" {"dms.steering": "{\"version\":1}"}.
//
// llama.cpp control vector: llama.cpp adds `direction.N` to the output of block N (0-based,
// llm_build_cvec after the FFN residual add), i.e. dms's hook point {N, resid_post}; the same
// point is {N + 1, resid_pre}. llama.cpp has no slot for block 0's output (its buffer starts at
// layer 1) and none after the last block, so N ranges over 1 .. n_layers - 1. Export therefore
// accepts resid_post of layers >= 1 and resid_pre of layers >= 2 (mapped to N = layer - 1);
// vectors that land on the same N are summed, which is what llama.cpp does with several files.
// Any other site has no control-vector equivalent and is refused. Import gives resid_post
// vectors. `strength` multiplies the values on export, like llama-cli's --control-vector-scaled.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/steer/hook_names.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr std::string_view steering_metadata_key = "dms.steering";

namespace detail {
inline void check_vector(const steering_vector &v, std::size_t n_embd, const std::string &file) {
  const std::string name = to_string(v.at());
  require(!v.values.empty(), errc::invalid_argument, [] { return std::string("empty steering vector"); },
          {file, std::nullopt, name});
  require(v.values.size() == n_embd, errc::shape_mismatch, [&] {
    return "width " + std::to_string(v.values.size()) + " (expected " + std::to_string(n_embd) +
           ", the width of the first vector)";
  }, {file, std::nullopt, name});
  for (std::size_t i = 0; i < v.values.size(); ++i)
    require(std::isfinite(v.values[i]), errc::numeric, [&] { return "element " + std::to_string(i) + " is not finite"; },
            {file, std::nullopt, name});
}
} // namespace detail

//! Writes `vectors` (distinct hook points, one width) to a safetensors file.
inline void save_steering_vectors(const std::filesystem::path &path, std::span<const steering_vector> vectors) {
  const std::string file = path.string();
  require(!vectors.empty(), errc::invalid_argument, [] { return std::string("no steering vectors to save"); }, {file});
  safetensors_writer w;
  w.set_metadata(std::string(steering_metadata_key), R"({"version":1})");
  for (const auto &v : vectors) {
    detail::check_vector(v, vectors.front().values.size(), file);
    const std::string name = to_string(v.at());
    require(!w.contains(name), errc::invalid_argument, [] { return std::string("two vectors for one hook point"); },
            {file, std::nullopt, name});
    w.add(name, dtype::f32, {static_cast<std::int64_t>(v.values.size())}, std::as_bytes(std::span<const float>(v.values)));
  }
  w.write(path);
}

//! Reads the vectors of a file written by save_steering_vectors, in layer order.
inline std::vector<steering_vector> load_steering_vectors(const std::filesystem::path &path) {
  const safetensors_file f(path.string());
  require(f.metadata(steering_metadata_key).has_value(), errc::invalid_format, [] {
    return "no '" + std::string(steering_metadata_key) + "' metadata: not written by dms::save_steering_vectors";
  }, {path.string()});
  std::vector<steering_vector> out;
  for (const safetensors_tensor &t : f.tensors()) {
    const error_context where{path.string(), t.header_offset, t.name};
    const auto at = parse_hook_point(t.name);
    require(at.has_value(), errc::invalid_format,
            [] { return std::string("not a hook point name (expected blocks.N.hook_SITE)"); }, where);
    require(t.shape.size() == 1 && t.shape[0] > 0, errc::invalid_format,
            [&] { return "shape " + detail::shape_string(t.shape) + " (expected [n_embd])"; }, where);
    out.push_back({at->layer, at->where, f.to_f32(t)});
    detail::check_vector(out.back(), out.front().values.size(), path.string());
  }
  require(!out.empty(), errc::invalid_format, [] { return std::string("no steering vectors in the file"); },
          {path.string()});
  std::sort(out.begin(), out.end(), [](const steering_vector &a, const steering_vector &b) {
    return a.layer != b.layer ? a.layer < b.layer : a.where < b.where;
  });
  return out;
}

//! The control-vector layer N that llama.cpp uses for hook point `at` (see the header comment);
//! errc::unsupported when there is none.
inline std::int32_t control_vector_layer(hook_point at) {
  std::int32_t n = -1;
  if (at.where == site::resid_post) n = at.layer;
  else if (at.where == site::resid_pre) n = at.layer - 1;
  require(at.where == site::resid_post || at.where == site::resid_pre, errc::unsupported, [&] {
    return to_string(at) + ": llama.cpp control vectors act only on block outputs (resid_post, or resid_pre of the next block)";
  });
  require(n >= 1, errc::unsupported, [&] {
    return to_string(at) + " is the output of block " + std::to_string(n) +
           ": llama.cpp control vectors start at block 1's output";
  });
  return n;
}

//! Writes `vectors` (times `strength`) as a llama.cpp control vector. With `n_layers` > 0, also
//! refuses layers llama.cpp would ignore (N >= n_layers).
inline void export_control_vector(const std::filesystem::path &path, std::span<const steering_vector> vectors,
                                  std::string_view model_hint = "llama", float strength = 1.0f,
                                  std::int32_t n_layers = 0) {
  const std::string file = path.string();
  require(!vectors.empty(), errc::invalid_argument, [] { return std::string("no steering vectors to export"); },
          {file});
  require(std::isfinite(strength), errc::numeric, [] { return std::string("strength is not finite"); }, {file});
  std::map<std::int32_t, std::vector<float>> directions;
  for (const auto &v : vectors) {
    detail::check_vector(v, vectors.front().values.size(), file);
    const std::int32_t n = control_vector_layer(v.at());
    require(n_layers <= 0 || n < n_layers, errc::invalid_argument, [&] {
      return to_string(v.at()) + " maps to direction." + std::to_string(n) + ", but llama.cpp uses directions 1.." +
             std::to_string(n_layers - 1) + " for a " + std::to_string(n_layers) + "-layer model";
    }, {file});
    auto &d = directions[n];
    d.resize(v.values.size(), 0.0f);
    for (std::size_t i = 0; i < v.values.size(); ++i) d[i] += strength * v.values[i];
  }
  write_control_vector(path, model_hint, directions);
}

//! Reads a llama.cpp control vector as resid_post steering vectors, in layer order.
inline std::vector<steering_vector> import_control_vector(const std::filesystem::path &path) {
  const control_vector cv = read_control_vector(path.string());
  require(!cv.directions.empty(), errc::invalid_format, [] { return std::string("no direction.N tensors"); },
          {path.string()});
  std::vector<steering_vector> out;
  for (const auto &[layer, values] : cv.directions) out.push_back({layer, site::resid_post, values});
  return out;
}

DMS_NAMESPACE_END
