// Test support: reproducible random float vectors. Plain C++ (no Catch2), also compiled by nvcc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace dms::test {

//! n floats uniform in [-2, 2), from std::mt19937 seeded with `seed`.
inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (auto &x : v)
    x = dist(gen);
  return v;
}

} // namespace dms::test
