// dms/probe/logistic_io.hpp: save and load a logistic probe as a safetensors file (needs dms::io).
//
// A probe is small (4 vectors of n_embd floats) but useless without knowing where it reads, so
// the file carries its hook point and fit settings next to the weights:
//   tensors   weight [d] F32 (standardized space), bias [1] F32, scaler.mean [d] F32,
//             scaler.scale [d] F32
//   metadata  "dms.probe": {"type":"logistic","version":1,"hook":"blocks.12.hook_resid_post",
//             "layer":12,"site":"resid_post","C":1.0,"class_weight":"none","standardized":true}
// Plain safetensors, so numpy/torch users read it with `safetensors.numpy.load_file`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/steer/hook_names.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr std::string_view probe_metadata_key = "dms.probe";

//! Writes `p` to `path` atomically.
inline void save_probe(const std::filesystem::path &path, const logistic_probe &p) {
  require(p.n_features() > 0, errc::invalid_argument,
          [] { return std::string("save_probe: the probe is empty (default-constructed)"); }, {path.string()});
  const probe_info &info = p.info();
  ordered_json meta;
  meta["type"] = "logistic";
  meta["version"] = 1;
  meta["hook"] = to_string(info.at);
  meta["layer"] = info.at.layer;
  meta["site"] = std::string(name_of(info.at.where));
  meta["C"] = info.C;
  meta["class_weight"] = std::string(name_of(info.class_weight));
  meta["standardized"] = info.standardized;
  const float bias = p.bias();
  const auto d = p.n_features();
  safetensors_writer w;
  w.set_metadata(std::string(probe_metadata_key), meta.dump());
  w.add("weight", dtype::f32, {d}, std::as_bytes(p.weight()));
  w.add("bias", dtype::f32, {1}, std::as_bytes(std::span<const float>(&bias, 1)));
  w.add("scaler.mean", dtype::f32, {d}, std::as_bytes(p.mean()));
  w.add("scaler.scale", dtype::f32, {d}, std::as_bytes(p.scale()));
  w.write(path);
}

//! Reads a probe written by save_probe; errors name the file and what is wrong.
inline logistic_probe load_probe(const std::filesystem::path &path) {
  const safetensors_file f(path.string());
  const error_context where{path.string(), std::nullopt, std::string(probe_metadata_key)};
  const auto text = f.metadata(probe_metadata_key);
  require(text.has_value(), errc::invalid_format, [] {
    return "no '" + std::string(probe_metadata_key) + "' metadata: not a probe written by dms::save_probe";
  }, {path.string()});
  const json_document doc = parse_json(*text, path.string() + " (__metadata__." + std::string(probe_metadata_key) + ")");
  const ordered_json &m = json_require_object(doc.value, "dms.probe", where);
  const std::string type = json_as_string(json_at(m, "type", where), "type", where);
  require(type == "logistic", errc::unsupported, [&] { return "probe type '" + type + "' (expected logistic)"; },
          where);
  probe_info info;
  info.at.layer = static_cast<std::int32_t>(json_as_int(json_at(m, "layer", where), "layer", where, -1, 1 << 20));
  const std::string site_name = json_as_string(json_at(m, "site", where), "site", where);
  const auto s = parse_site(site_name);
  require(s.has_value(), errc::invalid_format, [&] { return "unknown site '" + site_name + "'"; }, where);
  info.at.where = *s;
  info.C = json_as_number(json_at(m, "C", where), "C", where);
  const std::string cw = json_as_string(json_at(m, "class_weight", where), "class_weight", where);
  require(cw == "none" || cw == "balanced", errc::invalid_format,
          [&] { return "class_weight '" + cw + "' (expected none or balanced)"; }, where);
  info.class_weight = cw == "balanced" ? class_weight_mode::balanced : class_weight_mode::none;
  info.standardized = json_as_bool(json_at(m, "standardized", where), "standardized", where);

  auto vec = [&](const char *name) {
    const safetensors_tensor &t = f.at(name);
    require(t.shape.size() == 1, errc::invalid_format,
            [&] { return "shape " + detail::shape_string(t.shape) + " (expected 1-D)"; },
            {path.string(), t.header_offset, t.name});
    return f.to_f32(t);
  };
  std::vector<float> w = vec("weight"), b = vec("bias"), mean = vec("scaler.mean"), scale = vec("scaler.scale");
  require(b.size() == 1, errc::invalid_format,
          [&] { return "bias has " + std::to_string(b.size()) + " elements (expected 1)"; }, {path.string()});
  try {
    return logistic_probe(std::move(w), b[0], std::move(mean), std::move(scale), info);
  } catch (const error &e) { // name the file
    throw error(e.code(), e.message(), {path.string()});
  }
}

DMS_NAMESPACE_END
