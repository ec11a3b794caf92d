// dms/steer/bundle.hpp: the steering bundle, everything `dms steer calibrate` produces, in one
// safetensors file (needs dms::io).
//
// Calibration is expensive (activations over hundreds of prompts, a probe per layer, a patching
// sweep) and its pieces only make sense together: a probe is useless without the hook point it
// reads, a vector without the model width it was built for, an alpha without the vector's norm.
// So generate, score, eval and export-cvec read one file that holds all of it, and refuse a
// bundle that does not fit the model they run (check_bundle_matches) instead of steering with
// the wrong width or layer.
//
// Layout: plain safetensors, so numpy/torch users can read it with safetensors.numpy.load_file.
//   tensors   probe.weight [d] F32 (standardized space), probe.bias [1] F32,
//             probe.scaler.mean [d] F32, probe.scaler.scale [d] F32,
//             steering.vector [d] F32 (as built: raw or unit, see `scale`),
//             condition.vector [d] F32 (only with a conditional policy)
//   metadata  "dms.bundle": one JSON document
//             {"format":"dms.steering_bundle","version":1,"model":{...},"probe":{...},
//              "steering":{...},"condition":{...}?,"probe_sweep":[...],"patching":[...],
//              "labels":{...},"calibration":{...},"extras":{...}}
// The format name and version are checked on load: a probe or vector file (other dms metadata)
// is "not a bundle", a newer version is refused rather than half-read. JSON has no NaN, so a
// metric that is undefined (AUC of a one-class split, the effect of a degenerate layer) is
// written as null and read back as NaN.
//
// @code
//   dms::steering_bundle b;
//   b.model = {.file_name = "llama-3-8b.gguf", .file_size = size, .n_layers = 32, .n_embd = 4096,
//              .arch = "llama"};
//   b.probe = fit.probe;
//   b.steering = {.vector = {22, dms::site::resid_post, v}, .method = dms::vector_method::mean_difference};
//   dms::save_bundle("calib.dms.safetensors", b);
//   auto loaded = dms::load_bundle("calib.dms.safetensors");
//   dms::check_bundle_matches(loaded, model.n_layers(), model.n_embd(), "calib.dms.safetensors");
//   auto policy = dms::make_dms_policy(loaded);
// @endcode
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/patch/patching_result.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/probe/metrics.hpp"
#include "dms/steer/conditional_policy.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/hook_names.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

inline constexpr std::string_view bundle_metadata_key = "dms.bundle";
inline constexpr std::string_view bundle_format_name = "dms.steering_bundle";
inline constexpr std::int64_t bundle_format_version = 1;

//! How the steering vector was built (see dms/steer/vectors.hpp).
enum class vector_method : std::uint8_t { mean_difference, pca, probe_direction };

constexpr std::string_view name_of(vector_method m) noexcept {
  switch (m) {
  case vector_method::mean_difference: return "mean_difference";
  case vector_method::pca: return "pca";
  case vector_method::probe_direction: return "probe_direction";
  }
  return "mean_difference";
}
constexpr std::optional<vector_method> parse_vector_method(std::string_view s) noexcept {
  for (auto m : {vector_method::mean_difference, vector_method::pca, vector_method::probe_direction})
    if (name_of(m) == s) return m;
  return std::nullopt;
}

//! The model a bundle was calibrated on. A bundle is tied to its model's width and depth; the
//! file identity (hash or size) lets a tool warn when the same name now holds another file.
struct bundle_model {
  std::string file_name;      //!< the model file's name (not its full path: bundles travel)
  std::string sha256;         //!< lowercase hex digest of the file; empty when not computed
  std::uint64_t file_size = 0; //!< bytes; 0 when unknown
  std::int32_t n_layers = 0;  //!< blocks
  std::int64_t n_embd = 0;    //!< residual width; every vector of the bundle has this width
  std::string arch;           //!< "llama", ... (GGUF general.architecture)
};

