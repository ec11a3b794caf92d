// dms/steer/probe_data.hpp: the rows a calibration fitted its probe on, as an .npz anyone can read.
//
// Researchers want to fit their own probes (an MLP, scikit-learn, an SAE-feature probe) on exactly
// the activations and labels dms used, and benchmarks compare probe fitters on them. The archive
// holds three float32 arrays, readable by numpy.load:
//   x        [n, n_embd]  activations at the probe point, one row per calibration example
//   y        [n]          labels, 1 = the model recites (memorization), 0 = it does not
//   heldout  [n]          the layer sweep's split: 1 = scored the probes, 0 = fitted them
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/npz.hpp"
#include "dms/steer/calibrate.hpp"

DMS_NAMESPACE_BEGIN

struct probe_data {
  std::vector<float> x; //!< row-major [n_rows, n_features]
  std::int64_t n_rows = 0, n_features = 0;
  std::vector<int> y;
  std::vector<std::uint8_t> heldout;

  matrix_view<const float> matrix() const noexcept { return {x.data(), n_rows, n_features, n_features}; }
  //! The rows with heldout == want, and their labels.
  probe_data part(bool want_heldout) const {
    probe_data out;
    out.n_features = n_features;
    for (std::int64_t i = 0; i < n_rows; ++i)
      if (static_cast<bool>(heldout[static_cast<std::size_t>(i)]) == want_heldout) {
        const float *row = x.data() + i * n_features;
        out.x.insert(out.x.end(), row, row + n_features);
        out.y.push_back(y[static_cast<std::size_t>(i)]);
        out.heldout.push_back(want_heldout);
        ++out.n_rows;
      }
    return out;
  }
};

//! Writes the probe point's activations of `c`, its labels and its sweep split (atomically).
inline void write_probe_data(const std::filesystem::path &path, const calibration_outcome &c) {
  const auto x = c.activations.matrix(c.bundle.probe_at());
  require(static_cast<std::size_t>(x.rows) == c.labels.size() && c.labels.size() == c.sweep_heldout.size(),
          errc::shape_mismatch, [&] {
            return "write_probe_data: " + std::to_string(x.rows) + " activation rows, " +
                   std::to_string(c.labels.size()) + " labels, " + std::to_string(c.sweep_heldout.size()) +
                   " split entries";
          });
  std::vector<float> rows(static_cast<std::size_t>(x.rows * x.cols));
  for (std::int64_t i = 0; i < x.rows; ++i)
    std::copy(x.row(i), x.row(i) + x.cols, rows.begin() + i * x.cols);
  const std::vector<float> y(c.labels.begin(), c.labels.end()), h(c.sweep_heldout.begin(), c.sweep_heldout.end());
  npz_writer w;
  w.add("x", rows, {x.rows, x.cols});
  w.add("y", y, {x.rows});
  w.add("heldout", h, {x.rows});
  w.write(path);
}

//! Reads a file written by write_probe_data. Errors name the file: a missing array, shapes that
//! disagree, a label other than 0/1.
inline probe_data read_probe_data(const std::filesystem::path &path) {
  const npz_file f(path.string());
  const npy_array x = f.read("x"), y = f.read("y"), h = f.read("heldout");
  const std::string file = path.string();
  require(x.shape.size() == 2 && y.shape.size() == 1 && h.shape.size() == 1 && y.shape[0] == x.shape[0] &&
              h.shape[0] == x.shape[0],
          errc::shape_mismatch, [] { return std::string("probe data: expected x [n, d], y [n] and heldout [n]"); },
          {file});
  probe_data d;
  d.n_rows = static_cast<std::int64_t>(x.shape[0]);
  d.n_features = static_cast<std::int64_t>(x.shape[1]);
  d.x = x.data;
  for (std::size_t i = 0; i < y.data.size(); ++i) {
    require(y.data[i] == 0.0f || y.data[i] == 1.0f, errc::invalid_format,
            [&] { return "probe data: y[" + std::to_string(i) + "] is " + std::to_string(y.data[i]) + ", expected 0 or 1"; },
            {file});
    d.y.push_back(static_cast<int>(y.data[i]));
    d.heldout.push_back(h.data[i] != 0.0f);
  }
  return d;
}

DMS_NAMESPACE_END
