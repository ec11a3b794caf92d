// dms/probe/layer_sweep.hpp: which layer's activations tell memorization from generalization?
//
// Before steering, DMS needs a probe layer: fit one probe per layer on the training rows and
// compare held-out ROC-AUC (the threshold-free measure, so class balance and calibration do not
// decide). The split is fixed up front and the same for every layer, so the numbers compare.
// `stratified_split` makes that split deterministically from a seed (Philox, so the same seed
// gives the same split on every platform), keeping each class's share in both halves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/rng.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/probe/metrics.hpp"

DMS_NAMESPACE_BEGIN

//! A held-out mask (1 = held out) with round(fraction * n_c) rows of each class c held out,
//! chosen by a Philox permutation of `seed`.
inline std::vector<std::uint8_t> stratified_split(std::span<const int> labels, double heldout_fraction,
                                                  std::uint64_t seed) {
  require(heldout_fraction >= 0 && heldout_fraction <= 1, errc::invalid_argument, [&] {
    return "stratified_split: fraction " + std::to_string(heldout_fraction) + " (expected [0, 1])";
  });
  const philox_stream rng(key_for(seed, "stratified_split", 0), 0);
  std::vector<std::uint8_t> mask(labels.size(), 0);
  for (int c : {0, 1}) {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == c) idx.push_back(i);
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
      const auto ra = rng.bits(a), rb = rng.bits(b);
      return ra != rb ? ra < rb : a < b;
    });
    const auto k = static_cast<std::size_t>(std::llround(heldout_fraction * static_cast<double>(idx.size())));
    for (std::size_t i = 0; i < k; ++i) mask[idx[i]] = 1;
  }
  return mask;
}

//! Rows of `x` whose mask entry equals `keep`, copied (row-major, n x x.cols), with their labels.
struct labelled_rows {
  std::vector<float> values;
  std::vector<int> labels;
  std::int64_t cols = 0;
  matrix_view<const float> view() const noexcept {
    return {values.data(), static_cast<std::int64_t>(labels.size()), cols, cols};
  }
};
inline labelled_rows select_rows(matrix_view<const float> x, std::span<const int> y,
                                 std::span<const std::uint8_t> mask, std::uint8_t keep) {
  require(static_cast<std::int64_t>(y.size()) == x.rows && y.size() == mask.size(), errc::shape_mismatch, [&] {
    return "select_rows: " + std::to_string(x.rows) + " rows, " + std::to_string(y.size()) + " labels, " +
           std::to_string(mask.size()) + " mask entries";
  });
  labelled_rows out;
  out.cols = x.cols;
  for (std::int64_t i = 0; i < x.rows; ++i)
    if ((mask[static_cast<std::size_t>(i)] != 0) == (keep != 0)) {
      out.values.insert(out.values.end(), x.row(i), x.row(i) + x.cols);
      out.labels.push_back(y[static_cast<std::size_t>(i)]);
    }
  return out;
}

//! One layer of a sweep.
struct layer_sweep_entry {
  std::int32_t layer = 0;
  probe_metrics heldout; //!< on the rows with mask 1
  fit_report report;     //!< of the fit on the rows with mask 0
};

//! Fits a probe on each layer's training rows (mask 0) and scores it on the held-out rows (mask 1).
//! `layers[k]` holds the activations of layer `first_layer + k`, one row per example, rows in
//! the same order as `labels` for every layer. Returns one entry per layer, in layer order.
inline std::vector<layer_sweep_entry> sweep_layers(std::span<const matrix_view<const float>> layers,
                                                   std::span<const int> labels,
                                                   std::span<const std::uint8_t> heldout,
                                                   logistic_options options = {}, std::int32_t first_layer = 0) {
  require(!layers.empty(), errc::invalid_argument, [] { return std::string("sweep_layers: no layers"); });
  std::vector<layer_sweep_entry> out;
  out.reserve(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const auto layer = first_layer + static_cast<std::int32_t>(k);
    try {
      const labelled_rows train = select_rows(layers[k], labels, heldout, 0);
      const labelled_rows test = select_rows(layers[k], labels, heldout, 1);
      options.at.layer = layer;
      const logistic_fit fit = fit_logistic(train.view(), train.labels, options);
      out.push_back({layer, evaluate(fit.probe, test.view(), test.labels), fit.report});
    } catch (const error &e) { // say which layer
      throw error(e.code(), "layer " + std::to_string(layer) + ": " + e.message(), e.where());
    }
  }
  return out;
}

//! The entry with the highest held-out AUC (the first one on a tie).
inline const layer_sweep_entry &best_layer(std::span<const layer_sweep_entry> sweep) {
  require(!sweep.empty(), errc::invalid_argument, [] { return std::string("best_layer: empty sweep"); });
  return *std::max_element(sweep.begin(), sweep.end(), [](const layer_sweep_entry &a, const layer_sweep_entry &b) {
    return a.heldout.roc_auc < b.heldout.roc_auc;
  });
}

DMS_NAMESPACE_END