//! The steering vector and how it was made.
struct bundle_steering {
  steering_vector vector;                              //!< where it is added and its values
  vector_method method = vector_method::mean_difference;
  vector_scale scale = vector_scale::raw;              //!< raw: natural length; unit: norm 1
  float alpha = dms_policy<>::default_alpha;           //!< the default DMS alpha (the paper's 1.4)
  //! L2 norm of vector.values; the strength of alpha * p * v depends on it, so it is recorded
  //! for people reading the metadata (save computes it, load checks it).
  double norm() const noexcept {
    double s = 0;
    for (float x : vector.values) s += static_cast<double>(x) * x;
    return std::sqrt(s);
  }
};

//! CAST's condition (dms/steer/conditional_policy.hpp), when calibration chose one.
struct bundle_condition {
  hook_point at{0, site::resid_post}; //!< where the prompt's hidden state is read
  std::vector<float> vector;          //!< the condition direction c (projector c c^T / c.c)
  float threshold = 0;
  condition_compare compare = condition_compare::above;
  condition_mode mode = condition_mode::prompt_mean;
  float coefficient = 1.0f; //!< multiplies the steering vector when the condition holds
};

//! One layer of the probe sweep (held-out metrics of the probe fitted at that hook point).
struct bundle_sweep_row {
  std::int32_t layer = 0;
  site where = site::resid_post;
  probe_metrics heldout; //!< accuracy, roc_auc, log_loss, n (NaN where undefined)
};

//! One layer of the activation-patching sweep (mean normalized effect; NaN: no usable pair).
struct bundle_patching_row {
  std::int32_t layer = 0;
  site where = site::resid_post;
  double effect = 0;
};

//! How the calibration prompts were labelled.
struct bundle_label_stats {
  std::int64_t n_memorization = 0;   //!< rows labelled 1
  std::int64_t n_generalization = 0; //!< rows labelled 0
  std::string source;                //!< "extraction", "diversity", "both", ...
  //! Fraction of prompts on which extraction and diversity labels agree; NaN when only one
  //! labelling ran.
  double agreement = std::numeric_limits<double>::quiet_NaN();
};

//! When and how calibration ran.
struct bundle_calibration {
  ordered_json settings = ordered_json::object(); //!< the options, as the CLI understood them
  std::string started_at;                        //!< ISO 8601 UTC, "2025-01-31T12:00:00Z"
  std::string finished_at;
  double wall_seconds = 0;
};

//! Everything generate / score / eval / export-cvec need.
struct steering_bundle {
  bundle_model model;
  logistic_probe probe; //!< its info().at is the probe hook point
  bundle_steering steering;
  std::optional<bundle_condition> condition;
  std::vector<bundle_sweep_row> probe_sweep;
  std::vector<bundle_patching_row> patching;
  bundle_label_stats labels;
  bundle_calibration calibration;
  ordered_json extras = ordered_json::object(); //!< free-form; kept as is

  hook_point probe_at() const noexcept { return probe.info().at; }
  hook_point steering_at() const noexcept { return steering.vector.at(); }
};

//! The current time as ISO 8601 UTC with seconds ("2025-01-31T12:00:00Z").
inline std::string utc_timestamp(std::time_t t = std::time(nullptr)) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

//! The (mean-effect) patching rows of `r` at every patched site and layer. With per-position
//! patching a layer keeps its best position (as choose_steering_layer ranks it); NaN only when
//! every position is NaN.
inline std::vector<bundle_patching_row> patching_rows(const patching_result &r) {
  std::vector<bundle_patching_row> rows;
  for (site s : r.sites)
    for (std::int32_t l = r.layer_begin; l < r.layer_end; ++l) {
      double best = std::numeric_limits<double>::quiet_NaN();
      for (std::int32_t p = 0; p < r.n_positions; ++p) {
        const double e = r.mean(s, l, p);
        if (!std::isnan(e) && (std::isnan(best) || e > best)) best = e;
      }
      rows.push_back({l, s, best});
    }
  return rows;
}

