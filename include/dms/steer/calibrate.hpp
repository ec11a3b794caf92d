// dms/steer/calibrate.hpp: everything Dynamic Mode Steering needs, measured on the model itself.
//
// One call turns a model and the calibration items (data/calibration) into a steering_bundle:
//   1. labels from behaviour: every memorized-candidate passage of the training split is labelled
//      by extraction (its greedy continuation reproduces the reference, dms/steer/labels.hpp) and,
//      optionally, by output diversity; `label_source` says which labelling trains the probe, and
//      the bundle records how often the two agree. Class 1 ("memorizing") = candidate passages
//      the model recites; class 0 = candidate passages it does not recite and every
//      generalization prompt (novel sentences, arithmetic: nothing there to recite). A passage is
//      represented by its prefix, the context in which the model recites or does not.
//   2. activations: the residual stream at `probe_site` of every layer, at each example's last
//      token (the state that predicts the next token, recited or computed), in one pass;
//   3. the probe sweep: one logistic probe per layer, scored by ROC-AUC on a stratified held-out
//      part of the training split (the data set's own held-out split is never read here);
//   4. the causal layer: activation patching on recited passages (clean: the prefix; corrupted:
//      the same prefix with the tokens before its last one taken from another passage; metric: logit
//      difference between the clean and the corrupted next token) at `patch_site` of every
//      layer, at the last position (patching every position of an early layer would restore the
//      clean tokens themselves); the layer whose patch restores most of the recitation is the
//      steering layer, and
//      the vector is added at its resid_post (after the block: where llama.cpp applies control
//      vectors, so `export-cvec` carries it over unchanged);
//   5. the probe: the sweep's best layer among those read no later than the steering point,
//      refitted on all training rows;
//   6. the vector, pointing from memorization to generalization at the steering point (mean
//      difference, PCA of paired differences, or the probe direction when probe and steering
//      layer coincide); raw length, so alpha = 1.4 moves a fully "memorizing" row by 1.4x the
//      gap between the class means;
//   7. a CAST condition (conditional policy): the memorization direction at the probe point and
//      the threshold on cos(h, tanh(P h)) that maximizes F1 against the labels.
// Progress: every model-running phase reports through `options.report`.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/patch/activation_patching.hpp"
#include "dms/probe/layer_sweep.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/steer/activations.hpp"
#include "dms/steer/bundle.hpp"
#include "dms/steer/calibration_data.hpp"
#include "dms/steer/conditional_policy.hpp"
#include "dms/steer/labels.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

//! Which behavioural labelling decides class 1.
enum class label_source : std::uint8_t { extraction, diversity };

constexpr std::string_view name_of(label_source s) noexcept {
  return s == label_source::extraction ? "extraction" : "diversity";
}

struct calibration_options {
  extraction_options extraction;         //!< 32-token prefix, 32-token reference, >= 90% agreement
  bool with_diversity = true;            //!< also label by diversity (agreement is reported)
  diversity_options diversity;           //!< 8 samples of 16 tokens at temperature 1
  label_source labels = label_source::extraction;
  site probe_site = site::resid_post;    //!< where the sweep reads every layer
  site patch_site = site::mlp_out;       //!< where patching measures each layer's causal effect
  vector_method method = vector_method::mean_difference;
  float alpha = 1.4f;                    //!< default DMS strength stored in the bundle
  double sweep_heldout_fraction = 0.3;   //!< of the training rows, to score each layer's probe
  std::int32_t max_patching_pairs = 16;  //!< recited passages used for patching
  std::int32_t corrupt_tokens = 8;       //!< tokens replaced in the middle of a corrupted prefix
  std::uint64_t seed = 0;                //!< split and sampling seed
  logistic_options probe{.C = 1.0, .class_weight = class_weight_mode::balanced};
  progress report;
};

//! The bundle plus what was measured on the way (for reports and tests).
struct calibration_outcome {
  steering_bundle bundle;
  std::vector<calibration_item> passages;     //!< the memorized candidates labelled
  std::vector<extraction_label> extraction;   //!< one per passage
  std::vector<diversity_label> diversity;     //!< one per passage (empty without with_diversity)
  std::vector<int> labels;                    //!< per example: passages first, then generalization prompts
  patching_result patching;
  std::int32_t n_patching_pairs = 0;          //!< usable (non-degenerate) pairs
  //! Every layer at probe_site, one row per example (the rows `labels` labels): what the sweep and
  //! the probe were fitted on, for fitting other probes on the same data.
  activation_dataset activations;
  std::vector<std::uint8_t> sweep_heldout;    //!< per example: 1 = scored the sweep, 0 = fitted it
};

