// dms/patch/patching_result.hpp: what an activation-patching sweep measured, and the layer it
// points to.
//
// A sweep patches, for each site s, layer l and (optionally) position p, the corrupted run with
// the clean run's activation and measures a metric m on the output. Per pair of prompts the
// normalized effect is
//     effect = (m_patched - m_corrupt) / (m_clean - m_corrupt)
// 1: the patch restores the clean behaviour; 0: it changes nothing. Two averages over pairs are
// kept, because the literature uses both:
//   * mean_effect:   the mean of the per-pair effects (each pair weighs the same; the default,
//                    and what choose_steering_layer ranks);
//   * pooled_effect: (mean m_patched - mean m_corrupt) / (mean m_clean - mean m_corrupt), which
//                    is what TransformerLens users get by normalizing a batch-mean logit
//                    difference (pairs with a large clean/corrupt gap weigh more).
// Pairs whose clean and corrupt metrics (nearly) coincide have no defined effect; see
// patching_options::on_degenerate. Their entries are NaN and they are left out of both averages.
//
// Layout: effect arrays are row-major [site][layer][position] (per pair: [pair][site][layer]
// [position]); without per-position patching the position axis has length 1.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! What a patched run is scored by, at the last position of the corrupted prompt.
enum class patching_metric : std::uint8_t {
  logit_diff,     //!< logit(clean target) - logit(corrupt target)
  clean_log_prob, //!< log softmax(logits)[clean target]
};

constexpr std::string_view name_of(patching_metric m) noexcept {
  return m == patching_metric::logit_diff ? "logit_diff" : "clean_log_prob";
}

struct patching_result {
  std::vector<site> sites;       //!< the patched sites, in the order of the site axis
  std::int32_t layer_begin = 0;  //!< first patched layer
  std::int32_t layer_end = 0;    //!< one past the last patched layer
  std::int32_t n_positions = 1;  //!< length of the position axis (1 when all positions were patched at once)
  bool per_position = false;     //!< whether each position was patched alone
  patching_metric metric = patching_metric::logit_diff;

  std::vector<double> clean_metric;       //!< [pair] m on the clean prompt
  std::vector<double> corrupt_metric;     //!< [pair] m on the corrupted prompt
  std::vector<std::uint8_t> degenerate;   //!< [pair] 1 when m_clean and m_corrupt (nearly) coincide
  std::vector<double> patched_metric;     //!< [pair][site][layer][position] m of the patched run (NaN: not run)
  std::vector<double> effect;             //!< [pair][site][layer][position] normalized effect (NaN: degenerate)
  std::vector<double> mean_effect;        //!< [site][layer][position] mean of effect over usable pairs
  std::vector<double> pooled_effect;      //!< [site][layer][position] normalized mean metrics

  std::size_t n_forwards = 0; //!< backend forward() calls made
  std::size_t n_runs = 0;     //!< prompt runs: clean, corrupted and patched variants
  std::size_t n_padding_runs = 0; //!< unpatched runs added to keep batches uniform (patching_options::uniform_batches)
  double seconds = 0;         //!< wall time of the sweep

  std::size_t n_pairs() const noexcept { return clean_metric.size(); }
  std::int32_t n_layers() const noexcept { return layer_end - layer_begin; }
  //! Entries of one pair's [site][layer][position] block.
  std::size_t block_size() const noexcept {
    return sites.size() * static_cast<std::size_t>(n_layers()) * static_cast<std::size_t>(n_positions);
  }

  //! Index of site `s` on the site axis; invalid_argument when it was not patched.
  std::size_t site_index(site s) const {
    for (std::size_t i = 0; i < sites.size(); ++i)
      if (sites[i] == s) return i;
    throw error(errc::invalid_argument, "patching_result: site " + std::string(name_of(s)) + " was not patched");
  }
  //! Offset of (site, layer, position) inside a [site][layer][position] block. `position` is
  //! ignored (0) when positions were patched all at once.
  std::size_t offset(site s, std::int32_t layer, std::int32_t position = 0) const {
    require(layer >= layer_begin && layer < layer_end, errc::invalid_argument, [&] {
      return "patching_result: layer " + std::to_string(layer) + " is outside the patched range [" +
             std::to_string(layer_begin) + ", " + std::to_string(layer_end) + ")";
    });
    const std::int32_t p = per_position ? position : 0;
    require(p >= 0 && p < n_positions, errc::invalid_argument, [&] {
      return "patching_result: position " + std::to_string(position) + " is outside [0, " +
             std::to_string(n_positions) + ")";
    });
    return (site_index(s) * static_cast<std::size_t>(n_layers()) + static_cast<std::size_t>(layer - layer_begin)) *
               static_cast<std::size_t>(n_positions) +
           static_cast<std::size_t>(p);
  }
  double mean(site s, std::int32_t layer, std::int32_t position = 0) const {
    return mean_effect[offset(s, layer, position)];
  }
  double pooled(site s, std::int32_t layer, std::int32_t position = 0) const {
    return pooled_effect[offset(s, layer, position)];
  }
  double pair_effect(std::size_t pair, site s, std::int32_t layer, std::int32_t position = 0) const {
    require(pair < n_pairs(), errc::invalid_argument,
            [&] { return "patching_result: pair " + std::to_string(pair) + " of " + std::to_string(n_pairs()); });
    return effect[pair * block_size() + offset(s, layer, position)];
  }
  double pair_patched_metric(std::size_t pair, site s, std::int32_t layer, std::int32_t position = 0) const {
    require(pair < n_pairs(), errc::invalid_argument,
            [&] { return "patching_result: pair " + std::to_string(pair) + " of " + std::to_string(n_pairs()); });
    return patched_metric[pair * block_size() + offset(s, layer, position)];
  }
};

//! The layer in [layer_begin, layer_end) whose mean effect at site `s` is largest (ties: the
//! earliest). With per-position results a layer scores its best position. NaN entries are
//! skipped. Errors: a site that was not patched, a range that is empty or outside the result,
//! no finite effect in the range (errc::numeric: every pair was degenerate).
inline std::int32_t choose_steering_layer(const patching_result &r, site s, std::int32_t layer_begin,
                                          std::int32_t layer_end) {
  require(layer_begin >= r.layer_begin && layer_end <= r.layer_end && layer_begin < layer_end,
          errc::invalid_argument, [&] {
            return "choose_steering_layer: range [" + std::to_string(layer_begin) + ", " + std::to_string(layer_end) +
                   ") is empty or outside the patched layers [" + std::to_string(r.layer_begin) + ", " +
                   std::to_string(r.layer_end) + ")";
          });
  std::int32_t best = -1;
  double best_score = -std::numeric_limits<double>::infinity();
  for (std::int32_t l = layer_begin; l < layer_end; ++l) {
    for (std::int32_t p = 0; p < r.n_positions; ++p) {
      const double e = r.mean(s, l, p);
      if (std::isnan(e)) continue;
      if (best < 0 || e > best_score) { // strict: ties keep the earlier layer
        best = l;
        best_score = e;
      }
    }
  }
  require(best >= 0, errc::numeric, [&] {
    return "choose_steering_layer: no finite effect at " + std::string(name_of(s)) +
           " (were all pairs degenerate?)";
  });
  return best;
}

//! choose_steering_layer over every patched layer.
inline std::int32_t choose_steering_layer(const patching_result &r, site s) {
  return choose_steering_layer(r, s, r.layer_begin, r.layer_end);
}

DMS_NAMESPACE_END