namespace detail {

inline ordered_json number_or_null(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr); }
inline double number_or_nan(const ordered_json &j, std::string_view what, const error_context &where) {
  return j.is_null() ? std::numeric_limits<double>::quiet_NaN() : json_as_number(j, what, where);
}

inline ordered_json hook_json(hook_point p) {
  ordered_json j;
  j["hook"] = to_string(p);
  j["layer"] = p.layer;
  j["site"] = std::string(name_of(p.where));
  return j;
}
inline hook_point hook_from_json(const ordered_json &j, std::string_view what, const error_context &where) {
  json_require_object(j, what, where);
  hook_point p;
  p.layer = static_cast<std::int32_t>(json_as_int(json_at(j, "layer", where), std::string(what) + ".layer", where,
                                                  -1, 1 << 20));
  const std::string s = json_as_string(json_at(j, "site", where), std::string(what) + ".site", where);
  const auto parsed = parse_site(s);
  require(parsed.has_value(), errc::invalid_format,
          [&] { return std::string(what) + ".site: unknown site '" + s + "'"; }, where);
  p.where = *parsed;
  return p;
}

inline void check_bundle_widths(const steering_bundle &b, const std::string &file) {
  const auto d = b.model.n_embd;
  require(d > 0, errc::invalid_argument,
          [&] { return "model.n_embd is " + std::to_string(d) + " (expected the model's width, > 0)"; }, {file});
  require(b.model.n_layers > 0, errc::invalid_argument,
          [&] { return "model.n_layers is " + std::to_string(b.model.n_layers) + " (expected > 0)"; }, {file});
  require(b.probe.n_features() == d, errc::shape_mismatch, [&] {
    return "the probe reads rows of width " + std::to_string(b.probe.n_features()) + ", the model has n_embd " +
           std::to_string(d);
  }, {file, std::nullopt, "probe.weight"});
  require(static_cast<std::int64_t>(b.steering.vector.values.size()) == d, errc::shape_mismatch, [&] {
    return "the steering vector has width " + std::to_string(b.steering.vector.values.size()) +
           ", the model has n_embd " + std::to_string(d);
  }, {file, std::nullopt, "steering.vector"});
  if (b.condition)
    require(static_cast<std::int64_t>(b.condition->vector.size()) == d, errc::shape_mismatch, [&] {
      return "the condition vector has width " + std::to_string(b.condition->vector.size()) +
             ", the model has n_embd " + std::to_string(d);
    }, {file, std::nullopt, "condition.vector"});
}

} // namespace detail

//! Throws unless `b` fits a model of `n_layers` blocks and width `n_embd`: every vector has width
//! n_embd, the bundle was calibrated on that depth, and the probe and steering layers exist.
//! `file` names the bundle in the message.
inline void check_bundle_matches(const steering_bundle &b, std::int32_t n_layers, std::int64_t n_embd,
                                 const std::string &file = {}) {
  require(b.model.n_embd == n_embd, errc::shape_mismatch, [&] {
    return "the bundle was calibrated on a model of width " + std::to_string(b.model.n_embd) + " ('" +
           b.model.file_name + "'), this model has n_embd " + std::to_string(n_embd);
  }, {file});
  require(b.model.n_layers == n_layers, errc::shape_mismatch, [&] {
    return "the bundle was calibrated on a model of " + std::to_string(b.model.n_layers) + " layers ('" +
           b.model.file_name + "'), this model has " + std::to_string(n_layers);
  }, {file});
  detail::check_bundle_widths(b, file);
  auto check_layer = [&](hook_point p, const char *what) {
    require(is_model_level(p.where) || (p.layer >= 0 && p.layer < n_layers), errc::invalid_argument, [&] {
      return std::string(what) + " " + to_string(p) + " is outside the model's layers [0, " +
             std::to_string(n_layers) + ")";
    }, {file});
  };
  check_layer(b.probe_at(), "the probe hook point");
  check_layer(b.steering_at(), "the steering hook point");
  if (b.condition) check_layer(b.condition->at, "the condition hook point");
}