namespace detail {

//! The argmax of the last row's logits after running `tokens` as sequence 0 (then cleared).
template <model_backend Backend> token_id greedy_next(Backend &model, std::span<const token_id> tokens) {
  std::vector<token_slot> slots(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i)
    slots[i] = {0, static_cast<std::int32_t>(i), i + 1 == tokens.size()};
  model.clear(0);
  const auto logits = model.forward({tokens, slots});
  const float *row = logits.row(logits.rows - 1);
  const token_id best = static_cast<token_id>(std::max_element(row, row + logits.cols) - row);
  model.clear(0);
  return best;
}

inline std::vector<float> gather_rows(matrix_view<const float> x, std::span<const int> labels, int want) {
  std::vector<float> out;
  for (std::int64_t i = 0; i < x.rows; ++i)
    if (labels[static_cast<std::size_t>(i)] == want) out.insert(out.end(), x.row(i), x.row(i) + x.cols);
  return out;
}

} // namespace detail

//! Calibrates DMS on `model` from `items` (the training split only). `tok` encodes the texts
//! (add_special as the model asks). Errors: no training passages or prompts, a labelling that
//! leaves one class empty (nothing recited: a model, or a prefix length, that makes the probe
//! meaningless), no usable patching pair.
template <model_backend Backend, class Tokenizer>
calibration_outcome calibrate(Backend &model, const Tokenizer &tok, std::span<const calibration_item> items,
                              const calibration_options &options) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string started = utc_timestamp();
  const progress &report = options.report;
  require(std::isfinite(options.alpha), errc::numeric, [] { return std::string("calibrate: alpha is not finite"); });
  const auto n_layers = static_cast<std::int32_t>(model.n_layers());
  const auto n_embd = static_cast<std::int64_t>(model.n_embd());

  calibration_outcome out;
  std::vector<std::vector<token_id>> passage_tokens, prompt_tokens;
  for (const auto &it : items) {
    if (it.split != "train") continue;
    if (it.kind == "memorized") {
      out.passages.push_back(it);
      passage_tokens.push_back(tok.encode(it.text, true));
    } else {
      prompt_tokens.push_back(tok.encode(it.text, true));
    }
  }
  require(!passage_tokens.empty() && !prompt_tokens.empty(), errc::invalid_argument, [&] {
    return "calibrate: need training passages and prompts, got " + std::to_string(passage_tokens.size()) +
           " memorized candidates and " + std::to_string(prompt_tokens.size()) + " generalization prompts";
  });

  // 1. Labels from behaviour.
  out.extraction = label_by_extraction(model, passage_tokens, options.extraction, report);
  if (options.with_diversity || options.labels == label_source::diversity) {
    diversity_options d = options.diversity;
    d.seed = options.seed;
    out.diversity = label_by_diversity(model, passage_tokens, d, report);
  }
  std::vector<std::vector<token_id>> examples;
  for (std::size_t i = 0; i < passage_tokens.size(); ++i) {
    const bool memorized = options.labels == label_source::extraction ? out.extraction[i].memorized
                                                                      : out.diversity[i].memorized;
    out.labels.push_back(memorized ? 1 : 0);
    examples.push_back(out.extraction[i].prefix);
  }
  for (auto &p : prompt_tokens) {
    out.labels.push_back(0);
    examples.push_back(std::move(p));
  }
  const auto n_pos = std::count(out.labels.begin(), out.labels.end(), 1);
  require(n_pos >= 4, errc::invalid_argument, [&] {
    return "calibrate: the model recites only " + std::to_string(n_pos) + " of " +
           std::to_string(passage_tokens.size()) + " candidate passages by " + std::string(name_of(options.labels)) +
           " (at least 4 are needed to fit a probe)";
  });
  out.bundle.labels.n_memorization = n_pos;
  out.bundle.labels.n_generalization = static_cast<std::int64_t>(out.labels.size()) - n_pos;
  out.bundle.labels.source = std::string(name_of(options.labels));
  if (!out.diversity.empty()) out.bundle.labels.agreement = label_agreement(out.extraction, out.diversity).rate();

  // 2. Activations at every layer, last token of each example.
  std::vector<hook_point> points;
  for (std::int32_t l = 0; l < n_layers; ++l) points.push_back({l, options.probe_site});
  collect_options copt;
  copt.positions = position_selector::last_token();
  copt.report = report;
  activation_dataset acts = collect_activations(model, std::span<const std::vector<token_id>>(examples), points, copt);

  // 3. Probe sweep on a stratified part of the training rows.
  const auto mask = stratified_split(out.labels, options.sweep_heldout_fraction, options.seed);
  std::vector<matrix_view<const float>> layers;
  for (const auto &p : points) layers.push_back(acts.matrix(p));
  logistic_options popt = options.probe;
  popt.at = points.front();
  report.start("probe sweep", 1);
  const auto sweep = sweep_layers(layers, out.labels, mask, popt);
  report.finish();
  for (const auto &e : sweep) out.bundle.probe_sweep.push_back({e.layer, options.probe_site, e.heldout});

  // 4. The causal layer, from patching recited passages.
  std::vector<std::size_t> recited;
  for (std::size_t i = 0; i < passage_tokens.size(); ++i)
    if (out.labels[i] == 1) recited.push_back(i);
  std::vector<patching_pair> pairs;
  const auto span_len = static_cast<std::size_t>(std::max(1, options.corrupt_tokens));
  report.start("patching pairs", recited.size()); // candidates tried; stops once enough are usable
  for (std::size_t k = 0; k < recited.size() && pairs.size() < static_cast<std::size_t>(options.max_patching_pairs); ++k) {
    const auto &lab = out.extraction[recited[k]];
    const auto &donor = out.extraction[recited[(k + 1) % recited.size()]].prefix;
    patching_pair pair;
    pair.clean = lab.prefix;
    pair.corrupt = lab.prefix;
    // The span ends just before the last token: a recitation is driven by its recent context, and
    // the last token itself stays clean so the last position differs only by what it reads.
    const std::size_t n = pair.clean.size(), first = n > span_len + 1 ? n - 1 - span_len : 0;
    for (std::size_t j = first; j < std::min(n - 1, first + span_len); ++j) pair.corrupt[j] = donor[j % donor.size()];
    pair.clean_target = lab.reference.front();
    pair.corrupt_target = detail::greedy_next(model, pair.corrupt);
    report.advance();
    if (pair.corrupt == pair.clean || pair.corrupt_target == pair.clean_target) continue; // corruption changed nothing
    pairs.push_back(std::move(pair));
  }
  report.finish();
  require(!pairs.empty(), errc::invalid_argument, [] {
    return std::string("calibrate: no patching pair: corrupting the recited prefixes never changed the next token");
  });
  patching_options patch;
  patch.sites = {options.patch_site};
  patch.on_degenerate = degenerate_policy::nan;
  patch.last_position_only = true; // all positions at an early layer would hand over the clean tokens
  patch.report = report;
  out.patching = activation_patching(model, std::span<const patching_pair>(pairs), patch);
  out.n_patching_pairs = static_cast<std::int32_t>(
      std::count(out.patching.degenerate.begin(), out.patching.degenerate.end(), std::uint8_t{0}));
  out.bundle.patching = patching_rows(out.patching);
  const std::int32_t steer_layer = choose_steering_layer(out.patching, options.patch_site, 0, n_layers);
  const hook_point steer_at{steer_layer, site::resid_post};

  // 5. The probe: best sweep layer read no later than the steering point, refitted on all rows.
  const layer_sweep_entry *best = nullptr;
  for (const auto &e : sweep)
    if (hook_rank({e.layer, options.probe_site}) <= hook_rank(steer_at) &&
        (!best || e.heldout.roc_auc > best->heldout.roc_auc))
      best = &e;
  require(best != nullptr, errc::invalid_argument, [&] {
    return "calibrate: no probe layer at " + std::string(name_of(options.probe_site)) + " comes before the steering point " +
           to_string(steer_at);
  });
  const hook_point probe_at{best->layer, options.probe_site};
  popt.at = probe_at;
  out.bundle.probe = fit_logistic(acts.matrix(probe_at), out.labels, popt).probe;

  // 6. The generalization vector at the steering point.
  const hook_point vec_from{steer_layer, options.probe_site};
  const auto h = acts.matrix(vec_from);
  const auto gen = detail::gather_rows(h, out.labels, 0), mem = detail::gather_rows(h, out.labels, 1);
  const std::int64_t n_gen = static_cast<std::int64_t>(gen.size()) / n_embd, n_mem = n_pos;
  const matrix_view<const float> gen_rows{gen.data(), n_gen, n_embd, n_embd}, mem_rows{mem.data(), n_mem, n_embd, n_embd};
  std::vector<float> v;
  switch (options.method) {
  case vector_method::mean_difference: v = mean_difference(gen_rows, mem_rows); break;
  case vector_method::pca: {
    const std::int64_t n = std::min(n_gen, n_mem);
    pca_options po;
    po.scale = vector_scale::raw;
    po.seed = options.seed;
    v = pca_direction(matrix_view<const float>{gen.data(), n, n_embd, n_embd}, matrix_view<const float>{mem.data(), n, n_embd, n_embd}, po)
            .direction;
    break;
  }
  case vector_method::probe_direction: {
    popt.at = vec_from;
    const auto p = fit_logistic(h, out.labels, popt).probe;
    v = probe_direction(p, vector_scale::unit, 0);
    // unit direction, given the length of the mean difference so alpha means the same thing
    const auto md = mean_difference(gen_rows, mem_rows);
    double len = 0;
    for (float x : md) len += static_cast<double>(x) * x;
    for (float &x : v) x = static_cast<float>(x * std::sqrt(len));
    break;
  }
  }
  out.bundle.steering.vector = {steer_layer, site::resid_post, std::move(v)};
  out.bundle.steering.method = options.method;
  out.bundle.steering.scale = vector_scale::raw;
  out.bundle.steering.alpha = options.alpha;

  // 7. The CAST condition at the probe point.
  {
    const auto hp = acts.matrix(probe_at);
    const auto mem_p = detail::gather_rows(hp, out.labels, 1), gen_p = detail::gather_rows(hp, out.labels, 0);
    auto c = mean_difference(matrix_view<const float>{mem_p.data(), n_mem, n_embd, n_embd},
                             matrix_view<const float>{gen_p.data(), n_gen, n_embd, n_embd});
    std::vector<float> sims(static_cast<std::size_t>(hp.rows));
    for (std::int64_t i = 0; i < hp.rows; ++i)
      sims[static_cast<std::size_t>(i)] = static_cast<float>(
          cast_similarity(std::span<const float>(hp.row(i), static_cast<std::size_t>(n_embd)), c));
    const auto choice = choose_threshold(sims, out.labels);
    out.bundle.condition = bundle_condition{probe_at, std::move(c), choice.threshold, choice.compare,
                                            condition_mode::last_token, options.alpha};
    out.bundle.extras["condition_f1"] = choice.f1;
  }

  out.bundle.model.n_layers = n_layers;
  out.bundle.model.n_embd = n_embd;
  auto &s = out.bundle.calibration.settings;
  s["prefix_tokens"] = options.extraction.prefix_tokens;
  s["continuation_tokens"] = options.extraction.continuation_tokens;
  s["min_match"] = options.extraction.min_match;
  s["label_source"] = std::string(name_of(options.labels));
  s["with_diversity"] = options.with_diversity;
  s["probe_site"] = std::string(name_of(options.probe_site));
  s["patch_site"] = std::string(name_of(options.patch_site));
  s["method"] = std::string(name_of(options.method));
  s["probe_C"] = options.probe.C;
  s["sweep_heldout_fraction"] = options.sweep_heldout_fraction;
  s["patching_pairs"] = out.n_patching_pairs;
  s["corrupt_tokens"] = options.corrupt_tokens;
  s["seed"] = options.seed;
  s["n_passages"] = passage_tokens.size();
  s["n_prompts"] = prompt_tokens.size();
  out.bundle.calibration.started_at = started;
  out.bundle.calibration.finished_at = utc_timestamp();
  out.bundle.calibration.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.activations = std::move(acts);
  out.sweep_heldout = mask;
  return out;
}

DMS_NAMESPACE_END
