// tests/steer/synthetic.hpp: reproducible labelled activations for probe and vector tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <vector>

#include "dms/concepts/tensor_view.hpp"
#include "dms/core/rng.hpp"

namespace dms::test {

//! Standard normal draws from a Philox stream (Box-Muller), element i a pure function of (seed, i).
class normal_stream {
public:
  explicit normal_stream(std::uint64_t seed) : s_(key_for(seed, "synthetic", 0), 0) {}
  double operator()() {
    const double u1 = (static_cast<double>(s_.bits(i_)) + 1.0) / 4294967297.0; // (0, 1)
    const double u2 = static_cast<double>(s_.bits(i_ + 1)) / 4294967296.0;
    i_ += 2;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double uniform() { return static_cast<double>(s_.bits(i_++)) / 4294967296.0; }

private:
  philox_stream s_;
  std::uint64_t i_ = 0;
};

//! n rows of width d: class 1 with probability `p1`; x = noise * N(0, I) + (y ? +1 : -1) * shift * u,
//! u a fixed unit direction (feature j weighted by 1 / (j + 1)), plus a per-feature offset.
struct labelled_data {
  std::vector<float> x;
  std::vector<int> y;
  std::int64_t n = 0, d = 0;
  matrix_view<const float> view() const { return {x.data(), n, d, d}; }
  matrix_view<float> mutable_view() { return {x.data(), n, d, d}; }
};
inline labelled_data make_data(std::int64_t n, std::int64_t d, double shift, double noise, std::uint64_t seed,
                               double p1 = 0.5) {
  normal_stream g(seed);
  std::vector<double> u(static_cast<std::size_t>(d));
  double un = 0;
  for (std::int64_t j = 0; j < d; ++j) un += 1.0 / double((j + 1) * (j + 1));
  for (std::int64_t j = 0; j < d; ++j) u[static_cast<std::size_t>(j)] = 1.0 / double(j + 1) / std::sqrt(un);
  labelled_data out;
  out.n = n;
  out.d = d;
  out.x.resize(static_cast<std::size_t>(n * d));
  out.y.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const int y = g.uniform() < p1 ? 1 : 0;
    out.y[static_cast<std::size_t>(i)] = y;
    for (std::int64_t j = 0; j < d; ++j)
      out.x[static_cast<std::size_t>(i * d + j)] =
          static_cast<float>(noise * g() + (y ? 1 : -1) * shift * u[static_cast<std::size_t>(j)] + 0.25 * double(j));
  }
  return out;
}

} // namespace dms::test