//! The DMS policy the bundle describes, with its default alpha unless `alpha` is given.
inline dms_policy<> make_dms_policy(const steering_bundle &b, std::optional<float> alpha = std::nullopt) {
  return dms_policy<>(b.probe, b.probe_at(), b.steering.vector, alpha.value_or(b.steering.alpha));
}

//! Writes `b` to `path` atomically. Refuses a bundle that could not be used: an empty probe, widths
//! that disagree with model.n_embd, a non-finite alpha or vector, a probe read after the steering
//! point.
inline void save_bundle(const std::filesystem::path &path, const steering_bundle &b) {
  const std::string file = path.string();
  require(b.probe.n_features() > 0, errc::invalid_argument,
          [] { return std::string("save_bundle: the probe is empty (default-constructed)"); }, {file});
  detail::check_bundle_widths(b, file);
  detail::check_steering_values(b.steering.vector.values, "save_bundle");
  require(std::isfinite(b.steering.alpha), errc::numeric,
          [] { return std::string("save_bundle: alpha is not finite"); }, {file});
  require(hook_rank(b.probe_at()) <= hook_rank(b.steering_at()), errc::invalid_argument, [&] {
    return "save_bundle: the probe point " + to_string(b.probe_at()) + " comes after the steering point " +
           to_string(b.steering_at()) + " (DMS reads the score before it steers, in the same forward pass)";
  }, {file});
  if (b.condition) {
    detail::check_steering_values(b.condition->vector, "save_bundle (condition vector)");
    require(std::isfinite(b.condition->threshold) && std::isfinite(b.condition->coefficient), errc::numeric,
            [] { return std::string("save_bundle: the condition's threshold or coefficient is not finite"); },
            {file});
  }

  ordered_json m;
  m["format"] = std::string(bundle_format_name);
  m["version"] = bundle_format_version;
  m["model"] = {{"file_name", b.model.file_name}, {"sha256", b.model.sha256}, {"file_size", b.model.file_size},
                {"n_layers", b.model.n_layers},   {"n_embd", b.model.n_embd}, {"arch", b.model.arch}};
  const probe_info &pi = b.probe.info();
  ordered_json probe = detail::hook_json(pi.at);
  probe["type"] = "logistic";
  probe["C"] = pi.C;
  probe["class_weight"] = std::string(name_of(pi.class_weight));
  probe["standardized"] = pi.standardized;
  m["probe"] = probe;
  ordered_json steering = detail::hook_json(b.steering_at());
  steering["method"] = std::string(name_of(b.steering.method));
  steering["scale"] = b.steering.scale == vector_scale::unit ? "unit" : "raw";
  steering["norm"] = b.steering.norm();
  steering["alpha"] = b.steering.alpha;
  m["steering"] = steering;
  if (b.condition) {
    ordered_json c = detail::hook_json(b.condition->at);
    c["threshold"] = b.condition->threshold;
    c["compare"] = b.condition->compare == condition_compare::above ? "above" : "below";
    c["mode"] = b.condition->mode == condition_mode::last_token ? "last_token" : "prompt_mean";
    c["coefficient"] = b.condition->coefficient;
    m["condition"] = c;
  }
  ordered_json sweep = ordered_json::array();
  for (const auto &r : b.probe_sweep)
    sweep.push_back({{"layer", r.layer},
                     {"site", std::string(name_of(r.where))},
                     {"roc_auc", detail::number_or_null(r.heldout.roc_auc)},
                     {"accuracy", detail::number_or_null(r.heldout.accuracy)},
                     {"log_loss", detail::number_or_null(r.heldout.log_loss)},
                     {"n", r.heldout.n}});
  m["probe_sweep"] = sweep;
  ordered_json patching = ordered_json::array();
  for (const auto &r : b.patching)
    patching.push_back(
        {{"layer", r.layer}, {"site", std::string(name_of(r.where))}, {"effect", detail::number_or_null(r.effect)}});
  m["patching"] = patching;
  m["labels"] = {{"n_memorization", b.labels.n_memorization},
                 {"n_generalization", b.labels.n_generalization},
                 {"source", b.labels.source},
                 {"agreement", detail::number_or_null(b.labels.agreement)}};
  m["calibration"] = {{"settings", b.calibration.settings},
                      {"started_at", b.calibration.started_at},
                      {"finished_at", b.calibration.finished_at},
                      {"wall_seconds", detail::number_or_null(b.calibration.wall_seconds)}};
  m["extras"] = b.extras;

  const auto d = b.model.n_embd;
  const float bias = b.probe.bias();
  safetensors_writer w;
  // (dump with replacement: a non-UTF-8 byte in a free-form string must not abort the save.)
  w.set_metadata(std::string(bundle_metadata_key), m.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  w.add("probe.weight", dtype::f32, {d}, std::as_bytes(b.probe.weight()));
  w.add("probe.bias", dtype::f32, {1}, std::as_bytes(std::span<const float>(&bias, 1)));
  w.add("probe.scaler.mean", dtype::f32, {d}, std::as_bytes(b.probe.mean()));
  w.add("probe.scaler.scale", dtype::f32, {d}, std::as_bytes(b.probe.scale()));
  w.add("steering.vector", dtype::f32, {d}, std::as_bytes(std::span<const float>(b.steering.vector.values)));
  if (b.condition)
    w.add("condition.vector", dtype::f32, {d}, std::as_bytes(std::span<const float>(b.condition->vector)));
  w.write(path);
}

//! Reads a bundle written by save_bundle. Errors name the file and what is wrong: not a bundle
//! (no "dms.bundle" metadata, or another format name), a version this dms does not read, a
//! missing tensor, a tensor whose width is not model.n_embd, a norm that does not match.
inline steering_bundle load_bundle(const std::filesystem::path &path) {
  const std::string file = path.string();
  const safetensors_file f(file);
  const error_context where{file, std::nullopt, std::string(bundle_metadata_key)};
  const auto text = f.metadata(bundle_metadata_key);
  require(text.has_value(), errc::invalid_format, [&] {
    std::string have;
    for (const auto &[k, v] : f.metadata()) have += (have.empty() ? "" : ", ") + k;
    return "no '" + std::string(bundle_metadata_key) +
           "' metadata: not a steering bundle written by dms::save_bundle (metadata keys: " +
           (have.empty() ? std::string("none") : have) + ")";
  }, {file});
  const json_document doc = parse_json(*text, file + " (__metadata__." + std::string(bundle_metadata_key) + ")");
  const ordered_json &m = json_require_object(doc.value, "dms.bundle", where);
  const std::string format = json_as_string(json_at(m, "format", where), "format", where);
  require(format == bundle_format_name, errc::invalid_format, [&] {
    return "format '" + format + "': not a steering bundle (expected '" + std::string(bundle_format_name) + "')";
  }, where);
  const std::int64_t file_version = json_as_int(json_at(m, "version", where), "version", where);
  require(file_version == bundle_format_version, errc::unsupported, [&] {
    return "bundle format version " + std::to_string(file_version) + "; this dms reads version " +
           std::to_string(bundle_format_version) + " (recalibrate, or use a dms of the matching version)";
  }, where);

  steering_bundle b;
  const ordered_json &mm = json_require_object(json_at(m, "model", where), "model", where);
  b.model.file_name = json_as_string(json_at(mm, "file_name", where), "model.file_name", where);
  b.model.sha256 = json_as_string(json_at(mm, "sha256", where), "model.sha256", where);
  b.model.file_size = json_as_uint(json_at(mm, "file_size", where), "model.file_size", where);
  b.model.n_layers =
      static_cast<std::int32_t>(json_as_int(json_at(mm, "n_layers", where), "model.n_layers", where, 1, 1 << 20));
  b.model.n_embd = json_as_int(json_at(mm, "n_embd", where), "model.n_embd", where, 1, std::int64_t{1} << 32);
  b.model.arch = json_as_string(json_at(mm, "arch", where), "model.arch", where);
  const auto d = b.model.n_embd;

  // A tensor that must exist and be [n_embd] (or [1] for the bias).
  auto vec = [&](const char *name, std::int64_t width) {
    const safetensors_tensor *t = f.find(name);
    require(t != nullptr, errc::invalid_format,
            [&] { return "missing tensor '" + std::string(name) + "' (every bundle has one)"; }, {file});
    require(t->shape.size() == 1 && t->shape[0] == width, errc::shape_mismatch, [&] {
      return "shape " + detail::shape_string(t->shape) + " (expected [" + std::to_string(width) +
             "]: model.n_embd is " + std::to_string(d) + ")";
    }, {file, t->header_offset, t->name});
    return f.to_f32(*t);
  };

  const ordered_json &pm = json_require_object(json_at(m, "probe", where), "probe", where);
  const std::string type = json_as_string(json_at(pm, "type", where), "probe.type", where);
  require(type == "logistic", errc::unsupported, [&] { return "probe type '" + type + "' (expected logistic)"; },
          where);
  probe_info info;
  info.at = detail::hook_from_json(pm, "probe", where);
  info.C = json_as_number(json_at(pm, "C", where), "probe.C", where);
  const std::string cw = json_as_string(json_at(pm, "class_weight", where), "probe.class_weight", where);
  require(cw == "none" || cw == "balanced", errc::invalid_format,
          [&] { return "probe.class_weight '" + cw + "' (expected none or balanced)"; }, where);
  info.class_weight = cw == "balanced" ? class_weight_mode::balanced : class_weight_mode::none;
  info.standardized = json_as_bool(json_at(pm, "standardized", where), "probe.standardized", where);
  {
    auto w = vec("probe.weight", d), bias = vec("probe.bias", 1), mean = vec("probe.scaler.mean", d),
         scale = vec("probe.scaler.scale", d);
    try {
      b.probe = logistic_probe(std::move(w), bias[0], std::move(mean), std::move(scale), info);
    } catch (const error &e) { // name the file
      throw error(e.code(), e.message(), {file, std::nullopt, "probe.weight"});
    }
  }

  const ordered_json &sm = json_require_object(json_at(m, "steering", where), "steering", where);
  const hook_point steer_at = detail::hook_from_json(sm, "steering", where);
  b.steering.vector = {steer_at.layer, steer_at.where, vec("steering.vector", d)};
  const std::string method = json_as_string(json_at(sm, "method", where), "steering.method", where);
  const auto parsed_method = parse_vector_method(method);
  require(parsed_method.has_value(), errc::invalid_format, [&] {
    return "steering.method '" + method + "' (expected mean_difference, pca or probe_direction)";
  }, where);
  b.steering.method = *parsed_method;
  const std::string scale = json_as_string(json_at(sm, "scale", where), "steering.scale", where);
  require(scale == "raw" || scale == "unit", errc::invalid_format,
          [&] { return "steering.scale '" + scale + "' (expected raw or unit)"; }, where);
  b.steering.scale = scale == "unit" ? vector_scale::unit : vector_scale::raw;
  b.steering.alpha = static_cast<float>(json_as_number(json_at(sm, "alpha", where), "steering.alpha", where));
  const double norm = json_as_number(json_at(sm, "norm", where), "steering.norm", where);
  // The recorded norm was computed from these very floats; a mismatch means the tensor was
  // replaced or damaged after the bundle was written.
  require(std::abs(norm - b.steering.norm()) <= 1e-6 * std::max(1.0, norm), errc::invalid_format, [&] {
    return "steering.vector has norm " + std::to_string(b.steering.norm()) + " but the metadata records " +
           std::to_string(norm) + " (the tensor was changed after the bundle was written)";
  }, {file, std::nullopt, "steering.vector"});

  if (const ordered_json *cm = json_find(m, "condition"); cm != nullptr && !cm->is_null()) {
    bundle_condition c;
    c.at = detail::hook_from_json(*cm, "condition", where);
    c.vector = vec("condition.vector", d);
    c.threshold = static_cast<float>(json_as_number(json_at(*cm, "threshold", where), "condition.threshold", where));
    const std::string cmp = json_as_string(json_at(*cm, "compare", where), "condition.compare", where);
    require(cmp == "above" || cmp == "below", errc::invalid_format,
            [&] { return "condition.compare '" + cmp + "' (expected above or below)"; }, where);
    c.compare = cmp == "below" ? condition_compare::below : condition_compare::above;
    const std::string mode = json_as_string(json_at(*cm, "mode", where), "condition.mode", where);
    require(mode == "prompt_mean" || mode == "last_token", errc::invalid_format,
            [&] { return "condition.mode '" + mode + "' (expected prompt_mean or last_token)"; }, where);
    c.mode = mode == "last_token" ? condition_mode::last_token : condition_mode::prompt_mean;
    c.coefficient =
        static_cast<float>(json_as_number(json_at(*cm, "coefficient", where), "condition.coefficient", where));
    b.condition = std::move(c);
  }

  auto rows = [&](const char *key) -> const ordered_json & {
    const ordered_json &a = json_at(m, key, where);
    if (!a.is_array()) json_type_error(key, "an array", a, where);
    return a;
  };
  const ordered_json &sweep = rows("probe_sweep");
  for (std::size_t i = 0; i < sweep.size(); ++i) {
    const std::string what = "probe_sweep[" + std::to_string(i) + "]";
    const ordered_json &r = sweep[i];
    bundle_sweep_row row;
    const hook_point p = detail::hook_from_json(r, what, where);
    row.layer = p.layer;
    row.where = p.where;
    row.heldout.roc_auc = detail::number_or_nan(json_at(r, "roc_auc", where), what + ".roc_auc", where);
    row.heldout.accuracy = detail::number_or_nan(json_at(r, "accuracy", where), what + ".accuracy", where);
    row.heldout.log_loss = detail::number_or_nan(json_at(r, "log_loss", where), what + ".log_loss", where);
    row.heldout.n = json_as_int(json_at(r, "n", where), what + ".n", where, 0);
    b.probe_sweep.push_back(row);
  }
  const ordered_json &patching = rows("patching");
  for (std::size_t i = 0; i < patching.size(); ++i) {
    const std::string what = "patching[" + std::to_string(i) + "]";
    const hook_point p = detail::hook_from_json(patching[i], what, where);
    b.patching.push_back(
        {p.layer, p.where, detail::number_or_nan(json_at(patching[i], "effect", where), what + ".effect", where)});
  }
  const ordered_json &lm = json_require_object(json_at(m, "labels", where), "labels", where);
  b.labels.n_memorization = json_as_int(json_at(lm, "n_memorization", where), "labels.n_memorization", where, 0);
  b.labels.n_generalization =
      json_as_int(json_at(lm, "n_generalization", where), "labels.n_generalization", where, 0);
  b.labels.source = json_as_string(json_at(lm, "source", where), "labels.source", where);
  b.labels.agreement = detail::number_or_nan(json_at(lm, "agreement", where), "labels.agreement", where);
  const ordered_json &cal = json_require_object(json_at(m, "calibration", where), "calibration", where);
  b.calibration.settings = json_at(cal, "settings", where);
  b.calibration.started_at = json_as_string(json_at(cal, "started_at", where), "calibration.started_at", where);
  b.calibration.finished_at = json_as_string(json_at(cal, "finished_at", where), "calibration.finished_at", where);
  b.calibration.wall_seconds =
      detail::number_or_nan(json_at(cal, "wall_seconds", where), "calibration.wall_seconds", where);
  if (const ordered_json *e = json_find(m, "extras")) b.extras = *e;
  return b;
}

DMS_NAMESPACE_END
